import base64
import json

from odoo.exceptions import ValidationError
from odoo.tests import tagged

from .common import MarketingAutomationHttpCommon

EVENTS_URL = "/automation/v1/events"
SEGMENT_URL = "/automation/segment/v1"
SHOP_ORIGIN = "https://shop.example.com"
EVIL_ORIGIN = "https://evil.example"


class WebsiteSourceCommon(MarketingAutomationHttpCommon):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.website = cls.env["marketing.event.source"].create(
            {"name": "Shop pages", "kind": "website", "allowed_origins": f"{SHOP_ORIGIN}\nhttp://localhost:8000"}
        )
        cls.website_key = cls.website._generate_write_key()

    def browser_post(self, path, payload, *, origin=SHOP_ORIGIN, key=None, content_type="text/plain", headers=None):
        """What Segment's browser library sends: a text/plain body with the write key inside."""
        body = dict(payload, writeKey=key or self.website_key) if path.startswith(SEGMENT_URL) else payload
        all_headers = {"Content-Type": content_type, **(headers or {})}
        if origin:
            all_headers["Origin"] = origin
        return self.url_open(path, data=json.dumps(body), headers=all_headers, allow_redirects=False)

    def preflight(self, path, origin):
        headers = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, anonymousid",
        }
        if origin:
            headers["Origin"] = origin
        return self.opener.options(self.base_url() + path, headers=headers, timeout=10, allow_redirects=False)


@tagged("post_install", "-at_install")
class TestCors(WebsiteSourceCommon):
    def test_preflight_answers_allowed_origins_only(self):
        for path in (EVENTS_URL, f"{SEGMENT_URL}/t", f"{SEGMENT_URL}/track", f"{SEGMENT_URL}/batch"):
            with self.subTest(path=path):
                response = self.preflight(path, SHOP_ORIGIN)
                self.assertEqual(response.status_code, 204, response.text)
                self.assertEqual(response.headers["Access-Control-Allow-Origin"], SHOP_ORIGIN)
                self.assertEqual(response.headers["Vary"], "Origin")
                self.assertIn("POST", response.headers["Access-Control-Allow-Methods"])
                allowed = response.headers["Access-Control-Allow-Headers"].lower()
                for header in ("authorization", "content-type", "anonymousid"):
                    self.assertIn(header, allowed)
                for origin in (EVIL_ORIGIN, "null", f"{SHOP_ORIGIN}.evil.example", None):
                    refused = self.preflight(path, origin)
                    self.assertEqual(refused.status_code, 403, origin)
                    self.assertNotIn("Access-Control-Allow-Origin", refused.headers)
                    self.assertEqual(refused.json()["error"]["code"], "origin_refused")

    def test_preflight_follows_source_changes(self):
        self.assertEqual(self.preflight(EVENTS_URL, "https://new.example.com").status_code, 403)
        self.website.allowed_origins += "\nhttps://new.example.com"
        self.assertEqual(self.preflight(EVENTS_URL, "https://new.example.com").status_code, 204)
        self.website.active = False
        self.assertEqual(self.preflight(EVENTS_URL, SHOP_ORIGIN).status_code, 403)

    def test_allowed_origin_gets_its_exact_origin_back(self):
        response = self.browser_post(f"{SEGMENT_URL}/t", {"anonymousId": "v-1", "event": "Product Viewed"})
        self.assertEqual(response.status_code, 200, response.text)
        self.assertEqual(response.headers["Access-Control-Allow-Origin"], SHOP_ORIGIN)
        self.assertEqual(response.headers["Vary"], "Origin")
        response = self.browser_post(
            EVENTS_URL,
            {"event": "test_purchase", "anonymous_id": "v-1"},
            origin="http://localhost:8000",
            content_type="application/json",
            headers={"Authorization": f"Bearer {self.website_key}"},
        )
        self.assertEqual(response.status_code, 202, response.text)
        self.assertEqual(response.headers["Access-Control-Allow-Origin"], "http://localhost:8000")

    def test_other_origins_are_refused_without_cors_headers(self):
        for origin in (EVIL_ORIGIN, "null", "http://shop.example.com"):
            with self.subTest(origin=origin):
                response = self.browser_post(f"{SEGMENT_URL}/t", {"anonymousId": "v-1", "event": "E"}, origin=origin)
                self.assertEqual(response.status_code, 403, response.text)
                self.assertNotIn("Access-Control-Allow-Origin", response.headers)
                self.assertIn(f"Origin: {origin} is not among the allowed origins", response.json()["message"])
        response = self.browser_post(f"{SEGMENT_URL}/t", {"anonymousId": "v-1", "event": "E"}, origin=None)
        self.assertEqual(response.status_code, 403)
        self.assertIn("Origin: required", response.json()["message"])
        self.assertFalse(self.Event.search([("source_id", "=", self.website.id)]))

    def test_server_key_from_a_browser_is_refused(self):
        response = self.browser_post(
            f"{SEGMENT_URL}/t", {"userId": "C-1", "event": "E"}, key=self.write_key, origin=SHOP_ORIGIN
        )
        self.assertEqual(response.status_code, 403, response.text)
        self.assertIn("a server write key must not sit in page code", response.json()["message"])
        self.assertNotIn("Access-Control-Allow-Origin", response.headers)
        response = self.post_json(
            EVENTS_URL, {"event": "test_purchase", "contact": {"email": "a@b.be"}}, headers={"Origin": SHOP_ORIGIN}
        )
        self.assertEqual(response.status_code, 403)
        self.assertEqual(response.json()["error"]["code"], "origin_refused")
        self.assertFalse(self.Event.search([("source_id", "=", self.source.id)]))
        # Without an Origin, as from the shop's servers, the same key works.
        response = self.post_json(EVENTS_URL, {"event": "test_purchase", "contact": {"email": "a@b.be"}})
        self.assertEqual(response.status_code, 202, response.text)

    def test_origins_are_checked_when_saved(self):
        with self.assertRaises(ValidationError):
            self.website.allowed_origins = "https://shop.example.com/path"
        with self.assertRaises(ValidationError):
            self.website.allowed_origins = "shop.example.com"


