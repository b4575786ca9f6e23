from datetime import datetime
from datetime import timedelta

from freezegun import freeze_time

from odoo.exceptions import AccessError
from odoo.exceptions import UserError
from odoo.tests import new_test_user
from odoo.tests import tagged

from .common import MarketingAutomationHttpCommon
from .scenario_common import ScenarioCommon

T0 = datetime(2026, 11, 2, 10, 0, 0)  # a Monday


@tagged("post_install", "-at_install")
class TestScenarioTriggers(ScenarioCommon):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.audience = cls.env["res.partner"].create(
            [{"name": f"Member {i}", "email": f"member{i}@example.org", "ref": "MEMBER"} for i in range(3)]
        )

    def audience_scenario(self, **values):
        scenario = self.create_scenario(
            trigger_event_type_id=False, audience_domain="[('ref', '=', 'MEMBER')]", entry_policy="every_time", **values
        )
        self.add_node(scenario, "tag_add", tag_ids=[(6, 0, self.tag_vip.ids)])
        return scenario

    def run_schedule(self):
        while self.Scenario._cron_schedule():
            pass

    def test_date_trigger_enters_audience_at_its_date(self):
        scenario = self.audience_scenario(trigger_type="date", trigger_at=T0 + timedelta(days=1))
        with freeze_time(T0):
            scenario.action_start()
            self.run_schedule()
            self.assertFalse(scenario.participant_ids, "not yet")
        with freeze_time(T0 + timedelta(days=1, minutes=1)):
            self.run_schedule()
            self.assertEqual(scenario.participant_ids.partner_id, self.audience)
            self.run_schedule()
        self.assertEqual(len(scenario.participant_ids), 3, "the date enters its audience once")
        self.assertFalse(scenario.next_occurrence_at)

    def test_repeat_trigger_enters_audience_at_each_occurrence(self):
        scenario = self.audience_scenario(
            trigger_type="repeat",
            repeat_interval=1,
            repeat_unit="weeks",
            repeat_hour=9.5,
            repeat_start=T0.date(),
            repeat_until=(T0 + timedelta(days=15)).date(),
            timezone="Europe/Brussels",
        )
        with freeze_time(T0):
            scenario.action_start()
        # 09:30 in Brussels (UTC+1) is 08:30 UTC; the first Monday has passed at 10:00 UTC.
        self.assertEqual(scenario.next_occurrence_at, datetime(2026, 11, 9, 8, 30))
        for week in (1, 2):
            with freeze_time(datetime(2026, 11, 2 + 7 * week, 8, 31)):
                self.run_schedule()
        occurrences = sorted(set(scenario.participant_ids.mapped("occurrence_at")))
        self.assertEqual(occurrences, [datetime(2026, 11, 9, 8, 30), datetime(2026, 11, 16, 8, 30)])
        self.assertEqual(len(scenario.participant_ids), 6)
        self.assertFalse(scenario.next_occurrence_at, "the repeat ended on its until date")

    def test_score_trigger_enters_when_the_condition_becomes_true(self):
        scenario = self.create_scenario(
            trigger_type="score", trigger_event_type_id=False, score_operator=">=", score_threshold=10
        )
        self.add_node(scenario, "tag_add", tag_ids=[(6, 0, self.tag_vip.ids)])
        scenario.action_start()
        Partner = self.env["res.partner"]
        Partner._marketing_change_score({self.partner.id: 5, self.bob.id: 12}, "test", "manual")
        self.dispatch()
        self.assertEqual(scenario.participant_ids.partner_id, self.bob, "Bob crossed 10, Alice did not")
        Partner._marketing_change_score({self.partner.id: 6, self.bob.id: 3}, "test", "manual")
        self.dispatch()
        self.assertEqual(len(scenario.participant_ids), 2, "Alice crossed; Bob was already above")
        self.advance()
        self.assertIn(self.tag_vip, self.partner.category_id)

    def test_every_score_operator_fires_on_crossing_only(self):
        # Each contact starts never scored; after each change the dispatcher runs.
        # Entry policy "every time", so only the crossing rule can keep a contact out.
        cases = [
            (">=", 10, [5, 6, 3, -10, 10], 2),
            (">", 10, [10, 1, 1], 1),
            ("<", 0, [1, -2, -1, 5, -10], 2),
            ("<=", 0, [-1, 2, -1], 2),
            ("=", 5, [5, 1, -1], 2),
            ("!=", 5, [3, 2, 1], 2),
            ("empty", 0, [1, 2], 0),
            ("not_empty", 0, [1, 2], 1),
        ]
        Partner = self.env["res.partner"]
        for operator, threshold, deltas, expected_entries in cases:
            with self.subTest(operator=operator):
                scenario = self.create_scenario(
                    name=f"Score {operator}",
                    trigger_type="score",
                    trigger_event_type_id=False,
                    score_operator=operator,
                    score_threshold=threshold,
                    entry_policy="every_time",
                )
                self.add_node(scenario, "wait", wait_amount=1, wait_unit="days")
                scenario.action_start()
                contact = Partner.create({"name": f"Scored {operator}"})
                for delta in deltas:
                    Partner._marketing_change_score({contact.id: delta}, "test", "manual")
                    self.dispatch()
                entries = scenario.participant_ids.filtered(lambda participant, c=contact: participant.partner_id == c)
                self.assertEqual(len(entries), expected_entries)
                scenario.action_stop()

    def test_score_trigger_is_empty(self):
        scenario = self.create_scenario(trigger_type="score", trigger_event_type_id=False, score_operator="not_empty")
        self.add_node(scenario, "tag_add", tag_ids=[(6, 0, self.tag_vip.ids)])
        scenario.action_start()
        self.env["res.partner"]._marketing_change_score({self.partner.id: 1}, "first score", "manual")
        self.env["res.partner"]._marketing_change_score({self.partner.id: 1}, "second", "manual")
        self.dispatch()
        self.assertEqual(len(scenario.participant_ids), 1, "only the first score makes 'is not empty' true")

    def test_wait_for_event_yes_when_it_comes_no_at_timeout(self):
        scenario = self.create_scenario()
        wait = self.add_node(
            scenario,
            "wait_event",
            wait_event_type_id=self.type_purchase.id,
            wait_event_filter="total > 10",
            wait_amount=1,
            wait_unit="hours",
        )
        self.add_node(scenario, "tag_add", wait, branch="yes", tag_ids=[(6, 0, self.tag_vip.ids)])
        self.add_node(scenario, "tag_add", wait, branch="no", tag_ids=[(6, 0, self.tag_lost.ids)])
        scenario.action_start()
        with freeze_time(T0):
            self.emit(self.type_purchase, self.partner, {"total": 99}, occurred_at=T0 - timedelta(minutes=5))
            self.emit(self.type_cart, self.partner, {"total": 1, "items": []})
            self.emit(self.type_cart, self.bob, {"total": 1, "items": []})
            self.dispatch()
        with freeze_time(T0 + timedelta(minutes=20)):
            small = self.emit(self.type_purchase, self.partner, {"total": 5})
            purchase = self.emit(self.type_purchase, self.partner, {"total": 50})
            self.dispatch()
            self.assertFalse(small.processing_result, "the filter refuses a small purchase")
            self.assertEqual(purchase.processing_result, {"resumed": ["Test scenario"]})
            self.advance()
        self.assertIn(self.tag_vip, self.partner.category_id)
        alice_step = self.steps_of(self.participant_of(scenario, self.partner), wait)
        self.assertEqual((alice_step.state, alice_step.branch), ("done", "yes"))
        self.advance_at(T0 + timedelta(minutes=59))
        self.assertFalse(self.bob.category_id)
        self.advance_at(T0 + timedelta(hours=1))
        self.assertIn(self.tag_lost, self.bob.category_id)
        self.assertEqual(self.steps_of(self.participant_of(scenario, self.bob), wait).branch, "no")

    def test_condition_on_events_and_score(self):
        scenario = self.create_scenario()
        bought = self.add_node(
            scenario,
            "condition",
            condition_type="event",
            condition_event_type_id=self.type_purchase.id,
            condition_event_period="days",
            condition_event_days=7,
            condition_event_filter="total >= 100",
        )
        scored = self.add_node(
            scenario, "condition", bought, branch="yes", condition_type="score", score_operator=">", score_threshold=3
        )
        self.add_node(scenario, "tag_add", scored, branch="yes", tag_ids=[(6, 0, self.tag_vip.ids)])
        self.add_node(scenario, "tag_add", scored, branch="no", tag_ids=[(6, 0, self.tag_lost.ids)])
        self.emit(self.type_purchase, self.partner, {"total": 150}, occurred_at=self.now() - timedelta(days=3))
        self.emit(self.type_purchase, self.bob, {"total": 150}, occurred_at=self.now() - timedelta(days=10))
        self.dispatch()
        self.env["res.partner"]._marketing_change_score({self.partner.id: 5}, "test", "manual")
        scenario.action_start()
        self.emit(self.type_cart, self.partner, {"total": 1, "items": []})
        self.emit(self.type_cart, self.bob, {"total": 1, "items": []})
        self.dispatch()
        self.advance()
        self.assertIn(self.tag_vip, self.partner.category_id)
        self.assertFalse(self.bob.category_id, "Bob's purchase is older than 7 days")
        self.assertEqual(self.steps_of(self.participant_of(scenario, self.bob), bought).branch, "no")

    def test_test_run_skips_waits_and_stays_out_of_statistics(self):
        scenario = self.create_scenario()
        wait = self.add_node(scenario, "wait", wait_amount=3, wait_unit="days")
        score = self.add_node(scenario, "score", wait, score_delta=2, score_reason="test run")
        wizard = (
            self.env["marketing.scenario.test.wizard"]
            .with_user(self.marketing_user)
            .create({"scenario_id": scenario.id, "partner_id": self.partner.id})
        )
        wizard.action_run()
        self.assertEqual(wizard.state, "done")
        self.assertEqual(wizard.step_ids.node_id, wait | score)
        self.assertEqual(set(wizard.step_ids.mapped("state")), {"done"})
        self.assertEqual(self.partner.engagement_score, 2)
        self.assertTrue(wizard.participant_id.is_test)
        self.assertEqual(scenario.state, "draft")
        self.assertEqual((scenario.entered_count, score.processed_count), (0, 0))

    def test_objective_conversion_and_dependencies(self):
        scenario = self.create_scenario(
            objective_event_type_id=self.type_purchase.id,
            objective_days=2,
            exit_event_type_ids=[(6, 0, self.type_purchase.ids)],
        )
        self.add_node(scenario, "wait", wait_amount=5, wait_unit="days")
        scenario.action_start()
        with freeze_time(T0):
            self.emit(self.type_cart, self.partner, {"total": 1, "items": []})
            self.emit(self.type_cart, self.bob, {"total": 1, "items": []})
            self.dispatch()
        with freeze_time(T0 + timedelta(days=1)):
            self.emit(self.type_purchase, self.partner, {"total": 1})
            self.dispatch()
            self.assertEqual(self.type_cart.launched_count_24h, 2)
        self.assertEqual((scenario.entered_count, scenario.objective_count), (2, 1))
        self.assertEqual(scenario.conversion_rate, 50.0)
        self.assertEqual(scenario.exited_count, 1)

        self.assertEqual(self.type_cart.launch_scenario_count, 1)
        self.assertEqual(self.type_purchase.stop_scenario_count, 1)
        self.assertEqual(self.type_purchase.condition_scenario_count, 1)
        self.assertEqual(self.type_purchase.dependency_count, 1)
        EventType = self.EventType.with_context(active_test=False)
        self.assertIn(self.type_cart, EventType.search([("launch_scenario_count", ">", 0)]))
        self.assertNotIn(self.type_purchase, EventType.search([("launch_scenario_count", ">", 0)]))
        self.assertIn(self.type_purchase, EventType.search([("stop_scenario_count", ">", 0)]))
        unused = EventType.search([("dependency_count", "=", 0)])
        self.assertNotIn(self.type_cart, unused)
        self.assertIn(self.env.ref("marketing_event_automation.event_type_contact_created"), unused)
        action = self.type_purchase.action_view_dependencies()
        self.assertEqual(self.Scenario.search(action["domain"]), scenario)
        with self.assertRaisesRegex(UserError, "Test scenario"):
            self.type_cart.unlink()

    def test_access_rights_and_companies(self):
        scenario = self.create_scenario()
        self.add_node(scenario, "wait", wait_amount=1, wait_unit="days")
        scenario.action_start()
        self.emit(self.type_cart, self.partner, {"total": 1, "items": []})
        self.dispatch()
        participant = self.participant_of(scenario, self.partner)
        with self.assertRaises(AccessError):
            self.Scenario.with_user(self.sales_user).search([])
        with self.assertRaises(AccessError):
            participant.step_ids.with_user(self.sales_user).read(["state"])
        own = self.Scenario.with_user(self.marketing_user).create({"name": "Mine", "trigger_type": "now"})
        self.assertTrue(own)
        with self.assertRaises(AccessError):
            self.Participant.with_user(self.marketing_user).create(
                {"scenario_id": scenario.id, "partner_id": self.partner.id}
            )
        other_company = self.env["res.company"].create({"name": "Other Co"})
        other_user = new_test_user(
            self.env,
            login="mea_other_marketer",
            groups="base.group_user,marketing_event_automation.group_marketing_automation_user",
            company_id=other_company.id,
            company_ids=[(6, 0, other_company.ids)],
        )
        self.assertFalse(self.Scenario.with_user(other_user).search([("id", "=", scenario.id)]))
        self.assertFalse(self.Step.with_user(other_user).search([("scenario_id", "=", scenario.id)]))
        self.assertEqual(participant.step_ids.company_id, self.company)

    def test_views_open_for_a_marketing_user(self):
        for model in (
            "marketing.scenario",
            "marketing.scenario.node",
            "marketing.scenario.participant",
            "marketing.scenario.step",
        ):
            with self.subTest(model=model):
                views = self.env[model].with_user(self.marketing_user).get_views([(False, "list"), (False, "form")])
                self.assertIn("form", views["views"])
        wizard_views = (
            self.env["marketing.scenario.test.wizard"].with_user(self.marketing_user).get_views([(False, "form")])
        )
        self.assertIn("step_ids", wizard_views["views"]["form"]["arch"])
        menu = self.env.ref("marketing_event_automation.menu_marketing_scenario")
        self.assertEqual(menu.parent_id, self.env.ref("marketing_event_automation.menu_marketing_automation_root"))
        siblings = menu.parent_id.child_id.sorted("sequence")
        self.assertEqual(siblings[0], menu, "Scenarios comes first")


