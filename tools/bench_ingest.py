#!/usr/bin/env python3
# pylint: disable=print-used
"""Ingestion benchmark: the native and Segment batch APIs against PostgreSQL's own insert speed.

    python3 tools/bench_ingest.py [--events 50000] [--batch 500] [--runs 3] [--clients N]
                                  [--py-spy FILE]

It creates a benchmark database with the module (no demo data), starts Odoo with
``--workers=2`` (crons off, so only ingestion is measured). Each run posts N events
in batches to ``/automation/v1/events`` from one client thread per worker (a client
more than the workers only adds a wait for a free worker to each request's latency;
``--clients`` changes it), with a mix of
cart_abandoned / purchase / signup events and one third unknown contacts, then N
other events of the same mix as Segment ``track`` messages to
``/automation/segment/v1/batch``. In the same run it measures the *limit*: the
native rows inserted straight into the ``marketing_event`` table with
``psycopg2.extras.execute_values`` (batches of the same size, commit per batch).
It prints events/s, p50/p95 request latency and ingestion/limit per run and as
medians, with the machine's load average. ``--py-spy FILE`` samples the Odoo
workers during the first run's native phase and prints the functions where they
spend most time (py-spy must be installed). The database is dropped at the end
unless ``--keep-db`` is given.
"""

import argparse
import base64
import collections
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg2
import psycopg2.extras
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tools.dev import MODULE
from tools.ingest_client import make_event
from tools.ingest_client import setup_source
from tools.odoo_process import Workspace
from tools.odoo_process import query

SEGMENT_NAMES = {"cart_abandoned": "Cart Abandoned", "purchase": "Purchase", "signup": "Signup"}


def to_segment(event):
    """The same event as a Segment track message (the contact's identifiers in context.traits)."""
    return {
        "type": "track",
        "event": SEGMENT_NAMES[event["event"]],
        "messageId": event["event_id"],
        "timestamp": event["timestamp"],
        "properties": event["params"],
        "context": {"traits": event["contact"]},
    }


def post_batches(url, headers, wrap, events, *, batch_size, clients):
    """POST ``wrap(batch)`` for each batch from ``clients`` threads; return accepted, wall time, latencies."""
    batches = [events[i : i + batch_size] for i in range(0, len(events), batch_size)]
    latencies, accepted = [], []
    lock = threading.Lock()
    local = threading.local()

    def send(batch):
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        started = time.perf_counter()
        response = session.post(
            url, data=json.dumps(wrap(batch)), headers={**headers, "Content-Type": "application/json"}, timeout=120
        )
        elapsed = time.perf_counter() - started
        if response.status_code not in (200, 202):
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
        with lock:
            latencies.append(elapsed)
            accepted.append(response.json()["accepted"])

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(send, batches))
    wall = time.perf_counter() - started
    return sum(accepted), wall, latencies


