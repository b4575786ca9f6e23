#!/usr/bin/env python3
# pylint: disable=print-used
"""Load: sustained ingestion for several minutes with the server's memory flat.

    python3 tools/load_ingest.py [--minutes 5] [--clients 4] [--batch 500] [--rate 0] [--warmup 60]

A throwaway database with the module and an API source; Odoo runs with
``--workers=2`` (no cron worker unless ``--dispatch``, like the ingestion
benchmark). Client threads post batches of events to the native API for N
minutes, as fast as the server answers (the benchmark's rate) or at
``--rate`` events/s. The resident memory (RSS) of the server's whole process
tree is sampled every ``--sample`` seconds: master and workers (HTTP, cron),
and apart the gevent worker (Odoo respawns it in a loop when it cannot
start). Prints the series, the events/s, and the growth of master + workers
from the end of the warm-up to the end; exits 1 when it exceeds
``--max-growth-mb``, or when an acknowledged event is missing from the log.
"""

import argparse
import itertools
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tools.ingest_client import Ledger
from tools.ingest_client import SessionHolder
from tools.ingest_client import make_event
from tools.ingest_client import post_until_answered
from tools.ingest_client import setup_source
from tools.odoo_process import Workspace
from tools.odoo_process import print_table
from tools.odoo_process import query
from tools.odoo_process import verdict

MB = 1024 * 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rate", type=float, default=0, help="events/s for all clients; 0: as fast as answered")
    parser.add_argument("--known", type=int, default=10000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dispatch", action="store_true", help="run the dispatcher in a cron worker as well")
    parser.add_argument("--sample", type=float, default=15, help="seconds between RSS samples")
    parser.add_argument("--warmup", type=float, default=60, help="seconds before the RSS baseline is taken")
    parser.add_argument("--max-growth-mb", type=float, default=64)
    parser.add_argument("--keep-db", action="store_true")
    options = parser.parse_args()

    tag = uuid.uuid4().hex[:6]
    with Workspace("load", keep_db=options.keep_db) as workspace:
        write_key, source_id = setup_source(workspace, options.known, dispatch=options.dispatch)
        server = workspace.server(workers=options.workers, cron_threads=1 if options.dispatch else 0)
        server.start()
        ledger = Ledger()
        counter = itertools.count()
        counter_lock = threading.Lock()
        stop = threading.Event()
        duration = options.minutes * 60
        started = time.monotonic()
        samples = []  # (seconds, RSS of the serving processes, RSS of the gevent worker, events acknowledged)
        pids_seen = set()

        def sample():
            pids_seen.update(server.pids())
            roles = server.rss_by_role()
            serving = roles["main"] + roles["workers"]
            samples.append((time.monotonic() - started, serving, roles["gevent"], len(ledger.answers)))
            print(
                f"  {samples[-1][0]:6.0f}s  RSS master + workers {serving / MB:7.1f} MB "
                f"(master {roles['main'] / MB:5.1f}, workers {roles['workers'] / MB:6.1f}; "
                f"gevent {roles['gevent'] / MB:5.1f})  {samples[-1][3]:>9,} events",
                flush=True,
            )

        def client():
            holder = SessionHolder()
            while not stop.is_set():
                with counter_lock:
                    number = next(counter)
                start = number * options.batch
                if options.rate:
                    # Pace all clients together: batch N is due at N * batch / rate.
                    delay = started + start / options.rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                events = [make_event(tag, index, options.known) for index in range(start, start + options.batch)]
                post_until_answered(holder, lambda: server.base_url, write_key, events, ledger, timeout=120)

        print(
            f"Posting for {options.minutes:g} minutes ({options.clients} clients, batches of {options.batch}, "
            f"{'as fast as answered' if not options.rate else f'{options.rate:g} events/s'}); RSS of the server:",
            flush=True,
        )
        sample()
        threads = [threading.Thread(target=client) for _ in range(options.clients)]
        for thread in threads:
            thread.start()
        next_sample = options.sample
        warmup_sample = None
        while (elapsed := time.monotonic() - started) < duration:
            time.sleep(max(0.0, min(next_sample, duration) - elapsed))
            if time.monotonic() - started >= next_sample:
                sample()
                next_sample += options.sample
                if warmup_sample is None and samples[-1][0] >= options.warmup:
                    warmup_sample = samples[-1]
        stop.set()
        for thread in threads:
            thread.join()
        sample()
        wall = time.monotonic() - started

        [(stored,)] = query(workspace.db_name, "SELECT count(*) FROM marketing_event WHERE source_id = %s", [source_id])
        acknowledged = ledger.acknowledged()
        baseline = warmup_sample or samples[0]
        end = samples[-1]
        growth = (end[1] - baseline[1]) / MB
        after_warmup = [rss for seconds, rss, _gevent, _ack in samples if seconds >= baseline[0]]
        latencies = sorted(ledger.latencies)
        p95 = latencies[int(0.95 * (len(latencies) - 1))] if latencies else 0
        print_table(
            f"RESULTS over {wall / 60:.1f} minutes",
            [
                ("events sent / acknowledged / stored", f"{len(ledger.sent):,} / {len(acknowledged):,} / {stored:,}"),
                ("rate, events/s", f"{len(acknowledged) / wall:,.0f}"),
                (
                    "request latency p50 / p95, ms",
                    f"{statistics.median(latencies) * 1000:.0f} / {p95 * 1000:.0f}" if latencies else "-",
                ),
                ("unanswered attempts", dict(ledger.unanswered) or 0),
                ("RSS master + workers at start", f"{samples[0][1] / MB:.1f} MB"),
                (f"RSS after warm-up ({baseline[0]:.0f}s)", f"{baseline[1] / MB:.1f} MB"),
                ("RSS at the end", f"{end[1] / MB:.1f} MB"),
                ("RSS min / max after warm-up", f"{min(after_warmup) / MB:.1f} / {max(after_warmup) / MB:.1f} MB"),
                ("growth after warm-up", f"{growth:+.1f} MB (limit {options.max_growth_mb:g} MB)"),
                ("server processes seen (a worker recycled, the gevent worker respawned)", len(pids_seen)),
            ],
        )
        failures = []
        if growth > options.max_growth_mb:
            failures.append(f"RSS grew {growth:.1f} MB after warm-up")
        if stored != len(ledger.sent) or len(acknowledged) != len(ledger.sent):
            failures.append(f"{len(ledger.sent)} sent, {len(acknowledged)} acknowledged, {stored} stored")
        if ledger.errors:
            failures.append(f"{len(ledger.errors)} 4xx answers, e.g. {ledger.errors[:2]}")
        return verdict(failures, "memory flat after warm-up, every event stored")


if __name__ == "__main__":
    sys.exit(main())