@tagged("post_install", "-at_install")
class TestScenarioTour(MarketingAutomationHttpCommon, ScenarioCommon):
    def test_marketer_starts_pauses_and_test_runs_a_scenario(self):
        scenario = self.create_scenario(name="Tour scenario")
        self.add_node(scenario, "tag_add", tag_ids=[(6, 0, self.tag_vip.ids)])
        self.start_tour(
            "/odoo/action-marketing_event_automation.action_marketing_scenario",
            "marketing_scenario_tour",
            login="admin",
        )
        self.assertEqual(scenario.state, "paused")
        test_run = scenario.participant_ids
        self.assertTrue(test_run.is_test)
        self.assertEqual(test_run.partner_id, self.partner)
        self.assertEqual(test_run.step_ids.mapped("state"), ["done"])
        self.assertIn(self.tag_vip, self.partner.category_id)
        self.assertEqual(scenario.entered_count, 0, "a test run is no entry")


@tagged("post_install", "-at_install")
class TestContactScenariosOnForm(ScenarioCommon):
    def test_salespeople_see_the_scenarios_a_contact_is_in(self):
        scenario = self.create_scenario(name="Cart reminders")
        self.add_node(scenario, "wait", wait_amount=1, wait_unit="days")
        scenario.action_start()
        self.emit(self.type_cart, self.partner, {"total": 1, "items": []})
        self.dispatch()
        as_sales = self.partner.with_user(self.sales_user)
        self.assertEqual(as_sales.marketing_scenario_count, 1)
        self.assertEqual(as_sales.marketing_scenario_names, "Cart reminders")
        action = self.partner.with_user(self.marketing_user).action_view_marketing_scenarios()
        participants = self.env[action["res_model"]].with_user(self.marketing_user).search(action["domain"])
        self.assertEqual(participants.scenario_id, scenario)
        scenario.action_stop()
        self.partner.invalidate_recordset()
        self.assertEqual(self.partner.marketing_scenario_count, 0, "only running scenarios count")
