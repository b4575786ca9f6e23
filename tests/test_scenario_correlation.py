from datetime import timedelta

from freezegun import freeze_time

from odoo.exceptions import ValidationError
from odoo.tests import tagged

from ..utils.correlation import correlation_matches
from ..utils.correlation import correlation_value
from .scenario_common import ScenarioCommon


class CorrelationCommon(ScenarioCommon):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.type_basket = cls.EventType.create(
            {"name": "Basket abandoned", "key": "test_basket_abandoned", "category_id": cls.category_ecommerce.id}
        )
        cls.type_order = cls.EventType.create(
            {"name": "Order placed", "key": "test_order_placed", "category_id": cls.category_ecommerce.id}
        )

    def cart_scenario(self, **values):
        return self.create_scenario(
            **{
                "name": "One run per cart",
                "trigger_event_type_id": self.type_basket.id,
                "entry_policy": "once_at_a_time",
                **values,
            }
        )

    def cart(self, cart_id, partner=None, **params):
        return self.emit(self.type_basket, partner or self.partner, {"cart_id": cart_id, **params})

    def purchase(self, cart_id=None, partner=None):
        return self.emit(self.type_order, partner or self.partner, {"cart_id": cart_id} if cart_id else {})

    def runs(self, scenario):
        return {
            participant.correlation_value: participant
            for participant in self.Participant.search([("scenario_id", "=", scenario.id)])
        }


