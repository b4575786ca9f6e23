from odoo import fields
from odoo import models


class MarketingSegmentMember(models.Model):
    _name = "marketing.segment.member"
    _description = "Marketing Segment Membership"
    _order = "entered_at desc, id desc"
    # Written in bulk by the dispatcher and the refresh cron: entered_at says when.
    _log_access = False

    segment_id = fields.Many2one("marketing.segment", required=True, ondelete="cascade", readonly=True)
    partner_id = fields.Many2one(
        "res.partner", string="Contact", required=True, ondelete="cascade", readonly=True, index=True
    )
    company_id = fields.Many2one(related="segment_id.company_id", store=True, index=True)
    entered_at = fields.Datetime(string="Member Since", required=True, readonly=True, default=fields.Datetime.now)

    _sql_constraints = [
        ("segment_partner_uniq", "UNIQUE(segment_id, partner_id)", "A contact is a member of a segment once."),
    ]
