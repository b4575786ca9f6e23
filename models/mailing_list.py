from odoo import models


class MailingList(models.Model):
    _name = "mailing.list"
    # The mixin first: its create and write wrap those of every module before this one.
    _inherit = ["marketing.subscription.tracking.mixin", "mailing.list"]

    _marketing_membership_fields = frozenset({"contact_ids", "subscription_ids"})
    _marketing_snapshot_key = "list_ids"
