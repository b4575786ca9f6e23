#!/usr/bin/env python3
# pylint: disable=print-used
# (a command-line tool: its output is for the person who runs it)
"""Retention purge benchmark: ingestion and the engine while the purge deletes a million rows.

    python3 tools/bench_purge.py [--rows 1000000] [--runs 3] [--events 10000] [--batch 20] [--engine-batches 5]
                                 [--time-share 10]

Each run generates with SQL ``--rows`` processed events received 14 months ago
and ``--rows`` done steps of finished runs (a tenth as many participants,
ended 7 months ago): everything the default retention periods let go. Then it
measures twice, the old rows in place both times:

- *without*: ``--events`` events posted to the native API in requests of
  ``--batch`` events by two clients (Odoo with 2 workers, crons off), while
  the engine, in a process of its own, dispatches ``--engine-batches``
  batches of 1,000 events entering a scenario and advances the steps they
  schedule (batches of 500), one commit per batch as the cron runner does;
- *during*: the same, while a third process runs the retention cron as Odoo's
  cron runner calls it (up to ten calls per job run, a commit after each, the
  cron's id in the context): it pauses after each batch to keep the setting's
  ``--time-share`` percent of the time. Once the load ends, the rest of the
  purge runs at full speed (a 100 % share), for the sizes below.

It prints the ingestion p95 latency and the engine's median batch times
without and during the purge (ratio during/without), the purge's own speed
during the load and in all,
whether it was still running when the load ended, and the tables' size
(``pg_total_relation_size``) before the rows were generated, after, after the
purge and after a plain ``VACUUM``. The last lines are the medians of the runs.
The database is dropped at the end unless ``--keep-db``.
"""

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tools.bench_ingest import make_events
from tools.bench_ingest import percentile
from tools.bench_ingest import post_batches
from tools.ingest_client import setup_source
from tools.odoo_process import Workspace
from tools.odoo_process import connect
from tools.odoo_process import script_result
from tools.odoo_process import start_script

TABLES = ("marketing_event", "marketing_scenario_step", "marketing_scenario_participant")
KNOWN_CONTACTS = 2000


# ----------------------------------------------------------------------
# Workers: run in a subprocess with Odoo loaded on the database (``registry``)
# ----------------------------------------------------------------------


def worker_setup(registry):
    """The scenario the engine works on during the measures (bench_engine's scale flow: tag → score)."""
    from tools.bench_engine import _scale_setup  # noqa: PLC0415
    from tools.bench_fill import env_of  # noqa: PLC0415

    with registry.cursor() as cr:
        return _scale_setup(env_of(cr), "purge-" + uuid.uuid4().hex[:8]).id


def worker_fill(registry, rows):
    """``rows`` processed events received 14 months ago and ``rows`` done steps of runs ended 7 months ago."""
    from tools.bench_fill import fill_history  # noqa: PLC0415

    return fill_history(registry, rows, "expired")


def worker_engine(registry, event_type_id, batches):
    """Dispatch ``batches`` batches of 1,000 events entering the scenario, then advance its steps: batch seconds."""
    from tools.bench_engine import _run_batches  # noqa: PLC0415
    from tools.bench_fill import insert_contacts  # noqa: PLC0415

    tag = "engine-" + uuid.uuid4().hex[:8]
    with registry.cursor() as cr:
        insert_contacts(cr, tag, batches * 1000)
        cr.execute(
            "INSERT INTO marketing_event (type_id, event_key, partner_id, params, occurred_at, received_at, state)"
            " SELECT t.id, t.key, p.id, '{}'::jsonb, now() at time zone 'UTC', now() at time zone 'UTC', 'pending'"
            " FROM res_partner p, marketing_event_type t WHERE p.ref = %s AND t.id = %s",
            [tag, event_type_id],
        )
    # Ingested events are pending too: the dispatcher takes them in id order
    # with the scenario's, batch after batch, as it would in production.
    dispatch = _run_batches(registry, lambda env: env["marketing.event"]._cron_dispatch())
    advance = _run_batches(registry, lambda env: env["marketing.scenario.step"]._cron_advance())
    return {
        "dispatch_ms": statistics.median(batch[1] for batch in dispatch) * 1000,
        "advance_ms": statistics.median(batch[1] for batch in advance) * 1000,
        "dispatch_batches": len(dispatch),
        "advance_batches": len(advance),
    }


