from datetime import datetime
from datetime import timedelta

from freezegun import freeze_time

from odoo.addons.mail.tests.common import MockEmail
from odoo.exceptions import UserError
from odoo.exceptions import ValidationError
from odoo.tests import tagged

from .common import MarketingAutomationHttpCommon
from .scenario_common import ScenarioCommon

T0 = datetime(2026, 11, 2, 10, 0)


@tagged("post_install", "-at_install")
class TestScenarioObjectiveWizard(ScenarioCommon):
    def test_new_scenario_asks_for_an_objective(self):
        scenario = self.create_scenario().with_user(self.marketing_user)
        self.assertFalse(scenario.objective_event_type_id)
        self.assertFalse(scenario.objective_prompt_skipped)
        action = scenario.action_choose_objective()
        self.assertEqual((action["res_model"], action["target"]), ("marketing.scenario.objective.wizard", "new"))
        Wizard = self.env[action["res_model"]].with_user(self.marketing_user).with_context(**action["context"])
        wizard = Wizard.create({"objective_event_type_id": self.type_purchase.id, "objective_days": 3})
        self.assertEqual(wizard.scenario_id, scenario)
        self.assertEqual(wizard.action_apply(), {"type": "ir.actions.act_window_close"})
        self.assertEqual((scenario.objective_event_type_id, scenario.objective_days), (self.type_purchase, 3))

    def test_objective_can_be_skipped(self):
        scenario = self.create_scenario().with_user(self.marketing_user)
        wizard = self.env["marketing.scenario.objective.wizard"].create(
            {"scenario_id": scenario.id, "objective_event_type_id": self.type_purchase.id}
        )
        wizard.action_skip()
        self.assertTrue(scenario.objective_prompt_skipped)
        self.assertFalse(scenario.objective_event_type_id)
        other = self.create_scenario()
        other.action_skip_objective()
        self.assertTrue(other.objective_prompt_skipped)
        self.assertFalse(other.copy().objective_prompt_skipped, "a copy asks again")

    def test_objective_days_must_be_positive(self):
        scenario = self.create_scenario()
        with self.assertRaisesRegex(ValidationError, "Within \\(days\\)"):
            self.env["marketing.scenario.objective.wizard"].create(
                {"scenario_id": scenario.id, "objective_event_type_id": self.type_purchase.id, "objective_days": 0}
            )


@tagged("post_install", "-at_install")
class TestScenarioKanban(ScenarioCommon):
    def test_kanban_is_the_default_view_with_quick_actions(self):
        action = self.env.ref("marketing_event_automation.action_marketing_scenario")
        self.assertEqual(action.view_mode.split(",")[0], "kanban")
        arch = self.Scenario.with_user(self.marketing_user).get_views([(False, "kanban")])["views"]["kanban"]["arch"]
        for name in ("action_start", "action_pause", "action_resume", "action_open_templates"):
            self.assertIn(f'name="{name}"', arch)
        for field in ("trigger_summary", "active_count", "completed_count", "open_rate", "click_rate"):
            self.assertIn(f'name="{field}"', arch)

    def test_quick_start_and_pause(self):
        scenario = self.create_scenario().with_user(self.marketing_user)
        with self.assertRaisesRegex(UserError, "no step"):
            scenario.action_start()
        self.assertEqual(scenario.state, "draft")
        self.add_node(scenario, "tag_add", tag_ids=[(6, 0, self.tag_vip.ids)])
        scenario.action_start()
        self.assertEqual(scenario.state, "running")
        scenario.action_pause()
        self.assertEqual(scenario.state, "paused")
        scenario.action_resume()
        self.assertEqual(scenario.state, "running")

    def test_trigger_summary(self):
        self.assertEqual(self.create_scenario().trigger_summary, "Test cart abandoned")
        filtered = self.create_scenario(trigger_params_filter="total > 100")
        self.assertEqual(filtered.trigger_summary, "Test cart abandoned (total > 100)")
        repeat = self.create_scenario(trigger_type="repeat", repeat_interval=2, repeat_unit="weeks", repeat_hour=9.5)
        self.assertEqual(repeat.trigger_summary, "Every 2 weeks at 09:30")
        score = self.create_scenario(trigger_type="score", score_operator=">=", score_threshold=50)
        self.assertEqual(score.trigger_summary, "Score is greater than or equal to 50")


