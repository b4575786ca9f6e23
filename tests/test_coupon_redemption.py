import threading
import time

import psycopg2

from odoo import SUPERUSER_ID
from odoo import api
from odoo.api import Transaction
from odoo.tests import TransactionCase
from odoo.tests import tagged
from odoo.tools import mute_logger

from .common import MarketingAutomationHttpCommon
from .scenario_common import CommittedLeftovers
from .test_coupon_lists import CouponCommon
from .test_system_automation import SystemAutomationCommon

# What Odoo's cron runner retries: a batch that met the other engine's rows.
CONCURRENCY_ERRORS = (psycopg2.errors.SerializationFailure, psycopg2.errors.DeadlockDetected)


@tagged("post_install", "-at_install")
class TestCouponRedemption(MarketingAutomationHttpCommon, CouponCommon):
    """The shop posts coupon_redeemed with the code: the code is redeemed, the scenario converts."""

    def setUp(self):
        super().setUp()
        self.type_redeemed = self.env.ref("marketing_event_automation.event_type_coupon_redeemed")

    def post_redeemed(self, code, event_id, partner=None):
        partner = partner or self.partner
        return self.post_json(
            "/automation/v1/events",
            {
                "events": [
                    {
                        "event": "coupon_redeemed",
                        "event_id": event_id,
                        "contact": {"email": partner.email},
                        "params": {"code": code, "order_id": "SO-1"} if code is not None else {"order_id": "SO-1"},
                    }
                ]
            },
        )

    def test_redeemed_code_converts_and_counts_per_list_and_scenario(self):
        coupon_list = self.make_list(["WIN-1", "WIN-2", "WIN-3"])
        scenario, node, _email = self.coupon_scenario(coupon_list)
        scenario.write({"objective_event_type_id": self.type_redeemed.id, "objective_days": 7})
        partners = self.partner | self.bob
        self.run_for(scenario, partners)
        code = self.participant_of(scenario, self.partner).coupon_code
        # The demo history holds redemptions of its own: look at this test's events.
        before = self.Event.search([], order="id desc", limit=1).id
        response = self.post_redeemed(code, "order-1")
        self.assertEqual(response.status_code, 202, response.text)
        self.assertEqual(response.json()["results"][0]["status"], "accepted")
        self.dispatch()
        coupon = self.Coupon.search([("code", "=", code)])
        self.assertEqual(coupon.state, "redeemed")
        self.assertEqual(coupon.redeemed_event_id.params["code"], code)
        self.assertIn(f"{code} redeemed", coupon.redeemed_event_id.processing_summary)
        self.assertEqual((coupon_list.given_count, coupon_list.redeemed_count), (2, 1))
        self.assertEqual(coupon_list.redemption_rate, 50.0)
        self.assertEqual((scenario.coupon_given_count, scenario.coupon_redeemed_count), (2, 1))
        self.assertEqual(scenario.coupon_redemption_rate, 50.0)
        self.assertEqual(node.coupon_redeemed_count, 1)
        self.assertEqual(scenario.objective_count, 1, "coupon_redeemed is the scenario's objective")
        # The same code again, and an unknown one: processed, recorded, nothing changes.
        self.post_redeemed(code, "order-2")
        self.post_redeemed("NOPE-9", "order-3")
        self.dispatch()
        events = self.Event.search([("type_id", "=", self.type_redeemed.id), ("id", ">", before)], order="id")
        self.assertEqual(events.mapped("state"), ["processed"] * 3)
        self.assertIn("unknown or already redeemed", events[1].processing_summary)
        self.assertIn("NOPE-9: unknown or already redeemed", events[2].processing_summary)
        self.assertEqual(coupon.redeemed_event_id, events[0])

    def test_one_code_reported_twice_in_a_batch_is_redeemed_once(self):
        coupon_list = self.make_list(["TWICE-1"])
        response = self.post_json(
            "/automation/v1/events",
            {
                "events": [
                    {
                        "event": "coupon_redeemed",
                        "event_id": f"o-{n}",
                        "contact": {"email": self.partner.email},
                        "params": {"code": "TWICE-1"},
                    }
                    for n in range(2)
                ]
            },
        )
        self.assertEqual([result["status"] for result in response.json()["results"]], ["accepted"] * 2)
        self.dispatch()
        coupon = coupon_list.coupon_ids
        self.assertEqual(coupon.state, "redeemed")
        other = self.Event.search([("idempotency_key", "in", ("o-0", "o-1"))]) - coupon.redeemed_event_id
        self.assertIn("TWICE-1: already redeemed", other.processing_summary)

    def test_an_event_without_code_is_rejected_naming_the_field(self):
        response = self.post_redeemed(None, "order-x")
        self.assertEqual(response.status_code, 400, response.text)
        result = response.json()["results"][0]
        self.assertEqual(result["status"], "rejected")
        self.assertIn("code", result["reason"])

    def test_a_code_of_another_company_is_not_redeemed(self):
        other_company = self.env["res.company"].create({"name": "Other shop"})
        theirs = self.make_list(["SAME-1"], name="Theirs", company_id=other_company.id)
        ours = self.make_list(["SAME-1"], name="Ours")
        self.post_redeemed("SAME-1", "order-c")
        self.dispatch()
        self.assertEqual(ours.coupon_ids.state, "redeemed")
        self.assertEqual(theirs.coupon_ids.state, "available")


