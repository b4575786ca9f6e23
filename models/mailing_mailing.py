from odoo import models


class MailingMailing(models.Model):
    _inherit = "mailing.mailing"

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
