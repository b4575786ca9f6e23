from datetime import datetime
from datetime import timedelta

from freezegun import freeze_time

from odoo.exceptions import ValidationError
from odoo.tests import BaseCase
from odoo.tests import tagged

from ..utils.lift import conversion_lift
from ..utils.lift import newcombe_interval
from ..utils.lift import wilson_interval
from .scenario_common import ScenarioCommon

T0 = datetime(2026, 11, 2, 10, 0)


@tagged("post_install", "-at_install")
class TestLiftInterval(BaseCase):
    """The interval against the figures Newcombe published for his method 10 (Statistics in Medicine, 1998)."""

    def test_newcombe_published_examples(self):
        for (a, m, b, n), (low, high) in {
            (56, 70, 48, 80): (0.0524, 0.3339),
            (9, 10, 3, 10): (0.1705, 0.8090),
            (5, 56, 0, 29): (-0.0381, 0.1926),
        }.items():
            with self.subTest(sample=(a, m, b, n)):
                found = newcombe_interval(a, m, b, n)
                self.assertAlmostEqual(found[0], low, places=4)
                self.assertAlmostEqual(found[1], high, places=4)

    def test_wilson_interval(self):
        # 81 of 263: Wilson's interval 0.2553 to 0.3662 (Newcombe 1998, single proportion).
        low, high = wilson_interval(81, 263)
        self.assertAlmostEqual(low, 0.2553, places=4)
        self.assertAlmostEqual(high, 0.3662, places=4)
        self.assertEqual(wilson_interval(0, 0), (0.0, 1.0))

    def test_verdicts(self):
        self.assertEqual(conversion_lift(3, 10, 0, 0).status, "no_data")
        self.assertEqual(conversion_lift(9, 10, 3, 10).status, "too_small", "ten contacts a group")
        self.assertEqual(conversion_lift(56, 70, 48, 80).status, "significant")
        undecided = conversion_lift(30, 100, 25, 100)
        self.assertEqual(undecided.status, "not_significant")
        self.assertLess(undecided.low, 0)
        self.assertGreater(undecided.high, 0)
        self.assertAlmostEqual(undecided.absolute, 0.05)
        self.assertAlmostEqual(undecided.relative, 0.2)
        self.assertIsNone(conversion_lift(10, 100, 0, 100).relative, "no relative lift over a rate of 0")


