from collections import defaultdict

from odoo import fields
from odoo import models
from odoo.exceptions import UserError
from odoo.tools import SQL
from odoo.tools import format_date
from odoo.tools import format_datetime

from ..utils.constants import PARTICIPANT_STATES
from ..utils.formatting import format_hour
from ..utils.formatting import format_score_condition

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

    # ------------------------------------------------------------------
    # Counts and drill-down
    # ------------------------------------------------------------------

    def _compute_statistics(self):
        counts = defaultdict(int)
        for scenario, state, count in self.env["marketing.scenario.participant"]._read_group(
            [("scenario_id", "in", self.ids), ("is_test", "=", False)], ["scenario_id", "state"], ["__count"]
        ):
            counts[scenario.id, state] = count
        for key, count in self._purged_participant_counts().items():
            counts[key] += count
        objective = self._objective_counts()
        mail_stats = defaultdict(lambda: {"sent": 0, "opened": 0, "clicked": 0})
        for node in self.env["marketing.scenario.node"].search(
            [("scenario_id", "in", self.ids), ("node_type", "=", "email")]
        ):
            for name in ("sent", "opened", "clicked"):
                mail_stats[node.scenario_id.id][name] += node[f"{name}_count"]
        for scenario in self:
            entered = sum(counts[scenario.id, state] for state, _label in PARTICIPANT_STATES)
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
        counts = defaultdict(int, self._query_converted(SQL("p.scenario_id, count(*)"), SQL("GROUP BY p.scenario_id")))
        for (scenario_id, _detail), count in self._purged_objective_counts().items():
            counts[scenario_id] += count
        return dict(counts)

    # Figures of the purged runs, kept per day (marketing.scenario.daily) -----

    def _purged_participant_counts(self):
        """{(scenario id, final state): participants} of the runs the retention purge deleted."""
        return self.env["marketing.scenario.daily"]._scenario_totals("participant_state", self.ids)

    def _purged_objective_counts(self):
        """{(scenario id, ""): participants} of the purged runs that reached their objective in time."""
        scenarios = self.filtered(lambda scenario: scenario.id and scenario.objective_event_type_id)
        return self.env["marketing.scenario.daily"]._scenario_totals("converted", scenarios.ids)

    def _purged_reached_counts(self, nodes):
        """{(node id, ""): participants} of the purged runs that reached each of ``nodes``."""
        return self.env["marketing.scenario.daily"]._node_totals("reached", nodes.ids)

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
