from odoo import fields
from odoo import models


class MarketingEventCategory(models.Model):
    _name = "marketing.event.category"
    _description = "Marketing Event Category"
    _order = "sequence, name, id"

    name = fields.Char(required=True, translate=True)
    code = fields.Char(
        required=True,
        help="Stable technical identifier, used by the API to file self-registered event types.",
    )
    sequence = fields.Integer(default=10)
    color = fields.Integer()
    active = fields.Boolean(default=True)
    event_type_ids = fields.One2many("marketing.event.type", "category_id", string="Event Types")
    event_type_count = fields.Integer(compute="_compute_event_type_count", string="Event Types Count")

    _sql_constraints = [
        ("code_unique", "unique(code)", "An event category with this code already exists."),
    ]

    def _compute_event_type_count(self):
        counts = {
            category.id: count
            for category, count in self.env["marketing.event.type"]._read_group(
                [("category_id", "in", self.ids)], ["category_id"], ["__count"]
            )
        }
        for category in self:
            category.event_type_count = counts.get(category.id, 0)