@tagged("post_install", "-at_install")
class TestScenarioCorrelation(CorrelationCommon):
    """One run per cart: entries, waits for an event and exit events follow the correlation parameter."""

    def test_purchase_of_cart_b_resolves_only_the_wait_of_cart_b(self):
        scenario = self.cart_scenario(correlation_param="cart_id")
        wait = self.add_node(
            scenario, "wait_event", wait_event_type_id=self.type_order.id, wait_amount=1, wait_unit="days"
        )
        bought = self.add_node(scenario, "tag_add", wait, branch="yes", tag_ids=[(6, 0, self.tag_vip.ids)])
        reminder = self.add_node(scenario, "tag_add", wait, branch="no", tag_ids=[(6, 0, self.tag_lost.ids)])
        scenario.action_start()

        cart_a = self.cart("A")
        cart_b = self.cart("B")
        self.dispatch()
        runs = self.runs(scenario)
        self.assertEqual(sorted(runs), ["A", "B"], "a second cart enters a second run")
        self.assertEqual(runs["A"].event_id, cart_a)
        self.assertEqual(runs["B"].event_id, cart_b)
        self.assertEqual(cart_b.processing_result["entered"], [scenario.name])

        again = self.cart("A")
        self.dispatch()
        self.assertEqual(len(scenario.participant_ids), 2, "the same cart does not enter a second run")
        self.assertFalse((again.processing_result or {}).get("entered"))

        order_b = self.purchase("B")
        self.dispatch()
        wait_b, wait_a = self.steps_of(runs["B"], wait), self.steps_of(runs["A"], wait)
        self.assertEqual((wait_b.state, wait_b.branch), ("done", "yes"))
        self.assertEqual(wait_a.state, "scheduled", "cart A is still abandoned")
        self.assertEqual(order_b.processing_result["resumed"], [scenario.name])

        self.advance()
        self.assertEqual(self.steps_of(runs["B"], bought).state, "done")
        self.assertEqual(runs["B"].state, "completed")
        self.assertEqual(runs["A"].state, "running")
        self.advance_at(self.now() + timedelta(days=1, minutes=1))
        self.assertEqual((wait_a.state, wait_a.branch), ("done", "no"))
        self.assertEqual(self.steps_of(runs["A"], reminder).state, "done")
        self.assertFalse(self.steps_of(runs["A"], bought))

    def test_purchase_of_cart_b_exits_only_the_run_of_cart_b(self):
        scenario = self.cart_scenario(correlation_param="cart_id", exit_event_type_ids=[(6, 0, self.type_order.ids)])
        wait = self.add_node(scenario, "wait", wait_amount=2, wait_unit="hours")
        scenario.action_start()
        self.cart("A")
        self.cart("B")
        self.dispatch()
        runs = self.runs(scenario)

        order_b = self.purchase("B")
        self.dispatch()
        self.assertEqual(runs["B"].state, "exited")
        self.assertEqual(self.steps_of(runs["B"], wait).state, "canceled")
        self.assertEqual(runs["A"].state, "running")
        self.assertEqual(self.steps_of(runs["A"], wait).state, "scheduled")
        self.assertEqual(order_b.processing_result["exited"], [scenario.name])

        # A cart that left may come back: the policy keeps out running runs of the same value only.
        self.cart("B")
        self.dispatch()
        self.assertEqual(
            self.Participant.search_count([("scenario_id", "=", scenario.id), ("state", "=", "running")]), 2
        )

    def test_events_of_another_contact_or_value_do_not_match(self):
        scenario = self.cart_scenario(correlation_param="cart_id", exit_event_type_ids=[(6, 0, self.type_order.ids)])
        self.add_node(scenario, "wait", wait_amount=2, wait_unit="hours")
        scenario.action_start()
        self.cart("A")
        self.cart("A", partner=self.bob)
        self.dispatch()
        self.purchase("A", partner=self.bob)
        self.purchase("C")
        self.dispatch()
        self.assertEqual(self.participant_of(scenario, self.bob).state, "exited")
        self.assertEqual(self.participant_of(scenario, self.partner).state, "running")

    def test_an_event_without_the_parameter_concerns_every_run_of_its_contact(self):
        scenario = self.cart_scenario(correlation_param="cart_id", exit_event_type_ids=[(6, 0, self.type_order.ids)])
        self.add_node(scenario, "wait", wait_amount=2, wait_unit="hours")
        scenario.action_start()
        self.cart("A")
        self.cart("B")
        self.dispatch()
        self.purchase()
        self.dispatch()
        self.assertEqual(set(scenario.participant_ids.mapped("state")), {"exited"})

    def test_without_correlation_a_purchase_resolves_the_contact_s_wait(self):
        """The behaviour the parameter changes: one run per contact, any purchase resolves it."""
        scenario = self.cart_scenario()
        wait = self.add_node(
            scenario, "wait_event", wait_event_type_id=self.type_order.id, wait_amount=1, wait_unit="days"
        )
        scenario.action_start()
        self.cart("A")
        self.cart("B")
        self.dispatch()
        self.assertEqual(len(scenario.participant_ids), 1)
        self.assertFalse(scenario.participant_ids.correlation_value)
        self.purchase("B")
        self.dispatch()
        self.assertEqual(self.steps_of(scenario.participant_ids, wait).branch, "yes")

    def test_two_carts_in_one_batch_enter_two_runs_and_once_ever_applies_per_cart(self):
        scenario = self.cart_scenario(correlation_param="cart_id", entry_policy="once")
        self.add_node(scenario, "wait", wait_amount=0, wait_unit="minutes")
        scenario.action_start()
        self.cart("A")
        self.cart("B")
        self.cart("B")
        self.dispatch()
        self.assertEqual(sorted(self.runs(scenario)), ["A", "B"])
        self.advance()
        self.assertEqual(set(scenario.participant_ids.mapped("state")), {"completed"})
        self.cart("B")
        self.cart(7)
        self.dispatch()
        self.assertEqual(sorted(self.runs(scenario)), ["7", "A", "B"], "B ran once ever, cart 7 is new")

    def test_the_parameter_is_one_of_the_trigger_type_s(self):
        self.cart("A", total=10, items=[{"sku": "X"}], customer={"city": "Liège"})
        scenario = self.cart_scenario()
        self.assertEqual(scenario.correlation_param_choices, "cart_id, customer.city, total")
        with self.assertRaisesRegex(ValidationError, r"One Run Per .*basket_id is not a parameter of Basket abandoned"):
            scenario.correlation_param = "basket_id"
        with self.assertRaisesRegex(ValidationError, "items is not a parameter"):
            scenario.correlation_param = "items"
        scenario.correlation_param = "customer.city"
        with self.assertRaisesRegex(ValidationError, "only a scenario started by an event"):
            self.create_scenario(name="Now", trigger_type="now", correlation_param="cart_id")

    def test_the_parameter_cannot_change_while_contacts_run(self):
        scenario = self.cart_scenario()
        self.add_node(scenario, "wait", wait_amount=2, wait_unit="hours")
        scenario.action_start()
        self.cart("A")
        self.dispatch()
        with self.assertRaisesRegex(Exception, "cannot change while contacts run"):
            scenario.correlation_param = "cart_id"

    def test_canvas_trigger_card_names_the_parameter(self):
        scenario = self.cart_scenario(correlation_param="cart_id")
        self.assertIn("One run per cart_id", scenario.get_flow_data()["trigger"]["details"])

    def test_correlation_values(self):
        self.assertEqual(correlation_value({"cart_id": 42}, "cart_id"), "42")
        self.assertEqual(correlation_value({"cart_id": 42.0}, "cart_id"), "42")
        self.assertEqual(correlation_value({"cart_id": "42"}, "cart_id"), "42")
        self.assertEqual(correlation_value({"cart_id": 4.5}, "cart_id"), "4.5")
        self.assertEqual(correlation_value({"cart": {"id": "x"}}, "cart.id"), "x")
        self.assertIsNone(correlation_value({"cart_id": None}, "cart_id"))
        self.assertIsNone(correlation_value({"cart_id": [1]}, "cart_id"))
        self.assertIsNone(correlation_value({"cart_id": {"a": 1}}, "cart_id"))
        self.assertIsNone(correlation_value({"cart": "x"}, "cart.id"))
        self.assertEqual(correlation_value({"flag": True}, "flag"), "true")
        self.assertTrue(correlation_matches("A", {"cart_id": "A"}, "cart_id"))
        self.assertFalse(correlation_matches("A", {"cart_id": "B"}, "cart_id"))
        self.assertTrue(correlation_matches("A", {}, "cart_id"))
        self.assertTrue(correlation_matches(None, {"cart_id": "B"}, False))


