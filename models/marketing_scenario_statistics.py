from collections import defaultdict

from odoo import api
from odoo import fields
from odoo import models
from odoo.exceptions import UserError
from odoo.tools import SQL
from odoo.tools import format_amount
from odoo.tools import format_date
from odoo.tools import format_datetime

from ..utils.constants import PARTICIPANT_STATES
from ..utils.formatting import format_hour
from ..utils.formatting import format_score_condition
from ..utils.lift import conversion_lift
from ..utils.trace_status import trace_status_sql

TRIGGER_ICONS = {
    "now": "fa-play",
    "date": "fa-calendar",
    "event": "fa-bolt",
    "repeat": "fa-repeat",
    "score": "fa-star",
    "segment": "fa-users",
}


class MarketingScenario(models.Model):
    """What a scenario shows of its runs: counts, conversions, the funnel and the data of the flow canvas."""

    _inherit = "marketing.scenario"

    # Statistics (test runs excluded)
    entered_count = fields.Integer(string="Entered", compute="_compute_statistics")
    active_count = fields.Integer(string="In Progress", compute="_compute_statistics")
    completed_count = fields.Integer(string="Completed", compute="_compute_statistics")
    exited_count = fields.Integer(string="Exited", compute="_compute_statistics")
    objective_count = fields.Integer(string="Conversions", compute="_compute_statistics")
    conversion_rate = fields.Float(compute="_compute_statistics", help="Share of entries that reached the objective.")
    open_rate = fields.Float(compute="_compute_statistics")
    click_rate = fields.Float(string="Click-through Rate", compute="_compute_statistics")
    funnel_html = fields.Html(string="Funnel", compute="_compute_funnel_html", sanitize=False)

    # Holdout: the treated entrants against the control group
    control_count = fields.Integer(string="Control Group", compute="_compute_statistics")
    treated_count = fields.Integer(string="Treated", compute="_compute_statistics")
    treated_conversion_rate = fields.Float(
        string="Treated Conversion (%)", compute="_compute_statistics", digits=(16, 2)
    )
    control_conversion_rate = fields.Float(
        string="Control Conversion (%)", compute="_compute_statistics", digits=(16, 2)
    )
    lift_points = fields.Float(
        string="Lift (points)",
        compute="_compute_statistics",
        digits=(16, 2),
        help="Treated conversion minus control conversion, in percentage points.",
    )
    lift_relative = fields.Float(
        string="Relative Lift (%)",
        compute="_compute_statistics",
        digits=(16, 1),
        help="The lift as a share of the control group's conversion (empty while the control group never converted).",
    )
    lift_low = fields.Float(string="Lift 95% CI Low (points)", compute="_compute_statistics", digits=(16, 2))
    lift_high = fields.Float(string="Lift 95% CI High (points)", compute="_compute_statistics", digits=(16, 2))
    lift_status = fields.Selection(
        [
            ("no_data", "No data yet"),
            ("too_small", "Sample too small"),
            ("not_significant", "Not significant yet"),
            ("significant", "Significant"),
        ],
        compute="_compute_statistics",
    )
    lift_summary = fields.Char(string="Lift", compute="_compute_statistics")

    # Money, in the company's currency
    currency_id = fields.Many2one(related="company_id.currency_id", string="Currency")
    revenue = fields.Monetary(
        compute="_compute_statistics", help="Sum of the values of the objective events that converted the entrants."
    )
    revenue_per_entrant = fields.Monetary(compute="_compute_statistics")
    treated_revenue_per_entrant = fields.Monetary(string="Revenue per Treated Entrant", compute="_compute_statistics")
    control_revenue_per_entrant = fields.Monetary(string="Revenue per Control Entrant", compute="_compute_statistics")
    incremental_revenue = fields.Monetary(
        compute="_compute_statistics",
        help="What the treated entrants brought beyond what they would have at the control group's revenue "
        "per entrant.",
    )

    # ------------------------------------------------------------------
    # Aggregates: each statistic is one SQL aggregate over the participants
    # or the steps, in a method of its own.
    # ------------------------------------------------------------------

    def _participant_figures(self):
        """{scenario id: {(is_control, state): (entrants, conversions, conversion value)}} of the real runs."""
        ids = [scenario_id for scenario_id in self.ids if scenario_id]
        figures = defaultdict(dict)
        if not ids:
            return figures
        self.env["marketing.scenario.participant"].flush_model(
            ["scenario_id", "state", "is_test", "is_control", "converted_at", "conversion_value"]
        )
        self.env.cr.execute(
            SQL(
                """
                SELECT scenario_id, is_control IS TRUE, state, count(*), count(converted_at),
                       COALESCE(sum(conversion_value), 0)
                  FROM marketing_scenario_participant
                 WHERE scenario_id IN %s AND is_test IS NOT TRUE
                 GROUP BY 1, 2, 3
                """,
                tuple(ids),
            )
        )
        for scenario_id, is_control, state, entrants, conversions, value in self.env.cr.fetchall():
            figures[scenario_id][is_control, state] = (entrants, conversions, value)
        self._add_purged_participant_figures(figures)
        return figures

    # Figures of the purged runs, kept per day (marketing.scenario.daily) -----

    def _add_purged_participant_figures(self, figures):
        """Add the runs the retention purge deleted to ``figures`` (as ``_participant_figures`` gives them).

        Their conversions are counted under the final state "converted" of
        the day rows, not under a run state: the totals by state and the
        conversion totals are read from separate measures.
        """
        Daily = self.env["marketing.scenario.daily"]
        for (scenario_id, detail), count in Daily._scenario_totals("participant_state", self.ids).items():
            is_control = detail.startswith("control:")
            state = detail.removeprefix("control:")
            entrants, conversions, value = figures[scenario_id].get((is_control, state), (0, 0, 0.0))
            figures[scenario_id][is_control, state] = (entrants + count, conversions, value)
        for (scenario_id, detail), (count, value) in Daily._scenario_conversion_totals(self.ids).items():
            key = (detail == "control", "purged_conversions")
            entrants, conversions, total_value = figures[scenario_id].get(key, (0, 0, 0.0))
            figures[scenario_id][key] = (entrants, conversions + count, total_value + value)

    def _purged_reached_counts(self, nodes):
        """{(node id, ""): participants} of the purged runs that reached each of ``nodes``."""
        return self.env["marketing.scenario.daily"]._node_totals("reached", nodes.ids)

    def _email_figures(self):
        """{scenario id: {"sent", "opened", "clicked"}} over the scenarios' email nodes."""
        mail_stats = defaultdict(lambda: {"sent": 0, "opened": 0, "clicked": 0})
        for node in self.env["marketing.scenario.node"].search(
            [("scenario_id", "in", self.ids), ("node_type", "=", "email")]
        ):
            for name in ("sent", "opened", "clicked"):
                mail_stats[node.scenario_id.id][name] += node[f"{name}_count"]
        return mail_stats

    def _compute_statistics(self):
        figures = self._participant_figures()
        mail_stats = self._email_figures()
        lift_labels = dict(self._fields["lift_status"]._description_selection(self.env))
        for scenario in self:
            by_group = figures.get(scenario.id, {})

            def total(control=None, state=None, column=0, by_group=by_group):
                return sum(
                    values[column]
                    for (is_control, row_state), values in by_group.items()
                    if (control is None or is_control == control) and (state is None or row_state == state)
                )

            entered = total()
            scenario.entered_count = entered
            scenario.active_count = total(state="running")
            scenario.completed_count = total(state="completed")
            scenario.exited_count = total(state="exited")
            scenario.objective_count = total(column=1) if scenario.objective_event_type_id else 0
            scenario.conversion_rate = 100.0 * scenario.objective_count / entered if entered else 0.0
            stats = mail_stats[scenario.id]
            scenario.open_rate = 100.0 * stats["opened"] / stats["sent"] if stats["sent"] else 0.0
            scenario.click_rate = 100.0 * stats["clicked"] / stats["sent"] if stats["sent"] else 0.0

            treated, control = total(control=False), total(control=True)
            treated_conversions, control_conversions = total(control=False, column=1), total(control=True, column=1)
            treated_value, control_value = total(control=False, column=2), total(control=True, column=2)
            scenario.treated_count, scenario.control_count = treated, control
            lift = conversion_lift(treated_conversions, treated, control_conversions, control)
            scenario.treated_conversion_rate = 100.0 * lift.treated_rate
            scenario.control_conversion_rate = 100.0 * lift.control_rate
            scenario.lift_points = 100.0 * lift.absolute
            scenario.lift_relative = 100.0 * lift.relative if lift.relative is not None else False
            scenario.lift_low, scenario.lift_high = 100.0 * lift.low, 100.0 * lift.high
            scenario.lift_status = lift.status
            scenario.lift_summary = scenario._lift_sentence(lift, lift_labels) if control else False

            scenario.revenue = treated_value + control_value if scenario.objective_event_type_id else 0.0
            scenario.revenue_per_entrant = scenario.revenue / entered if entered else 0.0
            scenario.treated_revenue_per_entrant = treated_value / treated if treated else 0.0
            scenario.control_revenue_per_entrant = control_value / control if control else 0.0
            scenario.incremental_revenue = (
                (scenario.treated_revenue_per_entrant - scenario.control_revenue_per_entrant) * treated
                if treated and control
                else 0.0
            )

    def _lift_sentence(self, lift, labels):
        """The lift as a marketer reads it: figures, interval and whether the difference can be trusted yet."""
        if lift.status == "no_data":
            return labels["no_data"]
        figures = {
            "treated": f"{100 * lift.treated_rate:.1f}",
            "control": f"{100 * lift.control_rate:.1f}",
            "lift": f"{100 * lift.absolute:+.1f}",
            "low": f"{100 * lift.low:+.1f}",
            "high": f"{100 * lift.high:+.1f}",
            "verdict": labels[lift.status],
        }
        return self.env._(
            "%(treated)s %% treated vs %(control)s %% control: %(lift)s points (95 %% CI %(low)s to %(high)s)"
            " · %(verdict)s",
            **figures,
        )

    def _converted_participants(self):
        """[(scenario id, participant id)] of the real entries that reached their objective in time."""
        scenarios = self.filtered(lambda scenario: scenario.id and scenario.objective_event_type_id)
        if not scenarios:
            return []
        self.env["marketing.scenario.participant"].flush_model(["scenario_id", "is_test", "converted_at"])
        self.env.cr.execute(
            SQL(
                "SELECT scenario_id, id FROM marketing_scenario_participant"
                " WHERE scenario_id IN %s AND is_test IS NOT TRUE AND converted_at IS NOT NULL",
                tuple(scenarios.ids),
            )
        )
        return self.env.cr.fetchall()

    @api.model
    def _node_revenue_figures(self, node_ids):
        """{node id: (contacts the node ran for, their conversions' value)} of the real runs."""
        if not node_ids:
            return {}
        self.env["marketing.scenario.step"].flush_model(["node_id", "participant_id", "state", "is_test"])
        self.env["marketing.scenario.participant"].flush_model(["conversion_value"])
        self.env.cr.execute(
            SQL(
                """
                SELECT s.node_id, count(*), COALESCE(sum(p.conversion_value), 0)
                  FROM marketing_scenario_step s
                  JOIN marketing_scenario_participant p ON p.id = s.participant_id
                 WHERE s.node_id IN %s AND s.state = 'done' AND NOT s.is_test
                 GROUP BY s.node_id
                """,
                tuple(node_ids),
            )
        )
        return {node_id: (count, value) for node_id, count, value in self.env.cr.fetchall()}

    @api.model
    def _split_arm_figures(self, split):
        """{arm node id: {"entrants", "conversions", "sent", "opened", "clicked"}} of a split's real runs.

        Entrants are the contacts the split sent down each arm; the messages
        are those of the email and SMS nodes after the arm.
        """
        arms = split._split_arms()
        figures = {arm.id: dict.fromkeys(("entrants", "conversions", "sent", "opened", "clicked"), 0) for arm in arms}
        if not arms:
            return figures
        Step = self.env["marketing.scenario.step"]
        Step.flush_model(["node_id", "participant_id", "arm_node_id", "state", "is_test", "trace_id"])
        self.env["marketing.scenario.participant"].flush_model(["converted_at"])
        self.env["mailing.trace"].flush_model()
        self.env.cr.execute(
            SQL(
                """
                SELECT s.arm_node_id, count(*), count(p.converted_at)
                  FROM marketing_scenario_step s
                  JOIN marketing_scenario_participant p ON p.id = s.participant_id
                 WHERE s.node_id = %s AND s.state = 'done' AND NOT s.is_test AND s.arm_node_id IS NOT NULL
                 GROUP BY s.arm_node_id
                """,
                split.id,
            )
        )
        for arm_id, entrants, conversions in self.env.cr.fetchall():
            if arm_id in figures:
                figures[arm_id].update(entrants=entrants, conversions=conversions)
        messages = (
            self.env["marketing.scenario.node"]
            .with_context(active_test=False)
            .search([("id", "child_of", arms.ids), ("node_type", "in", ("email", "sms"))])
        )
        if messages:
            self.env.cr.execute(
                SQL(
                    """
                    SELECT split_step.arm_node_id, %s
                      FROM marketing_scenario_step split_step
                      JOIN marketing_scenario_step s ON s.participant_id = split_step.participant_id
                      JOIN mailing_trace t ON t.id = s.trace_id
                     WHERE split_step.node_id = %s AND split_step.state = 'done' AND NOT split_step.is_test
                       AND s.node_id IN %s
                     GROUP BY split_step.arm_node_id
                    """,
                    SQL(", ").join(
                        SQL("count(*) FILTER (WHERE %s)", trace_status_sql(status))
                        for status in ("sent", "opened", "clicked")
                    ),
                    split.id,
                    tuple(messages.ids),
                )
            )
            for arm_id, sent, opened, clicked in self.env.cr.fetchall():
                if arm_id in figures:
                    figures[arm_id].update(sent=sent, opened=opened, clicked=clicked)
        return figures

    # ------------------------------------------------------------------
    # Conversions: stored on the participants when the objective event comes
    # ------------------------------------------------------------------

    @api.model
    def _record_conversions(self, events):
        """Mark the runs these events (of one type) convert: the first objective event within the objective's days.

        One statement finds the runs of every scenario whose objective is the
        type, one stores them with their value: a batch costs the same
        whatever its size and however many scenarios it converts.
        """
        event_type = events.type_id
        events = events.filtered("partner_id")
        if len(event_type) != 1 or not events:
            return
        self.flush_model(["objective_event_type_id", "objective_days", "company_id"])
        self.env["marketing.scenario.participant"].flush_model()
        self.env.cr.execute(
            SQL(
                """
                SELECT DISTINCT ON (p.id) p.id, p.company_id, v.event_id, v.occurred_at
                  FROM unnest(%(partners)s::int[], %(events)s::int[], %(moments)s::timestamp[], %(companies)s::int[])
                       AS v (partner_id, event_id, occurred_at, company_id)
                  JOIN marketing_scenario s ON s.objective_event_type_id = %(type)s
                  JOIN marketing_scenario_participant p ON p.scenario_id = s.id AND p.partner_id = v.partner_id
                 WHERE p.is_test IS NOT TRUE
                   AND (v.company_id IS NULL OR v.company_id = s.company_id)
                   AND v.occurred_at >= p.entered_at
                   AND v.occurred_at <= p.entered_at + make_interval(days => s.objective_days)
                   AND (p.converted_at IS NULL OR p.converted_at > v.occurred_at)
                 ORDER BY p.id, v.occurred_at, v.event_id
                """,
                partners=[event.partner_id.id for event in events],
                events=events.ids,
                moments=[event.occurred_at for event in events],
                companies=[event.company_id.id or None for event in events],
                type=event_type.id,
            )
        )
        self._store_conversions(event_type, self.env.cr.fetchall())

    def _recompute_conversions(self):
        """Find the conversions of these scenarios' runs again from the events, after their objective changed."""
        scenarios = self.filtered("id")
        if not scenarios:
            return
        self.flush_model(["objective_event_type_id", "objective_days", "company_id"])
        Participant = self.env["marketing.scenario.participant"]
        Participant.flush_model()
        self.env["marketing.event"].flush_model(["partner_id", "type_id", "occurred_at", "company_id", "state"])
        self.env.cr.execute(
            SQL(
                """
                UPDATE marketing_scenario_participant
                   SET converted_at = NULL, conversion_value = NULL
                 WHERE scenario_id IN %s AND converted_at IS NOT NULL
                """,
                tuple(scenarios.ids),
            )
        )
        Participant.invalidate_model(["converted_at", "conversion_value"])
        for event_type, type_scenarios in (
            scenarios.filtered("objective_event_type_id").grouped("objective_event_type_id").items()
        ):
            self.env.cr.execute(
                SQL(
                    """
                    SELECT DISTINCT ON (p.id) p.id, p.company_id, e.id, e.occurred_at
                      FROM marketing_scenario_participant p
                      JOIN marketing_scenario s ON s.id = p.scenario_id
                      JOIN marketing_event e ON e.partner_id = p.partner_id AND e.type_id = %(type)s
                     WHERE p.scenario_id IN %(ids)s AND p.is_test IS NOT TRUE AND e.state != 'rejected'
                       AND (e.company_id IS NULL OR e.company_id = s.company_id)
                       AND e.occurred_at >= p.entered_at
                       AND e.occurred_at <= p.entered_at + make_interval(days => s.objective_days)
                     ORDER BY p.id, e.occurred_at, e.id
                    """,
                    type=event_type.id,
                    ids=tuple(type_scenarios.ids),
                )
            )
            self._store_conversions(event_type, self.env.cr.fetchall())

    @api.model
    def _store_conversions(self, event_type, rows):
        """Store ``rows`` of (participant id, company id, event id, occurred at) with each event's value."""
        if not rows:
            return
        events = self.env["marketing.event"].browse({event_id for _p, _c, event_id, _at in rows})
        amounts = event_type._event_amounts(events)
        companies = self.env["res.company"].browse({company_id for _p, company_id, _e, _at in rows})
        currencies = {company.id: company.currency_id for company in companies}
        by_event = {event.id: amount for event, amount in amounts.items()}
        requests = []
        for participant_id, company_id, event_id, occurred_at in rows:
            if event_id in by_event:
                amount, currency, company = by_event[event_id]
                requests.append((participant_id, amount, currency, currencies[company_id], company, occurred_at))
        values = self.env["marketing.event.type"]._convert_amounts(requests)
        Participant = self.env["marketing.scenario.participant"]
        self.env.cr.execute(
            SQL(
                """
                UPDATE marketing_scenario_participant p
                   SET converted_at = v.occurred_at, conversion_value = v.value
                  FROM unnest(%s::int[], %s::timestamp[], %s::numeric[]) AS v (id, occurred_at, value)
                 WHERE p.id = v.id
                """,
                [row[0] for row in rows],
                [row[3] for row in rows],
                [values.get(row[0]) for row in rows],
            )
        )
        Participant.invalidate_model(["converted_at", "conversion_value"])

    def write(self, vals):
        objective_changed = self.filtered(
            lambda scenario: (
                (
                    "objective_event_type_id" in vals
                    and scenario.objective_event_type_id.id != vals["objective_event_type_id"]
                )
                or ("objective_days" in vals and scenario.objective_days != vals["objective_days"])
            )
        )
        result = super().write(vals)
        objective_changed._recompute_conversions()
        return result

    def _participants_domain(self, which=None):
        """The participants behind one of the counts: entered (None), running, completed, exited, converted."""
        self.ensure_one()
        domain = [("scenario_id", "=", self.id), ("is_test", "=", False)]
        if which in dict(PARTICIPANT_STATES):
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

    # ------------------------------------------------------------------
    # Funnel
    # ------------------------------------------------------------------

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
        for (node_id, _detail), count in self._purged_reached_counts(nodes).items():
            counts[nodes.browse(node_id)] += count
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
            if self.correlation_param:
                details.append(self.env._("One run per %(param)s", param=self.correlation_param))
        elif trigger_type == "date":
            summary = (
                format_datetime(self.env, self.trigger_at, tz=self.timezone, dt_format="short")
                if self.trigger_at
                else self.env._("Choose the date")
            )
        elif trigger_type == "repeat":
            units = dict(self._fields["repeat_unit"]._description_selection(self.env))
            summary = self.env._(
                "Every %(interval)s %(unit)s at %(time)s (%(tz)s)",
                interval=self.repeat_interval,
                unit=units.get(self.repeat_unit, "").lower(),
                time=format_hour(self.repeat_hour),
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
            summary = format_score_condition(self.env, operators, self.score_operator, self.score_threshold)
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
        if self.exit_on_objective and self.objective_event_type_id:
            details.append(
                self.env._("Exits on reaching the objective (%(event)s)", event=self.objective_event_type_id.name)
            )
        stats = [
            {"name": "entered", "label": self.env._("Entered"), "value": self.entered_count},
            {"name": "active", "label": self.env._("In progress"), "value": self.active_count},
            {"name": "completed", "label": self.env._("Completed"), "value": self.completed_count},
            {"name": "exited", "label": self.env._("Exited"), "value": self.exited_count},
        ]
        if self.objective_event_type_id:
            stats.append({"name": "objective", "label": self.env._("Conversions"), "value": self.objective_count})
            if self.revenue:
                stats.append(
                    {
                        "name": "revenue",
                        "label": self.env._("Revenue"),
                        "value": format_amount(self.env, self.revenue, self.currency_id),
                    }
                )
        if self.control_group_percent or self.control_count:
            if self.control_group_percent:
                details.append(self.env._("Control group: %(percent)s %% held out", percent=self.control_group_percent))
            stats.append({"name": "control", "label": self.env._("Control group"), "value": self.control_count})
            if self.objective_event_type_id and self.lift_status != "no_data":
                points = f"{self.lift_points:+.1f}"
                stats.append(
                    {
                        "name": "lift",
                        "label": self.env._("Lift"),
                        "value": self.env._("%(points)s pts", points=points),
                    }
                )
                details.append(self.lift_summary)
        return {
            "type": trigger_type,
            "label": labels[trigger_type],
            "icon": TRIGGER_ICONS.get(trigger_type, "fa-play"),
            "summary": summary,
            "details": details,
            "stats": stats,
        }