@tagged("post_install", "-at_install")
class TestScenarioStatistics(ScenarioCommon, MockEmail):
    """Funnel, entries over time and drill-downs count the same participants and steps."""

    def setUp(self):
        super().setUp()
        self.carol = self.env["res.partner"].create({"name": "Carol", "email": "carol@example.com"})
        self.dave = self.env["res.partner"].create({"name": "Dave", "email": "dave@example.com"})
        template = self.env.ref("marketing_event_automation.scenario_template_abandoned_cart")
        self.scenario = template._create_scenario(objective_event_type_id=self.type_purchase.id)
        self.scenario.write({"trigger_event_type_id": self.type_cart.id})
        for node in self.scenario.node_ids.filtered(lambda node: node.node_type == "wait_event"):
            node.wait_event_type_id = self.type_purchase
        # The template's Give a coupon node (issue 21) comes before the coupon email.
        self.wait_1, self.reminder, self.wait_2, self.give, self.coupon = self.scenario.node_ids
        self.scenario.action_start()
        cart = {"total": 10, "items": [{"sku": "A"}]}
        # Alice and Bob enter on day 0, Carol and Dave on day 1.
        with freeze_time(T0):
            for partner in (self.partner, self.bob):
                self.emit(self.type_cart, partner, cart)
            self.dispatch()
        with freeze_time(T0 + timedelta(days=1)):
            for partner in (self.carol, self.dave):
                self.emit(self.type_cart, partner, cart)
            self.dispatch()
            # Carol buys at once: her first wait ends on yes, she converted.
            self.emit(self.type_purchase, self.carol, {"total": 10})
            self.dispatch()
        with self.mock_mail_gateway():
            self.advance_at(T0 + timedelta(days=1, hours=5))
        # Alice opens and clicks her reminder; Bob opens it; Alice buys after it.
        traces = {step.partner_id: step.trace_id for step in self.Step.search([("node_id", "=", self.reminder.id)])}
        traces[self.partner].set_clicked()
        traces[self.partner].set_opened()
        traces[self.bob].set_opened()
        with freeze_time(T0 + timedelta(days=1, hours=6)):
            self.emit(self.type_purchase, self.partner, {"total": 10})
            self.dispatch()
        with self.mock_mail_gateway():
            self.advance_at(T0 + timedelta(days=3))
        # The counts are computed per request; a test reads them fresh.
        self.env.invalidate_all()

    def test_funnel(self):
        scenario = self.scenario
        funnel = scenario._funnel_data()
        # Main path: the busiest branch at every step (Carol left on the first wait's yes branch).
        self.assertEqual(
            [(row["label"], row["count"], row["rate"]) for row in funnel["path"]],
            [
                ("Entered", 4, 100.0),
                ("Purchase within 4 hours?", 4, 100.0),
                ("Cart reminder", 3, 75.0),
                ("Purchase within a day?", 3, 75.0),
                ("Cart code", 2, 50.0),
                ("Cart coupon", 2, 50.0),
            ],
        )
        self.assertEqual(
            [(row["label"], row["count"], row["rate"]) for row in funnel["email"]],
            [
                ("Emails sent", 5, 100.0),
                ("Opened", 2, 40.0),
                ("Clicked", 1, 20.0),
                ("Converted (Test purchase)", 2, 40.0),
            ],
        )
        self.assertEqual((scenario.objective_count, scenario.conversion_rate), (2, 50.0))
        html = str(scenario.funnel_html)
        self.assertEqual(
            html.count("o_mea_funnel_row"), 10, "six path rows (the coupon node among them), four email rows"
        )
        self.assertIn("Cart coupon", html)
        self.assertIn("width: 75.0%", html)

    def test_funnel_of_an_empty_scenario(self):
        scenario = self.env.ref("marketing_event_automation.scenario_template_welcome_series")._create_scenario()
        funnel = scenario._funnel_data()
        self.assertEqual([row["count"] for row in funnel["path"]], [0, 0, 0, 0, 0, 0, 0], "entered and six nodes")
        self.assertEqual([row["rate"] for row in funnel["email"]], [0.0, 0.0, 0.0, 0.0])

    def test_entries_over_time(self):
        action = self.scenario.with_user(self.marketing_user).action_view_participants_graph()
        self.assertEqual(action["views"][0][1], "graph")
        Participant = self.Participant.with_user(self.marketing_user)
        by_day = Participant._read_group(action["domain"], ["entered_at:day"], ["__count"])
        self.assertEqual(
            [(day.date(), count) for day, count in by_day],
            [(T0.date(), 2), ((T0 + timedelta(days=1)).date(), 2)],
        )
        # A test run is no entry.
        self.scenario._enroll_partners([self.bob.id], test=True)
        self.assertEqual(Participant.search_count(action["domain"]), 4)

    def test_participant_drill_down(self):
        scenario = self.scenario.with_user(self.marketing_user)
        Participant = self.Participant.with_user(self.marketing_user)
        expected = {
            None: (scenario.entered_count, self.partner | self.bob | self.carol | self.dave),
            "running": (scenario.active_count, self.env["res.partner"]),
            "completed": (scenario.completed_count, self.partner | self.bob | self.carol | self.dave),
            "converted": (scenario.objective_count, self.partner | self.carol),
        }
        for which, (count, partners) in expected.items():
            with self.subTest(count=which):
                action = scenario.with_context(participant_count=which).action_view_participants()
                found = Participant.search(action["domain"])
                self.assertEqual(len(found), count)
                self.assertEqual(found.partner_id, partners)
        with self.assertRaises(UserError):
            scenario.with_context(participant_count="nonsense").action_view_participants()

    def test_node_drill_down(self):
        Step = self.Step.with_user(self.marketing_user)
        expected = {
            (self.wait_1, "done"): (self.wait_1.processed_count, self.partner | self.bob | self.carol | self.dave),
            (self.reminder, "sent"): (self.reminder.sent_count, self.partner | self.bob | self.dave),
            (self.reminder, "opened"): (self.reminder.opened_count, self.partner | self.bob),
            (self.reminder, "clicked"): (self.reminder.clicked_count, self.partner),
            (self.coupon, "done"): (self.coupon.processed_count, self.bob | self.dave),
            (self.coupon, "scheduled"): (self.coupon.scheduled_count, self.env["res.partner"]),
        }
        for (node, which), (count, partners) in expected.items():
            with self.subTest(node=node.name, count=which):
                action = node.with_user(self.marketing_user).with_context(step_count=which).action_view_steps()
                found = Step.search(action["domain"])
                self.assertEqual(len(found), count)
                self.assertEqual(found.partner_id, partners)
                self.assertTrue(all(step.node_id == node for step in found))
        # Without a count: every real step of the node.
        action = self.wait_2.with_user(self.marketing_user).action_view_steps()
        self.assertEqual(Step.search(action["domain"]).partner_id, self.partner | self.bob | self.dave)


