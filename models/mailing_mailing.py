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

    def write(self, vals):
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
