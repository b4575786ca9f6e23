import threading
import time

from psycopg2 import errorcodes

from odoo import api
from odoo.service.model import PG_CONCURRENCY_ERRORS_TO_RETRY
from odoo.service.model import PG_CONCURRENCY_EXCEPTIONS_TO_RETRY
from odoo.tests import TransactionCase
from odoo.tests import tagged

from .test_engagement_concurrency import TestEngagementConcurrency

SOURCE_NAME = "Concurrent shop"


@tagged("post_install", "-at_install")
class TestApiConcurrency(TransactionCase):
    """Two ingestion requests on two workers (two committed transactions) that bring the same
    never-seen event type or the same unknown contact: both get their events accepted, and what
    meets the other's change fails only in a way Odoo's retry loop replays (SQLSTATE 40001),
    never as a 500."""

    # The workers' cursors and Odoo's retry loop, as the score concurrency tests run them.
    worker_env = TestEngagementConcurrency.worker_env
    run_with_retries = TestEngagementConcurrency.run_with_retries

    def setUp(self):
        super().setUp()
        with self.registry.cursor() as cr:
            env = api.Environment(cr, api.SUPERUSER_ID, {})
            self.source_id = env["marketing.event.source"].create({"name": SOURCE_NAME}).id
            env["marketing.event.type"].create({"name": "Race purchase", "key": "race_purchase"})
            # What the first contact created through the API teaches contact_created, learned
            # beforehand: the workers would otherwise both write that type's row, and wait
            # for each other where this test runs them one after the other.
            contact_created = env.ref("marketing_event_automation.event_type_contact_created")
            contact_created._learn_structures({contact_created.id: {"source": "string"}})
        self.addCleanup(self.remove_source_data)
        self.addCleanup(self.remove_type, "race_purchase")

    def remove_source_data(self):
        with self.registry.cursor() as cr:
            env = api.Environment(cr, api.SUPERUSER_ID, {"active_test": False})
            source = env["marketing.event.source"].browse(self.source_id)
            contacts = env["res.partner"].search([("marketing_source_id", "=", source.id)])
            events = env["marketing.event"].search(
                ["|", ("source_id", "=", source.id), ("partner_id", "in", contacts.ids)]
            )
            event_types = env["marketing.event.type"].search([("registered_source_id", "=", source.id)])
            events.unlink()
            contacts.unlink()
            event_types.unlink()
            cr.execute("DELETE FROM marketing_event_source_quota WHERE source_id = %s", [source.id])
            cr.execute("DELETE FROM marketing_event_source_rate WHERE source_id = %s", [source.id])
            source.unlink()

    def ingest(self, cr, events):
        env = self.worker_env(cr)
        source = env["marketing.event.source"].browse(self.source_id)
        # As the controller calls it.
        return env["marketing.event"].sudo().with_company(source.company_id)._ingest(source, events)

    def assert_retried_by_odoo(self, error):
        """What Odoo's retry loop needs to replay a request instead of answering 500."""
        self.assertIsInstance(error, PG_CONCURRENCY_EXCEPTIONS_TO_RETRY)
        self.assertIn(error.pgcode, PG_CONCURRENCY_ERRORS_TO_RETRY)
        self.assertEqual(errorcodes.lookup(error.pgcode), "SERIALIZATION_FAILURE")

    def race_after_commit(self, events_a, events_b):
        """B's request has started (its snapshot is taken) when A's commits: B meets what A created,
        fails as Odoo's retry loop expects, and its replay is accepted."""
        with self.registry.cursor() as cr_a, self.registry.cursor() as cr_b:
            cr_b.execute("SELECT 1")
            [result_a] = self.ingest(cr_a, events_a)
            cr_a.commit()  # pylint: disable=invalid-commit
            try:
                self.ingest(cr_b, events_b)
            except PG_CONCURRENCY_EXCEPTIONS_TO_RETRY as error:
                self.assert_retried_by_odoo(error)
            else:
                self.fail("B cannot use what A created after B's snapshot")
            # Odoo's retry loop: roll back, serve the request again.
            cr_b.rollback()
            [result_b] = self.ingest(cr_b, events_b)
            cr_b.commit()  # pylint: disable=invalid-commit
        self.assertEqual((result_a["status"], result_b["status"]), ("accepted", "accepted"))
        return result_a, result_b

    def race_at_once(self, events_by_name):
        """Both requests at the same moment on two workers, each replayed as Odoo replays requests."""
        barrier = threading.Barrier(len(events_by_name))
        results, errors = {}, []

        def request(name):
            try:
                barrier.wait(timeout=30)
                with self.registry.cursor() as cr:
                    self.run_with_retries(
                        cr, lambda env: results.__setitem__(name, self.ingest(env.cr, events_by_name[name]))
                    )
            except Exception as error:  # noqa: BLE001 - reported by the main thread
                errors.append(error)

        threads = [threading.Thread(target=request, args=(name,)) for name in events_by_name]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        self.assertFalse(errors)
        self.assertEqual([results[name][0]["status"] for name in events_by_name], ["accepted"] * len(events_by_name))
        return results

    def count(self, model_name, domain):
        with self.registry.cursor() as cr:
            return api.Environment(cr, api.SUPERUSER_ID, {})[model_name].search_count(domain)

    def test_same_new_type_registered_by_a_request_that_committed_meanwhile(self):
        event = {"event": "race_new_type", "contact": {"email": "racer@example.com"}}
        result_a, result_b = self.race_after_commit([dict(event, event_id="a")], [dict(event, event_id="b")])
        with self.registry.cursor() as cr:
            env = api.Environment(cr, api.SUPERUSER_ID, {})
            event_types = env["marketing.event.type"].search([("key", "=", "race_new_type")])
            self.assertEqual(len(event_types), 1, "one type, registered once")
            events = env["marketing.event"].browse([result_a["id"], result_b["id"]])
            self.assertEqual(events.type_id, event_types)

    def test_same_new_type_from_two_workers_at_once(self):
        contact = {"email": "once@example.com"}
        self.race_at_once({name: [{"event": "race_at_once", "event_id": name, "contact": contact}] for name in "ab"})
        self.assertEqual(self.count("marketing.event.type", [("key", "=", "race_at_once")]), 1)

    def test_same_unknown_contact_created_by_a_request_that_committed_meanwhile(self):
        event = {"event": "race_purchase", "contact": {"email": "brand.new@example.com", "name": "New"}}
        result_a, result_b = self.race_after_commit([dict(event, event_id="a")], [dict(event, event_id="b")])
        with self.registry.cursor() as cr:
            env = api.Environment(cr, api.SUPERUSER_ID, {})
            partner = env["res.partner"].search([("email_normalized", "=", "brand.new@example.com")])
            self.assertEqual(len(partner), 1, "one contact, created once")
            self.assertEqual(env["marketing.event"].browse([result_a["id"], result_b["id"]]).partner_id, partner)

    def test_same_unknown_contact_from_two_workers_at_once(self):
        contact = {"external_id": "RACE-1", "email": "at.once@example.com"}
        self.race_at_once({name: [{"event": "race_purchase", "event_id": name, "contact": contact}] for name in "ab"})
        self.assertEqual(self.count("res.partner", [("marketing_external_id", "=", "RACE-1")]), 1)

    def test_daily_contact_cap_is_shared_by_the_workers(self):
        with self.registry.cursor() as cr:
            env = api.Environment(cr, api.SUPERUSER_ID, {})
            env["marketing.event.source"].browse(self.source_id).max_new_contacts_per_day = 1
        with self.registry.cursor() as cr_a, self.registry.cursor() as cr_b:
            # Neither request has committed when the other counts its new contact.
            [result_a] = self.ingest(cr_a, [{"event": "race_purchase", "contact": {"email": "first@example.com"}}])
            [result_b] = self.ingest(cr_b, [{"event": "race_purchase", "contact": {"email": "second@example.com"}}])
            cr_a.commit()  # pylint: disable=invalid-commit
            cr_b.commit()  # pylint: disable=invalid-commit
        self.assertEqual((result_a["status"], result_b["status"]), ("accepted", "rejected"))
        self.assertEqual(result_b["code"], "limit_exceeded")

    def wait_for_a_lock_wait(self):
        """Until some backend of this database waits for a row lock (the counter upsert of the other worker)."""
        for _attempt in range(200):
            with self.registry.cursor() as cr:
                cr.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
                if cr.fetchone()[0]:
                    return
            time.sleep(0.05)
        self.fail("the counter upsert never waited for the row held by the other worker")

    def consume_as_a_worker(self, consume, errors):
        try:
            with self.registry.cursor() as cr:
                consume(self.worker_env(cr)["marketing.event.source"].browse(self.source_id))
        except Exception as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    def test_counters_add_up_when_another_worker_updates_their_row_meanwhile(self):
        """A request's counter upsert that waits for a row another worker then commits adds to it
        instead of failing (on a REPEATABLE READ cursor it failed with a serialization error,
        logged as an ERROR), for the rate limit and for the daily caps alike."""
        counters = {
            "rate limit": (
                "UPDATE marketing_event_source_rate SET hits = hits + 1 WHERE source_id = %s",
                lambda source: source._consume_rate_limit(),
                "SELECT hits FROM marketing_event_source_rate WHERE source_id = %s",
            ),
            "daily cap": (
                "UPDATE marketing_event_source_quota SET used = used + 1 WHERE source_id = %s AND kind = 'contacts'",
                lambda source: source._consume_quota("contacts", 1, 1000),
                "SELECT used FROM marketing_event_source_quota WHERE source_id = %s AND kind = 'contacts'",
            ),
        }
        for name, (other_worker_update, consume, read_count) in counters.items():
            with self.subTest(counter=name):
                with self.registry.cursor() as cr:
                    source = self.worker_env(cr)["marketing.event.source"].browse(self.source_id)
                    consume(source)  # the counter row exists, with 1
                errors = []
                with self.registry.cursor() as other_worker:
                    other_worker.execute(other_worker_update, [self.source_id])  # holds the row
                    thread = threading.Thread(target=self.consume_as_a_worker, args=(consume, errors))
                    thread.start()
                    self.wait_for_a_lock_wait()
                    other_worker.commit()  # pylint: disable=invalid-commit
                thread.join(timeout=30)
                self.assertFalse(errors)
                with self.registry.cursor() as cr:
                    cr.execute(read_count, [self.source_id])
                    self.assertEqual(cr.fetchone()[0], 3, "the first request, the other worker's and this one")

    def remove_type(self, key):
        with self.registry.cursor() as cr:
            env = api.Environment(cr, api.SUPERUSER_ID, {})
            event_type = env["marketing.event.type"].search([("key", "=", key)])
            env["marketing.event"].search([("type_id", "in", event_type.ids)]).unlink()
            event_type.unlink()
