#!/usr/bin/env python3
# pylint: disable=print-used
"""Scenario engine benchmark: audience entry and step throughput.

    python3 tools/bench_scenario.py [--contacts 100000] [--database NAME] [--keep-db]

With ``--database`` it uses an existing database where the module is installed;
otherwise it creates one (no demo data) and drops it at the end unless
``--keep-db``. It inserts N contacts, starts a scenario with a "now" trigger
whose tree is *tag → score → condition (email domain) → yes: tag / no: wait 1 h*,
then runs the schedule cron (audience entry, batches of 1,000 contacts, one
commit per batch as the cron runner does) and the advance cron (batches of 500
steps) until nothing is due, and prints contacts/s and steps/s.
"""

import argparse
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tools.odoo_process import Workspace

BENCH_SCRIPT = """
import time
tag = "bench-" + {run!r}
with registry.cursor() as cr:
    env = api.Environment(cr, SUPERUSER_ID, {{"tracking_disable": True}})
    cr.execute(
        "INSERT INTO res_partner (name, email, email_normalized, ref, active, type, is_company,"
        " create_date, write_date)"
        " SELECT 'Bench ' || g, 'bench' || g || '@bench.example', 'bench' || g || '@bench.example', %s, TRUE,"
        " 'contact', FALSE, now(), now() FROM generate_series(1, %s) g",
        [tag, {contacts}],
    )
    category = env["res.partner.category"].create({{"name": tag}})
    scenario = env["marketing.scenario"].create({{
        "name": tag, "trigger_type": "now", "timezone": "UTC", "entry_policy": "every_time",
        "audience_domain": repr([("ref", "=", tag)]),
    }})
    Node = env["marketing.scenario.node"]
    first = Node.create({{"scenario_id": scenario.id, "node_type": "tag_add", "tag_ids": [(6, 0, category.ids)]}})
    score = Node.create({{"scenario_id": scenario.id, "node_type": "score", "parent_id": first.id,
                         "score_delta": 1, "score_reason": "bench"}})
    condition = Node.create({{"scenario_id": scenario.id, "node_type": "condition", "parent_id": score.id,
                             "condition_type": "domain", "condition_domain": "[('email', 'ilike', '0@')]"}})
    Node.create({{"scenario_id": scenario.id, "node_type": "tag_remove", "parent_id": condition.id,
                 "branch": "yes", "tag_ids": [(6, 0, category.ids)]}})
    Node.create({{"scenario_id": scenario.id, "node_type": "wait", "parent_id": condition.id,
                 "branch": "no", "wait_amount": 1, "wait_unit": "hours"}})
    scenario.action_start()
    cr.commit()

def run_cron(method):
    total, started = 0, time.perf_counter()
    while True:
        with registry.cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {{}})
            done = method(env)
        if not done:
            return total, time.perf_counter() - started
        total += done

entered, entry_seconds = run_cron(lambda env: env["marketing.scenario"]._cron_schedule())
steps, advance_seconds = run_cron(lambda env: env["marketing.scenario.step"]._cron_advance())
with registry.cursor() as cr:
    cr.execute(
        "SELECT s.state, count(*) FROM marketing_scenario_step s JOIN marketing_scenario sc ON sc.id = s.scenario_id"
        " WHERE sc.name->>'en_US' = %s GROUP BY s.state ORDER BY s.state",
        [tag],
    )
    states = dict(cr.fetchall())
emit_result({{"entered": entered, "entry_seconds": entry_seconds, "steps": steps,
              "advance_seconds": advance_seconds, "states": states}})
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--database", help="an existing database with the module installed")
    parser.add_argument("--keep-db", action="store_true")
    options = parser.parse_args()
    with Workspace("bench", keep_db=options.keep_db, database=options.database) as workspace:
        result = workspace.run_script(BENCH_SCRIPT.format(run=uuid.uuid4().hex[:6], contacts=options.contacts))
    entered, seconds = result["entered"], result["entry_seconds"]
    print(f"ENTRY {entered} contacts in {seconds:.1f} s: {entered / seconds:.0f} contacts/s")
    steps, seconds = result["steps"], result["advance_seconds"]
    print(f"ADVANCE {steps} steps in {seconds:.1f} s: {steps / seconds:.0f} steps/s")
    print("STEPS", result["states"])


if __name__ == "__main__":
    main()
