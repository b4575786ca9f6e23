from datetime import datetime
from datetime import timedelta

from freezegun import freeze_time

from odoo.addons.mail.tests.common import MockEmail
from odoo.exceptions import UserError
from odoo.exceptions import ValidationError
from odoo.tests import tagged

from .scenario_common import ScenarioCommon

T0 = datetime(2026, 11, 2, 10, 0)


@tagged("post_install", "-at_install")
class TestSplitWinner(ScenarioCommon, MockEmail):
    """A split that ends itself: its best arm takes the later contacts, and the decision is kept with its figures."""

    def make_partners(self, count, label):
        return self.env["res.partner"].create(
            [{"name": f"{label} {i}", "email": f"{label}{i}@example.org"} for i in range(count)]
        )

    def enter(self, partners, at):
        with freeze_time(at):
            for partner in partners:
                self.emit(self.type_cart, partner, {"total": 10, "items": []})
            self.dispatch()
            with self.mock_mail_gateway():
                self.advance()

    def arm_of(self, split, partners):
        steps = self.Step.search([("node_id", "=", split.id), ("partner_id", "in", partners.ids)])
        return {step.partner_id: step.arm_node_id for step in steps}

    def test_best_conversion_rate_wins_after_entrants_per_arm(self):
        scenario = self.create_scenario(objective_event_type_id=self.type_purchase.id, objective_days=7)
        split = self.add_node(scenario, "split", name="Offer test", split_pick_winner=True, split_decide_entrants=3)
        arm_a = self.add_node(
            scenario, "tag_add", split, name="Arm A", branch="arm", tag_ids=[(6, 0, self.tag_vip.ids)]
        )
        arm_b = self.add_node(
            scenario, "tag_add", split, name="Arm B", branch="arm", tag_ids=[(6, 0, self.tag_lost.ids)]
        )
        arm_c = self.add_node(
            scenario, "tag_add", split, name="Arm C", branch="arm", tag_ids=[(6, 0, self.tag_vip.ids)]
        )
        scenario.action_start()
        first = self.make_partners(60, "first")
        self.enter(first, T0)
        arms = self.arm_of(split, first)
        on_a, on_b, on_c = (
            first.filtered(lambda partner, arm=arm: arms[partner] == arm) for arm in (arm_a, arm_b, arm_c)
        )
        self.assertTrue(min(len(on_a), len(on_b), len(on_c)) >= 3, "sixty contacts drawn at random fill every arm")
        self.assertFalse(split.split_winner_id, "the first batch is drawn: nobody had entered before it")
        with freeze_time(T0 + timedelta(hours=1)):
            for partner in on_b:
                self.emit(self.type_purchase, partner, {"total": 5})
            self.dispatch()
        later = self.make_partners(10, "later")
        self.enter(later, T0 + timedelta(hours=2))
        self.assertEqual(split.split_winner_id, arm_b)
        self.assertEqual(split.split_decided_at, T0 + timedelta(hours=2))
        self.assertEqual(
            split.split_decision,
            f"Arm A: 0.0 % (0 of {len(on_a)})\n"
            f"Arm B: 100.0 % ({len(on_b)} of {len(on_b)})\n"
            f"Arm C: 0.0 % (0 of {len(on_c)})\n"
            "Winner by conversion rate: Arm B",
        )
        self.assertEqual(set(self.arm_of(split, later).values()), {arm_b})
        later_steps = self.Step.search([("node_id", "=", split.id), ("partner_id", "in", later.ids)])
        self.assertEqual(set(later_steps.mapped("result")), {"Arm B (winner)"})
        self.assertEqual(later.category_id, self.tag_lost)
        cards = {card["id"]: card for card in scenario.get_flow_data()["nodes"]}
        self.assertTrue(cards[arm_b.id]["is_split_winner"])
        self.assertFalse(cards[arm_a.id]["is_split_winner"])
        self.assertIn("winner Arm B since", cards[split.id]["description"])

        # The winner archived, the other arms share the contacts again.
        scenario.action_pause()
        arm_b.active = False
        scenario.action_resume()
        last = self.make_partners(20, "last")
        self.enter(last, T0 + timedelta(hours=3))
        self.assertEqual(len(self.arm_of(split, last)), 20)
        self.assertLessEqual(set(self.arm_of(split, last).values()), {arm_a, arm_c})

    def test_best_open_rate_wins_after_days(self):
        scenario = self.create_scenario()
        split = self.add_node(
            scenario,
            "split",
            split_pick_winner=True,
            split_winner_metric="open",
            split_decide_days=7,
        )
        arms = self.Node
        for name in ("Short subject", "Long subject"):
            email = self.add_node(scenario, "email", split, name=name, branch="arm")
            email.mailing_id.write({"subject": name, "body_html": "<p>Hello</p>"})
            arms |= email
        _short, long_ = arms
        scenario.action_start()
        first = self.make_partners(20, "opener")
        self.enter(first, T0)
        long_steps = self.Step.search([("node_id", "=", long_.id)])
        self.assertTrue(long_steps and len(long_steps) < 20, "twenty contacts drawn at random fill both arms")
        long_steps.trace_id.set_opened()
        self.assertEqual(
            self.env["marketing.scenario"]._split_arm_figures(split)[long_.id],
            {
                "entrants": len(long_steps),
                "conversions": 0,
                "sent": len(long_steps),
                "opened": len(long_steps),
                "clicked": 0,
            },
        )
        early = self.make_partners(6, "early")
        self.enter(early, T0 + timedelta(days=3))
        self.assertFalse(split.split_winner_id, "seven days have not passed since the first contact")
        late = self.make_partners(6, "late")
        self.enter(late, T0 + timedelta(days=7, hours=1))
        self.assertEqual(split.split_winner_id, long_)
        self.assertIn("Winner by open rate: Long subject", split.split_decision)
        self.assertEqual(set(self.arm_of(split, late).values()), {long_})
        self.assertEqual(self.Step.search_count([("node_id", "=", long_.id), ("partner_id", "in", late.ids)]), 6)

    def test_a_winner_needs_a_moment_and_a_measure(self):
        draft = self.create_scenario()
        with self.assertRaisesRegex(ValidationError, "after how many days or entrants"):
            self.add_node(draft, "split", split_pick_winner=True)
        with self.assertRaisesRegex(ValidationError, "cannot be negative"):
            self.add_node(draft, "split", split_pick_winner=True, split_decide_days=-1)
        scenario = self.create_scenario()
        split = self.add_node(scenario, "split", split_pick_winner=True, split_decide_days=3)
        for _arm in range(2):
            self.add_node(scenario, "tag_add", split, branch="arm", tag_ids=[(6, 0, self.tag_vip.ids)])
        with self.assertRaisesRegex(UserError, "needs an objective on the scenario"):
            scenario.action_start()
        scenario.objective_event_type_id = self.type_purchase
        scenario.action_start()
        self.assertEqual(scenario.state, "running")
        self.assertEqual(split._split_description(), "2 arms, weighted · the best conversion rate wins after 3 days")
