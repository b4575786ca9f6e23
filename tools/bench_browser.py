#!/usr/bin/env python3
# pylint: disable=print-used
"""Benchmark: browser-style traffic, one event per request from many anonymous visitors, then an identify each.

    python3 tools/bench_browser.py [--seconds 60] [--visitors 2000] [--clients 8] [--workers 2] [--floor-seconds 15]

A throwaway database with the module and a website source (no rate limits);
Odoo runs with ``--workers`` HTTP workers and no cron worker (only ingestion
is measured). In the same run, on the same server, with the same client
threads:

1. the floor: Odoo's own trivial JSON route (``/web/webclient/version_info``,
   JSON-RPC, no database work), for ``--floor-seconds``;
2. anonymous traffic for ``--seconds``: each request one ``Product Viewed``
   track call as Segment's browser library sends it (``text/plain`` body with
   the write key inside, an ``Origin`` header, ``/v1/t``), from a visitor
   drawn among ``--visitors`` anonymous ids;
3. one identify per visitor seen (``/v1/i`` with its anonymousId and a
   userId), which joins the visitor's history to its new contact.

A request that fails (connection error, 5xx) is sent again with the same
messageId until answered. Prints events/s against the floor's requests/s and
checks in the database that every acknowledged event is stored once and
belongs to its visitor's contact; exits 1 when one is missing or left anonymous.
"""

import argparse
import itertools
import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tools.odoo_process import Workspace
from tools.odoo_process import print_table
from tools.odoo_process import query

ORIGIN = "https://shop.bench.example"
SETUP = """
with registry.cursor() as cr:
    env = api.Environment(cr, SUPERUSER_ID, {{"tracking_disable": True}})
    source = env["marketing.event.source"].create({{
        "name": "Browser benchmark", "kind": "website", "allowed_origins": {origin!r},
        "rate_limit": 0, "visitor_rate_limit": 0, "max_new_contacts_per_day": 0, "max_new_types_per_day": 0,
    }})
    key = source._generate_write_key()
    env["marketing.event.type"].create({{"name": "Product Viewed", "key": "product_viewed"}})
    # Only ingestion is measured: the dispatcher stays off.
    env.ref("marketing_event_automation.ir_cron_dispatch_events").active = False
    cr.commit()
    emit_result({{"write_key": key, "source_id": source.id}})
"""


def post_until_answered(session, url, body, headers, timeout=30):
    """POST until the server answers below 500; return (answer, latency of the last attempt)."""
    while True:
        started = time.perf_counter()
        try:
            response = session.post(url, data=body, headers=headers, timeout=timeout)
        except requests.RequestException:
            time.sleep(0.2)
            continue
        if response.status_code < 500:
            return response, time.perf_counter() - started
        time.sleep(0.2)


def percentile(values, fraction):
    """In milliseconds; 0 without values."""
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * fraction), len(ordered) - 1)] * 1000 if ordered else 0


