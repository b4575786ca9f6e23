from collections import defaultdict
from datetime import timedelta

import psycopg2
from freezegun import freeze_time

from odoo import fields
from odoo.exceptions import ValidationError
from odoo.tests import tagged
from odoo.tools import mute_logger

from .common import MarketingAutomationCommon


@tagged("post_install", "-at_install")
class TestEngagementRules(MarketingAutomationCommon):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.Rule = cls.env["marketing.engagement.rule"]
        cls.type_opened = cls.env.ref("marketing_event_automation.event_type_email_opened")
        cls.type_bounced = cls.env.ref("marketing_event_automation.event_type_email_bounced")
        cls.other = cls.env["res.partner"].create({"name": "Bob Browser", "email": "bob@example.com"})

    def dispatch(self):
        while self.Event._cron_dispatch():
            pass

    def post(self, partner, params=None, key="test_purchase"):
        results = self.Event._ingest(
            self.source, [{"event": key, "contact": {"id": partner.id}, "params": params or {}}]
        )
        self.assertEqual(results[0]["status"], "accepted", results)
        return self.Event.browse(results[0]["id"])

    def rule_logs(self, partner):
        return partner.engagement_log_ids.filtered(lambda log: log.origin == "rule").sorted("id")

    def test_posted_and_internal_events_are_scored(self):
        purchase_rule = self.Rule.create({"name": "Purchase", "event_type_id": self.type_purchase.id, "points": 10})
        opened_rule = self.Rule.create({"name": "Opened an email", "event_type_id": self.type_opened.id, "points": 1})
        self.Rule.create({"name": "Bounced", "event_type_id": self.type_bounced.id, "points": -5})
        purchase = self.post(self.partner)
        opened_ids = self.Event._emit("email_opened", [{"partner_id": self.partner.id}] * 2)
        self.Event._emit("email_bounced", [{"partner_id": self.other.id}])
        self.dispatch()

        self.assertEqual((self.partner.engagement_score, self.partner.engagement_score_band), (12, "warm"))
        self.assertEqual((self.other.engagement_score, self.other.engagement_score_band), (-5, "cold"))
        logs = self.rule_logs(self.partner).sorted("delta")
        self.assertEqual(
            [(log.reason, log.delta, log.origin_ref) for log in logs],
            [("Opened an email", 2, opened_rule), ("Purchase", 10, purchase_rule)],
            "the two opens of one batch make one change",
        )
        self.assertEqual(max(logs.mapped("score")), 12)
        for log in logs:
            self.assertEqual(log.score_before + log.delta, log.score)
        self.assertEqual(purchase.state, "processed")
        self.assertEqual(purchase.processing_result, {"score": ["Purchase: +10"]})
        for event in self.Event.browse(opened_ids):
            self.assertEqual(event.processing_result, {"score": ["Opened an email: +1"]})
        score_events = self.Event.search([("partner_id", "=", self.partner.id), ("type_id.key", "=", "score_changed")])
        self.assertEqual(len(score_events), 2, "each change emits score_changed for the scenario engine")
        self.assertEqual(score_events.mapped("state"), ["processed"] * 2, "score changes are not scored again")

    def test_params_filter_selects_events(self):
        self.Rule.create(
            {
                "name": "Big shoe purchase",
                "event_type_id": self.type_purchase.id,
                "points": 10,
                "params_filter": 'total > 100 and category == "shoes"',
            }
        )
        counted = [
            self.post(self.partner, {"total": 150, "category": "shoes"}),
            self.post(self.partner, {"total": "120", "category": "shoes"}),
        ]
        ignored = [
            self.post(self.partner, {"total": 90, "category": "shoes"}),
            self.post(self.partner, {"total": 500, "category": "bags"}),
            self.post(self.partner, {"category": "shoes"}),
        ]
        self.dispatch()
        self.assertEqual(self.partner.engagement_score, 20)
        self.assertEqual([event.processing_result for event in counted], [{"score": ["Big shoe purchase: +10"]}] * 2)
        self.assertEqual([bool(event.processing_result) for event in ignored], [False] * 3)
        self.assertEqual([event.state for event in ignored], ["processed"] * 3)

    def test_once_per_days(self):
        rule = self.Rule.create(
            {"name": "Opened (weekly)", "event_type_id": self.type_opened.id, "points": 1, "once_per_days": 7}
        )
        start = fields.Datetime.now()

        def open_and_dispatch(days, count=1, partners=None):
            with freeze_time(start + timedelta(days=days)):
                partners = partners or self.partner
                ids = self.Event._emit("email_opened", [{"partner_id": partner.id} for partner in partners] * count)
                self.dispatch()
                return self.Event.browse(ids)

        first = open_and_dispatch(0, count=2)
        self.assertEqual(self.partner.engagement_score, 1, "twice in one batch counts once")
        self.assertEqual(
            first[1].processing_result,
            {"score": ["Opened (weekly): not counted, already counted in the last 7 days"]},
        )
        open_and_dispatch(1)
        open_and_dispatch(6.9, partners=self.partner | self.other)
        self.assertEqual(self.partner.engagement_score, 1, "still within 7 days of the first open")
        self.assertEqual(self.other.engagement_score, 1, "the limit is per contact")
        open_and_dispatch(7.1)
        self.assertEqual(self.partner.engagement_score, 2, "a new window has started")
        open_and_dispatch(10)
        self.assertEqual(self.partner.engagement_score, 2, "the window restarts at the last counted open")
        open_and_dispatch(14.2)
        self.assertEqual(self.partner.engagement_score, 3)
        self.assertEqual(len(self.rule_logs(self.partner)), 3)
        self.assertEqual(rule.log_count, 4)

    def test_rules_of_other_companies_and_archived_rules_do_not_apply(self):
        other_company = self.env["res.company"].create({"name": "Other shop company"})
        self.Rule.create(
            {
                "name": "Other company",
                "event_type_id": self.type_purchase.id,
                "points": 7,
                "company_id": other_company.id,
            }
        )
        self.Rule.create({"name": "Archived", "event_type_id": self.type_purchase.id, "points": 3, "active": False})
        self.Rule.create({"name": "Shared", "event_type_id": self.type_purchase.id, "points": 2, "company_id": False})
        self.post(self.partner)
        self.dispatch()
        self.assertEqual(self.partner.engagement_score, 2)

    def test_rules_that_cannot_work_are_refused(self):
        with self.assertRaisesRegex(ValidationError, "score changes cannot be scored"):
            self.Rule.create(
                {
                    "name": "Loop",
                    "event_type_id": self.env.ref("marketing_event_automation.event_type_score_changed").id,
                    "points": 1,
                }
            )
        system_type = self.EventType.create({"name": "Nightly import", "key": "test_nightly_import", "scope": "system"})
        with self.assertRaisesRegex(ValidationError, "system event"):
            self.Rule.create({"name": "System", "event_type_id": system_type.id, "points": 1})
        with self.assertRaisesRegex(ValidationError, "Parameter Filter of rule Bad: expected an operator"):
            self.Rule.create(
                {"name": "Bad", "event_type_id": self.type_purchase.id, "points": 1, "params_filter": "total is 3"}
            )
        with self.assertRaises(psycopg2.errors.CheckViolation), mute_logger("odoo.sql_db"), self.cr.savepoint():
            self.Rule.create({"name": "Nothing", "event_type_id": self.type_purchase.id, "points": 0})

    def test_queries_do_not_grow_with_the_batch(self):
        self.Rule.create({"name": "Purchase", "event_type_id": self.type_purchase.id, "points": 10})
        self.Rule.create(
            {"name": "Weekly purchase", "event_type_id": self.type_purchase.id, "points": 1, "once_per_days": 7}
        )
        partners = self.env["res.partner"].create([{"name": f"Buyer {number}"} for number in range(40)])
        self.dispatch()

        def apply(batch_partners):
            events = self.Event.browse(
                self.Event._insert_events(
                    [
                        {"type": self.type_purchase, "key": "test_purchase", "partner_id": partner.id, "params": {}}
                        for partner in batch_partners
                    ]
                )
            )
            self.env.invalidate_all()
            results = defaultdict(lambda: defaultdict(list))
            before = self.cr.sql_log_count
            self.env["marketing.engagement.rule"]._apply_to_events(events, results)
            return self.cr.sql_log_count - before, results

        small_count, _results = apply(partners[:3])
        large_count, results = apply(partners[3:])
        self.assertLessEqual(large_count, small_count, "37 events take no more queries than 3")
        self.assertEqual(partners[3:].mapped("engagement_score"), [11] * 37)
        self.assertEqual(len(results), 37)
