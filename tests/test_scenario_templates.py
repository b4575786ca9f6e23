from datetime import timedelta

from odoo.addons.mail.tests.common import MockEmail
from odoo.tests import tagged

from .scenario_common import ScenarioCommon

TEMPLATE_KEYS = (
    "welcome_series",
    "abandoned_cart",
    "post_purchase_review",
    "reengagement",
    "birthday",
    "engagement_reward",
    "list_hygiene",
)


@tagged("post_install", "-at_install")
class TestScenarioTemplates(ScenarioCommon, MockEmail):
    """Each template creates a complete scenario that starts as it is, with editable sample emails."""

    def template(self, key):
        return self.env.ref(f"marketing_event_automation.scenario_template_{key}")

    def shape(self, scenario):
        """(type, previous node's type, branch) of each node, in creation order."""
        return [(node.node_type, node.parent_id.node_type or None, node.branch) for node in scenario.node_ids]

    def test_every_template_creates_a_startable_scenario(self):
        templates = self.env["marketing.scenario.template"].search([])
        self.assertEqual(set(templates.mapped("key")), set(TEMPLATE_KEYS))
        for template in templates:
            with self.subTest(template=template.key):
                scenario = template.with_user(self.marketing_user)._create_scenario()
                self.assertEqual(scenario.template_id, template)
                self.assertEqual(scenario.state, "draft")
                self.assertEqual(scenario._check_ready(), [])
                scenario.with_user(self.marketing_user).action_start()
                self.assertEqual(scenario.state, "running")
                for node in scenario.node_ids.filtered(lambda node: node.node_type == "email"):
                    mailing = node.mailing_id
                    self.assertTrue(mailing.subject)
                    self.assertIn("o_layout", mailing.body_arch, "opens in the mailing editor like its own designs")
                    self.assertIn("object.name", mailing.body_html, "the email greets its contact")
                    self.assertIn("/unsubscribe_from_list", mailing.body_html)
                # Each scenario gets mailings of its own, editable without touching the other scenarios.
                again = template._create_scenario()
                self.assertFalse(again.node_ids.mailing_id & scenario.node_ids.mailing_id)

    def test_template_shapes(self):
        expected = {
            "welcome_series": [
                ("email", None, "always"),
                ("wait", "email", "always"),
                ("email", "wait", "always"),
                ("wait", "email", "always"),
                ("coupon", "wait", "always"),
                ("email", "coupon", "always"),
            ],
            "abandoned_cart": [
                ("wait_event", None, "always"),
                ("email", "wait_event", "no"),
                ("wait_event", "email", "always"),
                ("coupon", "wait_event", "no"),
                ("email", "coupon", "always"),
            ],
            "post_purchase_review": [
                ("wait", None, "always"),
                ("email", "wait", "always"),
                ("wait_event", "email", "always"),
                ("score", "wait_event", "yes"),
                ("email", "wait_event", "no"),
            ],
            "reengagement": [
                ("email", None, "always"),
                ("wait", "email", "always"),
                ("condition", "wait", "always"),
                ("score", "condition", "yes"),
                ("coupon", "condition", "no"),
                ("email", "coupon", "always"),
                ("wait", "email", "always"),
                ("condition", "wait", "always"),
                ("tag_add", "condition", "no"),
            ],
            "birthday": [("wait", None, "always"), ("coupon", "wait", "always"), ("email", "coupon", "always")],
            "engagement_reward": [
                ("tag_add", None, "always"),
                ("coupon", "tag_add", "always"),
                ("email", "coupon", "always"),
                ("wait_event", "email", "always"),
                ("score", "wait_event", "yes"),
            ],
            "list_hygiene": [("blacklist", None, "always"), ("tag_add", "blacklist", "always")],
        }
        for key, shape in expected.items():
            with self.subTest(template=key):
                self.assertEqual(self.shape(self.template(key)._create_scenario()), shape)

    def test_triggers_and_objectives(self):
        cart = self.template("abandoned_cart")._create_scenario()
        purchase = self.EventType._get_by_keys(["purchase"], self.company)["purchase"]
        self.assertEqual((cart.trigger_type, cart.trigger_event_type_id.key), ("event", "cart_abandoned"))
        self.assertEqual((cart.objective_event_type_id, cart.objective_days), (purchase, 7))
        wait_purchase = cart.node_ids[0]
        self.assertEqual((wait_purchase.wait_event_type_id, wait_purchase.wait_amount), (purchase, 4))
        reward = self.template("engagement_reward")._create_scenario()
        self.assertEqual((reward.trigger_type, reward.score_operator, reward.score_threshold), ("score", ">=", 50))
        self.assertEqual(reward.entry_policy, "once")
        birthday = self.template("birthday")._create_scenario()
        self.assertEqual((birthday.trigger_type, birthday.repeat_unit), ("repeat", "days"))
        self.assertEqual(birthday.node_ids[0].wait_field_id.name, "marketing_birthday")
        self.assertTrue(birthday.node_ids[0].wait_yearly)
        hygiene = self.template("list_hygiene")._create_scenario()
        self.assertEqual(
            hygiene.trigger_event_type_id, self.env.ref("marketing_event_automation.event_type_email_bounced")
        )
        self.assertTrue(hygiene.objective_prompt_skipped, "a cleaning scenario does not ask for an objective")

    def test_discount_templates_create_their_coupon_list(self):
        for key, prefix in (
            ("welcome_series", "WELCOME-"),
            ("abandoned_cart", "CART-"),
            ("reengagement", "COMEBACK-"),
            ("birthday", "BDAY-"),
            ("engagement_reward", "VIP-"),
        ):
            with self.subTest(template=key):
                scenario = self.template(key).with_user(self.marketing_user)._create_scenario()
                give = scenario.node_ids.filtered(lambda node: node.node_type == "coupon")
                coupon_list = give.coupon_list_id
                self.assertEqual((coupon_list.available_count, coupon_list.company_id), (1000, scenario.company_id))
                self.assertTrue(all(code.startswith(prefix) for code in coupon_list.coupon_ids.mapped("code")))
                email = give.child_ids
                self.assertEqual(email.node_type, "email")
                self.assertIn('t-out="object.marketing_coupon_code"', email.mailing_id.body_html)
                again = self.template(key)._create_scenario()
                self.assertNotEqual(
                    again.node_ids.coupon_list_id, coupon_list, "each scenario hands out codes of its own list"
                )

    def test_missing_event_types_are_registered(self):
        EventType = self.EventType.with_context(active_test=False)
        self.assertFalse(EventType.search([("key", "=", "review_submitted")]))
        scenario = self.template("post_purchase_review").with_user(self.marketing_user)._create_scenario()
        review = EventType.search([("key", "=", "review_submitted")])
        self.assertEqual(len(review), 1)
        self.assertFalse(review.company_id, "shared between companies like the internal types")
        self.assertEqual(review.category_id, self.category_ecommerce)
        self.assertEqual(scenario.objective_event_type_id, review)
        # A second scenario reuses it; an archived type is brought back rather than duplicated.
        review.active = False
        self.template("post_purchase_review")._create_scenario()
        self.assertEqual(EventType.search([("key", "=", "review_submitted")]), review)
        self.assertTrue(review.active)

    def test_create_from_template_actions(self):
        created_before = self.template("abandoned_cart").scenario_count
        action = self.Scenario.with_user(self.marketing_user).action_open_templates()
        self.assertEqual(action["res_model"], "marketing.scenario.template")
        result = self.template("abandoned_cart").with_user(self.marketing_user).action_create_scenario()
        scenario = self.Scenario.browse(result["res_id"])
        self.assertEqual((result["res_model"], result["view_mode"]), ("marketing.scenario", "form"))
        self.assertEqual(scenario.name, "Abandoned cart")
        self.assertEqual(self.template("abandoned_cart").scenario_count, created_before + 1)

    def test_abandoned_cart_template_mails_the_cart(self):
        scenario = self.template("abandoned_cart")._create_scenario()
        scenario.action_start()
        cart_type = scenario.trigger_event_type_id
        self.emit(
            cart_type,
            self.partner,
            {
                "cart_id": "C-1",
                "total": 59.9,
                "currency": "EUR",
                "items": [{"sku": "SHOE-1", "name": "Red shoe", "quantity": 2}],
            },
        )
        self.dispatch()
        start = self.now()
        with self.mock_mail_gateway():
            self.advance_at(start + timedelta(hours=4, minutes=1))
        reminder = scenario.node_ids[1]
        mail = self.env["mail.mail"].sudo().search([("mailing_id", "=", reminder.mailing_id.id)])
        self.assertEqual(len(mail), 1)
        self.assertIn("Red shoe", mail.body_html)
        self.assertIn("x 2", mail.body_html)
        self.assertIn("59.9 EUR", mail.body_html)
        self.assertIn("Alice Shopper", mail.body_html)
        self.assertEqual(mail.subject, "You left something in your cart")
        # No purchase the next day either: the coupon reminder follows, with the same cart.
        with self.mock_mail_gateway():
            self.advance_at(start + timedelta(days=1, hours=4, minutes=2))
        # The fixed code CART10 gave way to a code of the scenario's own coupon list, one per contact.
        give = scenario.node_ids[3]
        code = self.participant_of(scenario, self.partner).coupon_code
        self.assertTrue(code.startswith("CART-"))
        self.assertEqual(give.coupon_list_id.given_count, 1)
        coupon = self.env["mail.mail"].sudo().search([("mailing_id", "=", scenario.node_ids[4].mailing_id.id)])
        self.assertIn(f"<strong>{code}</strong>", coupon.body_html)
        self.assertIn("Red shoe", coupon.body_html)
        self.assertEqual(self.participant_of(scenario, self.partner).state, "completed")
