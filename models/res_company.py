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

    marketing_event_retention_months = fields.Integer(
        string="Keep Events (Months)",
        default=13,
        help="Events processed longer ago than this are deleted, once the figures they make are kept per day; "
        "0 keeps them.",
    )
    marketing_run_retention_months = fields.Integer(
        string="Keep Finished Runs (Months)",
        default=6,
        help="Participants of finished runs, and their steps, are deleted this long after the run ended, once "
        "the figures they make are kept per day; 0 keeps them.",
    )
    marketing_score_history_retention_months = fields.Integer(
        string="Keep Score History (Months)",
        default=24,
        help="Engagement score changes older than this are deleted; the scores themselves stay. 0 keeps them.",
    )

    @api.constrains("marketing_anonymous_retention_days")
    def _check_marketing_anonymous_retention(self):
        if any(company.marketing_anonymous_retention_days < 0 for company in self):
            raise ValidationError(self.env._("Keep Anonymous Events: give 0 (keep them) or a number of days."))

    @api.constrains(
        "marketing_event_retention_months", "marketing_run_retention_months", "marketing_score_history_retention_months"
    )
    def _check_marketing_retention(self):
        for company in self:
            labels = {
                "marketing_event_retention_months": self.env._("Keep Events"),
                "marketing_run_retention_months": self.env._("Keep Finished Runs"),
                "marketing_score_history_retention_months": self.env._("Keep Score History"),
            }
            for field_name, label in labels.items():
                if company[field_name] < 0:
                    raise ValidationError(
                        self.env._("%(setting)s: give 0 (keep them) or a number of months.", setting=label)
                    )
            events, runs = company.marketing_event_retention_months, company.marketing_run_retention_months
            # A kept run's conversion is read off the events that follow its
            # entry: those must outlive the run.
            if events and (not runs or runs > events):
                raise ValidationError(
                    self.env._(
                        "Keep Finished Runs: keep runs at most as long as events (%(months)s months), "
                        "their conversions are read from the events.",
                        months=events,
                    )
                )

    @api.constrains("engagement_decay_enabled", "engagement_decay_points", "engagement_decay_days")
    def _check_engagement_decay(self):
        for company in self.filtered("engagement_decay_enabled"):
            if company.engagement_decay_points <= 0:
                raise ValidationError(self.env._("Decay Points: give a number of points above 0."))
            if company.engagement_decay_days <= 0:
                raise ValidationError(self.env._("Decay After (Days): give a number of days above 0."))
