"""System automation jobs about coupon lists: refill a list, export its codes."""

from markupsafe import Markup

from odoo import api
from odoo import fields
from odoo import models
from odoo.exceptions import UserError
from odoo.tools import email_split

from .marketing_system_automation_job import iso_datetime

COUPON_EXPORT_HEADER = ("code", "status", "contact", "email", "scenario", "given_at", "redeemed_at")


class MarketingSystemAutomationJob(models.Model):
    _inherit = "marketing.system.automation.job"

    job_type = fields.Selection(
        selection_add=[
            ("coupon_refill", "Refill a coupon list"),
            ("coupon_export", "Export a coupon list's codes"),
        ],
        ondelete={"coupon_refill": "cascade", "coupon_export": "cascade"},
    )
    coupon_list_id = fields.Many2one(
        "marketing.coupon.list",
        ondelete="cascade",
        help="Empty: the list the event names (coupon_list_id, as coupon_list_low gives it).",
    )
    coupon_refill_count = fields.Integer(string="Codes to Add", default=1000)

    # Added to the base method's dependencies (Odoo collects them along the MRO).
    @api.depends("coupon_list_id", "coupon_refill_count")
    def _compute_summary(self):
        coupon_jobs = self.filtered(lambda job: job.job_type in ("coupon_refill", "coupon_export"))
        result = super(MarketingSystemAutomationJob, self - coupon_jobs)._compute_summary()
        for job in coupon_jobs:
            coupon_list = job.coupon_list_id.name or self.env._("list of the event")
            if job.job_type == "coupon_refill":
                job.summary = self.env._(
                    "%(count)s new codes → %(list)s", count=job.coupon_refill_count, list=coupon_list
                )
            else:
                recipients = ", ".join(job.recipient_user_ids.mapped("name") + email_split(job.recipient_emails or ""))
                job.summary = f"{coupon_list} → {recipients}"
        return result

    def _coupon_list(self, run_job):
        """The job's list, else the event's (coupon_list_id), within the automation's companies."""
        coupon_list = self.coupon_list_id or self._event_record(run_job, "marketing.coupon.list", ("coupon_list_id",))
        if not coupon_list:
            raise UserError(
                self.env._("Coupon List: choose one, or trigger the job by an event naming coupon_list_id.")
            )
        company = self.automation_id.company_id
        if company and coupon_list.company_id != company:
            raise UserError(
                self.env._("Coupon List: %(list)s belongs to another company.", list=coupon_list.display_name)
            )
        return coupon_list

    def _run_coupon_refill(self, run_job):
        coupon_list = self._coupon_list(run_job)
        added = coupon_list._generate(self.coupon_refill_count)
        return {
            "message": self.env._("%(count)s codes added to %(list)s.", count=added, list=coupon_list.name),
            "processed": added,
        }

    def _run_coupon_export(self, run_job):
        coupon_list = self._coupon_list(run_job)
        coupons = self.env["marketing.coupon"].search_fetch(
            [("list_id", "=", coupon_list.id)],
            ["code", "state", "partner_id", "scenario_id", "given_at", "redeemed_at", "list_id"],
            order="id",
        )
        statuses = dict(coupons._fields["status"]._description_selection(self.env))
        rows = [
            (
                coupon.code,
                statuses[coupon.status],
                coupon.partner_id.display_name or "",
                coupon.partner_id.email or "",
                coupon.scenario_id.name or "",
                iso_datetime(coupon.given_at),
                iso_datetime(coupon.redeemed_at),
            )
            for coupon in coupons
        ]
        basename = f"coupons_{coupon_list.id}"
        attachments = self._attach_table(run_job, basename, list(COUPON_EXPORT_HEADER), rows)
        subject = self.env._("Coupon codes: %(list)s", list=coupon_list.name)
        body = Markup("<p>%s</p>") % self.env._(
            "%(count)s codes of %(list)s with their status, attached (%(files)s).",
            count=len(rows),
            list=coupon_list.name,
            files=", ".join(attachments.mapped("name")),
        )
        mail = self._queue_mail(run_job, subject, body, attachments)
        return {
            "message": self.env._("%(count)s codes exported and mailed.", count=len(rows)),
            "processed": len(rows),
            "attachment_ids": attachments.ids,
            "mail_id": mail.id,
        }
