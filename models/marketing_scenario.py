import logging
from collections import defaultdict
from datetime import datetime
from datetime import time

import pytz
from dateutil import rrule

from odoo import api
from odoo import fields
from odoo import models
from odoo.exceptions import AccessError
from odoo.exceptions import UserError
from odoo.exceptions import ValidationError
from odoo.tools import SQL
from odoo.tools import format_date
from odoo.tools import format_datetime
from odoo.tools.safe_eval import safe_eval

from .params_filter import ParamsFilterError
from .params_filter import params_match
from .params_filter import parse_params_filter
from .res_partner import SCORE_OPERATORS
from .res_partner import score_matches

_logger = logging.getLogger(__name__)

ENROLL_BATCH_SIZE = 1000

TRIGGER_TYPES = [
    ("now", "Now"),
    ("date", "On date"),
    ("event", "On event"),
    ("repeat", "Repeat"),
    ("score", "Engagement score"),
    ("segment", "Enters a segment"),
]
TRIGGER_ICONS = {
    "now": "fa-play",
    "date": "fa-calendar",
    "event": "fa-bolt",
    "repeat": "fa-repeat",
    "score": "fa-star",
    "segment": "fa-users",
}
ENTRY_POLICIES = [
    ("once", "Once ever"),
    ("once_at_a_time", "Once at a time"),
    ("every_time", "Every time"),
]
REPEAT_UNITS = [("hours", "Hours"), ("days", "Days"), ("weeks", "Weeks"), ("months", "Months")]
_RRULE_FREQUENCIES = {"hours": rrule.HOURLY, "days": rrule.DAILY, "weeks": rrule.WEEKLY, "months": rrule.MONTHLY}
# Changing any of these while contacts run through the scenario would change
# the meaning of their run half-way.
TRIGGER_FIELDS = {
    "trigger_type",
    "trigger_at",
    "trigger_event_type_id",
    "trigger_params_filter",
    "repeat_interval",
    "repeat_unit",
    "repeat_hour",
    "repeat_start",
    "repeat_until",
    "score_operator",
    "score_threshold",
    "trigger_segment_id",
}


def _tz_selection(_self):
    return [(tz, tz) for tz in sorted(pytz.all_timezones_set, key=lambda tz: tz if not tz.startswith("Etc/") else "_")]


