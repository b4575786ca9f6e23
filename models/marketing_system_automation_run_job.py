from odoo import api
from odoo import fields
from odoo import models


class MarketingSystemAutomationRunJob(models.Model):
    _name = "marketing.system.automation.run.job"
    _description = "System Automation Job Result"
    _order = "sequence, id"

    run_id = fields.Many2one("marketing.system.automation.run", required=True, ondelete="cascade", index=True)
    company_id = fields.Many2one(related="run_id.company_id", store=True, index=True)
    job_id = fields.Many2one("marketing.system.automation.job", ondelete="set null", index=True)
    sequence = fields.Integer(default=10)
    # The jobs' own selection, extensions (selection_add) included.
    job_type = fields.Selection("_selection_job_type", readonly=True)
    job_type_label = fields.Char(compute="_compute_job_type_label")
    state = fields.Selection(
        [("pending", "Pending"), ("done", "Done"), ("failed", "Failed"), ("canceled", "Canceled")],
        required=True,
        default="pending",
        readonly=True,
    )
    message = fields.Text(readonly=True)
    processed_count = fields.Integer(string="Processed", readonly=True)
    skipped_count = fields.Integer(string="Skipped", readonly=True)
    attachment_ids = fields.Many2many(
        "ir.attachment",
        "marketing_system_automation_run_job_attachment_rel",
        "run_job_id",
        "attachment_id",
        string="Files",
        readonly=True,
    )
    mailing_id = fields.Many2one("mailing.mailing", string="Mailing Sent", readonly=True, ondelete="set null")
    mail_id = fields.Many2one("mail.mail", string="Mail Queued", readonly=True, ondelete="set null")
    finished_at = fields.Datetime(readonly=True)

    @api.depends("job_type")
    @api.model
    def _selection_job_type(self):
        return self.env["marketing.system.automation.job"]._fields["job_type"]._description_selection(self.env)

    def _compute_job_type_label(self):
        labels = dict(self._fields["job_type"]._description_selection(self.env))
        for run_job in self:
            run_job.job_type_label = labels.get(run_job.job_type, "")

    def _record_success(self, result):
        self.ensure_one()
        self.write(
            {
                "state": "done",
                "message": result.get("message"),
                "processed_count": result.get("processed", 0),
                "skipped_count": result.get("skipped", 0),
                "attachment_ids": [fields.Command.set(result.get("attachment_ids", []))],
                "mailing_id": result.get("mailing_id"),
                "mail_id": result.get("mail_id"),
                "finished_at": fields.Datetime.now(),
            }
        )
