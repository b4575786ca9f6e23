from odoo import models


class MarketingEvent(models.Model):
    """Coupon redemption as an event consumer, beside the module's own ones."""

    _inherit = "marketing.event"

    def _event_consumers(self):
        # Before the scenarios: a scenario whose objective is coupon_redeemed
        # then finds the code already redeemed.
        consumers = super()._event_consumers()
        return [self._redeem_coupons, *consumers]

    def _redeem_coupons(self, events, results):
        """coupon_redeemed events (sent by the shop with the code) mark their codes redeemed."""
        redemptions = events.filtered(lambda event: event.type_id.key == "coupon_redeemed")
        if redemptions:
            # sudo: the dispatcher acts for the shop that reported the sale;
            # the code is looked up in the event's company only.
            self.env["marketing.coupon"].sudo()._redeem_from_events(redemptions, results)
