import json

from odoo import api
from odoo import fields
from odoo import models
from odoo.exceptions import ValidationError

PARAMS_OPERATORS = ("=", "!=", ">", ">=", "<", "<=", "in", "not in", "contains", "set", "not set")
_MISSING = object()


def params_value(params, path):
    """The value at a dotted ``path`` of an event's params (``order.total``), or _MISSING."""
    value = params
    for part in (path or "").split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.lstrip("-").isdigit() and -len(value) <= int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def _compare(operator, actual, expected):
    if operator == "=":
        return actual == expected
    if operator == "!=":
        return actual != expected
    if operator == "in":
        return isinstance(expected, list) and actual in expected
    if operator == "not in":
        return isinstance(expected, list) and actual not in expected
    if operator == "contains":
        if isinstance(actual, (list, str)):
            return expected in actual if isinstance(actual, list) else str(expected) in actual
        return False
    # Ordering compares numbers with numbers and strings with strings only:
    # 5 > "4" means nothing and must not match by accident.
    numbers = (int, float)
    comparable = (
        isinstance(actual, numbers)
        and isinstance(expected, numbers)
        and not isinstance(actual, bool)
        and not isinstance(expected, bool)
    ) or (isinstance(actual, str) and isinstance(expected, str))
    if not comparable:
        return False
    return {
        ">": actual > expected,
        ">=": actual >= expected,
        "<": actual < expected,
        "<=": actual <= expected,
    }[operator]


def params_match(params, conditions):
    """True when every ``{path, operator, value}`` condition holds on ``params``.

    A missing path matches only ``not set`` (and ``!=``/``not in``, which
    are about the value not being that one).
    """
    for condition in conditions or ():
        operator = condition.get("operator", "=")
        actual = params_value(params or {}, condition.get("path", ""))
        if operator == "set":
            matched = actual is not _MISSING and actual is not None
        elif operator == "not set":
            matched = actual is _MISSING or actual is None
        elif actual is _MISSING:
            matched = operator in ("!=", "not in")
        else:
            matched = _compare(operator, actual, condition.get("value"))
        if not matched:
            return False
    return True


def parse_params_filter(text):
    """Decode and check a params filter; raise ValueError naming the problem."""
    if not (text or "").strip():
        return []
    try:
        conditions = json.loads(text)
    except ValueError as error:
        raise ValueError(f"not valid JSON ({error})") from error
    if isinstance(conditions, dict):
        conditions = [conditions]
    if not isinstance(conditions, list):
        raise ValueError("must be a list of {path, operator, value} objects")
    for position, condition in enumerate(conditions):
        if not isinstance(condition, dict):
            raise ValueError(f"condition {position + 1}: must be an object")
        if not isinstance(condition.get("path"), str) or not condition["path"].strip():
            raise ValueError(f"condition {position + 1}: 'path' is required, e.g. \"list_id\"")
        operator = condition.get("operator", "=")
        if operator not in PARAMS_OPERATORS:
            raise ValueError(
                f"condition {position + 1}: unknown operator {operator!r} (use {', '.join(PARAMS_OPERATORS)})"
            )
        if operator in ("in", "not in") and not isinstance(condition.get("value"), list):
            raise ValueError(f"condition {position + 1}: '{operator}' needs a list as value")
        unknown = set(condition) - {"path", "operator", "value"}
        if unknown:
            raise ValueError(f"condition {position + 1}: unknown key(s) {', '.join(sorted(unknown))}")
    return conditions