def direct_insert(db_name, source_id, type_ids, events, *, batch_size, run_tag):
    """The limit: the same rows straight into the table, as fast as psycopg2 goes."""
    connection = psycopg2.connect(dbname=db_name)
    cursor = connection.cursor()
    cursor.execute("SELECT email_normalized, id FROM res_partner WHERE email_normalized IS NOT NULL")
    partner_by_email = dict(cursor.fetchall())
    fallback_partner = next(iter(partner_by_email.values()))
    rows = [
        (
            type_ids[event["event"]],
            event["event"],
            partner_by_email.get(event["contact"]["email"], fallback_partner),
            source_id,
            f"direct-{run_tag}-{event['event_id']}",
            json.dumps(event["params"]),
        )
        for event in events
    ]
    started = time.perf_counter()
    for offset in range(0, len(rows), batch_size):
        psycopg2.extras.execute_values(
            cursor,
            """
            INSERT INTO marketing_event (
                type_id, event_key, partner_id, source_id, idempotency_key, params,
                occurred_at, received_at, state
            )
            VALUES %s
            ON CONFLICT DO NOTHING
            """,
            rows[offset : offset + batch_size],
            template="(%s, %s, %s, %s, %s, %s::jsonb, now() at time zone 'utc', now() at time zone 'utc', 'pending')",
            page_size=batch_size,
        )
        connection.commit()
    wall = time.perf_counter() - started
    connection.close()
    return len(rows) / wall


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def start_py_spy(server_pid, output):
    return subprocess.Popen(
        [
            *("py-spy", "record", "--pid", str(server_pid), "--subprocesses", "--rate", "250"),
            *("--format", "raw", "--output", output, "--nonblocking"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def print_py_spy_summary(path, top=20):
    """Share of the request-handling samples per function, own and with callees, from py-spy's raw output."""
    own, total, samples = collections.Counter(), collections.Counter(), 0
    for line in Path(path).read_text().splitlines():
        stack, _sep, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        # "function (path/file.py:line)" -> "function (file.py)", one entry per function
        frames = []
        for frame in stack.split(";"):
            function, _sep, location = frame.partition(" (")
            file_name = location.rsplit(":", 1)[0].rsplit("/", 1)[-1]
            frames.append((f"{function} ({file_name})", MODULE in location))
        # Only the workers' request handling, not their idle loops.
        if not any("run_wsgi" in frame for frame, _own in frames):
            continue
        samples += int(count)
        own[frames[-1][0]] += int(count)
        for frame in {frame for frame, is_module in frames if is_module or frame.startswith("Cursor.execute")}:
            total[frame] += int(count)
    if not samples:
        print("\npy-spy: no samples of request handling")
        return
    print(f"\npy-spy: {samples} samples of request handling in the workers; own time:")
    for frame, count in own.most_common(top):
        print(f"  {count / samples:6.1%}  {frame}")
    print("with callees (this module's functions and SQL):")
    for frame, count in total.most_common(top):
        print(f"  {count / samples:6.1%}  {frame}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50000, help="events per phase and run")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--clients",
        type=int,
        help="concurrent HTTP clients (default: one per worker: with more, a request's latency includes"
        " its wait for a free worker)",
    )
    parser.add_argument("--known", type=int, default=10000, help="contacts that exist before the run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--py-spy", metavar="FILE", help="sample the workers during the first native phase")
    parser.add_argument("--keep-db", action="store_true")
    options = parser.parse_args()
    options.clients = options.clients or options.workers

    with Workspace("bench", keep_db=options.keep_db) as workspace:
        return measure(workspace, options)


def make_events(count, known, run_tag):
    return [make_event(run_tag, index, known) for index in range(count)]


def measure(workspace, options):
    db_name = workspace.db_name
    write_key, source_id = setup_source(workspace, options.known, dispatch=True, analyze=True)
    type_ids = dict(
        query(db_name, "SELECT key, id FROM marketing_event_type WHERE key IN ('cart_abandoned', 'purchase', 'signup')")
    )
    server = workspace.server(name="bench-ingest", workers=options.workers, log_level="warn", db_filter=False).start()
    print(f"Odoo's log: {server.log_path}", flush=True)
    base_url = server.base_url
    phases = {
        "native": (
            f"{base_url}/automation/v1/events",
            {"Authorization": f"Bearer {write_key}"},
            lambda batch: {"events": batch},
            lambda events: events,
        ),
        "segment": (
            f"{base_url}/automation/segment/v1/batch",
            {"Authorization": "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()},
            lambda batch: {"batch": batch},
            lambda events: [to_segment(event) for event in events],
        ),
    }
    # Warm up the workers (registry load, routing map) outside the measure.
    for name, (url, headers, wrap, convert) in phases.items():
        warmup = convert(make_events(options.batch * 4, options.known, f"warmup-{name}"))
        post_batches(url, headers, wrap, warmup, batch_size=options.batch, clients=4)

    rows = []
    print(f"load average before the runs: {' '.join(f'{value:.2f}' for value in os.getloadavg())}", flush=True)
    for run in range(1, options.runs + 1):
        row = {"run": run}
        for name, (url, headers, wrap, convert) in phases.items():
            tag = f"r{run}{name[0]}-{uuid.uuid4().hex[:6]}"
            events = make_events(options.events, options.known, tag)
            spy = (
                start_py_spy(server.process.pid, options.py_spy)
                if options.py_spy and run == 1 and name == "native"
                else None
            )
            accepted, wall, latencies = post_batches(
                url, headers, wrap, convert(events), batch_size=options.batch, clients=options.clients
            )
            if spy:
                spy.send_signal(signal.SIGINT)
                spy.wait(timeout=60)
            row[f"{name}_events_per_s"] = accepted / wall
            row[f"{name}_p50_ms"] = percentile(latencies, 0.50) * 1000
            row[f"{name}_p95_ms"] = percentile(latencies, 0.95) * 1000
            print(
                f"run {run} {name:7s}: {accepted} accepted in {wall:.1f}s = {accepted / wall:,.0f} events/s "
                f"(p50 {row[f'{name}_p50_ms']:.0f} ms, p95 {row[f'{name}_p95_ms']:.0f} ms "
                f"per {options.batch}-event request)",
                flush=True,
            )
            if name == "native":
                native_events = events
        row["limit_rows_per_s"] = direct_insert(
            db_name, source_id, type_ids, native_events, batch_size=options.batch, run_tag=f"r{run}"
        )
        for name in phases:
            row[f"{name}_ratio"] = row[f"{name}_events_per_s"] / row["limit_rows_per_s"]
        row["load"] = os.getloadavg()[0]
        rows.append(row)
        print(
            f"run {run} limit  : direct insert {row['limit_rows_per_s']:,.0f} rows/s; ingestion/limit = "
            f"{row['native_ratio']:.1%} native, {row['segment_ratio']:.1%} Segment (load {row['load']:.2f})",
            flush=True,
        )
    print()
    print(
        f"MEDIANS over {len(rows)} runs of {options.events} events per API, batches of {options.batch}, "
        f"{options.clients} clients, {options.workers} workers "
        f"(load average {statistics.median(row['load'] for row in rows):.2f}):"
    )
    for key, label in (
        ("native_events_per_s", "native batch API, events/s"),
        ("native_p50_ms", "native request latency p50, ms"),
        ("native_p95_ms", "native request latency p95, ms"),
        ("segment_events_per_s", "Segment batch API, events/s"),
        ("segment_p50_ms", "Segment request latency p50, ms"),
        ("segment_p95_ms", "Segment request latency p95, ms"),
        ("limit_rows_per_s", "direct execute_values insert (limit), rows/s"),
        ("native_ratio", "native ingestion / limit"),
        ("segment_ratio", "Segment ingestion / limit"),
    ):
        value = statistics.median(row[key] for row in rows)
        print(f"  {label:48s} {value:>12.3f}" if key.endswith("ratio") else f"  {label:48s} {value:>12,.0f}")
    if options.py_spy:
        print_py_spy_summary(options.py_spy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