@tagged("post_install", "-at_install")
class TestScenarioDemoData(ScenarioCommon):
    """The test database is installed with demo data: the demo shows a living system."""

    def test_demo_history(self):
        module = self.env["ir.module.module"].search([("name", "=", "marketing_event_automation")])
        self.assertTrue(module.demo, "the test runner installs the module with its demo data")
        source = self.env.ref("marketing_event_automation.event_source_demo_shop")
        events = self.Event.search([("idempotency_key", "=like", "demo-%")])
        self.assertGreater(len(events), 250)
        self.assertEqual(events.source_id, source, "shop events only, no internal ones")
        self.assertEqual(set(events.mapped("state")), {"processed"}, "nothing left for the dispatcher")
        now = self.now()
        self.assertTrue(all(now - timedelta(days=31) <= event.occurred_at <= now for event in events))
        cart_type = self.EventType._get_by_keys(["cart_abandoned"], self.company)["cart_abandoned"]
        self.assertIn("items[].sku", cart_type.params_structure, "the types learned their parameters")
        scenarios = self.Scenario.search([("template_id", "!=", False), ("participant_ids", "!=", False)])
        self.assertEqual(set(scenarios.mapped("state")), {"running"})
        self.assertEqual(len(scenarios), 2)
        for scenario in scenarios:
            with self.subTest(scenario=scenario.name):
                self.assertGreater(scenario.entered_count, 30)
                self.assertGreater(scenario.open_rate, 0)
                self.assertGreater(scenario.objective_count, 0)
                self.assertEqual(scenario._check_ready(), [])
        # Only waits of the welcome series are left to run, and none is due yet.
        scheduled = self.Step.search([("scenario_id", "in", scenarios.ids), ("state", "=", "scheduled")])
        self.assertTrue(scheduled)
        self.assertEqual(set(scheduled.mapped("node_type")), {"wait"})
        self.assertTrue(all(step.scheduled_at > now for step in scheduled))
        self.assertEqual(self.Step._cron_advance(), 0)


@tagged("post_install", "-at_install")
class TestScenarioTemplateTour(MarketingAutomationHttpCommon, ScenarioCommon):
    def test_marketer_creates_a_scenario_from_a_template(self):
        template = self.env.ref("marketing_event_automation.scenario_template_abandoned_cart")
        before = self.Scenario.search([("template_id", "=", template.id)])
        self.start_tour(
            "/odoo/action-marketing_event_automation.action_marketing_scenario",
            "marketing_scenario_template_tour",
            login=self.marketing_user.login,
        )
        scenario = self.Scenario.search([("template_id", "=", template.id)]) - before
        self.assertEqual(len(scenario), 1)
        self.assertEqual((scenario.state, scenario.create_uid), ("running", self.marketing_user))
        self.assertEqual(len(scenario.node_ids), 5, "the template with its Give a coupon node (issue 21)")
