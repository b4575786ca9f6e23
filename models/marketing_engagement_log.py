from odoo import fields
from odoo import models

SCORE_ORIGINS = [
    ("rule", "Score rule"),
    ("scenario", "Scenario"),
    ("manual", "Manual"),
    ("decay", "Decay"),
    ("import", "Import"),
]


class MarketingEngagementLog(models.Model):
    _name = "marketing.engagement.log"
    _description = "Engagement Score Change"
    _order = "changed_at desc, id desc"
    _rec_name = "reason"

    partner_id = fields.Many2one("res.partner", string="Contact", required=True, ondelete="cascade", index=True)
    delta = fields.Integer(required=True)
    score_before = fields.Integer(help="Empty when the contact had never been scored.")
    score = fields.Integer(string="Resulting Score", required=True)
    reason = fields.Char(required=True)
    origin = fields.Selection(SCORE_ORIGINS, required=True, default="manual")
    origin_ref = fields.Reference(
        selection="_selection_origin_ref",
        string="Caused By",
        help="The rule, scenario node or event behind the change.",
    )
    company_id = fields.Many2one(related="partner_id.company_id", store=True, index=True)
    # When the change happened, in application time: score windows ("at most
    # once every N days", decay) are measured on it. create_date is the
    # database transaction's start, which a long batch or a test clock skews.
    changed_at = fields.Datetime(string="When", required=True, readonly=True, default=fields.Datetime.now, index=True)

    def _selection_origin_ref(self):
        return [
            (model_name, self.env[model_name]._description)
            for model_name in ("marketing.engagement.rule", "marketing.scenario.node", "marketing.event", "res.users")
            if model_name in self.env
        ]
