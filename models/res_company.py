from datetime import timedelta

from odoo import api
from odoo import fields
from odoo import models
from odoo.exceptions import ValidationError

from .res_partner import WATCHABLE_FIELD_TYPES

# The channels a frequency cap and quiet hours apply to: the message node types.
PRESSURE_CHANNELS = ("email", "sms")
DAY_HOURS = 24


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

    # Frequency caps: at most N marketing messages per contact and period, across all scenarios.
    marketing_email_cap_enabled = fields.Boolean(
        string="Email Frequency Cap", help="At most a number of scenario emails per contact and period."
    )
    marketing_email_cap_count = fields.Integer(string="Emails per Contact", default=3)
    marketing_email_cap_days = fields.Integer(string="Email Cap Period (Days)", default=7)
    marketing_sms_cap_enabled = fields.Boolean(
        string="SMS Frequency Cap", help="At most a number of scenario SMS per contact and period."
    )
    marketing_sms_cap_count = fields.Integer(string="SMS per Contact", default=3)
    marketing_sms_cap_days = fields.Integer(string="SMS Cap Period (Days)", default=7)
    marketing_cap_mass_mailings = fields.Boolean(
        string="Count Mass Mailings",
        help="The caps also count the mass mailings the contact received (to the contact or to its address).",
    )
    # Quiet hours: hours of the day in the contact's timezone (else the scenario's) when no message goes out.
    marketing_email_quiet_enabled = fields.Boolean(string="Email Quiet Hours")
    marketing_email_quiet_start = fields.Float(string="Emails Quiet From", default=21.0)
    marketing_email_quiet_end = fields.Float(string="Emails Quiet Until", default=8.0)
    marketing_sms_quiet_enabled = fields.Boolean(string="SMS Quiet Hours")
    marketing_sms_quiet_start = fields.Float(string="SMS Quiet From", default=21.0)
    marketing_sms_quiet_end = fields.Float(string="SMS Quiet Until", default=8.0)

    @api.constrains(
        *(
            f"marketing_{channel}_{name}"
            for channel in PRESSURE_CHANNELS
            for name in ("cap_enabled", "cap_count", "cap_days")
        )
    )
    def _check_marketing_caps(self):
        labels = {"email": self.env._("Email Frequency Cap"), "sms": self.env._("SMS Frequency Cap")}
        for company in self:
            for channel in PRESSURE_CHANNELS:
                if not company[f"marketing_{channel}_cap_enabled"]:
                    continue
                if company[f"marketing_{channel}_cap_count"] <= 0:
                    raise ValidationError(
                        self.env._("%(setting)s: give a number of messages above 0.", setting=labels[channel])
                    )
                if company[f"marketing_{channel}_cap_days"] <= 0:
                    raise ValidationError(
                        self.env._("%(setting)s: give a period of at least 1 day.", setting=labels[channel])
                    )

    @api.constrains(
        *(
            f"marketing_{channel}_{name}"
            for channel in PRESSURE_CHANNELS
            for name in ("quiet_enabled", "quiet_start", "quiet_end")
        )
    )
    def _check_marketing_quiet_hours(self):
        labels = {"email": self.env._("Email Quiet Hours"), "sms": self.env._("SMS Quiet Hours")}
        for company in self:
            for channel in PRESSURE_CHANNELS:
                if not company[f"marketing_{channel}_quiet_enabled"]:
                    continue
                start, end = company[f"marketing_{channel}_quiet_start"], company[f"marketing_{channel}_quiet_end"]
                if not (0 <= start < DAY_HOURS and 0 <= end < DAY_HOURS) or start == end:
                    raise ValidationError(
                        self.env._(
                            "%(setting)s: give two different times of day between 00:00 and 23:59.",
                            setting=labels[channel],
                        )
                    )

    def _marketing_message_rules(self, channel):
        """The cap and quiet hours of ``channel`` (email, sms): {"cap": (count, timedelta) or None,
        "quiet": (start, end) or None, "mass_mailings": bool}."""
        self.ensure_one()
        cap = quiet = None
        if self[f"marketing_{channel}_cap_enabled"]:
            cap = (self[f"marketing_{channel}_cap_count"], timedelta(days=self[f"marketing_{channel}_cap_days"]))
        if self[f"marketing_{channel}_quiet_enabled"]:
            quiet = (self[f"marketing_{channel}_quiet_start"], self[f"marketing_{channel}_quiet_end"])
        return {"cap": cap, "quiet": quiet, "mass_mailings": self.marketing_cap_mass_mailings}

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
