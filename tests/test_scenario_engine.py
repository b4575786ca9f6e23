from datetime import datetime
from datetime import timedelta
from unittest.mock import patch

from freezegun import freeze_time

from odoo.exceptions import UserError
from odoo.exceptions import ValidationError
from odoo.tests import tagged
from odoo.tools import mute_logger

from .scenario_common import ScenarioCommon

T0 = datetime(2026, 11, 2, 10, 0, 0)


@tagged("post_install", "-at_install")
class TestScenarioEngine(ScenarioCommon):
    def test_event_trigger_with_params_filter_enters_and_runs_actions(self):
        scenario = self.create_scenario(trigger_params_filter="total > 100")
        tag = self.add_node(scenario, "tag_add", tag_ids=[(6, 0, self.tag_vip.ids)])
        scenario.action_start()
        with freeze_time(T0):
            big = self.emit(self.type_cart, self.partner, {"total": 150.0, "items": [{"sku": "A"}]})
            small = self.emit(self.type_cart, self.bob, {"total": 20.0, "items": [{"sku": "B"}]})
            self.dispatch()
            self.assertEqual(big.processing_result, {"entered": ["Test scenario"]})
            self.assertFalse(small.processing_result)
            participant = self.participant_of(scenario, self.partner)
            self.assertEqual(participant.event_id, big)
            self.assertEqual(participant.event_params["total"], 150.0)
            self.assertFalse(self.participant_of(scenario, self.bob))
            self.advance()
        self.assertIn(self.tag_vip, self.partner.category_id)
        step = self.steps_of(participant, tag)
        self.assertEqual((step.state, step.result), ("done", "VIP"))
        self.assertEqual(participant.state, "completed")
        self.assertEqual(scenario.completed_count, 1)
        completed = self.Event.search(
            [("type_id.key", "=", "scenario_completed"), ("partner_id", "=", self.partner.id)]
        )
        self.assertEqual(completed.params["scenario_id"], scenario.id)

    def test_params_filter_is_checked_against_the_learned_structure(self):
        self.emit(self.type_cart, self.partner, {"total": 10.0, "items": [{"sku": "A"}], "category": "shoes"})
        with self.assertRaisesRegex(ValidationError, "total is a number"):
            self.create_scenario(trigger_params_filter='total > "abc"')
        with self.assertRaisesRegex(ValidationError, "no such parameter"):
            self.create_scenario(trigger_params_filter="missing == 1")
        with self.assertRaisesRegex(ValidationError, "expected a value .* at position 8"):
            self.create_scenario(trigger_params_filter="total >> 1")
        scenario = self.create_scenario(trigger_params_filter='category == "shoes" and items[].sku == "A"')
        self.assertTrue(scenario)

    def test_entry_policies(self):
        expectations = {"once": 1, "once_at_a_time": 2, "every_time": 3}
        for policy, expected in expectations.items():
            with self.subTest(policy=policy):
                scenario = self.create_scenario(name=policy, entry_policy=policy)
                self.add_node(scenario, "wait", wait_amount=1, wait_unit="days")
                scenario.action_start()
                with freeze_time(T0):
                    # Two carts while the first run waits, a third after it completed.
                    self.emit(self.type_cart, self.partner, {"total": 1, "items": []})
                    self.dispatch()
                    self.emit(self.type_cart, self.partner, {"total": 2, "items": []})
                    self.dispatch()
                self.advance_at(T0 + timedelta(days=2))
                with freeze_time(T0 + timedelta(days=2)):
                    self.emit(self.type_cart, self.partner, {"total": 3, "items": []})
                    self.dispatch()
                count = self.Participant.search_count([("scenario_id", "=", scenario.id)])
                self.assertEqual(count, expected)
                scenario.action_stop()

    def test_audience_filter_applies_to_event_triggers(self):
        scenario = self.create_scenario(audience_domain="[('email', 'ilike', 'bob@')]")
        self.add_node(scenario, "tag_add", tag_ids=[(6, 0, self.tag_vip.ids)])
        scenario.action_start()
        self.emit(self.type_cart, self.partner, {"total": 1, "items": []})
        self.emit(self.type_cart, self.bob, {"total": 1, "items": []})
        self.dispatch()
        self.assertEqual(scenario.participant_ids.partner_id, self.bob)

    def test_wait_then_condition_branches(self):
        scenario = self.create_scenario()
        wait = self.add_node(scenario, "wait", wait_amount=2, wait_unit="hours")
        condition = self.add_node(
            scenario, "condition", wait, condition_type="domain", condition_domain="[('email', 'ilike', 'alice')]"
        )
        yes = self.add_node(scenario, "tag_add", condition, branch="yes", tag_ids=[(6, 0, self.tag_vip.ids)])
        no = self.add_node(scenario, "tag_add", condition, branch="no", tag_ids=[(6, 0, self.tag_lost.ids)])
        scenario.action_start()
        with freeze_time(T0):
            self.emit(self.type_cart, self.partner, {"total": 1, "items": []})
            self.emit(self.type_cart, self.bob, {"total": 1, "items": []})
            self.dispatch()
            self.assertEqual(self.advance(), 0, "the wait is not over")
        alice_run = self.participant_of(scenario, self.partner)
        wait_step = self.steps_of(alice_run, wait)
        self.assertEqual(wait_step.scheduled_at, T0 + timedelta(hours=2))
        advance_cron = self.env.ref("marketing_event_automation.ir_cron_scenario_advance")
        wake_ups = self.env["ir.cron.trigger"].search([("cron_id", "=", advance_cron.id)]).mapped("call_at")
        self.assertIn(T0, wake_ups, "entering contacts wakes the advance cron")
        self.assertIn(T0 + timedelta(hours=2), wake_ups, "the advance cron wakes itself at the next due step")
        self.assertEqual(self.advance_at(T0 + timedelta(hours=1, minutes=59)), 0)
        self.advance_at(T0 + timedelta(hours=2))
        self.assertIn(self.tag_vip, self.partner.category_id)
        self.assertNotIn(self.tag_lost, self.partner.category_id)
        self.assertIn(self.tag_lost, self.bob.category_id)
        self.assertEqual(self.steps_of(alice_run, condition).branch, "yes")
        self.assertFalse(self.steps_of(alice_run, no))
        self.assertEqual(yes.processed_count, 1)
        self.assertEqual(no.processed_count, 1)
        self.assertEqual(condition.processed_count, 2)

    def test_wait_until_date_field_rolls_over_yearly_inside_send_window(self):
        scenario = self.create_scenario(timezone="Europe/Brussels")
        field = self.env["ir.model.fields"].create(
            {
                "model_id": self.env["ir.model"]._get_id("res.partner"),
                "name": "x_birthday",
                "ttype": "date",
                "field_description": "Birthday",
            }
        )
        wait = self.add_node(
            scenario,
            "wait",
            wait_mode="field",
            wait_field_id=field.id,
            wait_yearly=True,
            window_enabled=True,
            window_start=9.0,
            window_end=18.0,
            window_timezone="scenario",
        )
        self.partner.x_birthday = "1990-03-15"
        scenario.action_start()
        with freeze_time(T0):
            self.emit(self.type_cart, self.partner, {"total": 1, "items": []})
            self.dispatch()
        step = self.steps_of(self.participant_of(scenario, self.partner), wait)
        # 15 March 2027, 09:00 in Brussels (UTC+1) is 08:00 UTC.
        self.assertEqual(step.scheduled_at, datetime(2027, 3, 15, 8, 0))

    def test_send_window_in_contact_timezone(self):
        scenario = self.create_scenario()
        wait = self.add_node(
            scenario, "wait", wait_amount=1, wait_unit="hours", window_enabled=True, window_start=9, window_end=18
        )
        self.partner.tz = "America/New_York"
        scenario.action_start()
        with freeze_time(datetime(2026, 11, 2, 22, 30)):  # 17:30 in New York: due at 18:30, outside
            self.emit(self.type_cart, self.partner, {"total": 1, "items": []})
            self.dispatch()
        step = self.steps_of(self.participant_of(scenario, self.partner), wait)
        self.assertEqual(step.scheduled_at, datetime(2026, 11, 3, 14, 0), "09:00 next day in New York (UTC-5)")

    def test_split_arms_follow_weights_and_count(self):
        scenario = self.create_scenario(entry_policy="every_time")
        split = self.add_node(scenario, "split")
        arm_a = self.add_node(
            scenario, "tag_add", split, branch="arm", split_weight=100, tag_ids=[(6, 0, self.tag_vip.ids)]
        )
        arm_b = self.add_node(
            scenario, "tag_add", split, branch="arm", split_weight=1, tag_ids=[(6, 0, self.tag_lost.ids)]
        )
        scenario.action_start()
        partners = self.env["res.partner"].create([{"name": f"P{i}", "email": f"p{i}@example.com"} for i in range(30)])
        for partner in partners:
            self.emit(self.type_cart, partner, {"total": 1, "items": []})
        self.dispatch()
        self.advance()
        self.assertEqual(arm_a.processed_count + arm_b.processed_count, 30)
        self.assertGreater(arm_a.processed_count, arm_b.processed_count)
        self.assertAlmostEqual(arm_a.arm_share + arm_b.arm_share, 100.0)
        self.assertEqual(arm_a.arm_share, 100.0 * arm_a.processed_count / 30)
        steps = self.Step.search([("node_id", "=", split.id)])
        self.assertEqual(set(steps.mapped("branch")), {"arm"})
        self.assertTrue(all(step.arm_node_id in arm_a | arm_b for step in steps))

    def test_exit_event_cancels_scheduled_steps(self):
        scenario = self.create_scenario(exit_event_type_ids=[(6, 0, self.type_purchase.ids)])
        wait = self.add_node(scenario, "wait", wait_amount=1, wait_unit="days")
        self.add_node(scenario, "tag_add", wait, tag_ids=[(6, 0, self.tag_vip.ids)])
        scenario.action_start()
        self.emit(self.type_cart, self.partner, {"total": 1, "items": []})
        self.dispatch()
        purchase = self.emit(self.type_purchase, self.partner, {"total": 1})
        self.dispatch()
        self.assertEqual(purchase.processing_result, {"exited": ["Test scenario"]})
        participant = self.participant_of(scenario, self.partner)
        self.assertEqual(participant.state, "exited")
        self.assertIn("Test purchase", participant.end_reason)
        self.assertEqual(self.steps_of(participant, wait).state, "canceled")
        self.advance_at(self.now() + timedelta(days=2))
        self.assertNotIn(self.tag_vip, self.partner.category_id)
        self.assertEqual(scenario.exited_count, 1)

    def test_exit_node_ends_parallel_branches(self):
        scenario = self.create_scenario()
        self.add_node(scenario, "wait", wait_amount=1, wait_unit="days")
        self.add_node(scenario, "exit")
        scenario.action_start()
        self.emit(self.type_cart, self.partner, {"total": 1, "items": []})
        self.dispatch()
        self.advance()
        participant = self.participant_of(scenario, self.partner)
        self.assertEqual(participant.state, "exited")
        self.assertEqual(sorted(participant.step_ids.mapped("state")), ["canceled", "done"])

    def test_lifecycle_start_lists_every_problem(self):
        scenario = self.create_scenario(trigger_event_type_id=False)
        self.add_node(scenario, "tag_add")
        self.add_node(scenario, "score")
        other_branch_email = self.add_node(scenario, "email")
        self.add_node(scenario, "condition", condition_type="email", condition_node_id=other_branch_email.id)
        with self.assertRaises(UserError) as caught:
            scenario.action_start()
        message = str(caught.exception)
        self.assertIn("the message node must come before this condition", message)
        self.assertIn("the mailing needs a subject and a body", message)
        self.assertIn("choose the event type", message)
        self.assertIn("choose the tags", message)
        self.assertIn("give the points", message)
        self.assertEqual(scenario.state, "draft")

    def test_pause_stops_entries_and_steps_and_allows_editing(self):
        scenario = self.create_scenario()
        wait = self.add_node(scenario, "wait", wait_amount=1, wait_unit="hours")
        tag = self.add_node(scenario, "tag_add", wait, tag_ids=[(6, 0, self.tag_vip.ids)])
        scenario.action_start()
        with freeze_time(T0):
            self.emit(self.type_cart, self.partner, {"total": 1, "items": []})
            self.dispatch()
        with self.assertRaisesRegex(UserError, "Pause"):
            tag.write({"tag_ids": [(6, 0, self.tag_lost.ids)]})
        scenario.action_pause()
        with freeze_time(T0):
            self.emit(self.type_cart, self.bob, {"total": 1, "items": []})
            self.dispatch()
        self.assertFalse(self.participant_of(scenario, self.bob), "no entry while paused")
        self.assertEqual(self.advance_at(T0 + timedelta(hours=2)), 0, "no step runs while paused")
        tag.write({"tag_ids": [(6, 0, self.tag_lost.ids)]})
        with self.assertRaisesRegex(UserError, "archive"):
            wait.unlink()
        root = self.add_node(scenario, "wait", wait_amount=1, wait_unit="hours")
        wait.parent_id = root
        with self.assertRaisesRegex(UserError, "archive"):
            root.unlink()  # it would delete the wait after it, and its scheduled step
        wait.parent_id = False
        root.unlink()
        scenario.action_resume()
        self.assertEqual(scenario.state, "running")
        self.advance_at(T0 + timedelta(hours=2))
        self.assertIn(self.tag_lost, self.partner.category_id, "the edited node ran")
        self.assertEqual(self.participant_of(scenario, self.partner).state, "completed")

    def test_archiving_a_node_cancels_its_steps_with_reason(self):
        scenario = self.create_scenario()
        wait = self.add_node(scenario, "wait", wait_amount=1, wait_unit="hours")
        self.add_node(scenario, "tag_add", wait, tag_ids=[(6, 0, self.tag_vip.ids)])
        scenario.action_start()
        self.emit(self.type_cart, self.partner, {"total": 1, "items": []})
        self.dispatch()
        scenario.action_pause()
        wait.action_archive()
        participant = self.participant_of(scenario, self.partner)
        step = self.steps_of(participant, wait)
        self.assertEqual((step.state, step.result), ("canceled", "Node archived"))
        self.assertEqual(participant.state, "completed", "no orphan: nothing left to run")

    def test_trigger_cannot_change_while_participants_run(self):
        scenario = self.create_scenario()
        self.add_node(scenario, "wait", wait_amount=1, wait_unit="days")
        scenario.action_start()
        self.emit(self.type_cart, self.partner, {"total": 1, "items": []})
        self.dispatch()
        scenario.action_pause()
        with self.assertRaisesRegex(UserError, "trigger"):
            scenario.trigger_event_type_id = self.type_purchase
        scenario.name = "Renamed"  # other fields stay editable

    def test_stop_cancels_every_scheduled_step(self):
        scenario = self.create_scenario()
        self.add_node(scenario, "wait", wait_amount=1, wait_unit="days")
        scenario.action_start()
        self.emit(self.type_cart, self.partner, {"total": 1, "items": []})
        self.emit(self.type_cart, self.bob, {"total": 1, "items": []})
        self.dispatch()
        scenario.action_stop()
        self.assertEqual(set(scenario.participant_ids.mapped("state")), {"canceled"})
        self.assertEqual(set(scenario.participant_ids.step_ids.mapped("state")), {"canceled"})
        self.assertEqual(scenario.state, "stopped")

    def test_handler_error_marks_steps_and_batch_proceeds(self):
        scenario = self.create_scenario()
        failing = self.add_node(
            scenario,
            "field_update",
            field_id=self.env["ir.model.fields"]._get("res.partner", "ref").id,
            field_value="X",
        )
        tag = self.add_node(scenario, "tag_add", tag_ids=[(6, 0, self.tag_vip.ids)])
        scenario.action_start()
        self.emit(self.type_cart, self.partner, {"total": 1, "items": []})
        self.dispatch()
        # A field the database refuses: the handler raises, its savepoint rolls back.
        self.env.cr.execute("ALTER TABLE res_partner ADD CONSTRAINT mea_test_ref CHECK (ref IS DISTINCT FROM 'X')")
        with mute_logger("odoo.addons.marketing_event_automation.models.marketing_scenario_step", "odoo.sql_db"):
            self.advance()
        participant = self.participant_of(scenario, self.partner)
        error_step = self.steps_of(participant, failing)
        self.assertEqual(error_step.state, "error")
        self.assertIn("mea_test_ref", error_step.result)
        self.assertEqual(self.steps_of(participant, tag).state, "done")
        self.assertIn(self.tag_vip, self.partner.category_id)
        self.assertFalse(self.partner.ref)
        self.assertEqual(failing.error_count, 1)
        self.assertFalse(self.Step.search_count([("participant_id", "=", participant.id), ("state", "=", "scheduled")]))

    def test_now_trigger_enters_audience_in_batches(self):
        partners = self.env["res.partner"].create(
            [{"name": f"Audience {i}", "email": f"aud{i}@example.org", "ref": "AUD"} for i in range(25)]
        )
        scenario = self.create_scenario(
            trigger_type="now", trigger_event_type_id=False, audience_domain="[('ref', '=', 'AUD')]"
        )
        self.add_node(scenario, "tag_add", tag_ids=[(6, 0, self.tag_vip.ids)])
        scenario.action_start()
        batches = 0
        while self.Scenario._cron_schedule(batch_size=10):
            batches += 1
        self.assertEqual(batches, 3)
        self.assertEqual(scenario.participant_ids.partner_id, partners)
        self.assertFalse(scenario.enrolling_occurrence_at)
        self.assertFalse(scenario.next_occurrence_at)
        self.advance()
        self.assertTrue(all(self.tag_vip in partner.category_id for partner in partners))
        self.assertEqual(self.Scenario._cron_schedule(), 0, "a 'now' trigger enters its audience once")

    def test_audience_entry_goes_on_from_the_last_contact_through_refused_batches(self):
        partners = self.env["res.partner"].create(
            [{"name": f"Cursor {i}", "email": f"cursor{i}@example.org", "ref": "CURSOR"} for i in range(25)]
        )
        scenario = self.create_scenario(
            trigger_type="now",
            trigger_event_type_id=False,
            entry_policy="once",
            audience_domain="[('ref', '=', 'CURSOR')]",
        )
        self.add_node(scenario, "wait", wait_amount=1, wait_unit="days")
        scenario.action_start()
        # The first twelve contacts were in the scenario already: with the
        # "once" policy, the first batch of ten enters nobody.
        already_in = partners[:12]
        scenario._enroll_partners(already_in.ids)
        progress = []
        while done := self.Scenario._cron_schedule(batch_size=10):
            progress.append((done, scenario.enrolling_after_partner_id))
        self.assertEqual(
            progress,
            [(10, partners[9].id), (10, partners[19].id), (5, 0)],
            "each batch goes on after the previous one's last contact, a batch of refusals too",
        )
        self.assertEqual(scenario.participant_ids.partner_id, partners)
        self.assertEqual(len(scenario.participant_ids), 25, "nobody entered twice")
        self.assertFalse(scenario.enrolling_occurrence_at)

    def test_a_locked_contact_reschedules_the_steps(self):
        # A committed contact, locked by another transaction as a concurrent
        # score change would: the handler cannot take its row in time.
        admin_partner = self.env.ref("base.partner_admin")
        scenario = self.create_scenario()
        score = self.add_node(scenario, "score", score_delta=1, score_reason="lock")
        scenario.action_start()
        with freeze_time(T0):
            self.emit(self.type_cart, admin_partner, {"total": 1, "items": []})
            self.dispatch()
        self.env.cr.execute("SHOW lock_timeout")
        [previous_timeout] = self.env.cr.fetchone()
        with self.registry.cursor() as other:
            other.execute("SET LOCAL lock_timeout = '2s'")
            other.execute("SELECT id FROM res_partner WHERE id = %s FOR NO KEY UPDATE NOWAIT", [admin_partner.id])
            self.env.cr.execute("SET LOCAL lock_timeout = '200ms'")
            try:
                with freeze_time(T0), mute_logger("odoo.sql_db"):
                    self.advance()
            finally:
                self.env.cr.execute("SELECT set_config('lock_timeout', %s, true)", [previous_timeout])
            other.rollback()
        step = self.Step.search([("node_id", "=", score.id)])
        self.assertEqual((step.state, step.result), ("scheduled", "Concurrent update, retried"))
        self.assertEqual(step.scheduled_at, T0 + timedelta(seconds=60))
        self.advance_at(T0 + timedelta(seconds=60))
        self.assertEqual(step.state, "done")
        self.assertEqual(admin_partner.engagement_score, 1)

    def test_duplicate_copies_the_node_tree_as_a_draft(self):
        scenario = self.create_scenario()
        email = self.add_node(scenario, "email", name="Mail")
        email.mailing_id.write({"subject": "Hi", "body_html": "<p>Hi</p>"})
        condition = self.add_node(scenario, "condition", email, condition_type="email", condition_node_id=email.id)
        self.add_node(scenario, "tag_add", condition, branch="yes", tag_ids=[(6, 0, self.tag_vip.ids)])
        scenario.action_start()
        copy = scenario.copy()
        self.assertEqual((copy.state, copy.name), ("draft", "Test scenario (copy)"))
        self.assertEqual(len(copy.node_ids), 3)
        new_email = copy.node_ids.filtered(lambda node: node.node_type == "email")
        new_condition = copy.node_ids.filtered(lambda node: node.node_type == "condition")
        self.assertEqual(new_condition.parent_id, new_email)
        self.assertEqual(new_condition.condition_node_id, new_email)
        self.assertNotEqual(new_email.mailing_id, email.mailing_id, "each node keeps a mailing of its own")
        self.assertEqual(new_email.mailing_id.subject, "Hi")
        self.assertEqual(copy.node_ids.filtered("parent_id").mapped("branch"), ["always", "yes"])


