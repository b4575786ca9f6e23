from datetime import timedelta

from odoo import fields
from odoo.exceptions import AccessError
from odoo.exceptions import ValidationError
from odoo.tests import tagged

from ..models.marketing_record_trigger import PRESETS
from .scenario_common import ScenarioCommon


class RecordEventCommon(ScenarioCommon):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.Trigger = cls.env["marketing.record.trigger"]

    def make_trigger(self, model, **values):
        return self.Trigger.with_user(self.marketing_manager).create(
            {"event_type_id": self.type_purchase.id, "model_id": self.env["ir.model"]._get_id(model), **values}
        )

    def logged(self, event_type=None, partner=None):
        domain = [("type_id", "=", (event_type or self.type_purchase).id)]
        if partner:
            domain.append(("partner_id", "=", partner.id))
        return self.Event.search(domain, order="id")


@tagged("post_install", "-at_install")
class TestRecordEvents(RecordEventCommon):
    """Any Odoo model logs events through Odoo's automation rules, with no app installed."""

    def test_created_records_log_events_with_their_params(self):
        self.make_trigger("res.users", trigger="created", params_mapping="login: login\ncompany: company_id")
        user = self.env["res.users"].create({"name": "Eve Newuser", "login": "eve_new"})
        [event] = self.logged(partner=user.partner_id)
        self.assertEqual(event.params["login"], "eve_new")
        self.assertEqual(event.params["company"], self.env.company.name)
        self.assertEqual((event.params["model"], event.params["record_id"]), ("res.users", user.id))
        self.assertEqual(event.state, "pending", "the dispatcher takes it like any other event")

    def test_field_changed_logs_once_per_record_in_one_insert(self):
        self.make_trigger(
            "res.partner",
            trigger="field_changed",
            trigger_field_ids=[fields.Command.set(self.env["ir.model.fields"]._get("res.partner", "function").ids)],
            partner_path="commercial_partner_id",
            params_mapping="job: function",
        )
        partners = self.env["res.partner"].create([{"name": f"Job {i}"} for i in range(12)])
        self.assertFalse(self.logged(), "creating is no change")
        partners[:2].write({"function": "Buyer"})
        self.env.flush_all()
        before = self.cr.sql_log_count
        partners[2:].write({"function": "Chef"})
        self.env.flush_all()
        self.assertEqual(len(self.logged()), 12)
        self.assertEqual(set(self.logged()[2:].mapped(lambda event: event.params["job"])), {"Chef"})
        partners.write({"comment": "another field"})
        self.assertEqual(len(self.logged()), 12)
        self.assertLess(self.cr.sql_log_count - before, 40)

    def test_domain_logs_when_a_record_comes_to_match(self):
        self.make_trigger(
            "res.partner",
            trigger="domain",
            filter_domain="[('is_company', '=', True)]",
            partner_path="commercial_partner_id",
        )
        person = self.env["res.partner"].create({"name": "Soon a company"})
        self.assertFalse(self.logged())
        person.is_company = True
        person.write({"is_company": True, "comment": "still a company"})
        self.assertEqual(self.logged().partner_id, person)
        company = self.env["res.partner"].create({"name": "Born a company", "is_company": True})
        self.assertEqual(len(self.logged(partner=company)), 1)

    def test_bad_configuration_is_refused_with_the_field(self):
        with self.assertRaisesRegex(ValidationError, "Contact Field"):
            self.make_trigger("res.users", partner_path="login")
        with self.assertRaisesRegex(ValidationError, "Parameters: line 1"):
            self.make_trigger("res.users", params_mapping="login = login")
        with self.assertRaisesRegex(ValidationError, "has no field"):
            self.make_trigger("res.users", params_mapping="x: no_such_field")
        with self.assertRaisesRegex(ValidationError, "Date Field"):
            self.make_trigger("res.users", trigger="date")

    def test_a_marketing_user_cannot_create_automation_rules(self):
        with self.assertRaises(AccessError):
            self.Trigger.with_user(self.marketing_user).create(
                {"event_type_id": self.type_purchase.id, "model_id": self.env["ir.model"]._get_id("res.users")}
            )

    def test_presets_of_apps_not_installed_are_not_offered(self):
        self.assertNotIn("sale.order", self.env, "the module depends on no sales app")
        offered = dict(self.Trigger._fields["preset"]._description_selection(self.env))
        self.assertNotIn("sale_order_confirmed", offered)
        self.assertNotIn("lead_won", offered)
        with self.assertRaisesRegex(ValidationError, "not installed"):
            self.Trigger._install_preset("sale_order_confirmed")
        self.assertFalse(self.Trigger._demo_sale_order_purchase(), "no demo order without sales")

    def test_removing_the_record_event_removes_its_rule(self):
        trigger = self.make_trigger("res.users")
        automation = trigger.sudo().automation_id
        self.assertTrue(automation)
        trigger.unlink()
        self.assertFalse(automation.exists())


