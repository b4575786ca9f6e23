from odoo import fields
from odoo import models


class BaseAutomation(models.Model):
    _inherit = "base.automation"

    marketing_record_trigger_id = fields.Many2one(
        "marketing.record.trigger",
        string="Marketing Record Event",
        ondelete="cascade",
        index="btree_not_null",
        readonly=True,
        help="This rule logs the marketing events of a record event instead of running actions.",
    )

    def _process(self, records, domain_post=None):
        """Log the record event for the records this rule runs on, once per batch of records."""
        if not self.marketing_record_trigger_id:
            return super()._process(records, domain_post=domain_post)
        # The records super() will run on: not yet done in this transaction's
        # chain of rules, and (on update) with a watched field changed.
        done = self.env.context.get("__action_done", {}).get(self, records.browse())
        fresh = (records - done).filtered(self._check_trigger_fields)
        result = super()._process(records, domain_post=domain_post)
        if fresh:
            self.marketing_record_trigger_id._emit_for_records(fresh)
        return result
