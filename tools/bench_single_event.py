#!/usr/bin/env python3
# pylint: disable=print-used
"""Benchmark: one event per request, against Odoo's own floor and base_automation's webhook.

    python3 tools/bench_single_event.py [--seconds 20] [--runs 3] [--clients 4] [--workers 2]
                                        [--latency-seconds 20] [--rate 50] [--cron-workers 1] [--db-filter]

A throwaway database with the module, ``tools/bench_addons/mea_bench_floor``
(a benchmark-only addon, on this server's addons path only) and a server
source without rate limits. Each run starts one Odoo server as odoo-bin does
(``--workers`` HTTP workers, the gevent worker, ``--cron-workers`` cron workers
with the dispatcher active) and measures, with ``--clients`` client threads
each keeping its connection alive, for ``--seconds`` each:

1. the floor: ``POST /mea_bench_floor/echo``, a trivial ``auth="public"``
   JSON route of the same kind as the API (JSON body in, JSON out, same
   database selection), which does no database work;
2. native: ``POST /automation/v1/events``, one event per request
   (cart_abandoned / purchase / signup, a third of them about a new contact);
3. Segment: ``POST /automation/segment/v1/track``, the same events as
   Segment track calls, one per request, with the write key in Basic auth;
4. the peer: base_automation's webhook (``/web/hook/<uuid>``, trigger
   ``on_webhook``) on the contacts, its record found by the payload's email,
   the call logged with its payload (``log_webhook_calls``: the peer's way of
   keeping the event) and a tag added to the contact.

Then the latency of an event to its scenario's first step: a running
scenario triggered by the ``probe`` event type whose first step adds a tag;
one probe right after the server started (before any other request), then
probes at ``--rate`` events/s for ``--latency-seconds``, each about its own
contact. A poller reads the steps done every 20 ms; a probe's latency is
from its 2xx answer to the first poll that sees its step done.

Prints requests/s, p50/p95 per phase and per run, the medians over the runs,
ours/floor (target 0.80) and ours/peer, the latency p50/p95 (target p95 < 1 s)
and the first event's latency, with the load average; checks in the
database that every acknowledged event is stored once (exit 1 otherwise).
"""

import argparse
import base64
import itertools
import json
import os
import signal
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tools.bench_ingest import print_py_spy_summary
from tools.bench_ingest import start_py_spy
from tools.bench_ingest import to_segment
from tools.dev import MODULE
from tools.ingest_client import make_event
from tools.ingest_client import setup_source
from tools.odoo_process import Workspace
from tools.odoo_process import connect
from tools.odoo_process import create_database
from tools.odoo_process import print_table
from tools.odoo_process import query

FLOOR_ADDON = "mea_bench_floor"
BENCH_ADDONS = Path(__file__).resolve().parent / "bench_addons"
KNOWN = 1000
# Beside ingest_client's source, event types and known contacts (setup_source).
SCENARIO_SETUP = """
with registry.cursor() as cr:
    env = api.Environment(cr, SUPERUSER_ID, {{"tracking_disable": True}})
    probe = env["marketing.event.type"].create({{"name": "Probe", "key": "probe"}})
    env["res.partner"].with_context(marketing_event_mute=True).create(
        [{{"name": f"Probe {{i}}", "email": f"probe{{i}}@load.example"}} for i in range({probes})]
    )
    tag = env["res.partner.category"].create({{"name": "Probed"}})
    scenario = env["marketing.scenario"].create({{
        "name": "Probe", "trigger_type": "event", "trigger_event_type_id": probe.id, "timezone": "UTC",
        "entry_policy": "every_time",
    }})
    env["marketing.scenario.node"].create(
        {{"scenario_id": scenario.id, "node_type": "tag_add", "tag_ids": [(6, 0, tag.ids)]}}
    )
    scenario.action_start()
    peer_tag = env["res.partner.category"].create({{"name": "Peer webhook"}})
    peer = env["base.automation"].create({{
        "name": "Peer webhook",
        "model_id": env.ref("base.model_res_partner").id,
        "trigger": "on_webhook",
        "log_webhook_calls": True,
        "record_getter": "model.search([('email', '=', payload.get('email'))], limit=1)",
    }})
    env["ir.actions.server"].create({{
        "name": "Tag the contact",
        "model_id": env.ref("base.model_res_partner").id,
        "base_automation_id": peer.id,
        "state": "code",
        "code": "record.write({{'category_id': [(4, %d)]}})" % peer_tag.id,
    }})
    cr.commit()
    emit_result({{
        "webhook": peer.webhook_uuid, "peer_id": peer.id, "scenario_id": scenario.id,
    }})
"""


