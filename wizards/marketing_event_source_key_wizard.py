from odoo import fields
from odoo import models

from ..models.marketing_event_source import WRITE_KEY_CONTEXT


class MarketingEventSourceKeyWizard(models.TransientModel):
    _name = "marketing.event.source.key.wizard"
    _description = "New write key of an API source, shown once"

    source_id = fields.Many2one("marketing.event.source", required=True, ondelete="cascade")
    # Not stored: the key travels in the dialog's context only, so that the
    # database never holds it in clear, not even in this transient record.
    write_key = fields.Char(readonly=True, compute="_compute_write_key")

    def _compute_write_key(self):
        for wizard in self:
            wizard.write_key = self.env.context.get(WRITE_KEY_CONTEXT)

    def action_done(self):
        self.unlink()
        return {"type": "ir.actions.act_window_close"}