@tagged("post_install", "-at_install")
class TestScenarioHoldout(ScenarioCommon):
    """A share of the entrants is held out, receives nothing, and measures the scenario's lift."""

    def make_partners(self, count, label):
        return self.env["res.partner"].create(
            [{"name": f"{label} {i}", "email": f"{label}{i}@example.org"} for i in range(count)]
        )

    def holdout_scenario(self, percent=20, **values):
        scenario = self.create_scenario(
            **{
                "control_group_percent": percent,
                "objective_event_type_id": self.type_purchase.id,
                "objective_days": 7,
                **values,
            }
        )
        self.add_node(scenario, "tag_add", tag_ids=[(6, 0, self.tag_lost.ids)])
        scenario.action_start()
        return scenario

    def enter(self, partners):
        for partner in partners:
            self.emit(self.type_cart, partner, {"total": 10, "items": []})
        self.dispatch()

    def test_control_group_is_held_out_at_entry(self):
        scenario = self.holdout_scenario(percent=20)
        partners = self.make_partners(200, "holdout")
        completed_before = self.Event.search_count([("type_id.key", "=", "scenario_completed")])
        with freeze_time(T0):
            self.enter(partners)
            self.advance()
        participants = self.Participant.search([("scenario_id", "=", scenario.id)])
        control = participants.filtered("is_control")
        treated = participants - control
        self.assertEqual(len(participants), 200)
        # A hash, not a quota: about a fifth (the bounds lie four standard deviations away).
        self.assertTrue(16 <= len(control) <= 64, len(control))
        self.assertEqual((scenario.control_count, scenario.treated_count), (len(control), len(treated)))
        self.assertEqual(set(control.mapped("state")), {"completed"})
        self.assertEqual(set(control.mapped("end_reason")), {"Control group: held out"})
        self.assertFalse(control.step_ids, "no node runs for the control group")
        self.assertEqual(set(treated.mapped("state")), {"completed"})
        self.assertEqual(len(treated.step_ids), len(treated))
        self.assertFalse(control.partner_id.category_id & self.tag_lost, "the held-out contacts got no tag")
        self.assertEqual(treated.partner_id.category_id, self.tag_lost)
        completed = self.Event.search_count([("type_id.key", "=", "scenario_completed")]) - completed_before
        self.assertEqual(completed, len(treated), "a held-out run is no completed run")

    def test_a_contact_stays_on_his_side(self):
        scenario = self.holdout_scenario(percent=50, entry_policy="every_time", objective_days=0)
        partners = self.make_partners(20, "side")
        with freeze_time(T0):
            self.enter(partners)
        first = {p.partner_id: p.is_control for p in self.Participant.search([("scenario_id", "=", scenario.id)])}
        self.assertTrue(any(first.values()) and not all(first.values()), "twenty contacts fall on both sides")
        with freeze_time(T0 + timedelta(days=1)):
            self.enter(partners)
        again = self.Participant.search([("scenario_id", "=", scenario.id), ("entered_at", ">", T0)])
        self.assertEqual(len(again), 20)
        self.assertEqual({p.partner_id: p.is_control for p in again}, first)
        other = self.holdout_scenario(percent=50, entry_policy="every_time")
        with freeze_time(T0 + timedelta(days=2)):
            self.enter(partners)
        in_other = {p.partner_id: p.is_control for p in self.Participant.search([("scenario_id", "=", other.id)])}
        self.assertNotEqual(in_other, first, "each scenario holds out contacts of its own")

    def test_once_at_a_time_holds_a_control_contact_for_the_objective_days(self):
        scenario = self.holdout_scenario(percent=50, objective_days=3)
        partners = self.make_partners(20, "window")
        with freeze_time(T0):
            self.enter(partners)
            self.advance()
        control = self.Participant.search([("scenario_id", "=", scenario.id), ("is_control", "=", True)])
        self.assertTrue(control)
        with freeze_time(T0 + timedelta(days=1)):
            self.enter(control.partner_id)
        self.assertEqual(scenario.control_count, len(control), "measured for three days: not entered again")
        with freeze_time(T0 + timedelta(days=4)):
            self.enter(control.partner_id)
        self.env.invalidate_all()
        self.assertEqual(scenario.control_count, 2 * len(control))

    def test_control_group_share_is_bounded(self):
        with self.assertRaisesRegex(ValidationError, "Control Group"):
            self.create_scenario(control_group_percent=60)
        with self.assertRaisesRegex(ValidationError, "Control Group"):
            self.create_scenario(control_group_percent=-1)

    def test_test_runs_are_never_held_out(self):
        scenario = self.holdout_scenario(percent=50)
        partners = self.make_partners(10, "testrun")
        participants = scenario._enroll_partners(partners.ids, test=True)
        self.assertEqual(len(participants), 10)
        self.assertFalse(participants.filtered("is_control"))

    def test_lift_against_hand_computed_figures(self):
        """Treated 56 of 70 converted, control 48 of 80: Newcombe's example (a), measured through the engine."""
        scenario = self.create_scenario(objective_event_type_id=self.type_purchase.id, objective_days=7)
        treated = self.make_partners(70, "treated")
        control = self.make_partners(80, "control")
        with freeze_time(T0):
            self.Participant.create(
                [{"scenario_id": scenario.id, "partner_id": partner.id} for partner in treated]
                + [{"scenario_id": scenario.id, "partner_id": partner.id, "is_control": True} for partner in control]
            )
        with freeze_time(T0 + timedelta(days=2)):
            for partner in treated[:56] | control[:48]:
                self.emit(self.type_purchase, partner, {"total": 10})
            # A purchase after the objective's days converts nobody.
            self.emit(self.type_purchase, treated[60], {"total": 10}, occurred_at=T0 + timedelta(days=8))
            self.dispatch()
        self.env.invalidate_all()
        self.assertEqual((scenario.treated_count, scenario.control_count), (70, 80))
        self.assertEqual(scenario.objective_count, 104)
        self.assertAlmostEqual(scenario.treated_conversion_rate, 80.0)
        self.assertAlmostEqual(scenario.control_conversion_rate, 60.0)
        self.assertAlmostEqual(scenario.lift_points, 20.0)
        self.assertAlmostEqual(scenario.lift_relative, 33.3, places=1)
        self.assertAlmostEqual(scenario.lift_low, 5.24, places=2)
        self.assertAlmostEqual(scenario.lift_high, 33.39, places=2)
        self.assertEqual(scenario.lift_status, "significant")
        self.assertEqual(
            scenario.lift_summary,
            "80.0 % treated vs 60.0 % control: +20.0 points (95 % CI +5.2 to +33.4) · Significant",
        )
        trigger = scenario.get_flow_data()["trigger"]
        stats = {stat["name"]: stat["value"] for stat in trigger["stats"]}
        self.assertEqual((stats["control"], stats["lift"]), (80, "+20.0 pts"))
        self.assertIn(scenario.lift_summary, trigger["details"])

    def test_a_small_sample_is_called_so(self):
        scenario = self.create_scenario(objective_event_type_id=self.type_purchase.id, control_group_percent=10)
        partners = self.make_partners(12, "small")
        with freeze_time(T0):
            self.Participant.create(
                [
                    {"scenario_id": scenario.id, "partner_id": partner.id, "is_control": index >= 10}
                    for index, partner in enumerate(partners)
                ]
            )
        with freeze_time(T0 + timedelta(hours=1)):
            for partner in partners[:4]:
                self.emit(self.type_purchase, partner, {"total": 10})
            self.dispatch()
        self.env.invalidate_all()
        self.assertEqual((scenario.treated_conversion_rate, scenario.control_conversion_rate), (40.0, 0.0))
        self.assertEqual(scenario.lift_status, "too_small")
        self.assertFalse(scenario.lift_relative, "no relative lift over a control rate of 0")
        self.assertIn("Sample too small", scenario.lift_summary)
        details = scenario.get_flow_data()["trigger"]["details"]
        self.assertIn("Control group: 10 % held out", details)

    def test_enrollment_queries_do_not_grow_with_the_batch(self):
        self.holdout_scenario(percent=30)
        counts = self.dispatch_query_counts(self.type_cart, {"total": 1, "items": []}, (3, 15), "holdq")
        self.assertEqual(counts[0], counts[1], counts)