@tagged("post_install", "-at_install", "mea_optional_apps", "-standard")
class TestRecordEventsWithApps(RecordEventCommon):
    """Presets on sale and crm, in the extra test database where both are installed."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.product = cls.env["product.product"].create({"name": "Trail shoes", "list_price": 120.0})

    def order(self, partner):
        return self.env["sale.order"].create(
            {
                "partner_id": partner.id,
                "order_line": [fields.Command.create({"product_id": self.product.id, "product_uom_qty": 2})],
            }
        )

    def test_presets_of_installed_apps_are_offered(self):
        offered = dict(self.Trigger._fields["preset"]._description_selection(self.env))
        self.assertLessEqual({"sale_order_confirmed", "invoice_paid", "lead_won", "lead_stage_changed"}, set(offered))
        self.assertNotIn("website_page_visited", offered, "website is not installed")
        self.assertEqual(set(offered) <= set(PRESETS), True)

    def test_confirmed_order_logs_purchase_and_enters_the_post_purchase_scenario(self):
        trigger = self.Trigger.with_user(self.marketing_manager)._install_preset("sale_order_confirmed")
        purchase = trigger.event_type_id
        self.assertEqual(purchase.key, "purchase")
        template = self.env.ref("marketing_event_automation.scenario_template_post_purchase_review")
        scenario = template.with_user(self.marketing_user)._create_scenario()
        scenario.action_start()
        order = self.order(self.bob)
        self.assertFalse(self.logged(purchase, self.bob), "a quotation is no purchase")
        order.action_confirm()
        [event] = self.logged(purchase, self.bob)
        self.assertEqual(event.partner_id, self.bob)
        self.assertEqual(event.params["amount"], order.amount_total)
        self.assertEqual(event.params["currency"], order.currency_id.name)
        self.assertEqual(event.params["order"], order.name)
        self.assertEqual([line["id"] for line in event.params["lines"]], order.order_line.ids)
        order.write({"note": "edited after confirmation"})
        self.assertEqual(len(self.logged(purchase, self.bob)), 1, "a confirmed order logs its purchase once")
        self.dispatch()
        self.assertEqual(self.participant_of(scenario, self.bob).state, "running")

    def test_demo_order_enters_the_post_purchase_scenario(self):
        # Installed with its demo data, the test database may hold the demo order already.
        order = self.env["sale.order"].search([("client_order_ref", "=", "MEA-DEMO")])
        order = order or self.Trigger._demo_sale_order_purchase()
        self.assertEqual(order.state, "sale")
        purchase = self.EventType.search([("key", "=", "purchase")])
        self.assertEqual(len(self.logged(purchase, order.partner_id)), 1)
        self.dispatch()
        scenario = self.Scenario.search([("template_id.key", "=", "post_purchase_review"), ("state", "=", "running")])
        self.assertIn(order.partner_id, scenario.participant_ids.partner_id)
        self.assertFalse(self.Trigger._demo_sale_order_purchase(), "the demo runs once")

    def test_lead_won_and_stage_changed(self):
        won = self.Trigger.with_user(self.marketing_manager)._install_preset("lead_won")
        moved = self.Trigger.with_user(self.marketing_manager)._install_preset("lead_stage_changed")
        lead = self.env["crm.lead"].create({"name": "Big deal", "partner_id": self.bob.id, "type": "opportunity"})
        stages = self.env["crm.stage"].search([("is_won", "=", False)], order="sequence")
        lead.stage_id = stages[-1]
        # The stage crm computes for a new lead counts as a change too (from none to the first stage).
        stage_events = self.logged(moved.event_type_id, self.bob)
        self.assertEqual(stage_events.mapped(lambda event: event.params["stage"])[-1], stages[-1].name)
        self.assertLessEqual(len(stage_events), 2, stage_events.mapped("params"))
        self.assertFalse(self.logged(won.event_type_id, self.bob))
        lead.action_set_won()
        [won_event] = self.logged(won.event_type_id, self.bob)
        self.assertEqual((won_event.partner_id, won_event.params["lead"]), (self.bob, "Big deal"))
        lead.write({"expected_revenue": 5000})
        self.assertEqual(len(self.logged(won.event_type_id, self.bob)), 1)

    def test_date_reached_logs_through_the_automation_cron(self):
        self.make_trigger(
            "crm.lead",
            trigger="date",
            date_field_id=self.env["ir.model.fields"]._get("crm.lead", "date_deadline").id,
            date_delay=0,
            date_delay_unit="day",
        )
        due = self.env["crm.lead"].create(
            {"name": "Due", "partner_id": self.bob.id, "date_deadline": fields.Date.today() - timedelta(days=1)}
        )
        self.env["crm.lead"].create(
            {"name": "Later", "partner_id": self.partner.id, "date_deadline": fields.Date.today() + timedelta(days=5)}
        )
        self.env["base.automation"]._check()
        self.assertEqual(len(self.logged(partner=due.partner_id)), 1)
        self.assertFalse(self.logged(partner=self.partner), "not yet due")