def run_clients(clients, seconds, work):
    """Run ``work(session, stop_at)`` in ``clients`` threads for ``seconds``; return the wall time."""
    stop_at = time.monotonic() + seconds
    threads = [
        threading.Thread(target=work, args=(requests.Session(), stop_at), daemon=True) for _client in range(clients)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.monotonic() - started


def main():  # pylint: disable=too-many-locals,too-many-statements
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60, help="duration of the anonymous traffic")
    parser.add_argument("--floor-seconds", type=float, default=15, help="duration of the floor measure")
    parser.add_argument("--visitors", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep-db", action="store_true")
    options = parser.parse_args()

    tag = uuid.uuid4().hex[:6]
    with Workspace("browser", keep_db=options.keep_db) as workspace:
        setup = workspace.run_script(SETUP.format(origin=ORIGIN))
        write_key, source_id = setup["write_key"], setup["source_id"]
        server = workspace.server(workers=options.workers, cron_threads=0)
        server.start()
        base = server.base_url

        floor_count = itertools.count()
        floor_body = json.dumps({"jsonrpc": "2.0", "method": "call", "params": {}})

        def floor_work(session, stop_at):
            while time.monotonic() < stop_at:
                response, _latency = post_until_answered(
                    session,
                    f"{base}/web/webclient/version_info",
                    floor_body,
                    {"Content-Type": "application/json"},
                )
                response.raise_for_status()
                next(floor_count)

        floor_wall = run_clients(options.clients, options.floor_seconds, floor_work)
        floor_requests = next(floor_count)

        sequence = itertools.count()
        lock = threading.Lock()
        acknowledged = {}  # messageId -> visitor
        refused = []
        latencies = []

        def event_work(session, stop_at):
            while time.monotonic() < stop_at:
                number = next(sequence)
                visitor = f"{tag}-visitor-{number * 7919 % options.visitors}"
                message_id = f"{tag}-view-{number}"
                body = json.dumps(
                    {
                        "writeKey": write_key,
                        "anonymousId": visitor,
                        "messageId": message_id,
                        "event": "Product Viewed",
                        "properties": {"sku": f"SKU-{number % 40}", "price": 19.9},
                        "context": {"page": {"url": f"{ORIGIN}/shop/product/{number % 40}"}},
                        "originalTimestamp": "2026-11-24T10:00:00.000Z",
                        "sentAt": "2026-11-24T10:00:00.020Z",
                    }
                )
                response, latency = post_until_answered(
                    session,
                    f"{base}/automation/segment/v1/t",
                    body,
                    {"Content-Type": "text/plain", "Origin": ORIGIN},
                )
                [result] = response.json().get("results") or [{"status": "rejected"}]
                with lock:
                    latencies.append(latency)
                    if response.status_code == 200 and result["status"] in ("accepted", "duplicate"):
                        acknowledged[message_id] = visitor
                    else:
                        refused.append(response.text[:200])

        events_wall = run_clients(options.clients, options.seconds, event_work)
        visitors = sorted(set(acknowledged.values()))
        pending = iter(visitors)
        identified = []

        def identify_work(session, _stop_at):
            while True:
                with lock:
                    visitor = next(pending, None)
                if visitor is None:
                    return
                body = json.dumps(
                    {
                        "writeKey": write_key,
                        "anonymousId": visitor,
                        "userId": f"user-{visitor}",
                        "messageId": f"identify-{visitor}",
                        "traits": {"email": f"{visitor}@bench.example"},
                    }
                )
                response, _latency = post_until_answered(
                    session,
                    f"{base}/automation/segment/v1/i",
                    body,
                    {"Content-Type": "text/plain", "Origin": ORIGIN},
                )
                with lock:
                    if response.status_code == 200:
                        identified.append(visitor)
                    else:
                        refused.append(response.text[:200])

        identify_wall = run_clients(options.clients, 0, identify_work)
        server.stop()

        [(stored, anonymous_left, wrong_contact)] = query(
            workspace.db_name,
            """
            SELECT count(*),
                   count(*) FILTER (WHERE e.partner_id IS NULL),
                   count(*) FILTER (WHERE p.marketing_external_id IS DISTINCT FROM 'user-' || e.anonymous_id)
              FROM marketing_event e
              LEFT JOIN res_partner p ON p.id = e.partner_id
             WHERE e.source_id = %s AND e.event_key = 'product_viewed' AND e.idempotency_key = ANY(%s)
            """,
            [source_id, list(acknowledged)],
        )
        events = len(acknowledged)
        floor_rate = floor_requests / floor_wall
        events_rate = events / events_wall
        print_table(
            f"Browser-style traffic ({options.clients} clients, {options.workers} HTTP workers)",
            [
                ("floor: /web/webclient/version_info", f"{floor_rate:.0f} requests/s ({floor_requests} requests)"),
                ("anonymous track calls", f"{events_rate:.0f} events/s ({events} events, {len(visitors)} visitors)"),
                ("events/s against the floor", f"{events_rate / floor_rate:.0%}"),
                ("track latency p50 / p95", f"{percentile(latencies, 0.5):.0f} / {percentile(latencies, 0.95):.0f} ms"),
                ("identify calls", f"{len(identified) / identify_wall:.0f} identify/s ({len(identified)} visitors)"),
                ("acknowledged events stored", f"{stored} of {events}"),
                ("stored events still anonymous", anonymous_left),
                ("stored events on another contact", wrong_contact),
                ("refused requests", len(refused)),
                ("load average (1, 5, 15 min)", " / ".join(f"{load:.1f}" for load in os.getloadavg())),
            ],
        )
        lost = events - stored
        if lost or anonymous_left or wrong_contact or refused or len(identified) != len(visitors):
            print(f"\nFAILED: {lost} lost, {anonymous_left} not merged, {wrong_contact} misplaced, {refused[:3]}")
            return 1
        print("\nEvery acknowledged event stored once and joined to its visitor's contact.")
        return 0


if __name__ == "__main__":
    sys.exit(main())