@tagged("post_install", "-at_install")
class TestScenarioCorrelationQueries(CorrelationCommon):
    """Entries, exits and resumed waits by correlation value cost the same queries for 10 or 60 carts."""

    def dispatch_queries(self, scenario, size, label):
        partners = self.env["res.partner"].create(
            [{"name": f"{label}{size}-{i}", "email": f"{label}{size}-{i}@example.org"} for i in range(size)]
        )
        self.dispatch()  # their contact_created events
        counts = []
        for event_type, cart in ((self.type_basket, "A"), (self.type_basket, "B"), (self.type_order, "B")):
            self.Event._insert_events(
                [
                    {"type": event_type, "key": event_type.key, "partner_id": partner.id, "params": {"cart_id": cart}}
                    for partner in partners
                ]
            )
            self.env.flush_all()
            self.env.invalidate_all()
            before = self.cr.sql_log_count
            self.Event._cron_dispatch()
            counts.append(self.cr.sql_log_count - before)
        runs = self.Participant.search([("partner_id", "in", partners.ids), ("scenario_id", "=", scenario.id)])
        self.assertEqual(len(runs), 2 * size)
        return counts, runs

    def test_queries_do_not_grow_with_the_batch(self):
        scenario = self.cart_scenario(correlation_param="cart_id", exit_event_type_ids=[(6, 0, self.type_order.ids)])
        self.add_node(scenario, "wait", wait_amount=2, wait_unit="hours")
        waiting = self.cart_scenario(name="Waits per cart", correlation_param="cart_id")
        self.add_node(waiting, "wait_event", wait_event_type_id=self.type_order.id, wait_amount=1, wait_unit="days")
        converting = self.cart_scenario(
            name="Exits on objective",
            correlation_param="cart_id",
            objective_event_type_id=self.type_order.id,
            exit_on_objective=True,
        )
        self.add_node(converting, "wait", wait_amount=2, wait_unit="hours")
        (scenario | waiting | converting).action_start()
        # A first round learns the structure of the events the engine logs (scenario_completed): once.
        self.dispatch_queries(scenario, 3, "P")
        counts_10, runs_10 = self.dispatch_queries(scenario, 10, "Q")
        counts_60, runs_60 = self.dispatch_queries(scenario, 60, "R")
        self.assertEqual(
            counts_10, counts_60, f"entry A, entry B, purchase B at 10 and 60 contacts: {counts_10} {counts_60}"
        )
        for runs in (runs_10, runs_60):
            self.assertEqual(set(runs.filtered(lambda run: run.correlation_value == "B").mapped("state")), {"exited"})
            self.assertEqual(set(runs.filtered(lambda run: run.correlation_value == "A").mapped("state")), {"running"})
        converted = self.Participant.search([("scenario_id", "=", converting.id), ("state", "=", "exited")])
        self.assertEqual(set(converted.mapped("correlation_value")), {"B"})
        self.assertEqual(len(converted), 73)
        resumed = self.Step.search([("scenario_id", "=", waiting.id), ("branch", "=", "yes")])
        self.assertEqual(set(resumed.participant_id.mapped("correlation_value")), {"B"})
        self.assertEqual(len(resumed), 73)


