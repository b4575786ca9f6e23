#!/usr/bin/env python3
# pylint: disable=print-used
"""Segment benchmark: counting a two-rule segment and keeping its members current.

    python3 tools/bench_segment.py [--contacts 100000] [--events 1000000] [--database NAME] [--keep-db]

With ``--database`` it uses an existing database where the module is installed;
otherwise it creates one (no demo data) and drops it at the end unless
``--keep-db``. It inserts N contacts and M processed events in bulk SQL (five
segmentation event types, a year of history, a numeric ``total`` parameter),
builds the segment "did purchase with total > 100 at least 2 times in the last
90 days AND did not open an email in the last 60 days", then prints the time of
a count (median of 3), of a full membership pass (the hourly cron) and of the
incremental update of one dispatch batch (1,000 events of 1,000 contacts).
"""

import argparse
import statistics
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tools.odoo_process import Workspace

BENCH_SCRIPT = """
import statistics
import time
tag = "bench-" + {run!r}
contacts, events = {contacts}, {events}
with registry.cursor() as cr:
    env = api.Environment(cr, SUPERUSER_ID, {{"tracking_disable": True, "marketing_event_mute": True}})
    cr.execute(
        "INSERT INTO res_partner (name, email, ref, active, type, is_company, create_date, write_date)"
        " SELECT 'Bench ' || g, 'bench' || g || '@bench.example', %s, TRUE, 'contact', FALSE, now(), now()"
        " FROM generate_series(1, %s) g RETURNING id",
        [tag, contacts],
    )
    partner_ids = sorted(row[0] for row in cr.fetchall())
    types = env["marketing.event.type"].create([
        {{"name": f"{{tag}} {{key}}", "key": f"{{tag}}_{{key}}", "use_for_segmentation": True}}
        for key in ("purchase", "opened", "clicked", "visit", "cart")
    ])
    cr.execute(
        "INSERT INTO marketing_event (type_id, event_key, partner_id, company_id, params, occurred_at, received_at,"
        " state)"
        " SELECT (%(types)s::int[])[1 + g %% 5], 'bench', (%(partners)s::int[])[1 + (g * 7919) %% %(contacts)s],"
        " %(company)s, jsonb_build_object('total', (g * 104729) %% 500, 'channel', 'web'),"
        " now() - make_interval(secs => ((g * 15485863) %% (365 * 86400))::int), now(), 'processed'"
        " FROM generate_series(1::bigint, %(events)s) g",
        {{"types": types.ids, "partners": partner_ids, "contacts": contacts, "company": env.company.id,
          "events": events}},
    )
    cr.execute("ANALYZE marketing_event")
    cr.execute("ANALYZE res_partner")
    purchase, opened = types[0], types[1]
    segment = env["marketing.segment"].with_context(tracking_disable=True).create({{
        "name": tag,
        "contact_domain": repr([("ref", "=", tag)]),
        "rule_ids": [
            (0, 0, {{"event_type_id": purchase.id, "params_filter": "total > 100", "threshold": 2,
                    "window": "days", "window_days": 90}}),
            (0, 0, {{"event_type_id": opened.id, "negate": "did_not", "window": "days", "window_days": 60}}),
        ],
    }})
    cr.commit()
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        count = segment._count_matching()
        timings.append(time.perf_counter() - started)
    cr.execute("DELETE FROM marketing_segment_member WHERE segment_id = %s", [segment.id])
    started = time.perf_counter()
    changes = segment._sync_members(emit=False)
    full_pass = time.perf_counter() - started
    batch = partner_ids[:: max(1, contacts // 1000)][:1000]
    started = time.perf_counter()
    segment._sync_members(set(batch), emit=False)
    emit_result({{"count": count, "timings": timings, "stored": len(changes.get(segment.id, ([], []))[0]),
                  "full_pass": full_pass, "batch": len(batch), "batch_seconds": time.perf_counter() - started}})
    cr.rollback()
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--database", help="an existing database with the module installed")
    parser.add_argument("--keep-db", action="store_true")
    options = parser.parse_args()
    with Workspace("bench", keep_db=options.keep_db, database=options.database) as workspace:
        code = BENCH_SCRIPT.format(run=uuid.uuid4().hex[:6], contacts=options.contacts, events=options.events)
        result = workspace.run_script(code)
    timings = ", ".join(f"{seconds:.3f}" for seconds in result["timings"])
    print(
        f"COUNT {result['count']} members of {options.contacts} contacts over {options.events} events:"
        f" {statistics.median(result['timings']):.3f} s (median of 3: {timings})"
    )
    print(f"FULL PASS {result['stored']} members stored: {result['full_pass']:.3f} s")
    print(f"BATCH {result['batch']} contacts of one dispatch batch brought up to date: {result['batch_seconds']:.3f} s")


if __name__ == "__main__":
    main()