class MarketingScenario(models.Model):
    _name = "marketing.scenario"
    _description = "Marketing Scenario"
    _order = "sequence, id desc"

    name = fields.Char(required=True, translate=True)
    sequence = fields.Integer(default=10)
    active = fields.Boolean(default=True)
    company_id = fields.Many2one("res.company", required=True, index=True, default=lambda self: self.env.company)
    user_id = fields.Many2one("res.users", string="Responsible", default=lambda self: self.env.user)
    state = fields.Selection(
        [("draft", "Draft"), ("running", "Running"), ("paused", "Paused"), ("stopped", "Stopped")],
        required=True,
        default="draft",
        readonly=True,
        copy=False,
        index=True,
    )
    timezone = fields.Selection(
        _tz_selection,
        required=True,
        default=lambda self: self.env.user.tz or "UTC",
        help="Times of day (repeat trigger, send windows) are read in this timezone.",
    )

    # Trigger
    trigger_type = fields.Selection(TRIGGER_TYPES, string="Trigger", required=True, default="event")
    trigger_at = fields.Datetime(string="Start At", help="When the audience enters (trigger 'On date').")
    trigger_event_type_id = fields.Many2one(
        "marketing.event.type", string="Event Type", ondelete="restrict", index=True, domain=[("scope", "=", "contact")]
    )
    trigger_params_filter = fields.Char(
        string="Parameters Filter",
        help='Only events whose parameters match, e.g. total > 100 and category == "shoes".',
    )
    repeat_interval = fields.Integer(string="Every", default=1)
    repeat_unit = fields.Selection(REPEAT_UNITS, default="days")
    repeat_hour = fields.Float(string="At", default=9.0, help="Time of day in the scenario's timezone.")
    repeat_start = fields.Date(string="From")
    repeat_until = fields.Date(string="Until")
    score_operator = fields.Selection(SCORE_OPERATORS, default=">=")
    score_threshold = fields.Integer()
    audience_domain = fields.Char(
        string="Audience", default="[]", help="Only contacts matching this filter enter the scenario."
    )
    entry_policy = fields.Selection(ENTRY_POLICIES, required=True, default="once_at_a_time")
    # Segments: entering one starts the scenario, leaving it may end the run;
    # a segment can also narrow the audience of any trigger.
    trigger_segment_id = fields.Many2one(
        "marketing.segment", string="Segment", ondelete="restrict", index="btree_not_null"
    )
    exit_on_segment_left = fields.Boolean(
        string="Exit When Leaving the Segment", help="A contact who leaves the segment leaves the scenario at once."
    )
    audience_segment_id = fields.Many2one(
        "marketing.segment",
        ondelete="restrict",
        help="Only members of this segment enter the scenario (with the audience filter, if any).",
    )
    exit_event_type_ids = fields.Many2many(
        "marketing.event.type",
        "marketing_scenario_exit_event_type_rel",
        "scenario_id",
        "event_type_id",
        string="Exit Events",
        domain=[("scope", "=", "contact")],
        help="An event of these types takes its contact out of the scenario at once, cancelling its steps.",
    )
    objective_event_type_id = fields.Many2one(
        "marketing.event.type",
        string="Objective",
        ondelete="set null",
        domain=[("scope", "=", "contact")],
        help="The event the scenario tries to cause, e.g. a purchase.",
    )
    objective_days = fields.Integer(string="Objective Within (days)", default=7)
    objective_prompt_skipped = fields.Boolean(
        copy=False, help="The marketer chose to go on without an objective: the form stops asking for one."
    )
    template_id = fields.Many2one(
        "marketing.scenario.template", ondelete="set null", readonly=True, index="btree_not_null"
    )

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
    started_at = fields.Datetime(readonly=True, copy=False)

    node_ids = fields.One2many("marketing.scenario.node", "scenario_id", string="Nodes")
    participant_ids = fields.One2many("marketing.scenario.participant", "scenario_id", string="Participants")

    # Statistics (test runs excluded)
    entered_count = fields.Integer(string="Entered", compute="_compute_statistics")
    active_count = fields.Integer(string="In Progress", compute="_compute_statistics")
    completed_count = fields.Integer(string="Completed", compute="_compute_statistics")
    exited_count = fields.Integer(string="Exited", compute="_compute_statistics")
    objective_count = fields.Integer(string="Conversions", compute="_compute_statistics")
    conversion_rate = fields.Float(compute="_compute_statistics", help="Share of entries that reached the objective.")
    open_rate = fields.Float(compute="_compute_statistics")
    click_rate = fields.Float(string="Click-through Rate", compute="_compute_statistics")
    node_count = fields.Integer(compute="_compute_node_count")
    trigger_summary = fields.Char(string="Starts When", compute="_compute_trigger_summary")
    funnel_html = fields.Html(string="Funnel", compute="_compute_funnel_html", sanitize=False)

    @api.depends("node_ids")
    def _compute_node_count(self):
        counts = dict(
            self.env["marketing.scenario.node"]._read_group(
                [("scenario_id", "in", self.ids)], ["scenario_id"], ["__count"]
            )
        )
        for scenario in self:
            scenario.node_count = counts.get(scenario, 0)

    @api.depends(
        "trigger_type",
        "trigger_at",
        "trigger_event_type_id",
        "trigger_params_filter",
        "repeat_interval",
        "repeat_unit",
        "repeat_hour",
        "score_operator",
        "score_threshold",
        "trigger_segment_id",
    )
    def _compute_trigger_summary(self):
        units = dict(self._fields["repeat_unit"]._description_selection(self.env))
        operators = dict(self._fields["score_operator"]._description_selection(self.env))
        for scenario in self:
            trigger = scenario.trigger_type
            if trigger == "now":
                summary = self.env._("At start")
            elif trigger == "date":
                summary = self.env._(
                    "On %(date)s", date=fields.Datetime.to_string(scenario.trigger_at) if scenario.trigger_at else "?"
                )
            elif trigger == "event":
                summary = scenario.trigger_event_type_id.name or self.env._("On an event")
                if scenario.trigger_params_filter:
                    summary = f"{summary} ({scenario.trigger_params_filter})"
            elif trigger == "repeat":
                hours = int(scenario.repeat_hour or 0)
                minutes = round(((scenario.repeat_hour or 0) - hours) * 60)
                summary = self.env._(
                    "Every %(interval)s %(unit)s at %(time)s",
                    interval=scenario.repeat_interval,
                    unit=units.get(scenario.repeat_unit, "").lower(),
                    time=f"{hours:02d}:{minutes:02d}",
                )
            elif trigger == "score":
                summary = self.env._("Score %(operator)s", operator=operators.get(scenario.score_operator, ""))
                if scenario.score_operator not in ("empty", "not_empty"):
                    summary = f"{summary} {scenario.score_threshold}"
            elif trigger == "segment":
                summary = scenario._segment_trigger_summary()
            else:
                summary = False
            scenario.trigger_summary = summary

    def _compute_statistics(self):
        counts = defaultdict(int)
        for scenario, state, count in self.env["marketing.scenario.participant"]._read_group(
            [("scenario_id", "in", self.ids), ("is_test", "=", False)], ["scenario_id", "state"], ["__count"]
        ):
            counts[scenario.id, state] = count
        objective = self._objective_counts()
        mail_stats = defaultdict(lambda: {"sent": 0, "opened": 0, "clicked": 0})
        for node in self.env["marketing.scenario.node"].search(
            [("scenario_id", "in", self.ids), ("node_type", "=", "email")]
        ):
            for name in ("sent", "opened", "clicked"):
                mail_stats[node.scenario_id.id][name] += node[f"{name}_count"]
        for scenario in self:
            entered = sum(counts[scenario.id, state] for state in ("running", "completed", "exited", "canceled"))
            scenario.entered_count = entered
            scenario.active_count = counts[scenario.id, "running"]
            scenario.completed_count = counts[scenario.id, "completed"]
            scenario.exited_count = counts[scenario.id, "exited"]
            scenario.objective_count = objective.get(scenario.id, 0)
            scenario.conversion_rate = 100.0 * scenario.objective_count / entered if entered else 0.0
            stats = mail_stats[scenario.id]
            scenario.open_rate = 100.0 * stats["opened"] / stats["sent"] if stats["sent"] else 0.0
            scenario.click_rate = 100.0 * stats["clicked"] / stats["sent"] if stats["sent"] else 0.0

    def _objective_counts(self):
        """Entries followed by their objective event within the objective's days, per scenario."""
        return dict(self._query_converted(SQL("p.scenario_id, count(*)"), SQL("GROUP BY p.scenario_id")))

    def _converted_participants(self):
        """[(scenario id, participant id)] of the entries followed by their objective event in time."""
        return self._query_converted(SQL("p.scenario_id, p.id"))

    def _query_converted(self, select, tail=None):
        scenarios = self.filtered(lambda scenario: scenario.id and scenario.objective_event_type_id)
        if not scenarios:
            return []
        self.env["marketing.scenario.participant"].flush_model()
        self.env["marketing.event"].flush_model(["partner_id", "type_id", "occurred_at"])
        self.env.cr.execute(
            SQL(
                """
                SELECT %(select)s
                  FROM marketing_scenario_participant p
                  JOIN marketing_scenario s ON s.id = p.scenario_id
                 WHERE p.scenario_id IN %(ids)s AND NOT p.is_test
                   AND EXISTS (
                        SELECT 1 FROM marketing_event e
                         WHERE e.partner_id = p.partner_id
                           AND e.type_id = s.objective_event_type_id
                           AND e.occurred_at >= p.entered_at
                           AND e.occurred_at <= p.entered_at + make_interval(days => s.objective_days)
                   )
                %(tail)s
                """,
                select=select,
                ids=tuple(scenarios.ids),
                tail=tail or SQL(),
            )
        )
        return self.env.cr.fetchall()

    # ------------------------------------------------------------------
    # Constraints
    # ------------------------------------------------------------------

    @api.constrains("trigger_type", "trigger_event_type_id", "trigger_params_filter")
    def _check_trigger_filter(self):
        for scenario in self:
            if scenario.trigger_type != "event" or not scenario.trigger_params_filter:
                continue
            try:
                parse_params_filter(scenario.trigger_params_filter, scenario.trigger_event_type_id.params_structure)
            except ParamsFilterError as error:
                raise ValidationError(
                    self.env._("Parameters Filter of %(name)s: %(error)s", name=scenario.name, error=error)
                ) from error

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

    @api.constrains("repeat_interval", "objective_days")
    def _check_positive(self):
        for scenario in self:
            if scenario.trigger_type == "repeat" and scenario.repeat_interval < 1:
                raise ValidationError(self.env._("Repeat 'Every' must be at least 1."))
            if scenario.objective_days < 0:
                raise ValidationError(self.env._("Objective days cannot be negative."))

    @api.model_create_multi
    def create(self, vals_list):
        for vals in vals_list:
            self._check_responsible_change(vals)
        return super().create(vals_list)

    def _check_responsible_change(self, vals):
        """Refuse what would make the engine act with rights other than the user's own.

        The nodes' side effects run with the rights of the Responsible: only a
        system administrator gives a scenario to somebody else. The state
        changes only through Start, Pause, Resume and Stop (which write it as
        superuser after their checks), never by a plain write.
        """
        if self.env.su:
            return
        if "state" in vals:
            raise AccessError(self.env._("The state of a scenario changes with its Start, Pause and Stop buttons."))
        user_id = vals.get("user_id")
        if "user_id" in vals and user_id not in (False, self.env.uid) and not self.env.user._is_system():
            raise AccessError(
                self.env._(
                    "Only an administrator may make another user responsible for a scenario: "
                    "its nodes act with the rights of its Responsible."
                )
            )

    def write(self, vals):
        self._check_responsible_change(vals)
        changed_trigger = TRIGGER_FIELDS & set(vals)
        if changed_trigger:
            busy = self.filtered(lambda scenario: scenario.active_count)
            if busy:
                raise UserError(
                    self.env._(
                        "The trigger of %(names)s cannot change while contacts run through it: "
                        "stop the scenario or wait for them to finish.",
                        names=", ".join(busy.mapped("name")),
                    )
                )
        return super().write(vals)

    def copy_data(self, default=None):
        vals_list = super().copy_data(default=default)
        # A copy is its maker's: he answers for what its nodes do.
        responsible = {} if self.env.su or "user_id" in (default or {}) else {"user_id": self.env.uid}
        return [
            dict(vals, name=self.env._("%(name)s (copy)", name=scenario.name), **responsible)
            for scenario, vals in zip(self, vals_list)
        ]

    def copy(self, default=None):
        """Duplicate with the node tree (active nodes, their parents and branches), as a draft."""
        new_scenarios = super().copy(default=default)
        for scenario, new_scenario in zip(self, new_scenarios):
            mapping = {}
            # Parents first, so that each copied node can point at its copied parent.
            pending = scenario.node_ids.sorted(lambda node: (node.sequence, node.id))
            while pending:
                ready = pending.filtered(lambda node, copied=mapping: not node.parent_id or node.parent_id.id in copied)
                if not ready:
                    break  # nodes after an archived node are not copied
                for node in ready:
                    mapping[node.id] = node.copy(
                        {
                            "scenario_id": new_scenario.id,
                            "parent_id": mapping.get(node.parent_id.id, False),
                            "mailing_id": node.mailing_id.sudo().copy().id if node.mailing_id else False,
                        }
                    ).id
                pending -= ready
            for node in scenario.node_ids.filtered("condition_node_id"):
                if node.id in mapping and node.condition_node_id.id in mapping:
                    self.env["marketing.scenario.node"].browse(mapping[node.id]).condition_node_id = mapping[
                        node.condition_node_id.id
                    ]
        return new_scenarios

    def _node_edit_blocker(self):
        """Why the nodes of these scenarios cannot change now, or an empty string when they can."""
        running = self.filtered(lambda scenario: scenario.state == "running")
        if running:
            return self.env._(
                "Pause %(names)s before changing its nodes: contacts are moving through them.",
                names=", ".join(running.mapped("name")),
            )
        return ""

    @api.ondelete(at_uninstall=False)
    def _unlink_except_running(self):
        running = self.filtered(lambda scenario: scenario.state in ("running", "paused"))
        if running:
            raise UserError(
                self.env._(
                    "Stop %(names)s before deleting it: contacts are running through it.",
                    names=", ".join(running.mapped("name")),
                )
            )

    # ------------------------------------------------------------------
    # Lifecycle
    # ------------------------------------------------------------------

    def _check_ready(self):
        """Every problem that prevents starting, as a list of sentences."""
        self.ensure_one()
        problems = []
        if self.trigger_type == "event" and not self.trigger_event_type_id:
            problems.append(self.env._("Trigger: choose the event type that makes contacts enter."))
        if self.trigger_type == "segment" and not self.trigger_segment_id:
            problems.append(self.env._("Trigger: choose the segment whose new members enter."))
        if self.trigger_type == "date" and not self.trigger_at:
            problems.append(self.env._("Trigger: choose the date and time the audience enters."))
        if self.trigger_type == "repeat" and not (self.repeat_interval >= 1 and self.repeat_unit):
            problems.append(self.env._("Trigger: say how often the audience enters."))
        if self.trigger_type == "score" and not self.score_operator:
            problems.append(self.env._("Trigger: choose the score condition."))
        if not self.user_id:
            problems.append(self.env._("Responsible: choose the user whose rights the scenario acts with."))
        elif not self.user_id._is_superuser() and self.company_id not in self.user_id.company_ids:
            problems.append(
                self.env._(
                    "Responsible: %(user)s has no access to the company %(company)s.",
                    user=self.user_id.name,
                    company=self.company_id.name,
                )
            )
        nodes = self.node_ids
        if not nodes:
            problems.append(self.env._("The scenario has no step: add at least one node."))
        for node in nodes.sorted(lambda node: (node.sequence, node.id)):
            problems.extend(f"{node.display_name}: {problem}" for problem in node._configuration_problems())
        return problems

    def action_start(self):
        for scenario in self:
            if scenario.state not in ("draft", "paused", "stopped"):
                continue
            if not self.env.su and scenario.user_id != self.env.user:
                # Whoever starts or resumes a scenario (after editing its nodes,
                # maybe) answers for it: the nodes act with his rights.
                scenario.sudo().user_id = self.env.user
            problems = scenario._check_ready()
            if problems:
                raise UserError(
                    self.env._("%(name)s cannot start:", name=scenario.name) + "\n- " + "\n- ".join(problems)
                )
            now = fields.Datetime.now()
            values = {"state": "running"}
            if scenario.state in ("draft", "stopped"):
                values["started_at"] = now
                values["next_occurrence_at"] = scenario._first_occurrence(now)
                values["enrolling_occurrence_at"] = False
                values["enrolling_after_partner_id"] = 0
            # sudo: the state changes only here, after the checks above (see _check_responsible_change).
            scenario.sudo().write(values)
        self.env.ref("marketing_event_automation.ir_cron_scenario_schedule")._trigger()
        self.env["marketing.scenario.step"]._wake_advance()
        return True

    def action_pause(self):
        # sudo: see action_start.
        self.filtered(lambda scenario: scenario.state == "running").sudo().write({"state": "paused"})
        return True

    def action_resume(self):
        return self.filtered(lambda scenario: scenario.state == "paused").action_start()

    def action_stop(self):
        scenarios = self.filtered(lambda scenario: scenario.state in ("running", "paused"))
        if not scenarios:
            return True
        # sudo: see action_start.
        scenarios.sudo().write(
            {
                "state": "stopped",
                "next_occurrence_at": False,
                "enrolling_occurrence_at": False,
                "enrolling_after_partner_id": 0,
            }
        )
        participants = self.env["marketing.scenario.participant"].search(
            [("scenario_id", "in", scenarios.ids), ("state", "=", "running")]
        )
        participants._finish("canceled", self.env._("Scenario stopped"))
        scenarios._emit_finished("stopped")
        return True

    def _emit_finished_if_done(self):
        """A one-shot run (now, date) is complete once its audience entered and nobody runs any more."""
        candidates = self.filtered(
            lambda scenario: (
                scenario.state == "running"
                and scenario.trigger_type in ("now", "date")
                and not scenario.next_occurrence_at
                and not scenario.enrolling_occurrence_at
            )
        )
        if not candidates:
            return
        busy = {
            scenario.id
            for [scenario] in self.env["marketing.scenario.participant"]._read_group(
                [("scenario_id", "in", candidates.ids), ("state", "=", "running")], ["scenario_id"]
            )
        }
        candidates.filtered(lambda scenario: scenario.id not in busy)._emit_finished("completed")

    def _emit_finished(self, reason):
        """Log the system event 'scenario_finished' once per run, with its participants by state."""
        if not self:
            return
        counts = defaultdict(dict)
        for scenario, state, count in self.env["marketing.scenario.participant"]._read_group(
            [("scenario_id", "in", self.ids), ("is_test", "=", False)], ["scenario_id", "state"], ["__count"]
        ):
            counts[scenario.id][state] = count
        self.env["marketing.event"]._emit(
            "scenario_finished",
            [
                {
                    "company_id": scenario.company_id.id,
                    # One event per run: a run that completes and is stopped afterwards is logged once.
                    "idempotency_key": f"scenario_finished:{scenario.id}:{scenario.started_at or ''}",
                    "params": {
                        "scenario_id": scenario.id,
                        "scenario_name": scenario.name,
                        "reason": reason,
                        "participants": counts[scenario.id],
                    },
                }
                for scenario in self
            ],
        )

    def action_draft(self):
        # sudo: see action_start.
        self.filtered(lambda scenario: scenario.state == "stopped").sudo().write({"state": "draft"})
        return True

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

    # ------------------------------------------------------------------
    # Enrollment
    # ------------------------------------------------------------------

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

    def _policy_sql(self, alias, partner_column, occurrence_at=None):
        """The SQL condition 'this contact may enter now', by the entry policy."""
        existing = SQL(
            "SELECT 1 FROM marketing_scenario_participant x "
            "WHERE x.scenario_id = %s AND x.partner_id = %s AND NOT x.is_test",
            self.id,
            SQL.identifier(alias, partner_column),
        )
        conditions = []
        if self.entry_policy == "once":
            conditions.append(SQL("NOT EXISTS (%s)", existing))
        elif self.entry_policy == "once_at_a_time":
            conditions.append(SQL("NOT EXISTS (%s AND x.state = 'running')", existing))
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

        ``events`` maps partner id -> marketing.event. The entry policy
        applies, except for test runs; the audience applies to all (the test
        run checks its contact against it as the user running it).
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
        events = events or {}
        if isinstance(candidates, list):
            candidates = SQL(
                "SELECT unnest(%s::int[]) AS partner_id",
                candidates,
            )
        policy = SQL("TRUE") if test else self._policy_sql("c", "partner_id", occurrence_at)
        event_values = SQL(", ").join(
            SQL("(%s, %s, %s)", partner_id, event.id, event.type_id.id) for partner_id, event in events.items()
        )
        event_join = (
            SQL(
                "LEFT JOIN (VALUES %s) AS ev (partner_id, event_id, type_id) ON ev.partner_id = c.partner_id",
                event_values,
            )
            if events
            else SQL(
                "LEFT JOIN (SELECT NULL::int AS partner_id, NULL::int AS event_id, NULL::int AS type_id) ev ON FALSE"
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
                        scenario_id, partner_id, company_id, state, entered_at, occurrence_at, is_test,
                        event_id, event_type_id, event_params
                    )
                    SELECT %(scenario)s, c.partner_id, %(company)s, 'running', %(now)s, %(occurrence)s, %(test)s,
                           ev.event_id, ev.type_id, e.params
                      FROM (%(candidates)s) c
                      %(event_join)s
                      LEFT JOIN marketing_event e ON e.id = ev.event_id
                     WHERE %(policy)s
                     ORDER BY c.partner_id
                    RETURNING id, scenario_id, partner_id, company_id, is_test
                ) %(first_steps)s
                SELECT id FROM entered
                """,
                scenario=self.id,
                company=self.company_id.id,
                now=now,
                occurrence=occurrence_at,
                test=bool(test),
                candidates=candidates,
                event_join=event_join,
                policy=policy,
                first_steps=first_steps,
            )
        )
        participant_ids = [row[0] for row in self.env.cr.fetchall()]
        Participant.invalidate_model()
        if participant_ids:
            participants = Participant.browse(participant_ids)
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
    # Crons and event consumption
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
                scenario._enter_from_events(by_segment[scenario.trigger_segment_id.id], results)
            return
        scenarios = self.search([("state", "in", ("running", "paused")), ("exit_on_segment_left", "=", True), *domain])
        if not scenarios:
            return
        participants = self.env["marketing.scenario.participant"].search(
            [
                ("scenario_id", "in", scenarios.ids),
                ("partner_id", "in", events.partner_id.ids),
                ("state", "=", "running"),
                ("is_test", "=", False),
            ]
        )
        leaving = participants.filtered(
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
        # One entry per contact and batch: the first event of the batch wins.
        by_partner = {}
        for event in events.sorted("id"):
            by_partner.setdefault(event.partner_id.id, event)
        participants = self._enroll_partners(list(by_partner), events=by_partner)
        entered = set(participants.mapped("partner_id").ids)
        for partner_id, event in by_partner.items():
            if partner_id in entered:
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
        participants = self.env["marketing.scenario.participant"].search(
            [
                ("scenario_id", "in", scenarios.ids),
                ("partner_id", "in", events.partner_id.ids),
                ("state", "=", "running"),
                ("is_test", "=", False),
            ]
        )
        if not participants:
            return
        events_by_partner = events.grouped("partner_id")
        participants = participants.filtered(
            lambda participant: any(
                participant.scenario_id._reached_by(event) for event in events_by_partner[participant.partner_id]
            )
        )
        if not participants:
            return
        reason = self.env._("Exit event: %(type)s", type=event_type.name)
        participants._finish("exited", reason)
        scenarios_by_partner = defaultdict(set)
        for participant in participants:
            scenarios_by_partner[participant.partner_id.id].add(participant.scenario_id)
        for event in events:
            results[event.id]["exited"].extend(
                sorted(
                    scenario.name
                    for scenario in scenarios_by_partner.get(event.partner_id.id, ())
                    if scenario._reached_by(event)
                )
            )

    # ------------------------------------------------------------------
    # Views
    # ------------------------------------------------------------------

    def _participants_domain(self, which=None):
        """The participants behind one of the counts: entered (None), running, completed, exited, converted."""
        self.ensure_one()
        domain = [("scenario_id", "=", self.id), ("is_test", "=", False)]
        if which in ("running", "completed", "exited", "canceled"):
            domain.append(("state", "=", which))
        elif which == "converted":
            domain.append(
                ("id", "in", [participant_id for _scenario, participant_id in self._converted_participants()])
            )
        elif which:
            raise UserError(self.env._("Unknown participant count: %(which)s", which=which))
        return domain

    def action_view_participants(self):
        """The participants of one count; the count is the context key ``participant_count``."""
        self.ensure_one()
        which = self.env.context.get("participant_count")
        action = self.env["ir.actions.act_window"]._for_xml_id(
            "marketing_event_automation.action_marketing_scenario_participant"
        )
        labels = {
            "running": self.env._("Active"),
            "completed": self.env._("Completed"),
            "exited": self.env._("Exited"),
            "converted": self.env._("Conversions"),
        }
        if which in labels:
            action["name"] = f"{self.name}: {labels[which]}"
        action["domain"] = self._participants_domain(which)
        action["context"] = {"default_scenario_id": self.id}
        return action

    def action_view_participants_graph(self):
        """Entries over time: participants by day of entry, split by state."""
        action = self.action_view_participants()
        action["name"] = self.env._("%(name)s: entries over time", name=self.name)
        action["view_mode"] = "graph,list,form"
        action["views"] = [
            (self.env.ref("marketing_event_automation.marketing_scenario_participant_view_graph").id, "graph"),
            (False, "list"),
            (False, "form"),
        ]
        return action

    def action_choose_objective(self):
        self.ensure_one()
        return {
            "type": "ir.actions.act_window",
            "name": self.env._("What should %(name)s achieve?", name=self.name),
            "res_model": "marketing.scenario.objective.wizard",
            "view_mode": "form",
            "views": [(False, "form")],
            "target": "new",
            "context": {"default_scenario_id": self.id, "default_objective_days": self.objective_days or 7},
        }

    def action_skip_objective(self):
        self.write({"objective_prompt_skipped": True})
        return True

    # Funnel -------------------------------------------------------------

    def _main_path(self):
        """The nodes most contacts went through, from the first node on: at each step the busiest next node."""
        self.ensure_one()
        reached = self._reached_counts()
        path = self.env["marketing.scenario.node"]
        candidates = self.node_ids.filtered(lambda node: not node.parent_id)
        while candidates:
            node = max(candidates.sorted(lambda node: (node.sequence, node.id), reverse=True), key=reached.get)
            path |= node
            candidates = node.child_ids
        return path, reached

    def _reached_counts(self):
        """{node: number of real participants that reached it}."""
        counts = defaultdict(int)
        # By node (archived ones too), which the steps' (node, state) index serves.
        nodes = self.with_context(active_test=False).node_ids
        for node, count in self.env["marketing.scenario.step"]._read_group(
            [("node_id", "in", nodes.ids), ("is_test", "=", False)],
            ["node_id"],
            ["participant_id:count_distinct"],
        ):
            counts[node] = count
        for node in self.node_ids:
            counts.setdefault(node, 0)
        return counts

    def _funnel_data(self):
        """Two funnels: the main path (entered, then each node reached) and the emails (sent, opened,
        clicked, then converted). Each row: label, count and its share of the funnel's first row."""
        self.ensure_one()

        def rows(pairs):
            first = pairs[0][1] if pairs else 0
            return [
                {"label": label, "count": count, "rate": round(100.0 * count / first, 1) if first else 0.0}
                for label, count in pairs
            ]

        path, reached = self._main_path()
        path_pairs = [(self.env._("Entered"), self.entered_count)]
        path_pairs += [(node.display_name, reached[node]) for node in path]
        emails = self.node_ids.filtered(lambda node: node.node_type == "email")
        email_pairs = [
            (self.env._("Emails sent"), sum(emails.mapped("sent_count"))),
            (self.env._("Opened"), sum(emails.mapped("opened_count"))),
            (self.env._("Clicked"), sum(emails.mapped("clicked_count"))),
        ]
        if self.objective_event_type_id:
            email_pairs.append(
                (
                    self.env._("Converted (%(objective)s)", objective=self.objective_event_type_id.name),
                    self.objective_count,
                )
            )
        return {"path": rows(path_pairs), "email": rows(email_pairs) if emails else []}

    def _compute_funnel_html(self):
        for scenario in self:
            if not scenario.id:
                scenario.funnel_html = False
                continue
            scenario.funnel_html = self.env["ir.qweb"]._render(
                "marketing_event_automation.scenario_funnel", {"funnel": scenario._funnel_data()}
            )

    def action_view_nodes(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id(
            "marketing_event_automation.action_marketing_scenario_node"
        )
        action["domain"] = [("scenario_id", "=", self.id)]
        action["context"] = {"default_scenario_id": self.id}
        return action

    def action_open_templates(self):
        # A header button of the kanban and list: called on the selected scenarios, or none.
        return self.env["ir.actions.act_window"]._for_xml_id(
            "marketing_event_automation.action_marketing_scenario_template"
        )

    def action_test_run(self):
        self.ensure_one()
        return {
            "type": "ir.actions.act_window",
            "name": self.env._("Test Run: %(name)s", name=self.name),
            "res_model": "marketing.scenario.test.wizard",
            "view_mode": "form",
            "target": "new",
            "context": {"default_scenario_id": self.id},
        }

    # ------------------------------------------------------------------
    # Flow canvas
    # ------------------------------------------------------------------

    def get_flow_data(self):
        """Everything the flow canvas of the form draws, in one call: the trigger and every node with its statistics.

        The number of queries does not grow with the number of nodes: the
        nodes' statistics, related records and branch counts are read in batch.
        """
        self.ensure_one()
        self.check_access("read")
        nodes = (
            self.env["marketing.scenario.node"]
            .with_context(active_test=False)
            .search([("scenario_id", "=", self.id)], order="sequence, id")
        )
        # The nodes first: their statistics are computed for the whole tree at once. The scenario's own
        # statistics read those of its email nodes, which would otherwise be computed for them alone,
        # then for their previous nodes (drop-off), and so on, one batch per level.
        cards = nodes._flow_cards()
        blocker = self._node_edit_blocker()
        states = dict(self._fields["state"]._description_selection(self.env))
        return {
            "scenario": {"id": self.id, "name": self.name, "state": self.state, "state_label": states[self.state]},
            "can_edit": not blocker and self.has_access("write") and nodes.has_access("write"),
            "locked_reason": blocker,
            "trigger": self._flow_trigger(),
            "nodes": cards,
        }

    def _flow_trigger(self):
        trigger_type = self.trigger_type
        labels = dict(self._fields["trigger_type"]._description_selection(self.env))
        details = []
        if trigger_type == "event":
            summary = self.trigger_event_type_id.name or self.env._("Choose the event type")
            if self.trigger_params_filter:
                details.append(self.trigger_params_filter)
        elif trigger_type == "date":
            summary = (
                format_datetime(self.env, self.trigger_at, tz=self.timezone, dt_format="short")
                if self.trigger_at
                else self.env._("Choose the date")
            )
        elif trigger_type == "repeat":
            units = dict(self._fields["repeat_unit"]._description_selection(self.env))
            hours, minutes = divmod(round((self.repeat_hour or 0) * 60), 60)
            summary = self.env._(
                "Every %(interval)s %(unit)s at %(time)s (%(tz)s)",
                interval=self.repeat_interval,
                unit=units.get(self.repeat_unit, "").lower(),
                time=f"{hours:02d}:{minutes:02d}",
                tz=self.timezone,
            )
            if self.repeat_start or self.repeat_until:
                details.append(
                    self.env._(
                        "From %(start)s until %(until)s",
                        start=format_date(self.env, self.repeat_start) if self.repeat_start else self.env._("today"),
                        until=format_date(self.env, self.repeat_until)
                        if self.repeat_until
                        else self.env._("further notice"),
                    )
                )
        elif trigger_type == "score":
            operators = dict(self._fields["score_operator"]._description_selection(self.env))
            summary = self.env._("Score %(operator)s", operator=operators.get(self.score_operator, ""))
            if self.score_operator not in ("empty", "not_empty"):
                summary = f"{summary} {self.score_threshold}"
        elif trigger_type == "segment":
            summary = self._segment_trigger_summary()
            if self.exit_on_segment_left:
                details.append(self.env._("Exits when leaving the segment"))
        else:
            summary = self.env._("The audience enters when the scenario starts")
        policies = dict(self._fields["entry_policy"]._description_selection(self.env))
        details.append(self.env._("Entry: %(policy)s", policy=policies[self.entry_policy]))
        if self.audience_domain and self.audience_domain.strip() != "[]":
            details.append(self.env._("Audience filtered"))
        if self.exit_event_type_ids:
            details.append(self.env._("Exits on %(events)s", events=", ".join(self.exit_event_type_ids.mapped("name"))))
        stats = [
            {"name": "entered", "label": self.env._("Entered"), "value": self.entered_count},
            {"name": "active", "label": self.env._("In progress"), "value": self.active_count},
            {"name": "completed", "label": self.env._("Completed"), "value": self.completed_count},
            {"name": "exited", "label": self.env._("Exited"), "value": self.exited_count},
        ]
        if self.objective_event_type_id:
            stats.append({"name": "objective", "label": self.env._("Conversions"), "value": self.objective_count})
        return {
            "type": trigger_type,
            "label": labels[trigger_type],
            "icon": TRIGGER_ICONS.get(trigger_type, "fa-play"),
            "summary": summary,
            "details": details,
            "stats": stats,
        }
