import base64

from odoo.exceptions import ValidationError
from odoo.tests import tagged

from .common import MarketingAutomationHttpCommon

EVENTS_URL = "/automation/v1/events"
SEGMENT_TRACK_URL = "/automation/segment/v1/track"


@tagged("post_install", "-at_install")
class TestRateLimit(MarketingAutomationHttpCommon):
    """The per-source rate limit over real HTTP: 429 with Retry-After on both APIs; the source row is never written."""

    def purchase(self, index):
        return {"event": "test_purchase", "event_id": f"r-{index}", "contact": {"email": "alice@example.com"}}

    def track(self, index, key=None):
        basic = "Basic " + base64.b64encode(f"{key or self.write_key}:".encode()).decode()
        message = {"userId": "C-1", "event": "Signed Up", "messageId": f"s-{index}"}
        return self.post_json(SEGMENT_TRACK_URL, message, key=False, headers={"Authorization": basic})

    def rate_row(self, source):
        self.env.cr.execute(
            "SELECT window_start, hits FROM marketing_event_source_rate WHERE source_id = %s", [source.id]
        )
        return self.env.cr.fetchone()

    def start_next_window(self, source):
        """What a minute passing does to the counter: its window is over."""
        self.env.cr.execute(
            "UPDATE marketing_event_source_rate SET window_start = window_start - 60 WHERE source_id = %s",
            [source.id],
        )

    def assert_rate_limited(self, response, segment=False):
        self.assertEqual(response.status_code, 429, response.text)
        self.assertTrue(response.headers["Retry-After"].isdigit())
        self.assertTrue(1 <= int(response.headers["Retry-After"]) <= 60)
        body = response.json()
        self.assertEqual(body["error"]["code"], "rate_limited")
        self.assertIn("rate limit: more than 3 requests per minute from this source", body["error"]["message"])
        self.assertIn(f"retry in {response.headers['Retry-After']} s", body["error"]["message"])
        if segment:
            self.assertEqual((body["code"], body["message"]), ("rate_limited", body["error"]["message"]))

    def test_default_limit_and_validation(self):
        source = self.env["marketing.event.source"].create({"name": "Fresh"})
        self.assertEqual(source.rate_limit, 600)
        with self.assertRaisesRegex(ValidationError, "Requests per Minute of Fresh"):
            source.rate_limit = -1

    def test_native_api_answers_429_beyond_the_limit(self):
        self.source.rate_limit = 3
        for index in range(3):
            self.assertEqual(self.post_json(EVENTS_URL, self.purchase(index)).status_code, 202)
        self.assert_rate_limited(self.post_json(EVENTS_URL, self.purchase(3)))
        self.assert_rate_limited(self.post_json(EVENTS_URL, {"events": [self.purchase(4), self.purchase(5)]}))
        stored = self.Event.search([("source_id", "=", self.source.id)])
        self.assertEqual(
            sorted(stored.mapped("idempotency_key")), ["r-0", "r-1", "r-2"], "refused requests store nothing"
        )
        # The next minute the source may send again.
        self.start_next_window(self.source)
        self.assertEqual(self.post_json(EVENTS_URL, self.purchase(6)).status_code, 202)
        self.assertEqual(self.rate_row(self.source)[1], 1, "a new window counts from one")

    def test_segment_api_answers_429_beyond_the_limit(self):
        self.source.rate_limit = 3
        for index in range(3):
            self.assertEqual(self.track(index).status_code, 200)
        self.assert_rate_limited(self.track(3), segment=True)
        self.assertEqual(self.Event.search_count([("source_id", "=", self.source.id)]), 3)

    def test_sources_are_counted_apart_and_both_apis_share_a_count(self):
        other = self.env["marketing.event.source"].create({"name": "Other shop", "rate_limit": 3})
        other_key = other._generate_write_key()
        self.source.rate_limit = 3
        self.assertEqual(self.post_json(EVENTS_URL, self.purchase(0)).status_code, 202)
        self.assertEqual(self.track(1).status_code, 200)
        self.assertEqual(self.post_json(EVENTS_URL, self.purchase(2)).status_code, 202)
        self.assert_rate_limited(self.track(3), segment=True)
        self.assertEqual(self.post_json(EVENTS_URL, self.purchase(4), key=other_key).status_code, 202)
        self.assertEqual(self.rate_row(other)[1], 1)

    def test_unauthenticated_requests_count_for_no_source(self):
        self.source.rate_limit = 1
        for _attempt in range(3):
            self.assertEqual(self.post_json(EVENTS_URL, self.purchase(0), key="mea_000000000000_nope").status_code, 401)
        self.assertEqual(self.post_json(EVENTS_URL, self.purchase(0)).status_code, 202)

    def test_zero_means_no_limit_and_no_counting(self):
        self.source.rate_limit = 0
        for index in range(5):
            self.assertEqual(self.post_json(EVENTS_URL, self.purchase(index)).status_code, 202)
        self.assertIsNone(self.rate_row(self.source), "no counter written without a limit")

    def test_counting_never_writes_the_source(self):
        self.source.rate_limit = 100
        self.env.flush_all()
        self.env.cr.execute("SELECT write_date FROM marketing_event_source WHERE id = %s", [self.source.id])
        write_date_before = self.env.cr.fetchone()[0]
        for index in range(3):
            self.assertEqual(self.post_json(EVENTS_URL, self.purchase(index)).status_code, 202)
        self.env.cr.execute("SELECT write_date FROM marketing_event_source WHERE id = %s", [self.source.id])
        self.assertEqual(self.env.cr.fetchone()[0], write_date_before)
        self.assertEqual(self.rate_row(self.source)[1], 3)
        self.env.cr.execute("SELECT relpersistence FROM pg_class WHERE relname = 'marketing_event_source_rate'")
        self.assertEqual(self.env.cr.fetchone()[0], "u", "an UNLOGGED table: counting costs no WAL")
