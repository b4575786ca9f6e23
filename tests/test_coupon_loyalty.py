from odoo.tests import tagged

from .test_coupon_lists import CouponCommon

# Run by `make test` in a second database where Odoo's Loyalty app is installed
# (tools/dev.py); the main run, without Loyalty, leaves this tag out.
LOYALTY_TAG = "mea_loyalty"


@tagged("post_install", "-at_install", LOYALTY_TAG)
class TestCouponLoyaltyBridge(CouponCommon):
    """Where Loyalty is installed, a coupon list hands out new cards of a program and reads their use."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.program = cls.env["loyalty.program"].create(
            {"name": "Spring coupons", "program_type": "coupons", "trigger": "with_code"}
        )

    def loyalty_list(self):
        return self.CouponList.create(
            {
                "name": "From Loyalty",
                "source": "loyalty",
                "loyalty_program_ref": f"loyalty.program,{self.program.id}",
            }
        )

    def test_codes_are_cards_of_the_program_and_their_use_redeems_them(self):
        self.assertIn("loyalty", dict(self.CouponList._selection_source()))
        coupon_list = self.loyalty_list()
        scenario, _node, email = self.coupon_scenario(coupon_list)
        partners = self.partner | self.bob
        self.run_for(scenario, partners)
        cards = self.env["loyalty.card"].search([("program_id", "=", self.program.id)])
        self.assertEqual(len(cards), 2)
        self.assertEqual(cards.partner_id, partners, "each card is its contact's")
        for participant in scenario.participant_ids:
            card = cards.filtered(lambda card, partner=participant.partner_id: card.partner_id == partner)
            self.assertEqual(participant.coupon_code, card.code)
            self.assertEqual(participant.coupon_id.loyalty_card_id, card.id)
            trace = self.steps_of(participant, email).trace_id
            mail = self.env["mail.mail"].sudo().search([("mailing_trace_ids", "in", trace.ids)])
            self.assertIn(card.code, mail.body_html)
        # A card used in an order (Loyalty records it in the card's history) redeems its code.
        used = cards.filtered(lambda card: card.partner_id == self.partner)
        self.env["loyalty.history"].create({"card_id": used.id, "description": "Order S001", "used": 1})
        self.assertEqual(coupon_list._loyalty_sync_redemptions(), 1)
        self.assertEqual((coupon_list.given_count, coupon_list.redeemed_count), (2, 1))
        self.assertEqual(self.participant_of(scenario, self.partner).coupon_id.state, "redeemed")
        self.assertEqual(coupon_list._loyalty_sync_redemptions(), 0, "read once")

    def test_a_contact_holding_a_card_gets_it_again(self):
        coupon_list = self.loyalty_list()
        first, _node, _email = self.coupon_scenario(coupon_list)
        self.run_for(first, self.partner)
        again, _node, _email = self.coupon_scenario(coupon_list)
        self.run_for(again, self.partner)
        self.assertEqual(
            self.participant_of(again, self.partner).coupon_id, self.participant_of(first, self.partner).coupon_id
        )
        self.assertEqual(self.env["loyalty.card"].search_count([("program_id", "=", self.program.id)]), 1)