@tagged("post_install", "-at_install")
class TestCouponListLow(SystemAutomationCommon, CouponCommon):
    """coupon_list_low is a system event, once per crossing; system jobs refill and export a list."""

    def setUp(self):
        super().setUp()
        self.type_low = self.env.ref("marketing_event_automation.event_type_coupon_list_low")

    def low_events(self):
        return self.Event.search([("type_id", "=", self.type_low.id)])

    def test_low_stock_event_once_per_crossing_then_refill_and_export(self):
        coupon_list = self.make_list(["L-1", "L-2", "L-3", "L-4", "L-5"], low_threshold=3)
        automation = self.make_automation(
            self.type_low,
            [
                {"job_type": "coupon_refill", "coupon_refill_count": 10},
                {
                    "job_type": "coupon_export",
                    "export_format": "csv",
                    "recipient_user_ids": [(6, 0, self.report_user.ids)],
                },
            ],
        )
        first, _node, _email = self.coupon_scenario(coupon_list)
        self.run_for(first, self.contacts(3, "low"))
        self.assertEqual(coupon_list.available_count, 2)
        [event] = self.low_events()
        self.assertEqual(event.type_id.scope, "system")
        self.assertEqual(
            event.params,
            {"coupon_list_id": coupon_list.id, "coupon_list_name": "Spring", "left": 2, "threshold": 3},
        )
        self.assertTrue(coupon_list.low_notified)
        second, _node, _email = self.coupon_scenario(coupon_list)
        self.run_for(second, self.contacts(1, "lower"))
        self.assertEqual(len(self.low_events()), 1, "still below: no second event")
        self.dispatch()
        self.assertEqual(len(automation.run_ids), 1)
        with self.mock_mail_gateway():
            self.run_automations()
        run = automation.run_ids
        self.assertEqual(run.state, "done", run.run_job_ids.mapped("message"))
        self.assertEqual(coupon_list.available_count, 11)
        self.assertFalse(coupon_list.low_notified, "refilled above the threshold: armed again")
        [export] = run.run_job_ids.filtered(lambda result: result.job_id.job_type == "coupon_export")
        rows = self.read_csv(export.attachment_ids)
        self.assertEqual(rows[0], ["code", "status", "contact", "email", "scenario", "given_at", "redeemed_at"])
        self.assertEqual(len(rows), 1 + 15)
        statuses = sorted(row[1] for row in rows[1:])
        self.assertEqual(statuses, ["Available"] * 11 + ["Handed out"] * 4)
        given = [row for row in rows[1:] if row[1] == "Handed out"]
        self.assertTrue(all(row[3].endswith("@example.org") and row[4] == "Coupons" for row in given))
        # Falling below again logs a new event.
        self.run_for(self.coupon_scenario(coupon_list)[0], self.contacts(9, "again"))
        self.assertEqual(len(self.low_events()), 2)

    def test_refill_job_refuses_a_list_of_another_company(self):
        other_company = self.env["res.company"].create({"name": "Elsewhere"})
        theirs = self.make_list(["X-1"], name="Theirs", company_id=other_company.id)
        automation = self.make_automation(
            self.type_low, [{"job_type": "coupon_refill", "coupon_refill_count": 5}], company_id=self.company.id
        )
        self.emit_and_dispatch("coupon_list_low", {"coupon_list_id": theirs.id}, company_id=self.company.id)
        with mute_logger("odoo.addons.marketing_event_automation.models.marketing_system_automation_run"):
            self.run_automations()
        self.assertIn("belongs to another company", automation.run_ids.run_job_ids.message)
        self.assertEqual(theirs.total_count, 1)


