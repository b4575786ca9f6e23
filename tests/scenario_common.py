import threading
from http.server import BaseHTTPRequestHandler
from http.server import HTTPServer

from freezegun import freeze_time

from odoo import fields

from .common import MarketingAutomationCommon


class ScenarioCommon(MarketingAutomationCommon):
    """Fixtures and helpers to build scenarios and drive the engine's crons."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.Scenario = cls.env["marketing.scenario"]
        cls.Node = cls.env["marketing.scenario.node"]
        cls.Step = cls.env["marketing.scenario.step"]
        cls.Participant = cls.env["marketing.scenario.participant"]
        cls.tag_vip = cls.env["res.partner.category"].create({"name": "VIP"})
        cls.tag_lost = cls.env["res.partner.category"].create({"name": "Lost cart"})
        cls.bob = cls.env["res.partner"].create({"name": "Bob Buyer", "email": "bob@example.com"})

    def create_scenario(self, **values):
        return self.Scenario.create(
            {
                "name": "Test scenario",
                "trigger_type": "event",
                "trigger_event_type_id": self.type_cart.id,
                "timezone": "UTC",
                **values,
            }
        )

    def add_node(self, scenario, node_type, parent=None, **values):
        return self.Node.create(
            {"scenario_id": scenario.id, "node_type": node_type, "parent_id": parent.id if parent else False, **values}
        )

    def emit(self, event_type, partner, params=None, occurred_at=None):
        """Store one event like the API does and return it (not dispatched yet)."""
        [event_id] = self.Event._insert_events(
            [
                {
                    "type": event_type,
                    "key": event_type.key,
                    "partner_id": partner.id,
                    "company_id": self.company.id,
                    "params": params or {},
                    "occurred_at": occurred_at,
                }
            ]
        )
        return self.Event.browse(event_id)

    def dispatch(self):
        while self.Event._cron_dispatch():
            pass

    def dispatch_query_counts(self, event_type, params, sizes, label):
        """Queries of one dispatch batch of ``size`` events of new contacts, for each of ``sizes``."""
        counts = []
        for size in sizes:
            partners = self.env["res.partner"].create(
                [{"name": f"{label}{size}-{i}", "email": f"{label}{size}-{i}@example.org"} for i in range(size)]
            )
            self.dispatch()  # the contact_created events
            self.Event._insert_events(
                [
                    {"type": event_type, "key": event_type.key, "partner_id": partner.id, "params": params}
                    for partner in partners
                ]
            )
            self.env.flush_all()
            self.env.invalidate_all()
            before = self.cr.sql_log_count
            self.Event._cron_dispatch()
            counts.append(self.cr.sql_log_count - before)
        return counts

    def advance(self):
        """Run the advance cron until nothing is due now."""
        total = 0
        while count := self.Step._cron_advance():
            total += count
        return total

    def advance_at(self, moment):
        with freeze_time(moment):
            return self.advance()

    def steps_of(self, participant, node=None):
        steps = participant.step_ids
        if node:
            steps = steps.filtered(lambda step: step.node_id == node)
        return steps.sorted("id")

    def participant_of(self, scenario, partner):
        return self.Participant.search(
            [("scenario_id", "=", scenario.id), ("partner_id", "=", partner.id)], order="id desc", limit=1
        )

    def now(self):
        return fields.Datetime.now()


class CommittedLeftovers:
    """For tests whose engines commit on cursors of their own: the crons' triggers and the events
    such runs log (contact created, scenario completed...) are removed afterwards, or they would
    reach the next tests' dispatches."""

    def remember_last_ids(self, cr):
        cr.execute("SELECT COALESCE(max(id), 0) FROM ir_cron_trigger")
        self.max_trigger_id = cr.fetchone()[0]
        cr.execute("SELECT COALESCE(max(id), 0) FROM marketing_event")
        self.max_event_id = cr.fetchone()[0]

    def remove_leftovers(self, cr):
        cr.execute("DELETE FROM ir_cron_trigger WHERE id > %s", [self.max_trigger_id])
        cr.execute("DELETE FROM marketing_event WHERE id > %s", [self.max_event_id])


class WebhookReceiver:
    """A real HTTP server on 127.0.0.1 that records requests and answers the queued statuses.

    ``location`` adds a Location header to every answer (for redirect statuses).
    """

    def __init__(self, statuses=None, location=None):
        self.requests = []
        self.statuses = list(statuses or [])
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append({"headers": dict(self.headers), "body": body})
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