@tagged("post_install", "-at_install")
class TestChainedStepsStoredAfterRun(ScenarioCommon):
    """Children due at once whose kind allows it run before their row exists, then are stored as they ended."""

    def test_a_failing_handler_in_a_round_leaves_the_others_of_the_round_running(self):
        # The failed node's savepoint is rolled back, which clears the cache the
        # next node's steps (not in the table yet) are read from.
        partners = self.env["res.partner"].create([{"name": f"F{i}", "email": f"f{i}@example.org"} for i in range(2)])
        scenario = self.create_scenario(name="Failing round", trigger_type="now", trigger_event_type_id=False)
        wait = self.add_node(scenario, "wait", wait_amount=0, wait_unit="minutes")
        score = self.add_node(scenario, "score", wait, score_delta=4, score_reason="chain")
        tag = self.add_node(scenario, "tag_add", wait, tag_ids=[(6, 0, self.tag_vip.ids)])
        exit_node = self.add_node(scenario, "exit", tag)
        scenario.action_start()
        scenario._enroll_partners(partners.ids)
        Node = type(self.Node)
        with (
            patch.object(Node, "_run_score", autospec=True, side_effect=UserError("no points today")),
            mute_logger("odoo.addons.marketing_event_automation.models.marketing_scenario_step"),
        ):
            self.assertEqual(self.Step._cron_advance(), 2 * 4, "the whole tree in one batch")
        for participant in scenario.participant_ids:
            self.assertEqual(self.steps_of(participant, score).state, "error")
            self.assertIn("no points today", self.steps_of(participant, score).result)
            self.assertEqual(self.steps_of(participant, tag).mapped("state"), ["done"])
            self.assertEqual(self.steps_of(participant, exit_node).mapped("state"), ["done"])
            self.assertEqual(participant.state, "exited")
        for partner in partners:
            self.assertEqual(partner.category_id, self.tag_vip)
            self.assertFalse(partner.engagement_score)

    def test_the_children_of_a_participant_exiting_in_the_same_round_are_canceled(self):
        partners = self.env["res.partner"].create([{"name": f"X{i}", "email": f"x{i}@example.org"} for i in range(2)])
        scenario = self.create_scenario(name="Exit in the round", trigger_type="now", trigger_event_type_id=False)
        wait = self.add_node(scenario, "wait", wait_amount=0, wait_unit="minutes")
        self.add_node(scenario, "exit", wait)
        tag = self.add_node(scenario, "tag_add", wait, tag_ids=[(6, 0, self.tag_vip.ids)])
        score = self.add_node(scenario, "score", tag, score_delta=4, score_reason="after the exit")
        scenario.action_start()
        scenario._enroll_partners(partners.ids)
        self.assertEqual(self.Step._cron_advance(), 2 * 3)
        for participant in scenario.participant_ids:
            self.assertEqual(participant.state, "exited")
            canceled = self.steps_of(participant, score)
            self.assertEqual((canceled.state, canceled.result), ("canceled", "Exit node reached"))
        self.assertFalse(any(partners.mapped("engagement_score")), "the exit went first")
        self.assertFalse(
            self.Step.search([("participant_id", "in", scenario.participant_ids.ids), ("state", "=", "scheduled")])
        )

    def test_put_off_steps_are_stored_as_the_queue_would_have_them(self):
        partners = self.env["res.partner"].create([{"name": f"S{i}", "email": f"s{i}@example.org"} for i in range(3)])
        scenario = self.create_scenario(name="Stored after run", trigger_type="now", trigger_event_type_id=False)
        wait = self.add_node(scenario, "wait", wait_amount=0, wait_unit="minutes")
        condition = self.add_node(
            scenario, "condition", wait, condition_type="domain", condition_domain="[('name', '=', 'S1')]"
        )
        later = self.add_node(scenario, "wait", condition, branch="yes", wait_amount=1, wait_unit="hours")
        tag = self.add_node(scenario, "tag_add", condition, branch="no", tag_ids=[(6, 0, self.tag_vip.ids)])
        scenario.action_start()
        scenario._enroll_partners(partners.ids)
        started = self.now()
        self.assertEqual(self.Step._cron_advance(), 3 * 2 + 2, "wait, condition, then the tag of two contacts")
        for participant in scenario.participant_ids:
            step = self.steps_of(participant, condition)
            yes = participant.partner_id.name == "S1"
            self.assertEqual(
                (step.state, step.branch, step.result), ("done", "yes" if yes else "no", "Yes" if yes else "No")
            )
            self.assertEqual(
                (step.scenario_id, step.partner_id, step.company_id),
                (scenario, participant.partner_id, scenario.company_id),
            )
            self.assertGreaterEqual(step.processed_at, started)
            self.assertEqual(step.attempt, 0)
            if yes:
                waiting = self.steps_of(participant, later)
                self.assertEqual(waiting.state, "scheduled", "not due: inserted as scheduled")
                self.assertEqual(participant.state, "running")
            else:
                self.assertEqual(self.steps_of(participant, tag).state, "done")
                self.assertEqual(participant.state, "completed")
        self.assertEqual(scenario.node_ids.filtered(lambda node: node == condition).processed_count, 3)
