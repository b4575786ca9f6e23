import base64
import gzip
import json

from segment.analytics import Client as SegmentClient
from segment.analytics.request import APIError as SegmentApiError

from odoo.tests import tagged

from .common import MarketingAutomationHttpCommon

SEGMENT_URL = "/automation/segment/v1"


@tagged("post_install", "-at_install")
class TestSegmentApi(MarketingAutomationHttpCommon):
    """The Segment-compatible API, over real HTTP."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.partner.marketing_external_id = "C-1001"

    def post_segment(self, call, payload=None, auth="basic", data=None, headers=None):
        all_headers = {"Content-Type": "application/json"}
        if auth == "basic":
            auth = self.write_key
        if auth:
            all_headers["Authorization"] = "Basic " + base64.b64encode(f"{auth}:".encode()).decode()
        all_headers.update(headers or {})
        if data is None:
            data = json.dumps(payload)
        return self.url_open(f"{SEGMENT_URL}/{call}", data=data, headers=all_headers, allow_redirects=False)

    def stored(self):
        return self.Event.search([("source_id", "=", self.source.id)], order="id")

    def test_track_resolves_user_id_and_names_the_type_like_segment(self):
        response = self.post_segment(
            "track",
            {
                "userId": "C-1001",
                "event": "Order Completed",
                "messageId": "m-1",
                "timestamp": "2026-01-15T10:00:00.123+01:00",
                "properties": {"order_id": "5521", "total": 59.9},
            },
        )
        self.assertEqual(response.status_code, 200, response.text)
        body = response.json()
        self.assertEqual((body["success"], body["accepted"]), (True, 1))
        event = self.Event.browse(body["results"][0]["id"])
        self.assertEqual(event.partner_id, self.partner, "userId is the contact's external id")
        self.assertEqual(event.type_id.key, "order_completed")
        self.assertEqual(event.type_id.name, "Order Completed", "the registered type keeps Segment's name")
        self.assertEqual(event.type_id.category_id, self.env.ref("marketing_event_automation.event_category_other"))
        self.assertEqual(event.params, {"order_id": "5521", "total": 59.9})
        self.assertEqual(event.idempotency_key, "m-1")
        self.assertEqual(str(event.occurred_at), "2026-01-15 09:00:00")

    def test_write_key_in_body_and_bad_keys(self):
        message = {"userId": "C-1001", "event": "Signed Up", "messageId": "k-1"}
        response = self.post_segment("track", dict(message, writeKey=self.write_key), auth=None)
        self.assertEqual(response.status_code, 200, response.text)
        self.assertEqual(self.stored().event_key, "signed_up")
        surrogate_key = "mea_\ud800" + "0" * 11 + "_secret"
        bad_cases = [
            ("missing write key", self.post_segment("track", message, auth=None)),
            ("unknown or revoked", self.post_segment("track", message, auth="mea_000000000000_nope")),
            ("unknown or revoked", self.post_segment("track", dict(message, writeKey="nope"), auth=None)),
            ("unknown or revoked", self.post_segment("track", dict(message, writeKey=surrogate_key), auth=None)),
            ("malformed Basic", self.post_segment("track", message, auth=None, headers={"Authorization": "Basic %%%"})),
        ]
        for reason, response in bad_cases:
            with self.subTest(reason=reason):
                self.assertEqual(response.status_code, 401)
                self.assertIn(reason, response.json()["error"]["message"])
                self.assertTrue(response.headers["WWW-Authenticate"].startswith("Basic"))
        self.assertEqual(len(self.stored()), 1)

    def test_identify_creates_then_updates_the_contact(self):
        traits = {"email": "Carol@Example.com", "firstName": "Carol", "lastName": "Buyer", "phone": "0470 55 66 77"}
        response = self.post_segment("identify", {"userId": "C-2002", "messageId": "i-1", "traits": traits})
        self.assertEqual(response.status_code, 200, response.text)
        event = self.Event.browse(response.json()["results"][0]["id"])
        carol = event.partner_id
        self.assertEqual(event.type_id.key, "identify")
        self.assertEqual(
            (carol.name, carol.email, carol.phone, carol.marketing_external_id),
            ("Carol Buyer", "carol@example.com", "+32470556677", "C-2002"),
        )
        new_traits = {"email": "carol.b@example.com", "name": "Carol B.", "phone": "+32 470 11 22 33"}
        response = self.post_segment("identify", {"userId": "C-2002", "messageId": "i-2", "traits": new_traits})
        self.assertEqual(response.status_code, 200, response.text)
        self.assertEqual(self.Event.browse(response.json()["results"][0]["id"]).partner_id, carol)
        self.assertEqual((carol.name, carol.email, carol.phone), ("Carol B.", "carol.b@example.com", "+32470112233"))

    def test_identify_links_the_user_id_to_a_contact_found_by_email(self):
        bob = self.env["res.partner"].create({"name": "Bob", "email": "bob@example.com"})
        # Bob was created in Odoo: without the source's setting his external id stays empty.
        response = self.post_segment("identify", {"userId": "C-3003", "traits": {"email": "bob@example.com"}})
        self.assertEqual(response.status_code, 200, response.text)
        self.assertEqual(
            response.json()["results"][0]["not_applied"],
            ["userId: not applied, the contact was not created by this source"],
        )
        self.assertFalse(bob.marketing_external_id)
        self.source.allow_contact_update = True
        response = self.post_segment("identify", {"userId": "C-3003", "traits": {"email": "bob@example.com"}})
        self.assertEqual(response.status_code, 200, response.text)
        self.assertNotIn("not_applied", response.json()["results"][0])
        self.assertEqual(bob.marketing_external_id, "C-3003")
        self.assertEqual(bob.name, "Bob", "no name trait, the name is kept")
        response = self.post_segment("track", {"userId": "C-3003", "event": "Product Viewed"})
        self.assertEqual(self.Event.browse(response.json()["results"][0]["id"]).partner_id, bob)

    def test_page_and_screen(self):
        page = {"userId": "C-1001", "name": "Checkout", "category": "Shop", "properties": {"url": "/checkout"}}
        screen = {"userId": "C-1001", "name": "Cart", "properties": {"items": 2}}
        for call, payload, key, params in (
            ("page", page, "page_viewed", {"url": "/checkout", "name": "Checkout", "category": "Shop"}),
            ("screen", screen, "screen_viewed", {"items": 2, "name": "Cart"}),
        ):
            with self.subTest(call=call):
                response = self.post_segment(call, payload)
                self.assertEqual(response.status_code, 200, response.text)
                event = self.Event.browse(response.json()["results"][0]["id"])
                self.assertEqual((event.type_id.key, event.partner_id, event.params), (key, self.partner, params))

    def test_path_decides_the_call(self):
        response = self.post_segment("page", {"type": "identify", "userId": "C-1001", "name": "Home"})
        self.assertEqual(response.status_code, 200, response.text)
        self.assertEqual(self.stored().event_key, "page_viewed")

    def test_batch_keeps_valid_messages_and_names_each_rejection(self):
        # Alice was created in Odoo, not by the source: it may change her
        # details only with its explicit setting (see tests/test_api_trust.py).
        self.source.allow_contact_update = True
        batch = [
            {"type": "track", "userId": "C-1001", "event": "Cart Viewed", "messageId": "b-1"},
            {"type": "identify", "userId": "C-1001", "messageId": "b-2", "traits": {"name": "Alice S."}},
            {"type": "page", "messageId": "b-3", "name": "Home"},
            {"type": "screen", "anonymousId": "anon-7", "messageId": "b-4", "name": "Home"},
            {"type": "track", "anonymousId": "anon-7", "event": "Cart Viewed", "context": {"ip": "192.0.2.1"}},
            {"type": "alias", "userId": "C-1001", "previousId": "anon-7"},
            {"type": "track", "userId": "C-1001", "event": "Big", "properties": {"blob": "x" * (33 * 1024)}},
            {"type": "track", "userId": "C-1001", "event": "Odd", "properties": ["not", "an", "object"]},
            {"type": "track", "userId": "C-1001", "event": "Late", "timestamp": "2999-01-01T00:00:00Z"},
            {"type": "identify", "userId": "C-1001", "traits": {"email": "not-an-email"}},
            {"type": "track", "event": "Cart Viewed", "context": {"traits": {"phone": "12"}}},
            {"userId": "C-1001", "event": "No type"},
        ]
        response = self.post_segment(
            "batch", {"batch": batch, "context": {"traits": {"email": "alice@example.com"}}, "sentAt": "2026-01-01"}
        )
        self.assertEqual(response.status_code, 200, response.text)
        results = response.json()["results"]
        self.assertEqual([result["index"] for result in results], list(range(len(batch))))
        statuses = [result["status"] for result in results]
        self.assertEqual(statuses[:4], ["accepted"] * 4, "the batch context identifies messages without their own")
        expected_reasons = {
            4: "userId: required to find the contact",
            5: "type: 'alias' messages are not supported",
            6: "message: larger than 32 KB",
            7: "properties: must be a JSON object",
            8: "timestamp: more than 24 hours in the future",
            9: "traits.email: not a valid email address",
            10: "context.traits.phone: not a valid phone number",
            11: "type: required",
        }
        for index, reason in expected_reasons.items():
            with self.subTest(index=index):
                self.assertEqual(results[index]["status"], "rejected")
                self.assertIn(reason, results[index]["reason"])
        self.assertEqual(results[6]["code"], "too_large")
        self.assertEqual(self.partner.name, "Alice S.", "identify in a batch updates the contact too")
        self.assertEqual(len(self.stored()), 4)

    def test_message_id_is_the_idempotency_key(self):
        message = {"type": "track", "userId": "C-1001", "event": "Order Completed", "messageId": "dup-1"}
        first = self.post_segment("batch", {"batch": [message]})
        self.assertEqual(first.json()["accepted"], 1)
        again = self.post_segment("batch", {"batch": [message, dict(message, messageId="dup-2"), message]})
        self.assertEqual(again.status_code, 200)
        results = again.json()["results"]
        self.assertEqual([result["status"] for result in results], ["duplicate", "accepted", "duplicate"])
        self.assertEqual(results[0]["reason"], "messageId: already received")
        self.assertEqual(self.post_segment("track", message).json()["results"][0]["status"], "duplicate")
        self.assertEqual(len(self.stored()), 2)

    def test_gzip_bodies(self):
        batch = {"batch": [{"type": "track", "userId": "C-1001", "event": "Zipped", "messageId": "z-1"}]}
        response = self.post_segment(
            "batch", data=gzip.compress(json.dumps(batch).encode()), headers={"Content-Encoding": "gzip"}
        )
        self.assertEqual(response.status_code, 200, response.text)
        self.assertEqual(self.stored().event_key, "zipped")
        response = self.post_segment("batch", data=b"not gzip", headers={"Content-Encoding": "gzip"})
        self.assertEqual(response.status_code, 400)
        self.assertIn("not valid gzip", response.json()["error"]["message"])
        bomb = gzip.compress(b'{"batch": [' + b" " * (5 * 1024 * 1024) + b"]}")
        response = self.post_segment("batch", data=bomb, headers={"Content-Encoding": "gzip"})
        self.assertEqual(response.status_code, 413)
        self.assertIn("once decompressed", response.json()["error"]["message"])

    def test_segment_size_limits(self):
        message = {"type": "track", "userId": "C-1001", "event": "Viewed", "properties": {"blob": "x" * 31000}}
        batch = [dict(message, messageId=f"s-{index}") for index in range(16)]
        self.assertLess(len(json.dumps({"batch": batch})), 500 * 1024)
        self.assertGreater(len(json.dumps({"batch": [*batch, message]})), 500 * 1024)
        response = self.post_segment("batch", {"batch": batch})
        self.assertEqual(response.status_code, 200, response.text[:300])
        self.assertEqual(response.json()["accepted"], 16, "messages under 32 KB in a batch under 500 KB")
        response = self.post_segment("batch", {"batch": [*batch, dict(message, messageId="s-17")]})
        self.assertEqual(response.status_code, 413)
        self.assertIn("larger than 512000 bytes", response.json()["error"]["message"])
        response = self.post_segment("track", dict(message, properties={"blob": "x" * (33 * 1024)}))
        self.assertEqual(response.status_code, 413)
        self.assertIn("larger than 32768 bytes", response.json()["error"]["message"])
        self.assertEqual(len(self.stored()), 16)

    def test_anonymous_message_is_rejected_with_its_reason(self):
        response = self.post_segment("track", {"anonymousId": "anon-1", "event": "Product Viewed"})
        self.assertEqual(response.status_code, 400)
        body = response.json()
        self.assertFalse(body["success"])
        self.assertEqual(body["results"][0]["code"], "unknown_contact")
        self.assertIn("userId: required", body["results"][0]["reason"])
        self.assertIn("context.traits.email", body["results"][0]["reason"])
        self.assertFalse(self.stored())

    def test_schema_errors_name_segment_fields(self):
        response = self.post_segment(
            "batch",
            {
                "batch": [
                    {
                        "type": "track",
                        "userId": "C-1001",
                        "event": "test_cart_abandoned",
                        "properties": {"total": "12", "items": [{"quantity": 1}]},
                    },
                    {"type": "track", "userId": "C-1001", "event": "test_cart_abandoned", "properties": {"total": 1}},
                ]
            },
        )
        self.assertEqual(response.status_code, 400)
        first, second = response.json()["results"]
        self.assertIn("properties.items[0]: 'sku' is a required property", first["reason"])
        self.assertIn("properties.total: '12' is not of type 'number'", first["reason"])
        self.assertIn("properties: 'items' is a required property", second["reason"])
        self.assertEqual(self.Event.browse(first["id"]).state, "rejected")

    def test_forbidden_types_are_not_registered(self):
        self.source.write({"allow_all_types": False, "allowed_type_ids": [(6, 0, self.type_purchase.ids)]})
        response = self.post_segment("track", {"userId": "C-1001", "event": "Brand New"})
        self.assertEqual(response.status_code, 403)
        self.assertEqual(response.json()["error"]["code"], "forbidden")
        self.assertFalse(self.EventType.search([("key", "=", "brand_new")]))
        response = self.post_segment(
            "batch",
            {
                "batch": [
                    {"type": "track", "userId": "C-1001", "event": "test_purchase"},
                    {"type": "track", "userId": "C-1001", "event": "Brand New"},
                ]
            },
        )
        self.assertEqual(response.status_code, 200)
        self.assertEqual([result["status"] for result in response.json()["results"]], ["accepted", "rejected"])

    def test_unknown_call_is_404(self):
        response = self.post_segment("alias", {"userId": "C-1001", "previousId": "anon-1"})
        self.assertEqual(response.status_code, 404)
        body = response.json()
        self.assertIn("/v1/alias", body["error"]["message"])
        self.assertEqual((body["code"], body["message"]), (body["error"]["code"], body["error"]["message"]))

    def test_official_segment_sdk_delivers(self):
        errors = []
        client = SegmentClient(
            self.write_key,
            host=self.base_url() + "/automation/segment",
            sync_mode=True,
            on_error=lambda error, batch: errors.append((error, batch)),
            gzip=True,
        )
        client.identify("C-4004", {"email": "dora@example.com", "name": "Dora Explorer"}, message_id="sdk-1")
        client.track("C-4004", "Order Completed", {"order_id": "77", "total": 10.5}, message_id="sdk-2")
        client.page("C-4004", "Shop", "Checkout", {"url": "/checkout"}, message_id="sdk-3")
        client.track("C-4004", "Order Completed", {"order_id": "77", "total": 10.5}, message_id="sdk-2")
        client.flush()
        self.assertEqual(errors, [])
        events = self.stored()
        self.assertEqual(events.mapped("event_key"), ["identify", "order_completed", "page_viewed"], "sdk-2 once")
        dora = events.partner_id
        self.assertEqual(len(dora), 1)
        self.assertEqual(
            (dora.name, dora.email, dora.marketing_external_id), ("Dora Explorer", "dora@example.com", "C-4004")
        )
        self.assertEqual(events[1].params, {"order_id": "77", "total": 10.5})
        self.assertEqual(events[2].params["category"], "Shop")

    def test_official_segment_sdk_sees_refusals(self):
        client = SegmentClient("mea_000000000000_wrong", host=self.base_url() + "/automation/segment", sync_mode=True)
        with self.assertRaises(SegmentApiError) as refused:
            client.track("C-1001", "Order Completed", {"order_id": "78"})
        self.assertEqual(refused.exception.status, 401)
        self.assertIn("unknown or revoked write key", refused.exception.message)
        self.assertFalse(self.stored())
