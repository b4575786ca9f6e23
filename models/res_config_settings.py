from odoo import api
from odoo import fields
from odoo import models
from odoo.exceptions import ValidationError

from .marketing_retention import DEFAULT_PURGE_TIME_SHARE
from .marketing_retention import PURGE_TIME_SHARE_PARAM


class ResConfigSettings(models.TransientModel):
    _inherit = "res.config.settings"

    engagement_decay_enabled = fields.Boolean(related="company_id.engagement_decay_enabled", readonly=False)
    engagement_decay_points = fields.Integer(related="company_id.engagement_decay_points", readonly=False)
    engagement_decay_days = fields.Integer(related="company_id.engagement_decay_days", readonly=False)
    marketing_anonymous_retention_days = fields.Integer(
        related="company_id.marketing_anonymous_retention_days", readonly=False
    )
    marketing_event_retention_months = fields.Integer(
        related="company_id.marketing_event_retention_months", readonly=False
    )
    marketing_run_retention_months = fields.Integer(related="company_id.marketing_run_retention_months", readonly=False)
    marketing_score_history_retention_months = fields.Integer(
        related="company_id.marketing_score_history_retention_months", readonly=False
    )
    marketing_purge_time_share = fields.Integer(
        string="Purge Time Share",
        config_parameter=PURGE_TIME_SHARE_PARAM,
        default=DEFAULT_PURGE_TIME_SHARE,
        help="Percentage of the time the retention purge may keep the server busy: after each batch it pauses for "
        "the rest. 100 purges without pausing.",
    )
    marketing_watched_field_ids = fields.Many2many(related="company_id.marketing_watched_field_ids", readonly=False)

    marketing_email_cap_enabled = fields.Boolean(related="company_id.marketing_email_cap_enabled", readonly=False)
    marketing_email_cap_count = fields.Integer(related="company_id.marketing_email_cap_count", readonly=False)
    marketing_email_cap_days = fields.Integer(related="company_id.marketing_email_cap_days", readonly=False)
    marketing_sms_cap_enabled = fields.Boolean(related="company_id.marketing_sms_cap_enabled", readonly=False)
    marketing_sms_cap_count = fields.Integer(related="company_id.marketing_sms_cap_count", readonly=False)
    marketing_sms_cap_days = fields.Integer(related="company_id.marketing_sms_cap_days", readonly=False)
    marketing_cap_mass_mailings = fields.Boolean(related="company_id.marketing_cap_mass_mailings", readonly=False)
    marketing_email_quiet_enabled = fields.Boolean(related="company_id.marketing_email_quiet_enabled", readonly=False)
    marketing_email_quiet_start = fields.Float(related="company_id.marketing_email_quiet_start", readonly=False)
    marketing_email_quiet_end = fields.Float(related="company_id.marketing_email_quiet_end", readonly=False)
    marketing_sms_quiet_enabled = fields.Boolean(related="company_id.marketing_sms_quiet_enabled", readonly=False)
    marketing_sms_quiet_start = fields.Float(related="company_id.marketing_sms_quiet_start", readonly=False)
    marketing_sms_quiet_end = fields.Float(related="company_id.marketing_sms_quiet_end", readonly=False)

    @api.constrains("marketing_purge_time_share")
    def _check_marketing_purge_time_share(self):
        if any(not 1 <= settings.marketing_purge_time_share <= 100 for settings in self):
            raise ValidationError(self.env._("Purge Time Share: a percentage, from 1 to 100."))
