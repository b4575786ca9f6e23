import json
from collections import defaultdict

import pytz

from odoo import api
from odoo import fields
from odoo import models
from odoo.exceptions import AccessError
from odoo.exceptions import UserError
from odoo.exceptions import ValidationError

from ..utils.formatting import format_hour
from ..utils.formatting import format_score_condition
from ..utils.params_filter import ParamsFilterError
from ..utils.params_filter import parse_params_filter
from ..utils.scores import SCORE_OPERATORS

TRIGGER_TYPES = [
    ("now", "Now"),
    ("date", "On date"),
    ("event", "On event"),
    ("repeat", "Repeat"),
    ("score", "Engagement score"),
    ("segment", "Enters a segment"),
]
ENTRY_POLICIES = [
    ("once", "Once ever"),
    ("once_at_a_time", "Once at a time"),
    ("every_time", "Every time"),
]
CAPPED_MESSAGE_POLICIES = [("delay", "Delay it"), ("skip", "Skip it")]
REPEAT_UNITS = [("hours", "Hours"), ("days", "Days"), ("weeks", "Weeks"), ("months", "Months")]
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
    "correlation_param",
}
# The JSON types a correlation parameter may have: what names one cart or order.
CORRELATION_TYPES = ("string", "integer", "number")


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
    correlation_param = fields.Char(
        string="One Run Per",
        help="A parameter of the trigger event (cart_id, order_id): each of its values runs through the scenario "
        "on its own. The entry policy applies per value, and exit events, waits for an event and the objective "
        "only take the run whose value they carry.",
    )
    correlation_param_choices = fields.Char(string="Known Parameters", compute="_compute_correlation_param_choices")
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
    capped_message_policy = fields.Selection(
        CAPPED_MESSAGE_POLICIES,
        string="Capped Messages",
        required=True,
        default="delay",
        help="What happens to a message over the company's frequency cap (Settings): it waits for the next "
        "allowed moment, or it is skipped and the contact goes on. The reason is on the step.",
    )
    objective_event_type_id = fields.Many2one(
        "marketing.event.type",
        string="Objective",
        ondelete="set null",
        domain=[("scope", "=", "contact")],
        help="The event the scenario tries to cause, e.g. a purchase.",
    )
    objective_days = fields.Integer(string="Objective Within (days)", default=7)
    exit_on_objective = fields.Boolean(
        string="Exit on Objective",
        help="A contact who reaches the objective leaves the scenario at once: no more reminders.",
    )
    objective_prompt_skipped = fields.Boolean(
        copy=False, help="The marketer chose to go on without an objective: the form stops asking for one."
    )
    template_id = fields.Many2one(
        "marketing.scenario.template", ondelete="set null", readonly=True, index="btree_not_null"
    )

    started_at = fields.Datetime(readonly=True, copy=False)

    node_ids = fields.One2many("marketing.scenario.node", "scenario_id", string="Nodes")
    participant_ids = fields.One2many("marketing.scenario.participant", "scenario_id", string="Participants")

    node_count = fields.Integer(compute="_compute_node_count")
    trigger_summary = fields.Char(string="Starts When", compute="_compute_trigger_summary")

    # ------------------------------------------------------------------
    # Settings
    # ------------------------------------------------------------------

    @api.depends("node_ids")
    def _compute_node_count(self):
        counts = dict(
            self.env["marketing.scenario.node"]._read_group(
                [("scenario_id", "in", self.ids)], ["scenario_id"], ["__count"]
            )
        )
        for scenario in self:
            scenario.node_count = counts.get(scenario, 0)

    @api.depends(*sorted(TRIGGER_FIELDS))
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
                summary = self.env._(
                    "Every %(interval)s %(unit)s at %(time)s",
                    interval=scenario.repeat_interval,
                    unit=units.get(scenario.repeat_unit, "").lower(),
                    time=format_hour(scenario.repeat_hour),
                )
            elif trigger == "score":
                summary = format_score_condition(self.env, operators, scenario.score_operator, scenario.score_threshold)
            elif trigger == "segment":
                summary = scenario._segment_trigger_summary()
            else:
                summary = False
            scenario.trigger_summary = summary

    @api.depends("trigger_event_type_id.params_structure", "trigger_event_type_id.params_schema")
    def _compute_correlation_param_choices(self):
        for scenario in self:
            scenario.correlation_param_choices = ", ".join(scenario._correlation_param_candidates())

    def _correlation_param_candidates(self):
        """The parameters of the trigger event type that can name a run: its scalar ones, learned or declared."""
        event_type = self.trigger_event_type_id
        candidates = {
            path
            for path, json_type in (event_type.params_structure or {}).items()
            if "[]" not in path and json_type in CORRELATION_TYPES
        }
        try:
            schema = json.loads(event_type.params_schema or "{}")
        except ValueError:
            schema = {}
        properties = schema.get("properties") if isinstance(schema, dict) else None
        for name, definition in (properties if isinstance(properties, dict) else {}).items():
            declared = definition.get("type") if isinstance(definition, dict) else None
            if declared in CORRELATION_TYPES or (isinstance(declared, list) and set(declared) & set(CORRELATION_TYPES)):
                candidates.add(name)
        return sorted(candidates)

    @api.constrains("trigger_type", "trigger_event_type_id", "correlation_param")
    def _check_correlation_param(self):
        for scenario in self.filtered("correlation_param"):
            if scenario.trigger_type != "event":
                raise ValidationError(
                    self.env._(
                        "One Run Per of %(name)s: only a scenario started by an event runs once per parameter value.",
                        name=scenario.name,
                    )
                )
            candidates = scenario._correlation_param_candidates()
            # A type that has seen no event and declares no schema knows no
            # parameter yet: the name cannot be checked before the first event.
            if candidates and scenario.correlation_param not in candidates:
                raise ValidationError(
                    self.env._(
                        "One Run Per of %(name)s: %(param)s is not a parameter of %(type)s (known: %(known)s).",
                        name=scenario.name,
                        param=scenario.correlation_param,
                        type=scenario.trigger_event_type_id.name,
                        known=", ".join(candidates),
                    )
                )

    def _correlation_path(self):
        """The correlation parameter of this on-event scenario, or False."""
        self.ensure_one()
        return (self.trigger_type == "event" and self.correlation_param) or False

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

    def _action_open(self):
        """The window action that opens this scenario's form in the main view (after it was created)."""
        self.ensure_one()
        return {
            "type": "ir.actions.act_window",
            "res_model": self._name,
            "res_id": self.id,
            "view_mode": "form",
            "views": [(False, "form")],
            "target": "current",
        }

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
