from datetime import datetime
from datetime import timedelta

from freezegun import freeze_time

from odoo.addons.mail.tests.common import MockEmail
from odoo.exceptions import AccessError
from odoo.exceptions import ValidationError
from odoo.tests import new_test_user
from odoo.tests import tagged

from .scenario_common import ScenarioCommon

T0 = datetime(2026, 11, 2, 10, 0)
# The foreign currency is worth 1 / 0.8 of the company's currency until the
# 10th of November, then 1 / 0.5.
RATE_UNTIL_10TH = 0.8
RATE_FROM_10TH = 0.5


@tagged("post_install", "-at_install")
class TestEventValue(ScenarioCommon, MockEmail):
    """Events worth money: their value in the company's currency, the contacts' lifetime value, the revenue."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.currency = cls.company.currency_id
        eur, usd = cls.env.ref("base.EUR"), cls.env.ref("base.USD")
        cls.foreign = usd if cls.currency == eur else eur
        cls.foreign.active = True
        Rate = cls.env["res.currency.rate"]
        Rate.search([("currency_id", "in", (cls.currency | cls.foreign).ids)]).unlink()
        Rate.create(
            [
                {"currency_id": cls.currency.id, "rate": 1.0, "name": "2020-01-01", "company_id": cls.company.id},
                {
                    "currency_id": cls.foreign.id,
                    "rate": RATE_UNTIL_10TH,
                    "name": "2020-01-01",
                    "company_id": cls.company.id,
                },
                {
                    "currency_id": cls.foreign.id,
                    "rate": RATE_FROM_10TH,
                    "name": "2026-11-10",
                    "company_id": cls.company.id,
                },
            ]
        )
        cls.type_purchase.write({"value_param": "total", "value_currency_param": "currency"})
        cls.carol = cls.env["res.partner"].create({"name": "Carol", "email": "carol@example.com"})
        cls.dave = cls.env["res.partner"].create({"name": "Dave", "email": "dave@example.com"})

    def purchase(self, partner, params, at):
        with freeze_time(at):
            self.emit(self.type_purchase, partner, params)
            self.dispatch()

    def test_lifetime_value_adds_up_the_events_in_the_company_currency(self):
        foreign = self.foreign.name
        self.purchase(self.partner, {"total": 40}, T0)
        # 100 in the foreign currency: 125 at the rate of the day...
        self.purchase(self.partner, {"total": "100", "currency": foreign.lower()}, T0)
        # ... and 200 at the rate from the 10th on.
        self.purchase(self.partner, {"total": 100, "currency": foreign}, T0 + timedelta(days=10))
        # An unknown currency is the type's (none: the company's); no number, no value.
        self.purchase(self.partner, {"total": 7, "currency": "XYZ"}, T0)
        for params in ({"total": "abc"}, {"total": True}, {"currency": foreign}, {"total": "1e999"}, {}):
            self.purchase(self.partner, params, T0)
        self.env.invalidate_all()
        self.assertEqual(self.partner.marketing_value_currency_id, self.currency)
        self.assertAlmostEqual(self.partner.marketing_lifetime_value, 40 + 125 + 200 + 7)
        self.assertFalse(self.bob.marketing_lifetime_value)
        self.assertFalse(self.bob.marketing_value_currency_id, "no value event, no lifetime value")

    def test_fixed_currency_and_nested_parameter(self):
        order_type = self.EventType.create(
            {
                "name": "Order paid",
                "key": "test_order_paid",
                "value_param": "order.total",
                "value_currency_id": self.foreign.id,
            }
        )
        with freeze_time(T0):
            self.emit(order_type, self.bob, {"order": {"total": 8}})
            self.emit(order_type, self.bob, {"order": 8})
            self.dispatch()
        self.env.invalidate_all()
        self.assertAlmostEqual(self.bob.marketing_lifetime_value, 10.0)

    def test_value_parameter_is_a_parameter_name(self):
        with self.assertRaisesRegex(ValidationError, "Value Parameter of Test purchase"):
            self.type_purchase.value_param = "total + tax"
        other = self.EventType.create({"name": "Refund", "key": "test_refund"})
        with self.assertRaisesRegex(ValidationError, "Currency Parameter of Refund"):
            other.value_currency_param = "cur..rency"

    def test_lifetime_value_is_for_employees_and_set_by_events_only(self):
        self.purchase(self.partner, {"total": 40}, T0)
        self.env.invalidate_all()
        self.assertAlmostEqual(self.partner.with_user(self.sales_user).marketing_lifetime_value, 40)
        portal = new_test_user(self.env, login="mea_portal_clv", groups="base.group_portal")
        with self.assertRaises(AccessError):
            portal.partner_id.with_user(portal).read(["marketing_lifetime_value"])
        for user in (self.sales_user, self.marketing_user):
            with self.subTest(user=user.login), self.assertRaises(AccessError):
                self.partner.with_user(user).write({"marketing_lifetime_value": 1000})
        with self.assertRaises(AccessError):
            self.env["res.partner"].with_user(self.marketing_user).create(
                {"name": "Rich", "marketing_lifetime_value": 1000}
            )
        arch = self.env["res.partner"].with_user(self.sales_user).get_view(view_type="form")["arch"]
        self.assertIn('name="marketing_lifetime_value"', arch)

    def revenue_scenario(self):
        scenario = self.create_scenario(objective_event_type_id=self.type_purchase.id, objective_days=7)
        email = self.add_node(scenario, "email", name="Your cart")
        email.mailing_id.write({"subject": "Your cart", "body_html": "<p>Come back</p>"})
        scenario.action_start()
        with freeze_time(T0):
            for partner in self.partner | self.bob | self.carol | self.dave:
                self.emit(self.type_cart, partner, {"total": 10, "items": []})
            self.dispatch()
            with self.mock_mail_gateway():
                self.advance()
        return scenario, email

    def test_revenue_of_the_scenario_and_its_message(self):
        scenario, email = self.revenue_scenario()
        self.purchase(self.partner, {"total": 40}, T0 + timedelta(days=1))
        self.purchase(self.bob, {"total": 100, "currency": self.foreign.name}, T0 + timedelta(days=1))
        # Bob's second purchase adds to his lifetime value, not to his conversion.
        self.purchase(self.bob, {"total": 30}, T0 + timedelta(days=2))
        # Carol buys after the objective's seven days: no conversion.
        self.purchase(self.carol, {"total": 500}, T0 + timedelta(days=8))
        self.env.invalidate_all()
        runs = {run.partner_id: run for run in self.Participant.search([("scenario_id", "=", scenario.id)])}
        self.assertEqual(runs[self.partner].converted_at, T0 + timedelta(days=1))
        self.assertEqual(
            [runs[partner].conversion_value for partner in (self.partner, self.bob, self.carol, self.dave)],
            [40.0, 125.0, 0.0, 0.0],
        )
        self.assertEqual(scenario.objective_count, 2)
        self.assertAlmostEqual(scenario.revenue, 165.0)
        self.assertAlmostEqual(scenario.revenue_per_entrant, 41.25)
        self.assertEqual(email.sent_count, 4)
        self.assertAlmostEqual(email.revenue, 165.0)
        self.assertAlmostEqual(email.revenue_per_recipient, 41.25)
        self.assertAlmostEqual(self.bob.marketing_lifetime_value, 155.0)
        cards = {card["id"]: card for card in scenario.get_flow_data()["nodes"]}
        revenue = {stat["name"]: stat["value"] for stat in cards[email.id]["stats"]}["revenue"]
        self.assertIn("165.00", revenue)
        trigger_stats = {stat["name"]: stat["value"] for stat in scenario.get_flow_data()["trigger"]["stats"]}
        self.assertIn("165.00", trigger_stats["revenue"])

    def test_revenue_of_treated_against_control(self):
        scenario = self.create_scenario(objective_event_type_id=self.type_purchase.id, objective_days=7)
        with freeze_time(T0):
            self.Participant.create(
                [
                    {"scenario_id": scenario.id, "partner_id": self.partner.id},
                    {"scenario_id": scenario.id, "partner_id": self.bob.id},
                    {"scenario_id": scenario.id, "partner_id": self.carol.id, "is_control": True},
                    {"scenario_id": scenario.id, "partner_id": self.dave.id, "is_control": True},
                ]
            )
        self.purchase(self.partner, {"total": 60}, T0 + timedelta(days=1))
        self.purchase(self.bob, {"total": 40}, T0 + timedelta(days=1))
        self.purchase(self.carol, {"total": 20}, T0 + timedelta(days=1))
        self.env.invalidate_all()
        self.assertAlmostEqual(scenario.revenue, 120.0)
        self.assertAlmostEqual(scenario.treated_revenue_per_entrant, 50.0)
        self.assertAlmostEqual(scenario.control_revenue_per_entrant, 10.0)
        self.assertAlmostEqual(scenario.incremental_revenue, 80.0, msg="(50 - 10) per treated entrant, two of them")

    def test_a_new_objective_finds_the_past_conversions(self):
        scenario, _email = self.revenue_scenario()
        order_type = self.EventType.create({"name": "Order paid", "key": "test_order_paid", "value_param": "amount"})
        with freeze_time(T0 + timedelta(days=1)):
            self.emit(order_type, self.dave, {"amount": 12})
            self.dispatch()
        self.purchase(self.partner, {"total": 40}, T0 + timedelta(days=1))
        self.env.invalidate_all()
        self.assertEqual((scenario.objective_count, scenario.revenue), (1, 40.0))
        scenario.objective_event_type_id = order_type
        self.env.invalidate_all()
        self.assertEqual((scenario.objective_count, scenario.revenue), (1, 12.0))
        self.assertEqual(
            scenario._converted_participants(), [(scenario.id, self.participant_of(scenario, self.dave).id)]
        )
        scenario.objective_days = 0
        self.env.invalidate_all()
        self.assertEqual((scenario.objective_count, scenario.revenue), (0, 0.0))

    def test_dispatch_queries_do_not_grow_with_the_batch(self):
        scenario = self.create_scenario(objective_event_type_id=self.type_purchase.id, objective_days=7)
        self.add_node(scenario, "tag_add", tag_ids=[(6, 0, self.tag_vip.ids)])
        scenario.action_start()
        counts = []
        frozen = freeze_time(T0)
        frozen.start()
        self.addCleanup(frozen.stop)
        # The first batch warms the caches (rates, references) up.
        for size in (2, 3, 12):
            partners = self.env["res.partner"].create(
                [{"name": f"Buyer {size}-{i}", "email": f"buyer{size}-{i}@example.org"} for i in range(size)]
            )
            self.dispatch()
            for partner in partners:
                self.emit(self.type_cart, partner, {"total": 1, "items": []})
            self.dispatch()
            for partner in partners:
                self.emit(self.type_purchase, partner, {"total": 10, "currency": self.foreign.name})
            self.env.flush_all()
            self.env.invalidate_all()
            before = self.cr.sql_log_count
            self.Event._cron_dispatch()
            counts.append(self.cr.sql_log_count - before)
            self.env.invalidate_all()
            self.assertEqual(
                self.Participant.search_count(
                    [("partner_id", "in", partners.ids), ("converted_at", "!=", False), ("conversion_value", "=", 12.5)]
                ),
                size,
            )
        self.assertEqual(counts[1], counts[2], counts)
