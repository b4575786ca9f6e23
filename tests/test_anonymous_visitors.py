import base64
import gzip
import json
from datetime import datetime
from datetime import timedelta

from odoo.tests import tagged
from odoo.tools import SQL

from .common import MarketingAutomationHttpCommon
from .scenario_common import ScenarioCommon

SEGMENT_URL = "/automation/segment/v1"


class AnonymousCommon(MarketingAutomationHttpCommon, ScenarioCommon):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.type_viewed = cls.EventType.create(
            {"name": "Product viewed", "key": "product_viewed", "category_id": cls.category_ecommerce.id}
        )

    def segment(self, call, payload, headers=None):
        basic = "Basic " + base64.b64encode(f"{self.write_key}:".encode()).decode()
        response = self.post_json(
            f"{SEGMENT_URL}/{call}", payload, key=False, headers={"Authorization": basic, **(headers or {})}
        )
        self.assertEqual(response.status_code, 200, response.text)
        return response.json()["results"]

    def viewed(self, anonymous_id, message_id, **extra):
        return {
            "type": "track",
            "event": "Product Viewed",
            "anonymousId": anonymous_id,
            "messageId": message_id,
            "properties": {"sku": "SHOE-1"},
            **extra,
        }

    def visitor_events(self, anonymous_id):
        return self.Event.search([("anonymous_id", "=", anonymous_id)], order="id")


@tagged("post_install", "-at_install")
class TestAnonymousStorage(AnonymousCommon):
    def test_anonymous_message_is_stored_without_contact_and_never_dispatched(self):
        contacts_before = self.env["res.partner"].search_count([])
        [result] = self.segment("batch", {"batch": [self.viewed("anon-1", "m-1")]})
        self.assertEqual(result["status"], "accepted", result)
        event = self.Event.browse(result["id"])
        self.assertEqual((event.anonymous_id, event.partner_id.id, event.type_id), ("anon-1", False, self.type_viewed))
        self.assertEqual(event.state, "processed", "nothing reacts to an event without contact")
        self.assertEqual(self.env["res.partner"].search_count([]), contacts_before, "no contact is created")

    def test_neither_user_nor_anonymous_id_is_rejected(self):
        response = self.post_json(
            f"{SEGMENT_URL}/track", {"event": "E", "writeKey": self.write_key}, key=False, headers={}
        )
        self.assertEqual(response.status_code, 400)
        self.assertIn("userId: required to find the contact, send userId, anonymousId", response.json()["message"])

    def test_native_api_takes_an_anonymous_id(self):
        response = self.post_json("/automation/v1/events", {"event": "product_viewed", "anonymous_id": "anon-n"})
        self.assertEqual(response.status_code, 202, response.text)
        self.assertFalse(self.visitor_events("anon-n").partner_id)

    def test_clock_skew_is_corrected_by_sent_at(self):
        # The visitor's clock is 3 hours ahead; the call was made 5 seconds before it was sent.
        skewed = datetime.utcnow() + timedelta(hours=3)
        message = self.viewed(
            "anon-c",
            "m-c",
            originalTimestamp=(skewed - timedelta(seconds=5)).isoformat() + "Z",
            sentAt=skewed.isoformat() + "Z",
            context={"page": {"url": "https://shop.example.com/p/1", "title": "Shoe"}, "ip": "203.0.113.7"},
        )
        [result] = self.segment("t", message)
        event = self.Event.browse(result["id"])
        expected = datetime.utcnow() - timedelta(seconds=5)
        self.assertLess(abs((event.occurred_at - expected).total_seconds()), 3, event.occurred_at)
        self.assertEqual(event.context["page"]["url"], "https://shop.example.com/p/1")
        self.assertEqual(event.context["ip"], "203.0.113.7")
        # A batch's sentAt stands for the messages that carry none.
        message = self.viewed("anon-c", "m-d", originalTimestamp=(skewed - timedelta(hours=1)).isoformat() + "Z")
        [result] = self.segment("batch", {"batch": [message], "sentAt": skewed.isoformat() + "Z"})
        event = self.Event.browse(result["id"])
        expected = datetime.utcnow() - timedelta(hours=1)
        self.assertLess(abs((event.occurred_at - expected).total_seconds()), 3, event.occurred_at)

    def test_gzipped_json_labelled_as_a_form(self):
        """RudderStack's Node library, default configuration."""
        body = gzip.compress(json.dumps({"batch": [self.viewed("anon-g", "m-g")]}).encode())
        basic = "Basic " + base64.b64encode(f"{self.write_key}:".encode()).decode()
        response = self.url_open(
            f"{SEGMENT_URL}/batch",
            data=body,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Content-Encoding": "gzip",
                "Authorization": basic,
            },
        )
        self.assertEqual(response.status_code, 200, response.text)
        self.assertEqual(len(self.visitor_events("anon-g")), 1)
        # Anything else labelled a form is still what it is: not JSON.
        response = self.url_open(
            f"{SEGMENT_URL}/batch",
            data="a=b",
            headers={"Content-Type": "application/x-www-form-urlencoded", "Authorization": basic},
        )
        self.assertEqual(response.status_code, 400)
        self.assertIn("body: malformed JSON", response.json()["message"])