class BenchWorkspace(Workspace):
    """The benchmark's database, with the floor addon installed from its own addons folder."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.addons = f"{self.addons},{BENCH_ADDONS}"

    def __enter__(self):
        if not self.existing:
            create_database(self.db_name, self.addons, module=f"{MODULE},{FLOOR_ADDON}")
        return self


def percentile(values, fraction):
    """In milliseconds; 0 without values."""
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * fraction), len(ordered) - 1)] * 1000 if ordered else 0


def run_phase(clients, seconds, request_of, count=None):
    """``clients`` threads, each with its keep-alive session, POST ``request_of(n)`` for ``seconds``.

    ``request_of`` returns (url, body, headers, key); returns (requests/s,
    latencies, acknowledged keys, failures). With ``count``: that many
    requests in all (a warm-up), whatever the time.
    """
    numbers = itertools.count(1_000_000 if count else 0)
    last = 1_000_000 + (count or 0)
    lock = threading.Lock()
    latencies, acknowledged, failures = [], [], []
    stop_at = time.monotonic() + seconds

    def work():
        session = requests.Session()
        while True:
            number = next(numbers)
            if (count and number >= last) or (not count and time.monotonic() >= stop_at):
                return
            url, body, headers, key = request_of(number)
            started = time.perf_counter()
            try:
                response = session.post(url, data=body, headers=headers, timeout=60)
            except requests.RequestException as error:
                with lock:
                    failures.append(type(error).__name__)
                session = requests.Session()
                continue
            elapsed = time.perf_counter() - started
            with lock:
                if response.status_code in (200, 202) and response.json().get("status", "ok") == "ok":
                    latencies.append(elapsed)
                    acknowledged.append(key)
                else:
                    failures.append(f"HTTP {response.status_code}: {response.text[:200]}")

    threads = [threading.Thread(target=work, daemon=True) for _client in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(latencies) / (time.monotonic() - started), latencies, acknowledged, failures


class StepPoller:
    """Reads the probe scenario's done steps every 20 ms; records when each contact's step was first seen done."""

    def __init__(self, db_name, scenario_id):
        self.connection = connect(db_name)
        self.scenario_id = scenario_id
        self.seen = {}  # contact id -> monotonic time its step was seen done
        self.last_id = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        with self.connection.cursor() as cursor:
            while not self.stopped.is_set():
                cursor.execute(
                    """
                    SELECT s.id, p.partner_id
                      FROM marketing_scenario_step s
                      JOIN marketing_scenario_participant p ON p.id = s.participant_id
                     WHERE s.id > %s AND s.state = 'done' AND p.scenario_id = %s
                     ORDER BY s.id
                    """,
                    [self.last_id, self.scenario_id],
                )
                now = time.monotonic()
                for step_id, partner_id in cursor.fetchall():
                    self.seen.setdefault(partner_id, now)
                    self.last_id = max(self.last_id, step_id)
                time.sleep(0.02)

    def wait_for(self, partner_ids, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not all(partner in self.seen for partner in partner_ids):
            time.sleep(0.05)

    def stop(self):
        self.stopped.set()
        self.thread.join()
        self.connection.close()


def probe_body(number, tag):
    return json.dumps(
        {
            "event": "probe",
            "event_id": f"{tag}-probe-{number}",
            "contact": {"email": f"probe{number}@load.example"},
            "params": {"n": number},
        }
    )


def measure_latency(base, headers, db_name, tag, *, first_number, rate, seconds, poller):
    """Probes at ``rate``/s from one paced client; return {contact id: accepted time} and failures."""
    contacts = dict(
        query(
            db_name,
            "SELECT email, id FROM res_partner WHERE email LIKE 'probe%%@load.example'",
        )
    )
    accepted, failures = {}, []
    session = requests.Session()
    count = int(rate * seconds)
    started = time.monotonic()
    for offset in range(count):
        number = first_number + offset
        # Paced on the clock, not on the answers: a slow answer does not lower the rate.
        pause = started + offset / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        response = session.post(f"{base}/automation/v1/events", data=probe_body(number, tag), headers=headers)
        if response.status_code == 202 and response.json()["accepted"] == 1:
            accepted[contacts[f"probe{number}@load.example"]] = time.monotonic()
        else:
            failures.append(f"HTTP {response.status_code}: {response.text[:200]}")
    poller.wait_for(list(accepted), timeout=120)
    return accepted, failures


def latencies_of(accepted, poller):
    """Seconds from each probe's answer to its step seen done; a step never seen done counts as missing."""
    values = [poller.seen[partner] - at for partner, at in accepted.items() if partner in poller.seen]
    return values, len(accepted) - len(values)