def worker_purge(registry, time_share, stop_pacing):
    """Run the retention cron as Odoo's cron runner does until nothing is left: rows deleted, seconds, batches.

    Job runs of up to ten calls on one cursor, a commit after each, with the
    cron's id in the context (what makes the purge pause, keeping
    ``time_share`` percent of the time). Once the file ``stop_pacing``
    exists (the load is over), the rest goes at full speed.
    """
    from odoo.addons.base.models.ir_cron import MAX_BATCH_PER_CRON_JOB  # noqa: PLC0415
    from odoo.addons.marketing_event_automation.models.marketing_retention import PURGE_TIME_SHARE_PARAM  # noqa: PLC0415
    from tools.bench_fill import env_of  # noqa: PLC0415

    def set_share(share):
        with registry.cursor() as cr:
            env = env_of(cr)
            env["ir.config_parameter"].set_param(PURGE_TIME_SHARE_PARAM, str(share))
            # Flushed here: the commit flushes only the environments still
            # referenced, and a write to an existing parameter is pending.
            env.flush_all()
            return env.ref("marketing_event_automation.ir_cron_retention_purge").id

    cron_id = set_share(time_share)
    paced = None  # (rows, seconds, batches) when the load ended
    unpaced_pause = None  # the pause a 1 s batch gets once the share is 100 %: must be 0
    rows, batches, queries = 0, 0, set()
    started = time.perf_counter()
    done = True
    while done:
        if paced is None and Path(stop_pacing).exists():
            paced = (rows, time.perf_counter() - started, batches)
            set_share(100)
        with registry.cursor() as cr:
            env = env_of(cr, {"cron_id": cron_id})
            if paced is not None and unpaced_pause is None:
                unpaced_pause = env["marketing.retention"]._purge_pause(1.0)
            for _call in range(MAX_BATCH_PER_CRON_JOB):
                count_before = cr.sql_log_count
                done = env["marketing.retention"]._cron_purge()
                env.flush_all()
                cr.commit()
                if not done:
                    break
                queries.add(cr.sql_log_count - count_before)
                rows += done
                batches += 1
    seconds = time.perf_counter() - started
    set_share(time_share)
    paced_rows, paced_seconds, paced_batches = paced or (rows, seconds, batches)
    return {
        "rows": rows,
        "seconds": seconds,
        "batches": batches,
        "paced_rows_per_s": paced_rows / paced_seconds if paced_seconds else 0.0,
        "paced_batches": paced_batches,
        "unpaced_rows_per_s": (rows - paced_rows) / (seconds - paced_seconds) if seconds > paced_seconds else 0.0,
        "unpaced_pause": unpaced_pause,
        "outlasted_load": paced is not None,
        "queries_per_batch": sorted(queries),
    }


# ----------------------------------------------------------------------
# Orchestration
# ----------------------------------------------------------------------


def start_worker(workspace, call):
    return start_script(workspace.db_name, workspace.addons, f"from tools.bench_purge import *\nemit_result({call})\n")


def sizes(db_name):
    with connect(db_name) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT relname, pg_total_relation_size(oid) FROM pg_class WHERE relname IN %s", [TABLES])
        found = dict(cursor.fetchall())
    connection.close()
    return {table: found.get(table, 0) for table in TABLES}


def vacuum(db_name):
    # Not in a `with connection` block: psycopg2 opens a transaction there, which VACUUM refuses.
    connection = connect(db_name)
    with connection.cursor() as cursor:
        for table in TABLES:
            cursor.execute(f"VACUUM (ANALYZE) {table}")  # constant table names
    connection.close()


def megabytes(table_sizes):
    return sum(table_sizes.values()) / 2**20


def load(workspace, options, ingest, event_type_id, tag):
    """Ingestion from the clients and the engine in its process, at once: p95 (ms) and the engine's figures."""
    engine = start_worker(workspace, f"worker_engine(registry, {event_type_id}, {options.engine_batches})")
    url, headers = ingest
    events = make_events(options.events, KNOWN_CONTACTS, tag)
    _accepted, _wall, latencies = post_batches(
        url, headers, lambda batch: {"events": batch}, events, batch_size=options.batch, clients=2
    )
    figures = script_result(engine, timeout=3600)
    return {"p95_ms": percentile(latencies, 0.95) * 1000, **figures}


