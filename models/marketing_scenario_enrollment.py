import logging
from collections import defaultdict
from datetime import datetime
from datetime import time
from datetime import timedelta

import pytz
from dateutil import rrule
from dateutil.relativedelta import relativedelta

from odoo import api
from odoo import fields
from odoo import models
from odoo.exceptions import ValidationError
from odoo.tools import SQL
from odoo.tools.safe_eval import safe_eval

from ..utils.correlation import correlation_matches
from ..utils.correlation import correlation_value
from ..utils.params_filter import params_match
from ..utils.params_filter import parse_params_filter
from ..utils.pg_arrays import array_literal
from ..utils.scores import score_matches

_logger = logging.getLogger(__name__)

ENROLL_BATCH_SIZE = 1000
# A control group larger than this would hold back most of the audience.
MAX_CONTROL_GROUP_PERCENT = 50

_RRULE_FREQUENCIES = {"hours": rrule.HOURLY, "days": rrule.DAILY, "weeks": rrule.WEEKLY, "months": rrule.MONTHLY}


class MarketingScenario(models.Model):
    """Who enters a scenario and when: the audience, the entry policy, participant insertion, the schedule
    cron, and the events that make contacts enter or leave."""

    _inherit = "marketing.scenario"

    # Enrollment of audience triggers (now, date, repeat), processed by the schedule cron
    next_occurrence_at = fields.Datetime(readonly=True, copy=False)
    enrolling_occurrence_at = fields.Datetime(
        readonly=True, copy=False, help="The occurrence whose audience is being entered, batch by batch."
    )
    # Where the enrollment of that occurrence stands: the audience is entered in
    # contact id order, each batch from the last contact the previous one
    # reached. Without it every batch would scan the contacts already entered
    # again, and entering a large audience would take quadratic time.
    enrolling_after_partner_id = fields.Integer(readonly=True, copy=False)
    control_group_percent = fields.Integer(
        string="Control Group (%)",
        help="Share of the entrants held out: they run through no node, and their conversions, compared with "
        "those of the others, measure what the scenario adds (its lift). Each contact falls in it or not for good.",
    )

    # ------------------------------------------------------------------
    # Audience and entry policy
    # ------------------------------------------------------------------

    @api.constrains("audience_domain")
    def _check_audience_domain(self):
        for scenario in self:
            try:
                scenario._audience_domain()
                self.env["res.partner"].search_count(scenario._audience_domain(), limit=1)
            except Exception as error:
                raise ValidationError(
                    self.env._("Audience of %(name)s is not a valid filter: %(error)s", name=scenario.name, error=error)
                ) from error

    @api.constrains("control_group_percent")
    def _check_control_group_percent(self):
        for scenario in self:
            if not 0 <= scenario.control_group_percent <= MAX_CONTROL_GROUP_PERCENT:
                raise ValidationError(
                    self.env._(
                        "Control Group of %(name)s: a share between 0 and %(max)s percent.",
                        name=scenario.name,
                        max=MAX_CONTROL_GROUP_PERCENT,
                    )
                )

    def _control_sql(self, partner_sql):
        """The SQL condition 'this contact is in the control group' of this scenario.

        A hash of the scenario and the contact, not a draw: the same contact
        stays on the same side whenever he enters again, and each scenario
        holds out other contacts.
        """
        if not self.control_group_percent:
            return SQL("FALSE")
        return SQL(
            "mod(abs(hashtext(%s || ':' || %s)::bigint), 100) < %s",
            str(self.id),
            partner_sql,
            self.control_group_percent,
        )

    def _first_occurrence(self, now):
        if self.trigger_type == "now":
            return now
        if self.trigger_type == "date":
            return self.trigger_at
        if self.trigger_type == "repeat":
            return self._next_repeat(now, inclusive=True)
        return False

    def _repeat_rule(self):
        tz = pytz.timezone(self.timezone or "UTC")
        start_day = self.repeat_start or fields.Date.context_today(self)
        hours = int(self.repeat_hour or 0)
        minutes = round(((self.repeat_hour or 0) - hours) * 60)
        dtstart = datetime.combine(start_day, time(min(hours, 23), min(minutes, 59)))
        until = datetime.combine(self.repeat_until, time(23, 59, 59)) if self.repeat_until else None
        rule = rrule.rrule(
            _RRULE_FREQUENCIES[self.repeat_unit or "days"],
            interval=max(self.repeat_interval, 1),
            dtstart=dtstart,
            until=until,
        )
        return rule, tz

    def _next_repeat(self, after, inclusive=False):
        """The next occurrence of the repeat trigger after ``after`` (naive UTC), or False."""
        rule, tz = self._repeat_rule()
        local_after = pytz.utc.localize(after).astimezone(tz).replace(tzinfo=None)
        occurrence = rule.after(local_after, inc=inclusive)
        if not occurrence:
            return False
        return tz.localize(occurrence).astimezone(pytz.utc).replace(tzinfo=None)

    def _audience_domain(self):
        domain = safe_eval(self.audience_domain or "[]", {"context_today": fields.Date.context_today(self)})
        if self.audience_segment_id:
            domain = [*domain, ("marketing_segment_ids", "in", self.audience_segment_id.ids)]
        return [*domain, ("company_id", "in", [self.company_id.id, False])]

    def _audience_partners(self, user=None):
        """Contacts as ``user`` (the Responsible by default) searches them in the scenario's company.

        The audience filter is evaluated with his rights and record rules: it
        selects nobody he could not find himself. None when there is no such
        user or he has no access to the company.
        """
        user = user or self.user_id
        if not user or not (user._is_superuser() or self.company_id in user.company_ids):
            return None
        return self.env["res.partner"].with_user(user).with_company(self.company_id)

    def _policy_sql(self, alias, partner_column, occurrence_at=None, now=None, correlation=None):
        """The SQL condition 'this contact may enter now', by the entry policy.

        ``correlation``: the SQL of the entering run's correlation value; with
        a One Run Per parameter the policy applies to the runs of that value
        only (a second cart enters a second run, the same cart does not).
        """
        existing = SQL(
            "SELECT 1 FROM marketing_scenario_participant x "
            "WHERE x.scenario_id = %s AND x.partner_id = %s AND NOT x.is_test",
            self.id,
            SQL.identifier(alias, partner_column),
        )
        if correlation is not None and self._correlation_path():
            existing = SQL("%s AND x.correlation_value IS NOT DISTINCT FROM %s", existing, correlation)
        conditions = []
        if self.entry_policy == "once":
            conditions.append(SQL("NOT EXISTS (%s)", existing))
        elif self.entry_policy == "once_at_a_time":
            # A control run ends at entry: it counts as running for the
            # objective's days, as long as it is measured, or every new event
            # would enter the held-out contact again and swell the control group.
            measured_since = (now or fields.Datetime.now()) - timedelta(days=self.objective_days)
            conditions.append(
                SQL(
                    "NOT EXISTS (%s AND (x.state = 'running' OR (x.is_control AND x.entered_at > %s)))",
                    existing,
                    measured_since,
                )
            )
        if occurrence_at:
            # Whatever the policy, an occurrence enters each contact once.
            conditions.append(SQL("NOT EXISTS (%s AND x.occurrence_at = %s)", existing, occurrence_at))
        return SQL(" AND ").join(conditions) if conditions else SQL("TRUE")

    def _enroll_audience_batch(self, occurrence_at, after_partner_id=0, limit=ENROLL_BATCH_SIZE):
        """Enter the audience's next ``limit`` contacts after ``after_partner_id``, in contact id order.

        Returns ``(contacts gone through, contacts entered, last contact id)``:
        the entry policy may keep some of them out. The batch is read from
        the audience first, then entered with one INSERT ... SELECT: each batch
        costs the same however large the audience and however much of it
        already entered.
        """
        self.ensure_one()
        Partner = self._audience_partners()
        if Partner is None:
            _logger.warning("Scenario %s: its responsible user cannot search its company's contacts", self.id)
            return 0, 0, after_partner_id
        partner_ids = Partner.search(
            [("id", ">", after_partner_id), *self._audience_domain()], order="id", limit=limit
        ).ids
        if not partner_ids:
            return 0, 0, after_partner_id
        entered = self._insert_participants(partner_ids, occurrence_at=occurrence_at)
        return len(partner_ids), len(entered), partner_ids[-1]

    def _enroll_partners(self, partner_ids, events=None, test=False):
        """Enter the given contacts (optionally each with its triggering event); return the participants.

        ``events`` maps partner id -> marketing.event, or is a list of
        ``(partner id, marketing.event)`` pairs when a contact enters several
        runs at once (one per correlation value). The entry policy applies,
        except for test runs; the audience applies to all (the test run checks
        its contact against it as the user running it).
        """
        self.ensure_one()
        if not partner_ids:
            return self.env["marketing.scenario.participant"]
        events = events or {}
        if test:
            candidates = list(partner_ids)
        else:
            Partner = self._audience_partners()
            if Partner is None:
                _logger.warning("Scenario %s: its responsible user cannot search its company's contacts", self.id)
                return self.env["marketing.scenario.participant"]
            candidates = Partner._search([("id", "in", list(partner_ids)), *self._audience_domain()])
            candidates = SQL("SELECT p.id AS partner_id FROM res_partner p WHERE p.id IN %s", candidates.subselect())
        return self.env["marketing.scenario.participant"].browse(
            self._insert_participants(candidates, events=events, test=test)
        )

    def _insert_participants(self, candidates, *, occurrence_at=None, events=None, test=False):
        """Insert participants for ``candidates`` (SQL selecting partner_id, or ids), then their first steps.

        Returns the new participants' ids.
        """
        Participant = self.env["marketing.scenario.participant"]
        Participant.flush_model()
        self.env["res.partner"].flush_model()
        now = fields.Datetime.now()
        event_pairs = list(events.items()) if isinstance(events, dict) else list(events or ())
        if isinstance(candidates, list):
            candidates = SQL(
                "SELECT unnest(%s::int[]) AS partner_id",
                array_literal(candidates),
            )
        policy = (
            SQL("TRUE")
            if test
            else self._policy_sql("c", "partner_id", occurrence_at, now, correlation=SQL("ev.correlation"))
        )
        control = SQL("FALSE") if test else self._control_sql(SQL("c.partner_id::text"))
        correlation_path = self._correlation_path()
        event_values = SQL(", ").join(
            SQL(
                "(%s, %s, %s, %s::varchar)",
                partner_id,
                event.id,
                event.type_id.id,
                correlation_value(event.params or {}, correlation_path) if correlation_path else None,
            )
            for partner_id, event in event_pairs
        )
        event_join = (
            SQL(
                "LEFT JOIN (VALUES %s) AS ev (partner_id, event_id, type_id, correlation)"
                " ON ev.partner_id = c.partner_id",
                event_values,
            )
            if event_pairs
            else SQL(
                "LEFT JOIN (SELECT NULL::int AS partner_id, NULL::int AS event_id, NULL::int AS type_id,"
                " NULL::varchar AS correlation) ev ON FALSE"
            )
        )
        roots = self.node_ids.filtered(lambda node: not node.parent_id)
        root_dues = [(root.id, root._constant_due(now)) for root in roots]
        # The first steps go in the same statement when their due time is the
        # same for everybody (no send window, no date of the contact).
        first_steps_in_sql = bool(root_dues) and all(due is not None for _root, due in root_dues)
        first_steps = SQL()
        if first_steps_in_sql:
            first_steps = SQL(
                """,
                first_steps AS (
                    INSERT INTO marketing_scenario_step (
                        participant_id, node_id, scheduled_at, state, attempt, scenario_id, partner_id, company_id,
                        is_test
                    )
                    SELECT e.id, r.node_id, r.scheduled_at, 'scheduled', 0, e.scenario_id, e.partner_id,
                           e.company_id, e.is_test
                      FROM entered e, unnest(%(nodes)s::int[], %(dues)s::timestamp[]) AS r (node_id, scheduled_at)
                     WHERE NOT e.is_control
                )
                """,
                nodes=[root_id for root_id, _due in root_dues],
                dues=[due for _root_id, due in root_dues],
            )
            self.env["marketing.scenario.step"].flush_model()
        self.env.cr.execute(
            SQL(
                """
                WITH entered AS (
                    INSERT INTO marketing_scenario_participant (
                        scenario_id, partner_id, company_id, state, entered_at, ended_at, end_reason, occurrence_at,
                        is_test, is_control, event_id, event_type_id, event_params, correlation_value
                    )
                    SELECT %(scenario)s, c.partner_id, %(company)s,
                           CASE WHEN c.is_control THEN 'completed' ELSE 'running' END, %(now)s,
                           CASE WHEN c.is_control THEN %(now)s END,
                           CASE WHEN c.is_control THEN %(held_out)s END,
                           %(occurrence)s, %(test)s, c.is_control, ev.event_id, ev.type_id, e.params, ev.correlation
                      FROM (SELECT c.partner_id, %(control)s AS is_control FROM (%(candidates)s) c) c
                      %(event_join)s
                      LEFT JOIN marketing_event e ON e.id = ev.event_id
                     WHERE %(policy)s
                     ORDER BY c.partner_id
                    RETURNING id, scenario_id, partner_id, company_id, is_test, is_control
                ) %(first_steps)s
                SELECT id, is_control FROM entered
                """,
                scenario=self.id,
                company=self.company_id.id,
                now=now,
                occurrence=occurrence_at,
                test=bool(test),
                candidates=candidates,
                event_join=event_join,
                policy=policy,
                control=control,
                held_out=self.env._("Control group: held out"),
                first_steps=first_steps,
            )
        )
        rows = self.env.cr.fetchall()
        participant_ids = [participant_id for participant_id, _control in rows]
        treated_ids = [participant_id for participant_id, control in rows if not control]
        Participant.invalidate_model()
        if treated_ids:
            participants = Participant.browse(treated_ids)
            Step = self.env["marketing.scenario.step"]
            if first_steps_in_sql:
                Step.invalidate_model()
                Participant.invalidate_model(["step_ids"])
            else:
                Step._schedule_nodes([(roots, participants)])
            if not roots:
                participants._complete_if_done()
        return participant_ids

    # ------------------------------------------------------------------
    # Schedule cron
    # ------------------------------------------------------------------

    @api.model
    def _cron_schedule(self, batch_size=ENROLL_BATCH_SIZE):
        """Enter the audience of due now/date/repeat triggers, one batch per call."""
        now = fields.Datetime.now()
        domain = [
            ("state", "=", "running"),
            ("trigger_type", "in", ("now", "date", "repeat")),
            "|",
            ("enrolling_occurrence_at", "!=", False),
            ("next_occurrence_at", "<=", now),
        ]
        scenario = self.search(domain, limit=1, order="id")
        done = 0
        if scenario:
            done = scenario._schedule_one_batch(now, batch_size)
        remaining = self.search_count(domain)
        self.env["ir.cron"]._notify_progress(done=done, remaining=remaining)
        nexts = self.search([("state", "=", "running"), ("next_occurrence_at", ">", now)]).mapped("next_occurrence_at")
        if nexts:
            self.env.ref("marketing_event_automation.ir_cron_scenario_schedule")._trigger(min(nexts))
        return done

    def _schedule_one_batch(self, now, batch_size):
        self.ensure_one()
        # Lock the scenario row: two schedule crons must not enter the same occurrence twice.
        self.env.cr.execute(SQL("SELECT id FROM marketing_scenario WHERE id = %s FOR UPDATE SKIP LOCKED", self.id))
        if not self.env.cr.fetchone():
            return 0
        if not self.enrolling_occurrence_at:
            occurrence = self.next_occurrence_at
            following = self._next_repeat(occurrence) if self.trigger_type == "repeat" else False
            self.write(
                {
                    "enrolling_occurrence_at": occurrence,
                    "next_occurrence_at": following,
                    "enrolling_after_partner_id": 0,
                }
            )
        gone_through, entered, last_partner_id = self._enroll_audience_batch(
            self.enrolling_occurrence_at, after_partner_id=self.enrolling_after_partner_id, limit=batch_size
        )
        if gone_through < batch_size:
            self.write({"enrolling_occurrence_at": False, "enrolling_after_partner_id": 0})
        else:
            self.write({"enrolling_after_partner_id": last_partner_id})
        if entered:
            self.env["marketing.scenario.step"]._wake_advance()
        # The progress is the part of the audience gone through: a batch whose
        # contacts the entry policy all kept out must not end the cron's run.
        return gone_through

    # ------------------------------------------------------------------
    # Events: entries and exits
    # ------------------------------------------------------------------

    @api.model
    def _consume_events(self, events, results):
        """React to a batch of events of one type: exits, resumed waits, entries, score triggers."""
        event_type = events.type_id
        if len(event_type) != 1 or event_type.scope != "contact":
            return
        events = events.filtered("partner_id")
        if not events:
            return
        self._apply_exit_events(events, event_type, results)
        self._apply_objective_exits(events, event_type, results)
        self.env["marketing.scenario.step"]._resume_waiting(events, event_type, results)
        scenarios = self.search(
            [("state", "=", "running"), ("trigger_type", "=", "event"), ("trigger_event_type_id", "=", event_type.id)]
        )
        for scenario in scenarios:
            clauses = parse_params_filter(
                scenario.trigger_params_filter, scenario.trigger_event_type_id.params_structure
            )
            matching = events.filtered(
                lambda event, scenario=scenario, clauses=clauses: (
                    scenario._reached_by(event) and params_match(clauses, event.params)
                )
            )
            scenario._enter_from_events(matching, results)
        if event_type.key == "score_changed":
            self._trigger_score_scenarios(events, results)
        if event_type.key in ("segment_entered", "segment_left"):
            self._consume_segment_events(events, event_type.key, results)

    def _reached_by(self, event):
        """Whether ``event`` may move this scenario's contacts: an event of a company reaches only its scenarios.

        Events without a company (Odoo's own about a contact, such as emails
        opened) reach the scenarios of every company.
        """
        self.ensure_one()
        return not event.company_id or event.company_id == self.company_id

    def _enter_from_events(self, events, results):
        self.ensure_one()
        if not events:
            return
        # One entry per contact (and correlation value) and batch: the first event of the batch wins.
        correlation_path = self._correlation_path()
        first_events = {}
        for event in events.sorted("id"):
            run_key = correlation_value(event.params or {}, correlation_path) if correlation_path else None
            first_events.setdefault((event.partner_id.id, run_key), event)
        pairs = [(partner_id, event) for (partner_id, _run_key), event in first_events.items()]
        participants = self._enroll_partners(list({partner_id for partner_id, _event in pairs}), events=pairs)
        for event in participants.event_id:
            results[event.id]["entered"].append(self.name)
        if participants:
            self.env["marketing.scenario.step"]._wake_advance()

    def _trigger_score_scenarios(self, events, results):
        scenarios = self.search([("state", "=", "running"), ("trigger_type", "=", "score")])
        for scenario in scenarios:
            crossing = events.filtered(
                lambda event, scenario=scenario: (
                    scenario._reached_by(event)
                    and not score_matches(
                        scenario.score_operator, scenario.score_threshold, (event.params or {}).get("old")
                    )
                    and score_matches(
                        scenario.score_operator, scenario.score_threshold, (event.params or {}).get("new")
                    )
                )
            )
            scenario._enter_from_events(crossing, results)

    @api.model
    def _apply_exit_events(self, events, event_type, results):
        scenarios = self.search([("state", "in", ("running", "paused")), ("exit_event_type_ids", "in", event_type.ids)])
        if not scenarios:
            return
        participants = self._running_participants(scenarios, events.partner_id)
        if not participants:
            return
        reason = self.env._("Exit event: %(type)s", type=event_type.name)
        self._exit_matching(participants, events, reason, results)

    @api.model
    def _exit_matching(self, participants, events, reason, results, condition=None):
        """End the runs of ``participants`` that one of ``events`` concerns, recording ``exited`` on those events.

        An event concerns a run when it reaches the run's scenario, carries
        the run's correlation value (or none) and passes ``condition``
        ``(participant, event)``. Reads only what the batch already holds: the
        number of queries does not depend on the number of events.
        """
        events_by_partner = events.grouped("partner_id")
        scenario_names_by_event = defaultdict(set)
        leaving_ids = set()
        for participant in participants:
            scenario = participant.scenario_id
            for event in events_by_partner.get(participant.partner_id, ()):
                if (
                    scenario._reached_by(event)
                    and correlation_matches(participant.correlation_value, event.params, scenario._correlation_path())
                    and (condition is None or condition(participant, event))
                ):
                    scenario_names_by_event[event.id].add(scenario.name)
                    leaving_ids.add(participant.id)
        leaving = participants.browse(sorted(leaving_ids))
        if leaving:
            leaving._finish("exited", reason)
            for event_id, names in scenario_names_by_event.items():
                results[event_id]["exited"].extend(sorted(names))
        return leaving

    @api.model
    def _apply_objective_exits(self, events, event_type, results):
        """Scenarios that exit on their objective end the runs these events convert (in their objective's days)."""
        scenarios = self.search(
            [
                ("state", "in", ("running", "paused")),
                ("exit_on_objective", "=", True),
                ("objective_event_type_id", "=", event_type.id),
            ]
        )
        if not scenarios:
            return
        participants = self._running_participants(scenarios, events.partner_id)
        if not participants:
            return

        def converts(participant, event):
            # As the conversion statistics count it: after entering, within the objective's days.
            deadline = participant.entered_at + relativedelta(days=participant.scenario_id.objective_days)
            return participant.entered_at <= event.occurred_at <= deadline

        reason = self.env._("Objective reached: %(type)s", type=event_type.name)
        self._exit_matching(participants, events, reason, results, condition=converts)

    @api.model
    def _running_participants(self, scenarios, partners):
        """The real (not test) participants of ``partners`` running through ``scenarios``."""
        return self.env["marketing.scenario.participant"].search(
            [
                ("scenario_id", "in", scenarios.ids),
                ("partner_id", "in", partners.ids),
                ("state", "=", "running"),
                ("is_test", "=", False),
            ]
        )

    # Segments ------------------------------------------------------------

    def _segment_trigger_summary(self):
        return self.env._(
            "Enters %(segment)s", segment=self.trigger_segment_id.name or self.env._("a segment to choose")
        )

    @api.model
    def _consume_segment_events(self, events, key, results):
        """segment_entered starts the scenarios on that segment, segment_left ends their runs if they say so."""
        by_segment = defaultdict(lambda: self.env["marketing.event"])
        for event in events:
            by_segment[(event.params or {}).get("segment_id")] |= event
        segment_ids = [segment_id for segment_id in by_segment if segment_id]
        domain = [("trigger_type", "=", "segment"), ("trigger_segment_id", "in", segment_ids)]
        if key == "segment_entered":
            for scenario in self.search([("state", "=", "running"), *domain]):
                matching = by_segment[scenario.trigger_segment_id.id].filtered(scenario._reached_by)
                scenario._enter_from_events(matching, results)
            return
        scenarios = self.search([("state", "in", ("running", "paused")), ("exit_on_segment_left", "=", True), *domain])
        if not scenarios:
            return
        leaving = self._running_participants(scenarios, events.partner_id).filtered(
            lambda participant: (
                participant.partner_id in by_segment[participant.scenario_id.trigger_segment_id.id].partner_id
            )
        )
        if not leaving:
            return
        leaving._finish("exited", self.env._("Left the segment"))
        for participant in leaving:
            for event in by_segment[participant.scenario_id.trigger_segment_id.id]:
                if event.partner_id == participant.partner_id:
                    results[event.id]["exited"].append(participant.scenario_id.name)
