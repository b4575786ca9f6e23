import hashlib
import hmac
import json
from datetime import timedelta

from freezegun import freeze_time

from odoo.addons.mail.tests.common import MockEmail
from odoo.addons.sms.tests.common import SMSCase
from odoo.exceptions import UserError
from odoo.exceptions import ValidationError
from odoo.tests import tagged

from .scenario_common import ScenarioCommon
from .scenario_common import WebhookReceiver


@tagged("post_install", "-at_install")
class TestScenarioActions(ScenarioCommon, SMSCase, MockEmail):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.env["ir.config_parameter"].sudo().set_param("marketing_event_automation.webhook_allow_private", "1")

    def start_for(self, scenario, partners, params=None):
        scenario.action_start()
        for partner in partners:
            self.emit(self.type_cart, partner, params or {"total": 10.0, "items": [{"sku": "SHOE-1"}]})
        self.dispatch()
        return scenario

    def test_email_renders_event_params_and_is_tracked(self):
        scenario = self.create_scenario()
        email = self.add_node(scenario, "email", name="Your cart")
        email.mailing_id.write(
            {
                "subject": "You forgot something",
                "body_html": '<p>Items: <t t-foreach="object.marketing_event_params.get(\'items\', [])" t-as="item">'
                "<span t-out=\"item['sku']\"/></t></p>",
            }
        )
        blacklisted = self.env["res.partner"].create({"name": "No mail", "email": "nomail@example.com"})
        self.env["mail.blacklist"].create({"email": "nomail@example.com"})
        no_email = self.env["res.partner"].create({"name": "No email at all"})
        self.start_for(scenario, self.partner | blacklisted | no_email)
        with self.mock_mail_gateway():
            self.advance()
        steps = {step.partner_id: step for step in self.Step.search([("node_id", "=", email.id)])}
        self.assertEqual(steps[self.partner].state, "done")
        trace = steps[self.partner].trace_id
        self.assertEqual(trace.mass_mailing_id, email.mailing_id)
        mail = self.env["mail.mail"].sudo().search([("mailing_trace_ids", "in", trace.ids)])
        self.assertIn("SHOE-1", mail.body_html)
        self.assertEqual(mail.subject, "You forgot something")
        self.assertEqual(steps[blacklisted].state, "skipped")
        self.assertIn("lacklist", steps[blacklisted].result)
        self.assertEqual((steps[no_email].state, steps[no_email].result), ("skipped", "No valid email address"))
        trace.set_opened()
        trace.set_clicked()
        self.assertEqual((email.sent_count, email.opened_count, email.clicked_count), (1, 1, 1))
        self.assertEqual(email.skipped_count, 2)
        self.assertIn("No valid email address: 1", email.skipped_reasons)
        self.assertEqual(scenario.open_rate, 100.0)

    def test_email_links_are_tracked_once_per_link_and_per_contact_link(self):
        scenario = self.create_scenario()
        email = self.add_node(scenario, "email")
        email.mailing_id.write(
            {
                "subject": "New in",
                "body_html": "<p><a href='https://shop.example.com/new'>New</a>"
                "<a t-attf-href='https://shop.example.com/for/{{ object.id }}'>For you</a></p>",
            }
        )
        other = self.env["res.partner"].create({"name": "Other", "email": "other@example.com"})
        self.start_for(scenario, self.partner | other)
        with self.mock_mail_gateway():
            self.advance()
        trackers = self.env["link.tracker"].search([("mass_mailing_id", "=", email.mailing_id.id)])
        self.assertEqual(
            sorted(trackers.mapped("url")),
            sorted(
                [
                    "https://shop.example.com/new",
                    f"https://shop.example.com/for/{self.partner.id}",
                    f"https://shop.example.com/for/{other.id}",
                ]
            ),
            "the template's link is tracked once for everybody, the per-contact link once per contact",
        )
        mails = self.env["mail.mail"].sudo().search([("mailing_id", "=", email.mailing_id.id)])
        self.assertEqual(len(mails), 2)
        for mail in mails:
            self.assertNotIn("shop.example.com", mail.body_html, "every link goes through the tracker")
            self.assertEqual(mail.body_html.count("/r/"), 2)

    def test_email_condition_reads_the_trace(self):
        scenario = self.create_scenario()
        email = self.add_node(scenario, "email")
        email.mailing_id.write({"subject": "Hello", "body_html": "<p>Hi</p>"})
        wait = self.add_node(scenario, "wait", email, wait_amount=1, wait_unit="days")
        clicked = self.add_node(
            scenario,
            "condition",
            wait,
            condition_type="email",
            condition_node_id=email.id,
            condition_email_status="clicked",
        )
        self.add_node(scenario, "tag_add", clicked, branch="yes", tag_ids=[(6, 0, self.tag_vip.ids)])
        self.add_node(scenario, "tag_add", clicked, branch="no", tag_ids=[(6, 0, self.tag_lost.ids)])
        self.start_for(scenario, self.partner | self.bob)
        with self.mock_mail_gateway():
            self.advance()
        alice_trace = self.Step.search([("node_id", "=", email.id), ("partner_id", "=", self.partner.id)]).trace_id
        alice_trace.set_clicked()
        self.advance_at(self.now() + timedelta(days=1, minutes=1))
        self.assertIn(self.tag_vip, self.partner.category_id)
        self.assertIn(self.tag_lost, self.bob.category_id)
        self.assertEqual(clicked.processed_count, 2)

    def test_sms_skips_invalid_numbers_and_condition_on_click(self):
        scenario = self.create_scenario()
        sms = self.add_node(scenario, "sms")
        sms.mailing_id.write({"body_plaintext": "Your cart awaits", "sms_allow_unsubscribe": False})
        clicked = self.add_node(scenario, "condition", sms, condition_type="sms", condition_node_id=sms.id)
        self.add_node(scenario, "tag_add", clicked, branch="yes", tag_ids=[(6, 0, self.tag_vip.ids)])
        no_phone = self.env["res.partner"].create({"name": "No phone", "email": "np@example.com"})
        bad_phone = self.env["res.partner"].create({"name": "Bad phone", "phone": "12"})
        self.start_for(scenario, self.partner | no_phone | bad_phone)
        with self.mockSMSGateway():
            self.advance()
        steps = {step.partner_id: step for step in self.Step.search([("node_id", "=", sms.id)])}
        self.assertEqual(steps[self.partner].state, "done")
        self.assertEqual(steps[self.partner].trace_id.trace_type, "sms")
        self.assertEqual(steps[self.partner].trace_id.sms_number, "+32470123456")
        self.assertEqual((steps[no_phone].state, steps[no_phone].result), ("skipped", "No valid phone number"))
        self.assertEqual(steps[bad_phone].state, "skipped")
        self.assertNotIn(self.tag_vip, self.partner.category_id, "the SMS was not clicked")

    def test_lists_blacklist_score_activity_field_and_server_action(self):
        mailing_list = self.env["mailing.list"].create({"name": "Newsletter"})
        server_action = self.env["ir.actions.server"].create(
            {
                "name": "Mark",
                "model_id": self.env["ir.model"]._get_id("res.partner"),
                "state": "code",
                "code": "records.write({'comment': 'from server action'})",
            }
        )
        self.bob.user_id = self.sales_user
        scenario = self.create_scenario()
        nodes = [
            self.add_node(scenario, "list_add", mailing_list_id=mailing_list.id),
            self.add_node(scenario, "score", score_delta=5, score_reason="Cart"),
            self.add_node(
                scenario,
                "activity",
                activity_type_id=self.env.ref("mail.mail_activity_data_call").id,
                activity_summary="Call about the cart",
            ),
            self.add_node(
                scenario,
                "field_update",
                field_id=self.env["ir.model.fields"]._get("res.partner", "ref").id,
                field_value="CART",
            ),
            self.add_node(scenario, "server_action", server_action_id=server_action.id),
        ]
        self.start_for(scenario, self.partner | self.bob)
        self.advance()
        subscribed = mailing_list.contact_ids.mapped("email_normalized")
        self.assertEqual(sorted(subscribed), ["alice@example.com", "bob@example.com"])
        self.assertEqual((self.partner.engagement_score, self.bob.engagement_score), (5, 5))
        log = self.partner.engagement_log_ids
        self.assertEqual((log.origin, log.origin_ref), ("scenario", nodes[1]))
        activity = self.env["mail.activity"].search([("res_model", "=", "res.partner"), ("res_id", "=", self.bob.id)])
        self.assertEqual((activity.user_id, activity.summary), (self.sales_user, "Call about the cart"))
        alice_activity_step = self.Step.search([("node_id", "=", nodes[2].id), ("partner_id", "=", self.partner.id)])
        self.assertEqual((alice_activity_step.state, alice_activity_step.result), ("skipped", "No salesperson"))
        self.assertEqual((self.partner.ref, self.bob.ref), ("CART", "CART"))
        self.assertEqual(str(self.bob.comment), "<p>from server action</p>")

        # Second scenario: unsubscribe, untag and blacklist them.
        self.partner.category_id = self.tag_vip
        scenario2 = self.create_scenario(name="Cleanup", trigger_event_type_id=self.type_purchase.id)
        self.add_node(scenario2, "list_remove", mailing_list_id=mailing_list.id)
        self.add_node(scenario2, "tag_remove", tag_ids=[(6, 0, self.tag_vip.ids)])
        self.add_node(scenario2, "blacklist", blacklist_email=True, blacklist_phone=True)
        scenario2.action_start()
        self.emit(self.type_purchase, self.partner, {"total": 1})
        self.dispatch()
        self.advance()
        subscription = mailing_list.subscription_ids.filtered(
            lambda sub: sub.contact_id.email_normalized == "alice@example.com"
        )
        self.assertTrue(subscription.opt_out)
        self.assertNotIn(self.tag_vip, self.partner.category_id)
        self.assertTrue(self.env["mail.blacklist"].search([("email", "=", "alice@example.com")]))
        self.assertTrue(self.env["phone.blacklist"].search([("number", "=", "+32470123456")]))

    def test_field_update_value_is_checked(self):
        scenario = self.create_scenario()
        with self.assertRaisesRegex(ValidationError, "New Value"):
            self.add_node(
                scenario,
                "field_update",
                field_id=self.env["ir.model.fields"]._get("res.partner", "color").id,
                field_value="not a number",
            )

    def test_webhook_signs_posts_and_retries_with_backoff(self):
        with WebhookReceiver(statuses=[500, 200]) as receiver:
            scenario = self.create_scenario()
            hook = self.add_node(
                scenario, "webhook", webhook_url=receiver.url, webhook_secret="s3cret", webhook_retries=2
            )
            with freeze_time("2026-11-02 10:00:00"):
                self.start_for(scenario, self.partner)
                self.advance()
            step = self.Step.search([("node_id", "=", hook.id)])
            self.assertEqual((step.state, step.status_code, step.attempt), ("scheduled", 500, 1))
            self.assertEqual(str(step.scheduled_at), "2026-11-02 10:01:00")
            self.advance_at("2026-11-02 10:01:00")
            self.assertEqual((step.state, step.status_code, step.result), ("done", 200, "HTTP 200"))
        self.assertEqual(len(receiver.requests), 2)
        request = receiver.requests[-1]
        expected = hmac.new(b"s3cret", request["body"], hashlib.sha256).hexdigest()
        self.assertEqual(request["headers"]["X-MEA-Signature"], f"sha256={expected}")
        payload = json.loads(request["body"])
        self.assertEqual(payload["contact"]["email"], "alice@example.com")
        self.assertEqual(payload["event"]["items"], [{"sku": "SHOE-1"}])
        self.assertEqual(payload["attempt"], 2)

    def test_webhook_gives_up_after_retries(self):
        with WebhookReceiver(statuses=[503, 503]) as receiver:
            scenario = self.create_scenario()
            hook = self.add_node(scenario, "webhook", webhook_url=receiver.url, webhook_secret="x", webhook_retries=1)
            with freeze_time("2026-11-02 10:00:00"):
                self.start_for(scenario, self.partner)
                self.advance()
            self.advance_at("2026-11-02 10:05:00")
        step = self.Step.search([("node_id", "=", hook.id)])
        self.assertEqual((step.state, step.status_code), ("error", 503))
        self.assertIn("after 2 attempts", step.result)
        self.assertEqual(len(receiver.requests), 2)

    def test_webhook_refuses_private_addresses_unless_allowed(self):
        self.env["ir.config_parameter"].sudo().set_param("marketing_event_automation.webhook_allow_private", "0")
        scenario = self.create_scenario()
        hook = self.add_node(scenario, "webhook", webhook_url="http://127.0.0.1:9/hook", webhook_secret="x")
        with self.assertRaisesRegex(UserError, "private or local address"):
            scenario.action_start()
        self.assertIn("private or local", "\n".join(hook._configuration_problems()))
