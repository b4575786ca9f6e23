from odoo import fields
from odoo import models


class MarketingEventSourceKeyWizard(models.TransientModel):
    _name = "marketing.event.source.key.wizard"
    _description = "New write key of an API source, shown once"

    source_id = fields.Many2one("marketing.event.source", required=True, ondelete="cascade")
    write_key = fields.Char(readonly=True)

    def action_done(self):
        # The key only lives in this transient record: forget it as soon as
        # the administrator has copied it.
        self.unlink()
        return {"type": "ir.actions.act_window_close"}
