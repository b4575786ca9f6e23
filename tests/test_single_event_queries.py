import base64
import json

from odoo.tests import tagged

from .common import MarketingAutomationHttpCommon

EVENTS_URL = "/automation/v1/events"
SEGMENT_URL = "/automation/segment/v1/track"


@tagged("post_install", "-at_install")
class TestSingleEventQueries(MarketingAutomationHttpCommon):
    """One event per request, as order webhooks and browsers send them: the SQL of the whole request is counted.

    Counted on the test cursor, which the server's request shares: the
    route's own work, the rate limit's counters and the dispatcher's wake-up
    (one trigger row; its NOTIFY goes on a connection of its own). The write
    key and the event types are looked up in each worker's caches, filled by
    the warm-up request.
    """

    def setUp(self):
        super().setUp()
        self.dispatcher = self.env.ref("marketing_event_automation.ir_cron_dispatch_events")
        basic = base64.b64encode(f"{self.write_key}:".encode()).decode()
        self.segment_headers = {"Authorization": f"Basic {basic}", "Content-Type": "application/json"}
        # Each worker's caches (key lookups, routing) are filled by a first request.
        self.assertEqual(self.post_native("warm-up", "alice@example.com").status_code, 202)
        self.assertEqual(self.post_segment("warm-up", "alice@example.com").status_code, 200)

    def post_native(self, event_id, email):
        return self.post_json(EVENTS_URL, {"event": "test_purchase", "event_id": event_id, "contact": {"email": email}})

    def post_segment(self, message_id, email):
        body = {"event": "Test purchase", "messageId": message_id, "context": {"traits": {"email": email}}}
        return self.url_open(SEGMENT_URL, data=json.dumps(body), headers=self.segment_headers)

    def counted(self, post, event_id, email, status):
        """Post one event; return the number of queries of the request and the stored event."""
        self.env.cr.flush()
        self.env.invalidate_all()
        triggers_before = self.env["ir.cron.trigger"].search_count([("cron_id", "=", self.dispatcher.id)])
        before = self.env.cr.sql_log_count
        response = post(event_id, email)
        queries = self.env.cr.sql_log_count - before
        self.assertEqual(response.status_code, status, response.text)
        [result] = response.json()["results"]
        self.assertEqual(result["status"], "accepted")
        event = self.Event.browse(result["id"])
        self.assertEqual(event.partner_id.email_normalized, email)
        self.assertEqual(
            self.env["ir.cron.trigger"].search_count([("cron_id", "=", self.dispatcher.id)]),
            triggers_before + 1,
            "the request leaves one trigger of the dispatcher, written with its events",
        )
        return queries

    def test_native_known_contact(self):
        self.assertEqual(self.counted(self.post_native, "known-1", "alice@example.com", 202), 8)

    def test_native_new_contact(self):
        self.assertEqual(self.counted(self.post_native, "new-1", "new-native@example.com", 202), 17)

    def test_segment_known_contact(self):
        self.assertEqual(self.counted(self.post_segment, "known-1", "alice@example.com", 200), 8)

    def test_segment_new_contact(self):
        self.assertEqual(self.counted(self.post_segment, "new-1", "new-segment@example.com", 200), 17)
