import random
import threading
import time

import psycopg2

from odoo import api
from odoo.service.model import PG_CONCURRENCY_EXCEPTIONS_TO_RETRY
from odoo.tests import tagged
from odoo.tools import mute_logger

from .common import MarketingAutomationCommon

CHANGES_PER_WORKER = 15


@tagged("post_install", "-at_install")
class TestEngagementConcurrency(MarketingAutomationCommon):
    """Score changes from several transactions at once lose nothing.

    The workers use their own cursors and commit, like cron workers, the API
    and a marketer would; the data they commit is removed at the end.
    """

    def setUp(self):
        super().setUp()
        with self.registry.cursor() as cr:
            env = api.Environment(cr, api.SUPERUSER_ID, {"marketing_event_mute": True})
            self.shared_partner_id = env["res.partner"].create({"name": "Contended contact"}).id
            cr.execute("SELECT COALESCE(max(id), 0) FROM ir_cron_trigger")
            self.last_trigger_id = cr.fetchone()[0]
        self.addCleanup(self.remove_committed_data)

    def remove_committed_data(self):
        with self.registry.cursor() as cr:
            env = api.Environment(cr, api.SUPERUSER_ID, {})
            env["marketing.engagement.rule"].with_context(active_test=False).search(
                [("name", "=", "Concurrency test rule")]
            ).unlink()
            # Cascades to its score history and its events.
            env["res.partner"].browse(self.shared_partner_id).unlink()
            dispatcher = env.ref("marketing_event_automation.ir_cron_dispatch_events")
            env["ir.cron.trigger"].search([("id", ">", self.last_trigger_id), ("cron_id", "=", dispatcher.id)]).unlink()

    def worker_env(self, cr):
        # Tests run while the main thread holds the registry lock (the
        # registry is loading): bind the worker's cursor to the loaded
        # registry rather than asking the lock for it.
        cr.transaction = api.Transaction(self.registry)
        return api.Environment(cr, api.SUPERUSER_ID, {})

    def run_with_retries(self, cr, work, attempts=30):
        """Run ``work(env)`` and commit, as Odoo serves a request: a transaction
        that met a concurrent change is rolled back and run again. (Odoo's own
        ``retrying`` reloads the registry, which is locked while tests run.)"""
        for attempt in range(1, attempts + 1):
            try:
                work(self.worker_env(cr))
                # The worker's own cursor commits, as a request or a cron batch does.
                cr.commit()  # pylint: disable=invalid-commit
                return attempt
            except PG_CONCURRENCY_EXCEPTIONS_TO_RETRY:
                cr.rollback()
                if attempt == attempts:
                    raise
                time.sleep(random.uniform(0, 0.02 * attempt))
        return attempts

    def test_concurrent_increments_all_count(self):
        workers = [("rule", 1), ("scenario", 2), ("manual", 5), ("decay", -1)]
        barrier = threading.Barrier(len(workers))
        errors = []

        def work(origin, points):
            try:
                barrier.wait(timeout=30)
                for _change in range(CHANGES_PER_WORKER):
                    with self.registry.cursor() as cr:
                        self.run_with_retries(
                            cr,
                            lambda env, points=points, origin=origin: env["res.partner"]._marketing_change_score(
                                {self.shared_partner_id: points}, f"{origin} worker", origin
                            ),
                        )
            except Exception as error:  # noqa: BLE001 - reported by the main thread
                errors.append(error)

        threads = [threading.Thread(target=work, args=worker) for worker in workers]
        # The serialization failures that make a worker retry are expected.
        with mute_logger("odoo.sql_db"):
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=180)
        self.assertFalse(any(thread.is_alive() for thread in threads), "a worker is stuck")
        self.assertEqual(errors, [])

        with self.registry.cursor() as cr:
            cr.execute(
                "SELECT engagement_score, engagement_score_set FROM res_partner WHERE id = %s",
                [self.shared_partner_id],
            )
            score, score_set = cr.fetchone()
            cr.execute(
                "SELECT score_before, delta, score FROM marketing_engagement_log WHERE partner_id = %s ORDER BY id",
                [self.shared_partner_id],
            )
            logs = cr.fetchall()
        expected = CHANGES_PER_WORKER * sum(points for _origin, points in workers)
        self.assertEqual((score, score_set), (expected, True))
        self.assertEqual(len(logs), CHANGES_PER_WORKER * len(workers))
        # Each change started from the score the previous one committed: in
        # the order they were written, the history is one unbroken chain.
        previous_score = 0  # the history shows a never-scored contact's score before as 0
        for before, delta, after in logs:
            self.assertEqual(before, previous_score)
            self.assertEqual(before + delta, after)
            previous_score = after

    def test_dispatcher_batch_meeting_a_concurrent_change_is_run_again(self):
        with self.registry.cursor() as cr:
            env = self.worker_env(cr)
            env["marketing.engagement.rule"].create(
                {
                    "name": "Concurrency test rule",
                    "event_type_id": env.ref("marketing_event_automation.event_type_email_opened").id,
                    "points": 1,
                }
            )
            [event_id] = env["marketing.event"]._emit("email_opened", [{"partner_id": self.shared_partner_id}])

        with self.registry.cursor() as dispatcher_cr, self.registry.cursor() as manual_cr:
            dispatcher_env = self.worker_env(dispatcher_cr)
            dispatcher_cr.execute("SELECT 1")  # the dispatcher's transaction and snapshot start here
            self.worker_env(manual_cr)["res.partner"]._marketing_change_score(
                {self.shared_partner_id: 5}, "Manual change", "manual"
            )
            manual_cr.commit()
            with self.assertRaises(psycopg2.errors.SerializationFailure), mute_logger("odoo.sql_db"):
                dispatcher_env["marketing.event"].browse(event_id)._process()
            dispatcher_cr.rollback()

            dispatcher_env = self.worker_env(dispatcher_cr)
            event = dispatcher_env["marketing.event"].browse(event_id)
            self.assertEqual(event.state, "pending", "the batch was rolled back, not marked as failed")
            event._process()
            dispatcher_cr.commit()
            self.assertEqual(event.state, "processed")
            self.assertEqual(event.processing_result, {"score": ["Concurrency test rule: +1"]})
            partner = dispatcher_env["res.partner"].browse(self.shared_partner_id)
            self.assertEqual(partner.engagement_score, 6, "both changes count")

    def test_dispatch_cron_runs_a_batch_again_after_a_concurrent_change(self):
        """The cron's batch meets a concurrent change: it is rolled back and run again at once, not failed.

        Found by tools/fault_two_servers.py: the error used to escape the cron
        job (an ERROR and a failed job), and the batch waited for the next trigger.
        """
        with self.registry.cursor() as cr:
            env = self.worker_env(cr)
            env["marketing.engagement.rule"].create(
                {
                    "name": "Concurrency test rule",
                    "event_type_id": env.ref("marketing_event_automation.event_type_email_opened").id,
                    "points": 1,
                }
            )
            [event_id] = env["marketing.event"]._emit("email_opened", [{"partner_id": self.shared_partner_id}])

        with self.registry.cursor() as dispatcher_cr, self.registry.cursor() as manual_cr:
            dispatcher_env = self.worker_env(dispatcher_cr)
            dispatcher_cr.execute("SELECT 1")  # the dispatcher's transaction and snapshot start here
            self.worker_env(manual_cr)["res.partner"]._marketing_change_score(
                {self.shared_partner_id: 5}, "Manual change", "manual"
            )
            manual_cr.commit()
            # Alone, this batch fails with a serialization failure: see
            # test_dispatcher_batch_meeting_a_concurrent_change_is_run_again.
            processed = dispatcher_env["marketing.event"].browse(event_id)._process_with_retries()
            dispatcher_cr.commit()

            self.assertEqual(processed, 1)
            event = dispatcher_env["marketing.event"].browse(event_id)
            self.assertEqual(event.state, "processed")
            self.assertEqual(event.processing_result, {"score": ["Concurrency test rule: +1"]})
            partner = dispatcher_env["res.partner"].browse(self.shared_partner_id)
            self.assertEqual(partner.engagement_score, 6, "both changes count")
            history = dispatcher_env["marketing.engagement.log"].search(
                [("partner_id", "=", self.shared_partner_id)], order="id"
            )
            self.assertEqual([(log.score_before, log.delta, log.score) for log in history], [(0, 5, 5), (5, 1, 6)])
