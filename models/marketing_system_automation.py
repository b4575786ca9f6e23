from odoo import api
from odoo import fields
from odoo import models
from odoo.exceptions import AccessError
from odoo.exceptions import ValidationError

from ..utils.params_filter import ParamsFilterError
from ..utils.params_filter import params_match
from ..utils.params_filter import parse_params_filter


def check_shared_allowed(records):
    """Records without a company (automations, schedules) serve every company: only administrators make them."""
    manager = "marketing_event_automation.group_marketing_automation_manager"
    if records.env.su or records.env.user.has_group(manager):
        return
    if records.filtered(lambda record: not record.company_id):
        raise AccessError(
            records.env._(
                "Company: only a marketing administrator creates %(what)s shared by all companies.",
                what=records._description,
            )
        )


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
    params_filter = fields.Char(
        string="Parameters Filter",
        help="Optional conditions on the event parameters, all of which must hold: "
        "list_id == 7 and count > 100 (operators ==, !=, >, >=, <, <=, contains, in, not in, exists, not exists).",
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

    @api.model_create_multi
    def create(self, vals_list):
        records = super().create(vals_list)
        records._check_shared_allowed()
        return records

    def write(self, vals):
        result = super().write(vals)
        if "company_id" in vals:
            self._check_shared_allowed()
        return result

    def _check_shared_allowed(self):
        check_shared_allowed(self)

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

    @api.constrains("params_filter", "event_type_id")
    def _check_params_filter(self):
        for automation in self:
            try:
                parse_params_filter(automation.params_filter, automation.event_type_id.params_structure or {})
            except ParamsFilterError as error:
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
        last_run_ids = [
            last_id
            for _automation, last_id in Run._read_group(
                [("automation_id", "in", self.ids)], ["automation_id"], ["id:max"]
            )
        ]
        last_runs = {run.automation_id.id: run for run in Run.browse(last_run_ids)}
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
            clauses = parse_params_filter(self.params_filter, self.event_type_id.params_structure or {})
        except ParamsFilterError:
            return False
        return params_match(clauses, params)

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
        # A mailing sent by an automation must not start that same automation
        # when it finishes: "on mailing done, send a mailing" would loop forever.
        mailing_ids = {
            event.params.get("mailing_id")
            for event in system_events
            if isinstance(event.params, dict) and isinstance(event.params.get("mailing_id"), int)
        }
        own_mailings = set()
        if mailing_ids:
            own_mailings = {
                (run_job.run_id.automation_id.id, run_job.mailing_id.id)
                for run_job in self.env["marketing.system.automation.run.job"]
                .sudo()
                .search([("mailing_id", "in", list(mailing_ids))])
            }
        vals_list, triggered = [], []
        for event in system_events:
            for automation in automations:
                if (automation.id, event.id) in existing or not automation._matches(event):
                    continue
                if (automation.id, (event.params or {}).get("mailing_id")) in own_mailings:
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