@tagged("post_install", "-at_install")
class TestWebsiteKeyRestrictions(WebsiteSourceCommon):
    def test_never_addresses_a_contact_by_odoo_id(self):
        response = self.browser_post(
            EVENTS_URL,
            {"event": "test_purchase", "contact": {"id": self.partner.id}},
            content_type="application/json",
            headers={"Authorization": f"Bearer {self.website_key}"},
        )
        self.assertEqual(response.status_code, 403, response.text)
        [result] = response.json()["results"]
        self.assertIn("contact.id: a website key cannot address a contact by its Odoo id", result["reason"])
        self.assertFalse(self.Event.search([("partner_id", "=", self.partner.id), ("source_id", "=", self.website.id)]))

    def test_never_changes_contact_details(self):
        # Even a contact this very source created keeps its details.
        response = self.browser_post(f"{SEGMENT_URL}/i", {"userId": "W-1", "traits": {"email": "w1@example.com"}})
        self.assertEqual(response.status_code, 200, response.text)
        contact = self.env["res.partner"].search([("marketing_external_id", "=", "W-1")])
        self.assertEqual((contact.email, contact.marketing_source_id), ("w1@example.com", self.website))
        response = self.browser_post(
            f"{SEGMENT_URL}/i", {"userId": "W-1", "traits": {"email": "mallory@evil.example", "name": "Mallory"}}
        )
        [result] = response.json()["results"]
        self.assertEqual(result["status"], "accepted")
        self.assertEqual((contact.email, contact.name), ("w1@example.com", "w1@example.com"))
        self.assertIn("traits.email: not applied, a website key never changes contact details", result["not_applied"])
        self.assertIn("traits.name: not applied, a website key never changes contact details", result["not_applied"])
        company = self.env["res.partner"].create({"name": "Acme", "is_company": True})
        company.marketing_external_id = "group:ACME"
        response = self.browser_post(f"{SEGMENT_URL}/g", {"userId": "W-1", "groupId": "ACME"})
        [result] = response.json()["results"]
        self.assertIn("groupId: not applied, a website key never changes contacts", result["not_applied"])
        self.assertFalse(contact.parent_id)

    def test_only_allowed_contact_types(self):
        self.website.write({"allow_all_types": False, "allowed_type_ids": [(6, 0, self.type_purchase.ids)]})
        ok = self.browser_post(f"{SEGMENT_URL}/t", {"anonymousId": "v-2", "event": "test_purchase"})
        self.assertEqual(ok.status_code, 200, ok.text)
        refused = self.browser_post(f"{SEGMENT_URL}/t", {"anonymousId": "v-2", "event": "Test cart abandoned"})
        self.assertEqual(refused.status_code, 403, refused.text)
        self.website.allow_all_types = True
        for name in ("email_opened", "score_changed", "contacts_imported"):
            with self.subTest(name=name):
                response = self.browser_post(f"{SEGMENT_URL}/t", {"anonymousId": "v-2", "event": name})
                self.assertEqual(response.status_code, 403, response.text)
                self.assertIn("recorded by Odoo itself", response.json()["message"])

    def test_rate_limit_per_visitor_and_per_source(self):
        self.website.write({"visitor_rate_limit": 2, "rate_limit": 5})
        for attempt in range(2):
            response = self.browser_post(f"{SEGMENT_URL}/t", {"anonymousId": "v-3", "event": f"E {attempt}"})
            self.assertEqual(response.status_code, 200, response.text)
        response = self.browser_post(f"{SEGMENT_URL}/t", {"anonymousId": "v-3", "event": "E 3"})
        self.assertEqual(response.status_code, 429, response.text)
        self.assertIn("requests per minute from this visitor", response.json()["message"])
        self.assertTrue(response.headers["Retry-After"].isdigit())
        self.assertEqual(response.headers["Access-Control-Allow-Origin"], SHOP_ORIGIN, "the page can read why")
        # Requests refused for the visitor did not spend the source's limit, which still applies to all.
        self.website.visitor_rate_limit = 0
        statuses = [
            self.browser_post(f"{SEGMENT_URL}/t", {"anonymousId": f"v-{n}", "event": "E"}).status_code for n in range(4)
        ]
        self.assertEqual(statuses, [200, 200, 200, 429])

    def test_page_snippet_names_server_and_key(self):
        self.env["ir.config_parameter"].sudo().set_param("web.base.url", "https://odoo.example.com")
        snippet = self.website.website_snippet
        self.assertIn('apiHost: "odoo.example.com/automation/segment/v1"', snippet)
        self.assertIn('rudder.load("WRITE_KEY", "https://odoo.example.com/automation/segment"', snippet)
        self.assertIn(f"mea_{self.website.key_id}_", snippet)
        self.assertFalse(self.source.website_snippet, "server sources have no page snippet")

    def test_batches_of_the_batching_strategy(self):
        """Segment's browser library with ``deliveryStrategy: batching`` posts to /v1/b, with Basic auth too."""
        basic = "Basic " + base64.b64encode(f"{self.website_key}:".encode()).decode()
        body = {
            "writeKey": self.website_key,
            "batch": [
                {"type": "page", "anonymousId": "v-b", "messageId": "b-1", "properties": {"path": "/"}},
                {"type": "track", "anonymousId": "v-b", "messageId": "b-2", "event": "Video Watched"},
            ],
            "sentAt": "2026-11-24T10:00:00.000Z",
        }
        response = self.url_open(
            f"{SEGMENT_URL}/b",
            data=json.dumps(body),
            headers={"Content-Type": "text/plain", "Authorization": basic, "Origin": SHOP_ORIGIN},
        )
        self.assertEqual(response.status_code, 200, response.text)
        self.assertEqual(response.json()["accepted"], 2)
        self.assertEqual(response.headers["Access-Control-Allow-Origin"], SHOP_ORIGIN)

    def test_basic_auth_json_as_rudderstack_sends(self):
        basic = "Basic " + base64.b64encode(f"{self.website_key}:".encode()).decode()
        response = self.url_open(
            f"{SEGMENT_URL}/track",
            data=json.dumps({"anonymousId": "v-9", "event": "Video Watched", "properties": {"seconds": 30}}),
            headers={"Content-Type": "application/json;charset=UTF-8", "Authorization": basic, "Origin": SHOP_ORIGIN},
        )
        self.assertEqual(response.status_code, 200, response.text)
        event = self.Event.search([("anonymous_id", "=", "v-9")])
        self.assertEqual(
            (event.event_key, event.params, event.partner_id.id), ("video_watched", {"seconds": 30}, False)
        )
