from odoo import api
from odoo import models

from .mailing_subscription import TRACKED_CONTEXT_KEY

MEMBERSHIP_FIELDS = {"list_ids", "subscription_ids"}


class MailingContact(models.Model):
    _inherit = "mailing.contact"

    @api.model_create_multi
    def create(self, vals_list):
        joins_lists = self.env.context.get("default_list_ids") or any(
            MEMBERSHIP_FIELDS & vals.keys() for vals in vals_list
        )
        if self.env.context.get(TRACKED_CONTEXT_KEY) or not joins_lists:
            return super().create(vals_list)
        contacts = super(MailingContact, self.with_context(**{TRACKED_CONTEXT_KEY: True})).create(vals_list)
        # list_ids writes the subscription table directly: compare with "no
        # subscription" rather than rely on mailing.subscription.create.
        self._marketing_invalidate_subscriptions()
        Subscription = self.env["mailing.subscription"]
        Subscription._marketing_emit_changes({}, Subscription._marketing_snapshot(contact_ids=contacts.ids))
        return contacts.with_env(self.env)

    def write(self, vals):
        if self.env.context.get(TRACKED_CONTEXT_KEY) or not MEMBERSHIP_FIELDS & vals.keys():
            return super().write(vals)
        Subscription = self.env["mailing.subscription"]
        before = Subscription._marketing_snapshot(contact_ids=self.ids)
        result = super(MailingContact, self.with_context(**{TRACKED_CONTEXT_KEY: True})).write(vals)
        self._marketing_invalidate_subscriptions()
        Subscription._marketing_emit_changes(before, Subscription._marketing_snapshot(contact_ids=self.ids))
        return result

    @api.model
    def load(self, fields, data):
        result = super().load(fields, data)
        if self.env.context.get("import_file") and result.get("ids"):
            self.env["marketing.event"]._emit_contacts_imported(self.browse(result["ids"]))
        return result

    def _marketing_invalidate_subscriptions(self):
        # The many2many and the subscription_ids one2many share one table but
        # not their cache: a subscription added through one stays invisible
        # to the other until the cache is dropped.
        self.env["mailing.contact"].invalidate_model(["subscription_ids", "list_ids"])
        self.env["mailing.list"].invalidate_model(["subscription_ids", "contact_ids"])