def measure_run(workspace, options, ingest, event_type_id, run):
    db_name = workspace.db_name
    before = sizes(db_name)
    fill = script_result(start_worker(workspace, f"worker_fill(registry, {options.rows})"), timeout=7200)
    filled = sizes(db_name)
    without = load(workspace, options, ingest, event_type_id, f"r{run}w-{uuid.uuid4().hex[:6]}")
    stop_pacing = workspace.log_dir / f"purge-load-ended-{run}"
    purge = start_worker(workspace, f"worker_purge(registry, {options.time_share}, {str(stop_pacing)!r})")
    time.sleep(1)  # the purge's registry is loaded and its first batch under way
    load_started = time.perf_counter()
    during = load(workspace, options, ingest, event_type_id, f"r{run}d-{uuid.uuid4().hex[:6]}")
    load_seconds = time.perf_counter() - load_started
    stop_pacing.touch()
    purged = script_result(purge, timeout=7200)
    after = sizes(db_name)
    vacuum(db_name)
    vacuumed = sizes(db_name)
    figures = {
        "p95_ratio": during["p95_ms"] / without["p95_ms"],
        "dispatch_ratio": during["dispatch_ms"] / without["dispatch_ms"],
        "advance_ratio": during["advance_ms"] / without["advance_ms"],
        "purge_rows_per_s": purged["rows"] / purged["seconds"],
        "paced_rows_per_s": purged["paced_rows_per_s"],
        "purge_covered_load": purged["outlasted_load"],
    }
    print(
        f"run {run} (load {os.getloadavg()[0]:.2f}): generated {options.rows:,} events + {options.rows:,} steps"
        f" in {fill['seconds']:.0f} s\n"
        f"  ingestion p95 ({options.batch}-event requests): {without['p95_ms']:.0f} ms without,"
        f" {during['p95_ms']:.0f} ms during = {figures['p95_ratio']:.2f}x\n"
        f"  dispatch batch (1,000 events): {without['dispatch_ms']:.0f} ms without, {during['dispatch_ms']:.0f} ms"
        f" during = {figures['dispatch_ratio']:.2f}x; advance batch (500 steps): {without['advance_ms']:.0f} ms"
        f" without, {during['advance_ms']:.0f} ms during = {figures['advance_ratio']:.2f}x\n"
        f"  purge: {figures['paced_rows_per_s']:,.0f} rows/s during the load ({options.time_share}% of the time,"
        f" {purged['paced_batches']} batches), then {purged['unpaced_rows_per_s']:,.0f} rows/s at full speed (a 1 s"
        f" batch's pause there: {purged['unpaced_pause']} s); in all {purged['rows']:,} rows in"
        f" {purged['seconds']:.0f} s = {figures['purge_rows_per_s']:,.0f} rows/s, {purged['batches']} batches,"
        f" queries/batch {purged['queries_per_batch']}; the load lasted {load_seconds:.0f} s"
        f"{'' if figures['purge_covered_load'] else ' (the purge ended before the load: partly measured without)'}\n"
        f"  size of {', '.join(TABLES)}: {megabytes(before):.0f} MB before, {megabytes(filled):.0f} MB generated,"
        f" {megabytes(after):.0f} MB after the purge, {megabytes(vacuumed):.0f} MB after VACUUM",
        flush=True,
    )
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="old events, and old steps, generated per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=10_000, help="events posted in each measure")
    parser.add_argument("--batch", type=int, default=20, help="events per API request")
    parser.add_argument("--engine-batches", type=int, default=5, help="dispatch batches of 1,000 in each measure")
    parser.add_argument(
        "--time-share", type=int, default=10, help="the purge's share of the time during the load, percent (setting)"
    )
    parser.add_argument("--keep-db", action="store_true")
    options = parser.parse_args()
    with Workspace("bench_purge", keep_db=options.keep_db) as workspace:
        write_key, _source_id = setup_source(workspace, KNOWN_CONTACTS)
        event_type_id = script_result(start_worker(workspace, "worker_setup(registry)"))
        server = workspace.server(name="bench-purge", workers=2, log_level="warn", db_filter=False).start()
        ingest = (f"{server.base_url}/automation/v1/events", {"Authorization": f"Bearer {write_key}"})
        # Warm the workers (registry, routing map) outside the measure.
        warmup = make_events(options.batch * 20, KNOWN_CONTACTS, "warmup")
        post_batches(ingest[0], ingest[1], lambda batch: {"events": batch}, warmup, batch_size=options.batch, clients=2)
        results = [measure_run(workspace, options, ingest, event_type_id, run) for run in range(1, options.runs + 1)]
    medians = {key: statistics.median(result[key] for result in results) for key in results[0]}
    print(
        f"MEDIAN of {options.runs} (load {os.getloadavg()[0]:.2f}), purging {options.rows:,} events and"
        f" {options.rows:,} steps: during/without ingestion p95 {medians['p95_ratio']:.2f}x, dispatch batch"
        f" {medians['dispatch_ratio']:.2f}x, advance batch {medians['advance_ratio']:.2f}x (target 1.2x);"
        f" purge {medians['paced_rows_per_s']:,.0f} rows/s at {options.time_share}% of the time,"
        f" {medians['purge_rows_per_s']:,.0f} rows/s in all"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