@tagged("post_install", "-at_install")
class TestCouponConcurrency(CommittedLeftovers, TransactionCase):
    """Two engines hand out codes of one list at the same time, each in its own committed transactions."""

    CONTACTS = 40
    CODES = 30

    def setUp(self):
        super().setUp()
        with self.registry.cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {"tracking_disable": True})
            self.remember_last_ids(cr)
            partners = env["res.partner"].create(
                [{"name": f"Coupon race {i}", "email": f"race{i}@example.org"} for i in range(self.CONTACTS)]
            )
            coupon_list = env["marketing.coupon.list"].create({"name": "Race"})
            coupon_list._generate(self.CODES)
            scenario = env["marketing.scenario"].create(
                {"name": "Coupon race", "trigger_type": "now", "timezone": "UTC", "entry_policy": "every_time"}
            )
            env["marketing.scenario.node"].create(
                {"scenario_id": scenario.id, "node_type": "coupon", "coupon_list_id": coupon_list.id}
            )
            scenario.write({"state": "running"})
            scenario._enroll_partners(partners.ids)
            self.ids = {"partners": partners.ids, "scenario": scenario.id, "list": coupon_list.id}
        self.addCleanup(self.cleanup)

    def cleanup(self):
        with self.registry.cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {})
            scenario = env["marketing.scenario"].browse(self.ids["scenario"])
            scenario.write({"state": "stopped"})
            scenario.unlink()
            env["marketing.coupon.list"].browse(self.ids["list"]).unlink()
            env["res.partner"].browse(self.ids["partners"]).unlink()
            self.remove_leftovers(cr)

    def test_no_code_is_given_twice(self):
        barrier = threading.Barrier(2)
        errors = []
        # A busy CI machine makes each batch slow, not the race different:
        # the engines stop when the queue is empty, or fail loudly at the deadline.
        deadline = time.monotonic() + 240

        def worker():
            try:
                barrier.wait(timeout=60)
                while time.monotonic() < deadline:
                    try:
                        with self.registry.cursor() as cr:
                            # The registry is given: the test runner holds its lock.
                            cr.transaction = Transaction(self.registry)
                            env = api.Environment(cr, SUPERUSER_ID, {})
                            count = env["marketing.scenario.step"]._cron_advance(batch_size=4)
                            if not count:
                                # Batches that met the other engine's claim were put
                                # back a minute later: make them due again.
                                cr.execute(
                                    "UPDATE marketing_scenario_step SET scheduled_at = now() AT TIME ZONE 'UTC'"
                                    " WHERE scenario_id = %s AND state = 'scheduled' RETURNING id",
                                    [self.ids["scenario"]],
                                )
                                if not cr.fetchall():
                                    return
                    except CONCURRENCY_ERRORS:
                        continue  # the cron runner replays such a batch
                errors.append(AssertionError("steps were still scheduled at the deadline"))
            except Exception as error:  # noqa: BLE001 - reported by the main thread
                errors.append(error)

        threads = [threading.Thread(target=worker) for _index in range(2)]
        with mute_logger("odoo.sql_db"):
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=300)
        self.assertFalse([thread for thread in threads if thread.is_alive()], "both engines stopped")
        self.assertFalse(errors)
        with self.registry.cursor() as cr:
            cr.execute(
                "SELECT count(*), count(DISTINCT coupon_id), count(DISTINCT partner_id) "
                "FROM marketing_scenario_participant WHERE scenario_id = %s AND coupon_id IS NOT NULL",
                [self.ids["scenario"]],
            )
            self.assertEqual(cr.fetchone(), (self.CODES, self.CODES, self.CODES), "one code per contact, each once")
            cr.execute(
                "SELECT state, count(*), count(DISTINCT partner_id) FROM marketing_coupon WHERE list_id = %s "
                "GROUP BY state",
                [self.ids["list"]],
            )
            self.assertEqual(cr.fetchall(), [("given", self.CODES, self.CODES)])
            cr.execute(
                "SELECT count(*) FROM marketing_scenario_participant p JOIN marketing_coupon c ON c.id = p.coupon_id"
                " WHERE p.scenario_id = %s AND c.partner_id != p.partner_id",
                [self.ids["scenario"]],
            )
            self.assertEqual(cr.fetchone()[0], 0, "each participant holds the code given to its contact")
            cr.execute(
                "SELECT state, CASE WHEN state != 'done' THEN result END, count(*) FROM marketing_scenario_step"
                " WHERE scenario_id = %s GROUP BY 1, 2",
                [self.ids["scenario"]],
            )
            self.assertEqual(
                sorted(cr.fetchall()),
                [("done", None, self.CODES), ("skipped", "No code left", self.CONTACTS - self.CODES)],
            )