@tagged("post_install", "-at_install")
class TestScenarioExitOnObjective(CorrelationCommon):
    """A scenario that exits on its objective stops its converted contacts' runs, within its objective's days."""

    def objective_scenario(self, **values):
        scenario = self.cart_scenario(
            objective_event_type_id=self.type_order.id, objective_days=7, exit_on_objective=True, **values
        )
        wait = self.add_node(scenario, "wait", wait_amount=3, wait_unit="days")
        reminder = self.add_node(scenario, "tag_add", wait, tag_ids=[(6, 0, self.tag_lost.ids)])
        scenario.action_start()
        return scenario, wait, reminder

    def test_conversion_ends_the_run_and_cancels_its_steps(self):
        scenario, wait, _reminder = self.objective_scenario()
        self.cart("A")
        self.cart("A", partner=self.bob)
        self.dispatch()
        order = self.purchase("A")
        self.dispatch()
        run = self.participant_of(scenario, self.partner)
        self.assertEqual(run.state, "exited")
        self.assertEqual(run.end_reason, "Objective reached: Order placed")
        step = self.steps_of(run, wait)
        self.assertEqual((step.state, step.result), ("canceled", "Objective reached: Order placed"))
        self.assertEqual(order.processing_result["exited"], [scenario.name])
        self.assertEqual(scenario.objective_count, 1, "the exit is still counted as a conversion")
        self.assertEqual(self.participant_of(scenario, self.bob).state, "running")
        self.advance_at(self.now() + timedelta(days=3, minutes=1))
        self.assertNotIn(self.tag_lost, self.partner.category_id, "no reminder after converting")
        self.assertIn(self.tag_lost, self.bob.category_id)

    def test_without_the_setting_the_run_goes_on(self):
        scenario, wait, _reminder = self.objective_scenario()
        scenario.exit_on_objective = False
        self.cart("A")
        self.dispatch()
        self.purchase("A")
        self.dispatch()
        run = self.participant_of(scenario, self.partner)
        self.assertEqual(run.state, "running")
        self.assertEqual(self.steps_of(run, wait).state, "scheduled")
        self.assertEqual(scenario.objective_count, 1)

    def test_a_purchase_after_the_objective_s_days_is_no_conversion(self):
        scenario = self.cart_scenario(
            objective_event_type_id=self.type_order.id, objective_days=7, exit_on_objective=True
        )
        self.add_node(scenario, "wait", wait_amount=30, wait_unit="days")
        scenario.action_start()
        self.cart("A")
        self.dispatch()
        with freeze_time(self.now() + timedelta(days=8)):
            self.purchase("A")
            self.dispatch()
        self.assertEqual(self.participant_of(scenario, self.partner).state, "running")

    def test_with_correlation_only_the_converted_cart_exits(self):
        scenario, _wait, _reminder = self.objective_scenario(correlation_param="cart_id")
        self.cart("A")
        self.cart("B")
        self.dispatch()
        self.purchase("B")
        self.dispatch()
        runs = self.runs(scenario)
        self.assertEqual((runs["A"].state, runs["B"].state), ("running", "exited"))
        self.assertEqual(runs["B"].end_reason, "Objective reached: Order placed")

    def test_canvas_says_it(self):
        scenario, _wait, _reminder = self.objective_scenario()
        self.assertIn("Exits on reaching the objective (Order placed)", scenario.get_flow_data()["trigger"]["details"])
