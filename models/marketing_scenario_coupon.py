from odoo import fields
from odoo import models


class MarketingScenario(models.Model):
    """A scenario's coupon statistics: the codes its Give a coupon nodes handed out, and their redemption."""

    _inherit = "marketing.scenario"

    coupon_given_count = fields.Integer(string="Coupons Given", compute="_compute_coupon_statistics")
    coupon_redeemed_count = fields.Integer(string="Coupons Redeemed", compute="_compute_coupon_statistics")
    coupon_redemption_rate = fields.Float(
        string="Coupon Redemption (%)",
        compute="_compute_coupon_statistics",
        help="Redeemed codes among those the scenario handed out.",
    )

    def _compute_coupon_statistics(self):
        counts = {}
        ids = [scenario_id for scenario_id in self.ids if scenario_id]
        if ids:
            for scenario, state, count in self.env["marketing.coupon"]._read_group(
                [("scenario_id", "in", ids), ("state", "in", ("given", "redeemed"))],
                ["scenario_id", "state"],
                ["__count"],
            ):
                counts[scenario.id, state] = count
        for scenario in self:
            redeemed = counts.get((scenario.id, "redeemed"), 0)
            given = counts.get((scenario.id, "given"), 0) + redeemed
            scenario.coupon_given_count = given
            scenario.coupon_redeemed_count = redeemed
            scenario.coupon_redemption_rate = 100.0 * redeemed / given if given else 0.0

    def action_view_coupons(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id("marketing_event_automation.action_marketing_coupon")
        action["domain"] = [("scenario_id", "=", self.id)]
        action["context"] = {}
        return action
