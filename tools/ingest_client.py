"""Shared by the ingestion tools (``bench_ingest``, ``fuzz_api``, ``fault_ingest_kill``, ``fault_two_servers``,
``load_ingest``): an API source, events, and clients that post batches and keep every answer (and retry a batch
with the same event ids until it is answered)."""

import json
import threading
import time
from collections import Counter

import requests

SOURCE_SETUP = """
with registry.cursor() as cr:
    env = api.Environment(cr, SUPERUSER_ID, {{"tracking_disable": True}})
    env.company.country_id = env.ref("base.be")
    source = env["marketing.event.source"].create(
        {{"name": "Fault and load tools", "rate_limit": 0, "max_new_contacts_per_day": 0, "max_new_types_per_day": 0}}
    )
    key = source._generate_write_key()
    env["marketing.event.type"].create([
        {{"name": "Cart abandoned", "key": "cart_abandoned"}},
        {{"name": "Purchase", "key": "purchase"}},
        {{"name": "Signup", "key": "signup"}},
    ])
    env["res.partner"].with_context(marketing_event_mute=True).create([
        {{"name": f"Known {{i}}", "email": f"known{{i}}@load.example"}} for i in range({known})
    ])
    if not {dispatch!r}:
        # Only ingestion is under test: the dispatcher stays off.
        env.ref("marketing_event_automation.ir_cron_dispatch_events").active = False
    cr.commit()
    if {analyze!r}:
        # Statistics of the new contacts, as autovacuum would gather them on a live database.
        cr.execute("ANALYZE res_partner")
        cr.commit()
    emit_result({{"write_key": key, "source_id": source.id}})
"""

KINDS = ("cart_abandoned", "purchase", "signup")


def setup_source(workspace, known, dispatch=False, analyze=False):
    """Create the source, the event types and ``known`` contacts; return (write key, source id)."""
    result = workspace.run_script(SOURCE_SETUP.format(known=known, dispatch=dispatch, analyze=analyze))
    return result["write_key"], result["source_id"]


def make_event(tag, index, known):
    """Event ``index`` of a run: a third of them about a new contact (an address used by that event only)."""
    kind = KINDS[index % 3]
    if index % 3 == 2:
        contact = {"email": f"new-{tag}-{index}@load.example", "name": f"New {index}"}
    else:
        contact = {"email": f"known{index % known}@load.example"}
    params = {"total": round(10 + index % 90 * 1.5, 2), "currency": "EUR"}
    if kind == "cart_abandoned":
        params["items"] = [{"sku": f"SKU-{index % 40}", "quantity": 1 + index % 3, "price": 9.9}]
    return {
        "event": kind,
        "event_id": f"{tag}-{index}",
        "timestamp": "2026-11-24T10:00:00Z",
        "contact": contact,
        "params": params,
    }


class Ledger:
    """Every answer the clients got, shared by the client threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sent = set()  # event ids posted at least once
        self.answers = {}  # event id -> last status answered (accepted / duplicate / rejected)
        self.first_answers = Counter()  # status of each event's first answer
        self.answered_after_retry = Counter()  # status of the answers to a retried batch
        self.requests = 0
        self.unanswered = Counter()  # failed attempts by reason
        self.latencies = []
        self.errors = []  # answers that are neither 2xx nor a server/connection failure

    def record(self, events, payload, retried, latency):
        with self.lock:
            self.latencies.append(latency)
            for event, result in zip(events, payload["results"]):
                status = result["status"]
                if event["event_id"] not in self.answers:
                    self.first_answers[status] += 1
                self.answers[event["event_id"]] = status
                if retried:
                    self.answered_after_retry[status] += 1

    def acknowledged(self):
        return {event_id for event_id, status in self.answers.items() if status in ("accepted", "duplicate")}


def post_until_answered(session_holder, base_url, write_key, events, ledger, *, timeout=30):
    """POST one batch until a 2xx answer, with the same event ids each time; return the number of attempts.

    A connection error, a timeout or a 5xx (the server was killed or is
    restarting) leaves the batch unanswered: the client cannot know whether it
    was stored, so it sends it again, as any client of the API should.
    """
    body = json.dumps({"events": events})
    headers = {"Authorization": f"Bearer {write_key}", "Content-Type": "application/json"}
    with ledger.lock:
        ledger.sent.update(event["event_id"] for event in events)
    attempts = 0
    while True:
        attempts += 1
        with ledger.lock:
            ledger.requests += 1
        started = time.perf_counter()
        try:
            response = session_holder.session.post(
                f"{base_url()}/automation/v1/events", data=body, headers=headers, timeout=timeout
            )
        except requests.RequestException as error:
            with ledger.lock:
                ledger.unanswered[type(error).__name__] += 1
            session_holder.reset()
            time.sleep(0.3)
            continue
        if response.status_code >= 500:
            with ledger.lock:
                ledger.unanswered[f"HTTP {response.status_code}"] += 1
            time.sleep(0.3)
            continue
        if response.status_code != 202:
            with ledger.lock:
                ledger.errors.append(f"HTTP {response.status_code}: {response.text[:300]}")
            return attempts
        ledger.record(events, response.json(), attempts > 1, time.perf_counter() - started)
        return attempts


class SessionHolder:
    """One HTTP session per client thread, replaced after a connection failure."""

    def __init__(self):
        self.session = requests.Session()

    def reset(self):
        self.session.close()
        self.session = requests.Session()
