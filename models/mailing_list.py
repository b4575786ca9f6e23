from odoo import api
from odoo import models

from .mailing_subscription import TRACKED_CONTEXT_KEY

MEMBERSHIP_FIELDS = {"contact_ids", "subscription_ids"}


class MailingList(models.Model):
    _inherit = "mailing.list"

    @api.model_create_multi
    def create(self, vals_list):
        if self.env.context.get(TRACKED_CONTEXT_KEY) or not any(MEMBERSHIP_FIELDS & vals.keys() for vals in vals_list):
            return super().create(vals_list)
        mailing_lists = super(MailingList, self.with_context(**{TRACKED_CONTEXT_KEY: True})).create(vals_list)
        self._marketing_invalidate_subscriptions()
        Subscription = self.env["mailing.subscription"]
        Subscription._marketing_emit_changes({}, Subscription._marketing_snapshot(list_ids=mailing_lists.ids))
        return mailing_lists.with_env(self.env)

    def write(self, vals):
        if self.env.context.get(TRACKED_CONTEXT_KEY) or not MEMBERSHIP_FIELDS & vals.keys():
            return super().write(vals)
        Subscription = self.env["mailing.subscription"]
        before = Subscription._marketing_snapshot(list_ids=self.ids)
        result = super(MailingList, self.with_context(**{TRACKED_CONTEXT_KEY: True})).write(vals)
        self._marketing_invalidate_subscriptions()
        Subscription._marketing_emit_changes(before, Subscription._marketing_snapshot(list_ids=self.ids))
        return result

    def _marketing_invalidate_subscriptions(self):
        # The many2many and the subscription_ids one2many share one table but
        # not their cache: a subscription added through one stays invisible
        # to the other until the cache is dropped.
        self.env["mailing.contact"].invalidate_model(["subscription_ids", "list_ids"])
        self.env["mailing.list"].invalidate_model(["subscription_ids", "contact_ids"])
