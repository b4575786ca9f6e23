from odoo import api
from odoo import models


class MailingContact(models.Model):
    _name = "mailing.contact"
    # The mixin first: its create and write wrap those of every module before this one.
    _inherit = ["marketing.subscription.tracking.mixin", "mailing.contact"]

    _marketing_membership_fields = frozenset({"list_ids", "subscription_ids"})
    _marketing_membership_defaults = ("default_list_ids",)
    _marketing_snapshot_key = "contact_ids"

    @api.model
    def load(self, fields, data):
        result = super().load(fields, data)
        self.env["marketing.event"]._emit_contacts_loaded(self, result)
        return result
