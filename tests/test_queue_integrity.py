from odoo.exceptions import AccessError
from odoo.tests import tagged
from odoo.tools import mute_logger

from .scenario_common import ScenarioCommon
from .test_engine_rights import marketing_user


@tagged("post_install", "-at_install")
class TestQueueWrittenByTheEngineOnly(ScenarioCommon):
    """Participants' and steps' contact, node, state and due time change only through the engine."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.marketer = marketing_user(cls.env, "mea_queue_marketer")

    def setUp(self):
        super().setUp()
        self.scenario = self.create_scenario()
        self.wait = self.add_node(self.scenario, "wait", wait_amount=1, wait_unit="days")
        self.exit = self.add_node(self.scenario, "exit")
        self.scenario.action_start()
        self.participant = self.scenario._enroll_partners([self.partner.id])
        self.step = self.participant.step_ids.filtered(lambda step: step.node_id == self.wait)

    def test_marketer_cannot_move_or_finish_a_step(self):
        step = self.step.with_user(self.marketer)
        for values in (
            {"state": "done"},
            {"scheduled_at": "2000-01-01 00:00:00"},
            {"node_id": self.exit.id},
            {"partner_id": self.bob.id},
            {"participant_id": self.participant.id},
        ):
            with self.subTest(values=values), self.assertRaises(AccessError):
                step.write(values)
        self.assertEqual((self.step.state, self.step.node_id), ("scheduled", self.wait))

    def test_marketer_cannot_change_a_participant(self):
        participant = self.participant.with_user(self.marketer)
        for values in ({"state": "completed"}, {"partner_id": self.bob.id}, {"scenario_id": self.scenario.id}):
            with self.subTest(values=values), self.assertRaises(AccessError):
                participant.write(values)
        self.assertEqual((self.participant.state, self.participant.partner_id), ("running", self.partner))

    def test_marketing_administrator_goes_through_the_actions_too(self):
        with self.assertRaises(AccessError):
            self.step.with_user(self.marketing_manager).write({"state": "canceled"})

    def test_archiving_a_node_still_cancels_its_steps(self):
        self.scenario.action_pause()
        self.wait.with_user(self.marketer).write({"active": False})
        self.assertEqual(self.step.state, "canceled")


@tagged("post_install", "-at_install")
class TestEventRetry(ScenarioCommon):
    """Retry applies again only what failed, and only marketing administrators may retry."""

    def setUp(self):
        super().setUp()
        self.rule = self.env["marketing.engagement.rule"].create(
            {"name": "Cart", "event_type_id": self.type_cart.id, "points": 5}
        )
        self.scenario = self.create_scenario()
        self.add_node(self.scenario, "wait", wait_amount=1, wait_unit="days")
        self.scenario.action_start()

    def fail_scenarios_once(self):
        """An event whose score rule applies and whose scenario step then fails (a database constraint)."""
        self.env.cr.execute(
            "ALTER TABLE marketing_scenario_participant ADD CONSTRAINT mea_test_no_entry"
            " CHECK (partner_id <> %s) NOT VALID",
            (self.partner.id,),
        )
        event = self.emit(self.type_cart, self.partner, {"total": 1.0, "items": [{"sku": "A"}]})
        with mute_logger("odoo.addons.marketing_event_automation.models.marketing_event", "odoo.sql_db"):
            self.dispatch()
        self.env.cr.execute("ALTER TABLE marketing_scenario_participant DROP CONSTRAINT mea_test_no_entry")
        return event

    def test_retry_does_not_score_twice(self):
        event = self.fail_scenarios_once()
        self.assertEqual(event.state, "error")
        self.assertEqual(self.partner.engagement_score, 5)
        event.with_user(self.marketing_manager).action_retry()
        self.dispatch()
        self.assertEqual(event.state, "processed", event.error_message)
        self.assertEqual(self.partner.engagement_score, 5, "the score rule is not applied again")
        self.assertTrue(self.participant_of(self.scenario, self.partner), "the failed part runs again")

    def test_marketing_user_cannot_retry(self):
        event = self.fail_scenarios_once()
        with self.assertRaises(AccessError):
            event.with_user(self.marketing_user).action_retry()
        self.assertEqual(event.state, "error")


@tagged("post_install", "-at_install")
class TestDispatchCountsAfterItsWrites(ScenarioCommon):
    """The dispatcher's remaining count no longer sees the batch it just processed."""

    def test_no_empty_extra_batch(self):
        self.dispatch()
        for _index in range(3):
            self.emit(self.type_purchase, self.partner)
        cron = self.env.ref("marketing_event_automation.ir_cron_dispatch_events")
        progress = self.env["ir.cron.progress"].create({"cron_id": cron.id, "remaining": 0, "done": 0})
        Event = self.Event.with_context(ir_cron_progress_id=progress.id)
        self.assertEqual(Event._cron_dispatch(), 3)
        self.assertEqual((progress.done, progress.remaining), (3, 0), "nothing pending is left after the batch")