class MarketingSystemAutomation(models.Model):
    _name = "marketing.system.automation"
    _description = "System Automation"
    _order = "sequence, name, id"

    name = fields.Char(required=True, translate=True)
    sequence = fields.Integer(default=10)
    active = fields.Boolean(default=True)
    company_id = fields.Many2one(
        "res.company",
        index=True,
        default=lambda self: self.env.company,
        help="Only events of this company (or emitted without a company) trigger it. Empty: every company.",
    )
    event_type_id = fields.Many2one(
        "marketing.event.type",
        string="System Event",
        required=True,
        ondelete="restrict",
        domain=[("scope", "=", "system")],
        help="The system (S) event that starts this automation.",
    )
    event_type_key = fields.Char(related="event_type_id.key")
    schedule_id = fields.Many2one(
        "marketing.system.schedule",
        ondelete="restrict",
        help="For the 'Schedule fired' event: react to this schedule only.",
    )
    params_filter = fields.Text(
        string="Parameters Filter",
        help="Optional conditions on the event parameters, all of which must hold, as JSON: "
        '[{"path": "list_id", "operator": "=", "value": 7}]. Operators: ' + ", ".join(PARAMS_OPERATORS) + ".",
    )
    description = fields.Text(translate=True)
    job_ids = fields.One2many("marketing.system.automation.job", "automation_id", string="Jobs", copy=True)
    run_ids = fields.One2many("marketing.system.automation.run", "automation_id", string="Runs")
    run_count = fields.Integer(compute="_compute_run_stats")
    failed_run_count = fields.Integer(string="Failed Runs", compute="_compute_run_stats")
    last_run_state = fields.Selection(
        [("pending", "Pending"), ("running", "Running"), ("done", "Done"), ("failed", "Failed")],
        compute="_compute_run_stats",
    )
    last_run_at = fields.Datetime(string="Last Run", compute="_compute_run_stats")
    last_error = fields.Text(compute="_compute_run_stats")

    @api.constrains("event_type_id")
    def _check_event_type_scope(self):
        for automation in self:
            if automation.event_type_id.scope != "system":
                raise ValidationError(
                    self.env._(
                        "System Event: %(type)s is a contact (C) event; a system automation reacts to system (S) "
                        "events only.",
                        type=automation.event_type_id.display_name,
                    )
                )

    @api.constrains("params_filter")
    def _check_params_filter(self):
        for automation in self:
            try:
                parse_params_filter(automation.params_filter)
            except ValueError as error:
                raise ValidationError(
                    self.env._("Parameters Filter of %(name)s: %(reason)s", name=automation.name, reason=error)
                ) from error

    @api.onchange("event_type_id")
    def _onchange_event_type_id(self):
        if self.event_type_key != "schedule_fired":
            self.schedule_id = False

    @api.depends("run_ids.state", "run_ids.error_message")
    def _compute_run_stats(self):
        Run = self.env["marketing.system.automation.run"]
        counts = {
            (automation.id, state): count
            for automation, state, count in Run._read_group(
                [("automation_id", "in", self.ids)], ["automation_id", "state"], ["__count"]
            )
        }
        last_runs = {run.automation_id.id: run for run in Run.search([("automation_id", "in", self.ids)], order="id")}
        for automation in self:
            automation.run_count = sum(
                counts.get((automation.id, state), 0) for state in ("pending", "running", "done", "failed")
            )
            automation.failed_run_count = counts.get((automation.id, "failed"), 0)
            last_run = last_runs.get(automation.id)
            automation.last_run_state = last_run.state if last_run else False
            automation.last_run_at = last_run and (last_run.finished_at or last_run.create_date)
            automation.last_error = last_run.error_message if last_run and last_run.state == "failed" else False

    def _matches(self, event):
        """Whether ``event`` triggers this automation (type, company, schedule and params filter)."""
        self.ensure_one()
        if event.type_id != self.event_type_id:
            return False
        if self.company_id and event.company_id and event.company_id != self.company_id:
            return False
        params = event.params or {}
        if self.schedule_id and params.get("schedule_id") != self.schedule_id.id:
            return False
        try:
            conditions = parse_params_filter(self.params_filter)
        except ValueError:
            return False
        return params_match(params, conditions)

    @api.model
    def _trigger_for_events(self, events, results):
        """Create one pending run per (matching automation, event); the runner cron executes them."""
        system_events = events.filtered(lambda event: event.type_id.scope == "system")
        if not system_events:
            return self.env["marketing.system.automation.run"]
        # sudo: the dispatcher acts for the whole system; which automations
        # exist is not a question of who caused the event.
        automations = self.sudo().search([("event_type_id", "in", system_events.type_id.ids)])
        if not automations:
            return self.env["marketing.system.automation.run"]
        Run = self.env["marketing.system.automation.run"].sudo()
        existing = {
            (run.automation_id.id, run.event_id.id)
            for run in Run.search([("automation_id", "in", automations.ids), ("event_id", "in", system_events.ids)])
        }
        vals_list, triggered = [], []
        for event in system_events:
            for automation in automations:
                if (automation.id, event.id) in existing or not automation._matches(event):
                    continue
                vals_list.append(
                    {
                        "automation_id": automation.id,
                        "event_id": event.id,
                        "company_id": (automation.company_id or event.company_id).id,
                        "run_job_ids": [
                            fields.Command.create(
                                {"job_id": job.id, "sequence": job.sequence, "job_type": job.job_type}
                            )
                            for job in automation.job_ids.sorted(lambda job: (job.sequence, job.id))
                        ],
                    }
                )
                triggered.append((event, automation))
        runs = Run.create(vals_list)
        for event, automation in triggered:
            results[event.id]["System automations"].append(automation.name)
        if runs:
            self.env.ref("marketing_event_automation.ir_cron_run_system_automations")._trigger()
        return runs

    def action_view_runs(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id(
            "marketing_event_automation.action_marketing_system_automation_run"
        )
        action["domain"] = [("automation_id", "=", self.id)]
        action["context"] = {"default_automation_id": self.id}
        return action

    def action_view_failed_runs(self):
        action = self.action_view_runs()
        action["domain"] = [("automation_id", "=", self.id), ("state", "=", "failed")]
        return action

    def action_retry_failed_runs(self):
        self.run_ids.filtered(lambda run: run.state == "failed").action_retry()
        return True
