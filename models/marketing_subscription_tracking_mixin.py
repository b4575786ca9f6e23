from odoo import api
from odoo import models

from .mailing_subscription import TRACKED_CONTEXT_KEY


class MarketingSubscriptionTrackingMixin(models.AbstractModel):
    """Emit list_subscribed / list_unsubscribed when a mailing contact or list changes its memberships.

    Their ``list_ids`` / ``contact_ids`` many2many write the subscription table
    without calling ``mailing.subscription``: the records are compared with
    their subscriptions before and after, and the difference goes to
    ``mailing.subscription._marketing_emit_changes``.
    """

    _name = "marketing.subscription.tracking.mixin"
    _description = "Subscription Tracking of Mailing Contacts and Lists"

    # The fields through which a record changes its subscriptions, the context
    # defaults that do it too, and the name of its ids in _marketing_snapshot.
    _marketing_membership_fields = frozenset()
    _marketing_membership_defaults = ()
    _marketing_snapshot_key = None

    def _marketing_snapshot_self(self, records):
        return self.env["mailing.subscription"]._marketing_snapshot(**{self._marketing_snapshot_key: records.ids})

    @api.model_create_multi
    def create(self, vals_list):
        joins = any(self.env.context.get(key) for key in self._marketing_membership_defaults) or any(
            self._marketing_membership_fields & vals.keys() for vals in vals_list
        )
        if self.env.context.get(TRACKED_CONTEXT_KEY) or not joins:
            return super().create(vals_list)
        records = super(MarketingSubscriptionTrackingMixin, self.with_context(**{TRACKED_CONTEXT_KEY: True})).create(
            vals_list
        )
        # The many2many writes the subscription table directly: compare with
        # "no subscription" rather than rely on mailing.subscription.create.
        self._marketing_invalidate_subscriptions()
        self.env["mailing.subscription"]._marketing_emit_changes({}, self._marketing_snapshot_self(records))
        return records.with_env(self.env)

    def write(self, vals):
        if self.env.context.get(TRACKED_CONTEXT_KEY) or not self._marketing_membership_fields & vals.keys():
            return super().write(vals)
        before = self._marketing_snapshot_self(self)
        result = super(MarketingSubscriptionTrackingMixin, self.with_context(**{TRACKED_CONTEXT_KEY: True})).write(vals)
        self._marketing_invalidate_subscriptions()
        self.env["mailing.subscription"]._marketing_emit_changes(before, self._marketing_snapshot_self(self))
        return result

    def _marketing_invalidate_subscriptions(self):
        # The many2many and the subscription_ids one2many share one table but
        # not their cache: a subscription added through one stays invisible
        # to the other until the cache is dropped.
        self.env["mailing.contact"].invalidate_model(["subscription_ids", "list_ids"])
        self.env["mailing.list"].invalidate_model(["subscription_ids", "contact_ids"])
