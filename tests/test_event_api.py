import gzip
import hashlib
import json

from odoo.tests import tagged

from .common import MarketingAutomationHttpCommon

EVENTS_URL = "/automation/v1/events"


@tagged("post_install", "-at_install")
class TestEventApi(MarketingAutomationHttpCommon):
    def cart_event(self, **overrides):
        event = {
            "event": "test_cart_abandoned",
            "event_id": "cart-1",
            "timestamp": "2026-01-15T10:00:00+01:00",
            "contact": {"email": "Alice@Example.com"},
            "params": {"total": 42.5, "items": [{"sku": "SHOE-1", "quantity": 1}]},
        }
        event.update(overrides)
        return event

    def test_single_event_is_stored_and_dispatcher_woken(self):
        cron = self.env.ref("marketing_event_automation.ir_cron_dispatch_events")
        # The dispatcher is woken when a transaction commits: run the pre-commit
        # hooks of the fixtures (their contact_created events) first.
        self.env.cr.flush()
        triggers_before = self.env["ir.cron.trigger"].search_count([("cron_id", "=", cron.id)])
        response = self.post_json(EVENTS_URL, self.cart_event())
        self.assertEqual(response.status_code, 202, response.text)
        body = response.json()
        self.assertEqual((body["accepted"], body["duplicate"], body["rejected"]), (1, 0, 0))
        event = self.Event.browse(body["results"][0]["id"])
        self.assertEqual(event.type_id, self.type_cart)
        self.assertEqual(event.partner_id, self.partner, "resolved by normalized email")
        self.assertEqual(event.source_id, self.source)
        self.assertEqual(event.state, "pending")
        self.assertEqual(event.params["items"][0]["sku"], "SHOE-1")
        self.assertEqual(str(event.occurred_at), "2026-01-15 09:00:00", "client time converted to UTC")
        self.assertEqual(self.env["ir.cron.trigger"].search_count([("cron_id", "=", cron.id)]), triggers_before + 1)

    def test_missing_and_bad_keys_are_401(self):
        response = self.post_json(EVENTS_URL, self.cart_event(), key=False)
        self.assertEqual(response.status_code, 401)
        self.assertIn("missing write key", response.json()["error"]["message"])
        self.assertIn("Bearer", response.headers["WWW-Authenticate"])
        for bad_key in ("nope", self.write_key[:-2] + "xx", "mea_" + "0" * 12 + "_secret"):
            with self.subTest(key=bad_key):
                self.assertEqual(self.post_json(EVENTS_URL, self.cart_event(), key=bad_key).status_code, 401)
        # Keys are checked against a cache of each worker: archiving the
        # source must revoke a key that was just accepted.
        self.assertEqual(self.post_json(EVENTS_URL, self.cart_event()).status_code, 202)
        self.source.active = False
        self.assertEqual(self.post_json(EVENTS_URL, self.cart_event()).status_code, 401)

    def test_unknown_key_ids_never_reach_the_database(self):
        self.assertEqual(self.post_json(EVENTS_URL, self.cart_event()).status_code, 202)  # the keys are cached
        Source = self.env["marketing.event.source"]
        with self.assertQueryCount(0):
            self.assertFalse(Source._authenticate("mea_" + "0" * 12 + "_secret"))
            self.assertFalse(Source._authenticate(self.write_key[:-2] + "xx"))
        self.assertEqual(Source._authenticate(self.write_key), self.source)

    def test_key_rotation_revokes_the_old_key(self):
        old_key = self.write_key
        self.assertEqual(self.post_json(EVENTS_URL, self.cart_event(), key=old_key).status_code, 202)
        action = self.source.action_rotate_key()
        wizard = (
            self.env["marketing.event.source.key.wizard"].with_context(**action["context"]).browse(action["res_id"])
        )
        new_key = wizard.write_key
        self.assertNotEqual(new_key, old_key)
        # The secret is what follows "mea_<key id>_"; it may itself contain "_".
        secret = new_key.split("_", 2)[2]
        self.assertEqual(len(secret), 43)
        self.assertNotIn(secret, self.source.sudo().key_hash, "only a hash is stored")
        self.assertEqual(self.source.sudo().key_hash, hashlib.sha256(secret.encode()).hexdigest())
        self.assertEqual(self.post_json(EVENTS_URL, self.cart_event(), key=old_key).status_code, 401)
        self.assertEqual(self.post_json(EVENTS_URL, self.cart_event(), key=new_key).status_code, 202)

    def test_malformed_bodies_are_400(self):
        cases = {
            "{not json": "malformed JSON",
            "[1, 2]": "expected an event object",
            '{"events": {}}': "events: must be an array",
            '{"events": []}': "events: empty",
            " ": "body: empty",
            b"\xff\xfe{}": "not valid UTF-8",
            "[" * 100000 + "]" * 100000: "JSON",
        }
        for data, message in cases.items():
            with self.subTest(data=data[:20]):
                response = self.post_json(EVENTS_URL, data=data)
                self.assertEqual(response.status_code, 400, response.text)
                self.assertIn(message, response.json()["error"]["message"])
        self.assertEqual(self.Event.search_count([("source_id", "=", self.source.id)]), 0)

    def test_wrong_content_type_is_415(self):
        response = self.post_json(EVENTS_URL, data="a=b", headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(response.status_code, 415)
        self.assertIn("Content-Type", response.json()["error"]["message"])

    def test_too_large_is_413(self):
        big = self.cart_event(params={"total": 1, "items": [], "blob": "x" * (1024 * 1024)})
        response = self.post_json(EVENTS_URL, big)
        self.assertEqual(response.status_code, 413)
        too_many = {"events": [self.cart_event(event_id=str(i)) for i in range(1001)]}
        response = self.post_json(EVENTS_URL, too_many)
        self.assertEqual(response.status_code, 413)
        self.assertIn("more than 1000 events", response.json()["error"]["message"])

    def test_gzip_body_and_gzip_bomb(self):
        payload = gzip.compress(json.dumps({"events": [self.cart_event()]}).encode())
        response = self.post_json(EVENTS_URL, data=payload, headers={"Content-Encoding": "gzip"})
        self.assertEqual(response.status_code, 202, response.text)
        bomb = gzip.compress(b'{"events": [' + b" " * (50 * 1024 * 1024) + b"]}")
        self.assertLess(len(bomb), 1024 * 1024)
        response = self.post_json(EVENTS_URL, data=bomb, headers={"Content-Encoding": "gzip"})
        self.assertEqual(response.status_code, 413)
        response = self.post_json(EVENTS_URL, data=b"not gzip", headers={"Content-Encoding": "gzip"})
        self.assertEqual(response.status_code, 400)

    def test_batch_of_1000_events(self):
        events = [
            self.cart_event(event_id=f"batch-{i}", contact={"email": f"buyer{i % 50}@example.com"}) for i in range(1000)
        ]
        response = self.post_json(EVENTS_URL, {"events": events})
        self.assertEqual(response.status_code, 202, response.text[:500])
        self.assertEqual(response.json()["accepted"], 1000)
        stored = self.Event.search([("source_id", "=", self.source.id)])
        self.assertEqual(len(stored), 1000)
        self.assertEqual(len(stored.partner_id), 50, "contacts created once each, deduplicated within the batch")

    def test_duplicates_store_nothing_new(self):
        first = self.post_json(EVENTS_URL, self.cart_event())
        self.assertEqual(first.json()["accepted"], 1)
        again = self.post_json(
            EVENTS_URL,
            {"events": [self.cart_event(), self.cart_event(event_id="cart-2"), self.cart_event(event_id="cart-2")]},
        )
        self.assertEqual(again.status_code, 202)
        statuses = [result["status"] for result in again.json()["results"]]
        self.assertEqual(statuses, ["duplicate", "accepted", "duplicate"])
        self.assertEqual(self.Event.search_count([("source_id", "=", self.source.id)]), 2)

    def test_schema_errors_name_the_path_and_keep_valid_events(self):
        bad = self.cart_event(event_id="bad", params={"total": "12", "items": [{"quantity": 1}]})
        response = self.post_json(EVENTS_URL, {"events": [bad, self.cart_event(event_id="good")]})
        self.assertEqual(response.status_code, 202)
        rejected, accepted = response.json()["results"]
        self.assertEqual(rejected["status"], "rejected")
        self.assertIn("params.items[0]: 'sku' is a required property", rejected["reason"])
        self.assertIn("params.total: '12' is not of type 'number'", rejected["reason"])
        self.assertEqual(accepted["status"], "accepted")
        rejected_event = self.Event.browse(rejected["id"])
        self.assertEqual(rejected_event.state, "rejected")
        self.assertIn("params.total", rejected_event.error_message)
        # The sender fixes the event and sends it again under the same id: it is accepted.
        response = self.post_json(EVENTS_URL, self.cart_event(event_id="bad"))
        self.assertEqual(response.json()["results"][0]["status"], "accepted")

    def test_all_rejected_is_400_with_reasons(self):
        response = self.post_json(
            EVENTS_URL,
            {
                "events": [
                    {"event": "has space"},
                    {"event": "test_purchase", "params": []},
                    "string",
                    {"event": "x" * 10000},
                ]
            },
        )
        self.assertEqual(response.status_code, 400)
        reasons = [result["reason"] for result in response.json()["results"]]
        self.assertIn("event: use only Latin letters", reasons[0])
        self.assertEqual(reasons[1], "params: must be a JSON object")
        self.assertEqual(reasons[2], "event: must be a JSON object")
        self.assertEqual(reasons[3], "event: longer than 128 characters")

    def test_hostile_values_are_rejected_per_event(self):
        cases = [
            (
                self.cart_event(event_id="nul", params={"total": 1, "items": [], "note": "a\u0000b"}),
                "params.note: contains a NUL",
            ),
            (self.cart_event(event_id="future", timestamp="2999-01-01T00:00:00Z"), "timestamp: more than 24 hours"),
            (self.cart_event(event_id="past", timestamp="1970-01-01T00:00:00Z"), "timestamp: before 2000"),
            (self.cart_event(event_id="ts", timestamp="yesterday"), "timestamp: must be an ISO 8601"),
            (self.cart_event(event_id="mail", contact={"email": "not-an-email"}), "contact.email: not a valid email"),
            (self.cart_event(event_id="phone", contact={"phone": "123"}), "contact.phone: not a valid phone number"),
            (self.cart_event(event_id="none", contact={}), "contact: required"),
            (
                self.cart_event(
                    event_id="deep", params={"total": 1, "items": [], "n": json.loads("[" * 30 + "]" * 30)}
                ),
                "nested deeper",
            ),
        ]
        response = self.post_json(EVENTS_URL, {"events": [event for event, _reason in cases]})
        self.assertEqual(response.status_code, 400, response.text)
        for result, (_event, reason) in zip(response.json()["results"], cases):
            self.assertIn(reason, result["reason"])
        response = self.post_json(
            EVENTS_URL, data='{"event": "test_purchase", "contact": {"email": "a@b.be"}, "params": {"n": 1e999}}'
        )
        self.assertEqual(response.status_code, 400)
        self.assertIn("params.n: is not a finite number", response.text)

    def test_unknown_key_registers_or_is_refused(self):
        response = self.post_json(
            EVENTS_URL, {"event": "wishlist.added", "contact": {"email": "alice@example.com"}, "params": {"sku": "A"}}
        )
        self.assertEqual(response.status_code, 202)
        new_type = self.EventType.search([("key", "=", "wishlist.added")])
        self.assertEqual(new_type.category_id, self.env.ref("marketing_event_automation.event_category_other"))
        self.assertEqual(new_type.company_id, self.source.company_id)
        self.assertEqual(new_type.params_structure, {"sku": "string"})
        self.source.unknown_type_policy = "refuse"
        response = self.post_json(EVENTS_URL, {"event": "brand_new", "contact": {"email": "alice@example.com"}})
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json()["results"][0]["reason"], "event: unknown event type 'brand_new'")
        self.assertFalse(self.EventType.search([("key", "=", "brand_new")]))

    def test_type_not_allowed_is_403(self):
        self.source.write({"allow_all_types": False, "allowed_type_ids": [(6, 0, self.type_purchase.ids)]})
        response = self.post_json(EVENTS_URL, self.cart_event())
        self.assertEqual(response.status_code, 403)
        self.assertIn("not allowed for this source", response.json()["error"]["message"])
        purchase = {"event": "test_purchase", "contact": {"email": "alice@example.com"}}
        response = self.post_json(EVENTS_URL, {"events": [purchase, self.cart_event()]})
        self.assertEqual(response.status_code, 202, "a batch keeps its allowed events")
        self.assertEqual([r["status"] for r in response.json()["results"]], ["accepted", "rejected"])

    def test_contact_resolution_order_and_creation(self):
        other = self.env["res.partner"].create(
            {"name": "Bob", "email": "bob@example.com", "phone": "0470 99 88 77", "marketing_external_id": "shop-42"}
        )
        cases = [
            ({"id": self.partner.id, "email": "bob@example.com"}, self.partner),
            ({"external_id": "shop-42", "email": "alice@example.com"}, other),
            ({"external_id": 42}, None),
            ({"email": " BOB@example.com "}, other),
            ({"phone": "+32470998877"}, other),
            ({"phone": "0470 99 88 77"}, other),
        ]
        events = [{"event": "test_purchase", "contact": contact} for contact, _partner in cases]
        response = self.post_json(EVENTS_URL, {"events": events})
        self.assertEqual(response.status_code, 202, response.text)
        results = response.json()["results"]
        for result, (contact, partner) in zip(results, cases):
            event = self.Event.browse(result["id"])
            with self.subTest(contact=contact):
                if partner:
                    self.assertEqual(event.partner_id, partner)
                else:
                    self.assertEqual(event.partner_id.marketing_external_id, "42", "created from its external id")

    def test_unknown_contact_policy_reject(self):
        self.source.unknown_contact_policy = "reject"
        response = self.post_json(EVENTS_URL, {"event": "test_purchase", "contact": {"email": "stranger@example.com"}})
        self.assertEqual(response.status_code, 400)
        self.assertEqual(
            response.json()["results"][0]["reason"], "contact: no contact matches email=stranger@example.com"
        )
        self.assertFalse(self.env["res.partner"].search([("email", "=", "stranger@example.com")]))

    def test_openapi_document_is_served(self):
        response = self.url_open("/automation/v1/openapi.json")
        self.assertEqual(response.status_code, 200)
        document = response.json()
        self.assertEqual(document["openapi"], "3.1.0")
        self.assertIn("/automation/v1/events", document["paths"])
        self.assertIn("/automation/segment/v1/batch", document["paths"])