@tagged("post_install", "-at_install")
class TestAnonymousMerge(AnonymousCommon):
    def test_identify_brings_the_history_to_the_contact(self):
        self.segment("batch", {"batch": [self.viewed("anon-2", "m-1"), self.viewed("anon-2", "m-2")]})
        [identified] = self.segment(
            "i", {"anonymousId": "anon-2", "userId": "C-2", "traits": {"email": "carol@example.com"}}
        )
        carol = self.Event.browse(identified["id"]).partner_id
        self.assertEqual(carol.email, "carol@example.com")
        history = self.visitor_events("anon-2")
        self.assertEqual(history.partner_id, carol)
        self.assertEqual(history.mapped("state"), ["processed", "processed", "pending"])
        # Once known, the visitor's next anonymous events go to the contact straight away, and are dispatched.
        [later] = self.segment("t", self.viewed("anon-2", "m-3"))
        self.assertEqual(
            (self.Event.browse(later["id"]).partner_id, self.Event.browse(later["id"]).state), (carol, "pending")
        )

    def test_track_with_both_ids_and_alias_merge(self):
        self.segment("t", self.viewed("anon-3", "m-1"))
        self.segment("t", self.viewed("anon-3", "m-2") | {"userId": "C-3", "context": {"traits": {"email": "d@x.be"}}})
        self.assertEqual(len(self.visitor_events("anon-3").partner_id), 1)
        self.segment("t", self.viewed("anon-4", "m-3"))
        [alias] = self.segment("a", {"userId": "C-3", "previousId": "anon-4", "anonymousId": "anon-4"})
        contact = self.Event.browse(alias["id"]).partner_id
        self.assertEqual(self.visitor_events("anon-4").partner_id, contact)
        self.assertEqual(self.visitor_events("anon-3").partner_id, contact)

    def test_history_counts_for_conditions_but_starts_no_scenario(self):
        entered_on_view = self.create_scenario(trigger_event_type_id=self.type_viewed.id)
        self.add_node(entered_on_view, "tag_add", tag_ids=[(6, 0, self.tag_lost.ids)])
        entered_on_view.action_start()
        entered_on_purchase = self.create_scenario(trigger_event_type_id=self.type_purchase.id)
        viewed = self.add_node(
            entered_on_purchase,
            "condition",
            condition_type="event",
            condition_event_type_id=self.type_viewed.id,
            condition_event_period="days",
            condition_event_days=7,
        )
        self.add_node(entered_on_purchase, "tag_add", viewed, branch="yes", tag_ids=[(6, 0, self.tag_vip.ids)])
        entered_on_purchase.action_start()
        self.segment("t", self.viewed("anon-5", "m-1"))
        self.segment("i", {"anonymousId": "anon-5", "userId": "C-5", "traits": {"email": "eve@example.com"}})
        self.segment("t", {"userId": "C-5", "event": "test_purchase", "messageId": "m-2"})
        self.dispatch()
        self.advance()
        eve = self.env["res.partner"].search([("email", "=", "eve@example.com")])
        self.assertIn(self.tag_vip, eve.category_id, "the product viewed before login counts for the condition")
        self.assertFalse(self.participant_of(entered_on_view, eve), "nor does it start a scenario afterwards")
        self.assertNotIn(self.tag_lost, eve.category_id)

    def test_merge_is_one_statement_per_batch(self):
        def batch(size, prefix):
            messages = [self.viewed(f"{prefix}-{n}", f"{prefix}-v-{n}") for n in range(size)]
            messages += [
                {
                    "type": "identify",
                    "anonymousId": f"{prefix}-{n}",
                    "userId": f"{prefix}-U-{n}",
                    "messageId": f"{prefix}-i{n}",
                }
                for n in range(size)
            ]
            return {"batch": messages}

        # The contacts exist, so that contact creation does not weigh in.
        for prefix in ("warm", "small", "large"):
            self.env["res.partner"].create(
                [{"name": f"{prefix} {n}", "marketing_external_id": f"{prefix}-U-{n}"} for n in range(40)]
            )
        self.segment("batch", batch(5, "warm"))
        # The warm-up registered its new types, which empties the worker's
        # cache of types by key: filled again, as for any later request.
        self.env["marketing.event.type"]._get_by_keys([], self.source.company_id)
        Event = self.Event.sudo().with_company(self.source.company_id)
        source = self.source.sudo()
        counts = {}
        for size, prefix in ((4, "small"), (40, "large")):
            self.env.invalidate_all()
            payload = batch(size, prefix)["batch"]
            before = self.env.cr.sql_log_count
            Event._ingest_segment(source, payload)
            counts[size] = self.env.cr.sql_log_count - before
            self.assertEqual(
                len(self.Event.search([("anonymous_id", "=like", f"{prefix}-%"), ("partner_id", "!=", False)])),
                size * 2,
            )
        self.assertEqual(counts[4], counts[40], f"queries per batch grow with its size: {counts}")

    def test_same_anonymous_id_in_another_company_stays_apart(self):
        other_company = self.env["res.company"].create({"name": "Other shop company"})
        other = self.env["marketing.event.source"].create({"name": "Other shop", "company_id": other_company.id})
        other_key = other._generate_write_key()
        basic = "Basic " + base64.b64encode(f"{other_key}:".encode()).decode()
        self.post_json(
            f"{SEGMENT_URL}/t", self.viewed("anon-x", "m-o"), key=False, headers={"Authorization": basic}
        ).raise_for_status()
        self.segment("i", {"anonymousId": "anon-x", "userId": "C-X", "traits": {"email": "x@example.com"}})
        other_event = self.Event.search([("source_id", "=", other.id)])
        self.assertFalse(other_event.partner_id, "another company's visitor is not this company's contact")


