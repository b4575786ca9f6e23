from odoo import api
from odoo import fields
from odoo import models

MAILING_DONE_COUNTERS = (
    "expected",
    "sent",
    "delivered",
    "opened",
    "clicked",
    "replied",
    "bounced",
    "failed",
    "canceled",
)


class MailingMailing(models.Model):
    _inherit = "mailing.mailing"

    marketing_segment_id = fields.Many2one(
        "marketing.segment",
        string="Segment",
        ondelete="set null",
        groups="marketing_event_automation.group_marketing_automation_user",
        help="Send to the contacts who are members of this segment when the mailing goes out.",
    )

    @api.onchange("marketing_segment_id")
    def _onchange_marketing_segment_id(self):
        if self.marketing_segment_id:
            self.update(self._marketing_segment_audience(self.marketing_segment_id))

    @api.model
    def _marketing_with_segment_audience(self, vals):
        """``vals`` with the recipients of its segment; an audience given with it (narrowed to a company) wins."""
        if not vals.get("marketing_segment_id"):
            return vals
        segment = self.env["marketing.segment"].browse(vals["marketing_segment_id"])
        return {**self._marketing_segment_audience(segment), **vals}

    @api.model
    def _marketing_segment_audience(self, segment):
        """The recipients values of a mailing sent to ``segment``: its member contacts."""
        return {
            "mailing_model_id": self.env["ir.model"]._get_id("res.partner"),
            "mailing_domain": repr(segment._members_domain()),
        }

    @api.model_create_multi
    def create(self, vals_list):
        return super().create([self._marketing_with_segment_audience(vals) for vals in vals_list])

    def write(self, vals):
        vals = self._marketing_with_segment_audience(vals)
        finishing = self.filtered(lambda mailing: mailing.state != "done") if vals.get("state") == "done" else None
        result = super().write(vals)
        if finishing:
            finishing._marketing_emit_done()
        return result

    def _marketing_emit_done(self):
        """Log one system event per mailing that just finished sending, with its counters.

        The counters are those of the moment the mailing is marked done: mails
        still in the outgoing queue count as expected, not yet as sent.
        """
        # The statistics are computed, not stored: drop what an earlier read cached.
        self.invalidate_recordset(list(MAILING_DONE_COUNTERS))
        self.env["marketing.event"]._emit(
            "mailing_done",
            [
                {
                    "partner_id": None,
                    "params": {
                        "mailing_id": mailing.id,
                        "name": mailing.subject,
                        "mailing_type": mailing.mailing_type,
                        "model": mailing.mailing_model_real,
                        "list_ids": mailing.contact_list_ids.ids,
                        "campaign_id": mailing.campaign_id.id or None,
                        **{counter: mailing[counter] for counter in MAILING_DONE_COUNTERS},
                    },
                }
                for mailing in self
            ],
        )

    def _get_seen_list(self):
        # A scenario sends its mailing again each time a contact runs through
        # it (entry policy "every time"): earlier sends are no duplicates.
        if self.env.context.get("marketing_scenario_send"):
            return []
        return super()._get_seen_list()

    def _get_seen_list_sms(self):
        if self.env.context.get("marketing_scenario_send"):
            return [], []
        return super()._get_seen_list_sms()