def main():  # pylint: disable=too-many-locals,too-many-statements
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20, help="duration of each throughput phase")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cron-workers", type=int, default=1)
    parser.add_argument("--rate", type=float, default=50, help="probes per second of the latency phase")
    parser.add_argument("--latency-seconds", type=float, default=20)
    parser.add_argument("--warm-up", type=int, default=20, help="requests per endpoint before each phase")
    parser.add_argument("--py-spy", metavar="FILE", help="sample the workers during the first run's native phase")
    parser.add_argument(
        "--db-filter",
        action="store_true",
        help="start the server with --db-filter, as servers of several databases run: Odoo then lists the databases"
        " on every request of every route, the floor's included",
    )
    parser.add_argument("--keep-db", action="store_true")
    options = parser.parse_args()

    tag = uuid.uuid4().hex[:6]
    probes_per_run = int(options.rate * options.latency_seconds) + 1
    with BenchWorkspace("single", keep_db=options.keep_db) as workspace:
        write_key, source_id = setup_source(workspace, KNOWN, dispatch=True)
        setup = workspace.run_script(SCENARIO_SETUP.format(probes=probes_per_run * options.runs))
        native_headers = {"Authorization": f"Bearer {write_key}", "Content-Type": "application/json"}
        basic = base64.b64encode(f"{write_key}:".encode()).decode()
        segment_headers = {"Authorization": f"Basic {basic}", "Content-Type": "application/json"}
        json_headers = {"Content-Type": "application/json"}
        peer_id = setup["peer_id"]
        logged_sql = "SELECT count(*) FROM ir_logging WHERE path = %s"
        peer_path = [f"base_automation({peer_id})"]
        [(logged_before,)] = query(workspace.db_name, logged_sql, peer_path)
        rows, acknowledged = [], {"native": [], "segment": []}
        peer_acknowledged = 0
        failures = []
        print(f"load average before the runs: {' / '.join(f'{load:.2f}' for load in os.getloadavg())}", flush=True)
        for run in range(options.runs):
            server = workspace.server(
                workers=options.workers,
                cron_threads=options.cron_workers,
                name=f"odoo-{run}",
                log_level="warn",
                db_filter=options.db_filter,
            )
            poller = StepPoller(workspace.db_name, setup["scenario_id"])
            poller.thread.start()
            server.start()
            base = server.base_url
            first_number = run * probes_per_run
            # The very first request after the start: a probe.
            first_accepted, first_failures = measure_latency(
                base,
                native_headers,
                workspace.db_name,
                tag,
                first_number=first_number,
                rate=1,
                seconds=1,
                poller=poller,
            )
            first_values, first_missing = latencies_of(first_accepted, poller)
            failures += first_failures

            def floor_request(number, base=base):
                return f"{base}/mea_bench_floor/echo", json.dumps(make_event(tag, number, KNOWN)), json_headers, None

            def native_request(number, run=run, base=base):
                event = make_event(f"{tag}-n{run}", number, KNOWN)
                return f"{base}/automation/v1/events", json.dumps(event), native_headers, event["event_id"]

            def segment_request(number, run=run, base=base):
                message = to_segment(make_event(f"{tag}-s{run}", number, KNOWN))
                return f"{base}/automation/segment/v1/track", json.dumps(message), segment_headers, message["messageId"]

            def peer_request(number, base=base):
                event = make_event(tag, number, KNOWN)
                payload = {"email": f"known{number % KNOWN}@load.example", "event": event["event"], **event["params"]}
                return f"{base}/web/hook/{setup['webhook']}", json.dumps(payload), json_headers, None

            row = {"load": os.getloadavg()[0]}
            for name, request_of in (
                ("floor", floor_request),
                ("native", native_request),
                ("segment", segment_request),
                ("peer", peer_request),
            ):
                # Each worker loads what the endpoint needs once; that is not what is measured.
                run_phase(options.clients, 0, request_of, count=options.warm_up)
                spy = (
                    start_py_spy(server.process.pid, options.py_spy)
                    if options.py_spy and not run and name == "native"
                    else None
                )
                rate, latencies, keys, phase_failures = run_phase(options.clients, options.seconds, request_of)
                if spy:
                    spy.send_signal(signal.SIGINT)
                    spy.wait()
                row[name] = rate
                row[f"{name}_p50"] = percentile(latencies, 0.5)
                row[f"{name}_p95"] = percentile(latencies, 0.95)
                failures += phase_failures
                if name in acknowledged:
                    acknowledged[name] += keys
                if name == "peer":
                    peer_acknowledged += len(keys)
            accepted, latency_failures = measure_latency(
                base,
                native_headers,
                workspace.db_name,
                tag,
                first_number=first_number + 1,
                rate=options.rate,
                seconds=options.latency_seconds,
                poller=poller,
            )
            failures += latency_failures
            values, missing = latencies_of(accepted, poller)
            poller.stop()
            server.stop()
            row.update(
                first=first_values[0] * 1000 if first_values else float("inf"),
                latency_p50=percentile(values, 0.5),
                latency_p95=percentile(values, 0.95),
                latency_missing=missing + first_missing,
                load_after=os.getloadavg()[0],
            )
            rows.append(row)
            print_table(
                f"Run {run + 1}",
                [
                    *(
                        (
                            name,
                            f"{row[name]:.0f} requests/s, p50 {row[name + '_p50']:.0f} ms, "
                            f"p95 {row[name + '_p95']:.0f} ms",
                        )
                        for name in ("floor", "native", "segment", "peer")
                    ),
                    ("first event after start -> step done", f"{row['first']:.0f} ms"),
                    (
                        f"event -> step done at {options.rate:.0f}/s",
                        f"p50 {row['latency_p50']:.0f} ms, p95 {row['latency_p95']:.0f} ms, "
                        f"{row['latency_missing']} never done",
                    ),
                    ("load average (1 min) before / after", f"{row['load']:.2f} / {row['load_after']:.2f}"),
                ],
            )

        stored = {}
        for name in ("native", "segment"):
            [(count, distinct)] = query(
                workspace.db_name,
                "SELECT count(*), count(DISTINCT idempotency_key) FROM marketing_event"
                " WHERE source_id = %s AND idempotency_key = ANY(%s)",
                [source_id, acknowledged[name]],
            )
            stored[name] = (count, distinct)
        [(logged,)] = query(workspace.db_name, logged_sql, peer_path)
        logged -= logged_before

        def median(key):
            return statistics.median(row[key] for row in rows)

        print_table(
            f"MEDIANS over {len(rows)} runs ({options.clients} clients, {options.workers} HTTP workers, gevent worker, "
            f"{options.cron_workers} cron worker(s), {options.seconds:.0f} s per phase"
            f"{', --db-filter' if options.db_filter else ''})",
            [
                *(
                    (
                        name,
                        f"{median(name):.0f} requests/s, p50 {median(name + '_p50'):.0f} ms, "
                        f"p95 {median(name + '_p95'):.0f} ms",
                    )
                    for name in ("floor", "native", "segment", "peer")
                ),
                ("native / floor (target >= 0.80)", f"{median('native') / median('floor'):.2f}"),
                ("segment / floor (target >= 0.80)", f"{median('segment') / median('floor'):.2f}"),
                ("native / peer", f"{median('native') / median('peer'):.2f}"),
                ("segment / peer", f"{median('segment') / median('peer'):.2f}"),
                ("first event after start -> step done", f"{median('first'):.0f} ms"),
                (
                    f"event -> step done at {options.rate:.0f}/s (target p95 < 1000 ms)",
                    f"p50 {median('latency_p50'):.0f} ms, p95 {median('latency_p95'):.0f} ms",
                ),
                *(
                    (
                        f"acknowledged {name} events stored (rows, distinct)",
                        f"{stored[name]} of {len(acknowledged[name])}",
                    )
                    for name in ("native", "segment")
                ),
                ("peer calls logged", f"{logged} of {peer_acknowledged} (automation {peer_id})"),
                ("load average (1, 5, 15 min)", " / ".join(f"{load:.2f}" for load in os.getloadavg())),
            ],
        )
        if options.py_spy:
            print_py_spy_summary(options.py_spy)
        problems = list(failures[:5])
        for name in ("native", "segment"):
            if stored[name] != (len(acknowledged[name]), len(acknowledged[name])):
                problems.append(f"{name}: {stored[name]} rows stored for {len(acknowledged[name])} acknowledged")
        if any(row["latency_missing"] for row in rows):
            problems.append("some probes never reached their step")
        for problem in problems:
            print(f"FAILED: {problem}")
        if problems:
            return 1
        print("\nEvery acknowledged event stored once; every probe reached its scenario's first step.")
        return 0


if __name__ == "__main__":
    sys.exit(main())
