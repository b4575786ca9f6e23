from odoo import api
from odoo import fields
from odoo import models
from odoo.exceptions import ValidationError

from .res_partner import WATCHABLE_FIELD_TYPES


class ResCompany(models.Model):
    _inherit = "res.company"

    engagement_decay_enabled = fields.Boolean(
        string="Engagement Score Decay",
        help="Take points from contacts who show no activity for a while.",
    )
    engagement_decay_points = fields.Integer(
        string="Decay Points",
        default=5,
        help="Points taken at each decay; a score never decays below 0.",
    )
    engagement_decay_days = fields.Integer(
        string="Decay After (Days)",
        default=30,
        help="Days without any event from the contact before a decay, and between two decays.",
    )
    marketing_watched_field_ids = fields.Many2many(
        "ir.model.fields",
        "res_company_marketing_watched_field_rel",
        "company_id",
        "field_id",
        string="Watched Contact Fields",
        domain=[("model", "=", "res.partner"), ("store", "=", True), ("ttype", "in", WATCHABLE_FIELD_TYPES)],
        help="A change of these contact fields logs a contact_field_changed event with the old and new values.",
    )

    marketing_anonymous_retention_days = fields.Integer(
        string="Keep Anonymous Events (Days)",
        default=30,
        help="Events of visitors never identified are deleted after this many days; 0 keeps them.",
    )

    @api.constrains("marketing_anonymous_retention_days")
    def _check_marketing_anonymous_retention(self):
        if any(company.marketing_anonymous_retention_days < 0 for company in self):
            raise ValidationError(self.env._("Keep Anonymous Events: give 0 (keep them) or a number of days."))

    @api.constrains("engagement_decay_enabled", "engagement_decay_points", "engagement_decay_days")
    def _check_engagement_decay(self):
        for company in self.filtered("engagement_decay_enabled"):
            if company.engagement_decay_points <= 0:
                raise ValidationError(self.env._("Decay Points: give a number of points above 0."))
            if company.engagement_decay_days <= 0:
                raise ValidationError(self.env._("Decay After (Days): give a number of days above 0."))