@tagged("post_install", "-at_install")
class TestAnonymousPurge(AnonymousCommon):
    def test_old_anonymous_events_are_purged(self):
        self.segment("t", self.viewed("old", "m-1"))
        self.segment("t", self.viewed("recent", "m-2"))
        self.segment("t", self.viewed("known", "m-3"))
        self.segment("i", {"anonymousId": "known", "userId": "C-K", "messageId": "m-4"})
        old_ids = (self.visitor_events("old") | self.visitor_events("known")).ids
        self.env.flush_all()
        self.env.cr.execute(
            SQL("UPDATE marketing_event SET received_at = received_at - interval '31 days' WHERE id = ANY(%s)", old_ids)
        )
        self.Event.invalidate_model()
        self.Event._purge_anonymous_events(10000)
        self.assertFalse(self.visitor_events("old"), "an anonymous visitor's events are purged after 30 days")
        self.assertTrue(self.visitor_events("recent"))
        self.assertTrue(self.visitor_events("known"), "identified visitors' events stay")
        self.company.marketing_anonymous_retention_days = 0
        self.env.cr.execute(
            SQL(
                "UPDATE marketing_event SET received_at = received_at - interval '400 days'"
                " WHERE anonymous_id = 'recent'"
            )
        )
        self.Event.invalidate_model()
        self.Event._purge_anonymous_events(10000)
        self.assertTrue(self.visitor_events("recent"), "0 keeps them")
