from datetime import timedelta

from odoo.addons.mail.tests.common import MockEmail
from odoo.addons.sms.tests.common import SMSCase
from odoo.tests import tagged

from .common import MarketingAutomationHttpCommon
from .scenario_common import ScenarioCommon


@tagged("post_install", "-at_install")
class TestAbandonedCartFlow(SMSCase, MarketingAutomationHttpCommon, ScenarioCommon, MockEmail):
    """cart_abandoned over HTTP -> wait 1 h for a purchase -> email with the cart -> 1 day -> clicked?
    yes: score +5, no: SMS."""

    def build_scenario(self):
        scenario = self.create_scenario(name="Abandoned cart", entry_policy="once_at_a_time")
        wait_purchase = self.add_node(
            scenario,
            "wait_event",
            name="Purchase within the hour?",
            wait_event_type_id=self.type_purchase.id,
            wait_amount=1,
            wait_unit="hours",
        )
        email = self.add_node(scenario, "email", wait_purchase, branch="no", name="Your cart is waiting")
        email.mailing_id.write(
            {
                "subject": "Your cart is waiting",
                "body_html": "<p>You left: "
                '<t t-foreach="object.marketing_event_params.get(\'items\', [])" t-as="item">'
                '<span class="sku" t-out="item[\'sku\']"/> x<t t-out="item.get(\'quantity\', 1)"/> </t>'
                "for <t t-out=\"object.marketing_event_params.get('total')\"/></p>",
            }
        )
        one_day = self.add_node(scenario, "wait", email, name="One day", wait_amount=1, wait_unit="days")
        clicked = self.add_node(
            scenario,
            "condition",
            one_day,
            name="Clicked?",
            condition_type="email",
            condition_node_id=email.id,
            condition_email_status="clicked",
        )
        score = self.add_node(scenario, "score", clicked, branch="yes", score_delta=5, score_reason="Clicked the cart")
        sms = self.add_node(scenario, "sms", clicked, branch="no", name="SMS reminder")
        sms.mailing_id.write({"body_plaintext": "Your cart is still waiting for you", "sms_allow_unsubscribe": False})
        scenario.action_start()
        return scenario, wait_purchase, email, clicked, score, sms

    def test_abandoned_cart_end_to_end(self):
        self.bob.phone = "+32 470 99 88 77"
        carol = self.env["res.partner"].create({"name": "Carol", "email": "carol@example.com"})
        scenario, wait_purchase, email, clicked, score, sms = self.build_scenario()
        carts = [
            {
                "event": self.type_cart.key,
                "event_id": f"cart-{name}",
                "contact": {"email": f"{name}@example.com"},
                "params": {"total": 59.9, "items": [{"sku": f"SHOE-{name.upper()}", "quantity": 2}]},
            }
            for name in ("alice", "bob", "carol")
        ]
        response = self.post_json("/automation/v1/events", {"events": carts})
        self.assertEqual(response.status_code, 202, response.text)
        self.assertEqual([result["status"] for result in response.json()["results"]], ["accepted"] * 3)
        self.dispatch()
        self.assertEqual(scenario.participant_ids.partner_id, self.partner | self.bob | carol)
        start = self.now()

        # Carol buys within the hour: her wait ends on its yes branch, no email.
        response = self.post_json(
            "/automation/v1/events",
            {"event": self.type_purchase.key, "event_id": "order-1", "contact": {"email": "carol@example.com"}},
        )
        self.assertEqual(response.status_code, 202, response.text)
        self.dispatch()
        carol_run = self.participant_of(scenario, carol)
        self.assertEqual(self.steps_of(carol_run, wait_purchase).branch, "yes")
        self.assertEqual(carol_run.state, "completed")

        # One hour later, no purchase for Alice and Bob: the email with their cart goes out.
        with self.mock_mail_gateway():
            self.advance_at(start + timedelta(minutes=61))
        mails = self.env["mail.mail"].sudo().search([("mailing_id", "=", email.mailing_id.id)])
        self.assertEqual(len(mails), 2)
        alice_mail = mails.filtered(lambda mail: "SHOE-ALICE" in mail.body_html)
        self.assertIn("x2", alice_mail.body_html)
        self.assertIn("59.9", alice_mail.body_html)
        self.assertEqual(alice_mail.mailing_trace_ids.res_id, self.partner.id)

        # Alice clicks; a day later she scores, Bob gets an SMS.
        alice_mail.mailing_trace_ids.set_clicked()
        with self.mockSMSGateway():
            self.advance_at(start + timedelta(days=1, minutes=62))
        self.assertEqual(self.partner.engagement_score, 5)
        self.assertFalse(self.bob.engagement_score_set)
        bob_sms_step = self.Step.search([("node_id", "=", sms.id)])
        self.assertEqual((bob_sms_step.partner_id, bob_sms_step.state), (self.bob, "done"))
        self.assertEqual(bob_sms_step.trace_id.sms_number, "+32470998877")
        self.assertFalse(self.Step.search([("node_id", "=", sms.id), ("partner_id", "=", self.partner.id)]))

        self.assertEqual(set(scenario.participant_ids.mapped("state")), {"completed"})
        self.assertEqual((email.sent_count, email.clicked_count), (2, 1))
        self.assertEqual(scenario.click_rate, 50.0)
        self.assertEqual((score.processed_count, sms.processed_count), (1, 1))
        self.assertEqual(clicked.processed_count, 2)
