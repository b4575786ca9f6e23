#!/usr/bin/env python3
# pylint: disable=print-used
"""Concurrency: two Odoo servers (and extra step runners) on one database, one scenario, scores changed from two sides.

    python3 tools/fault_two_servers.py [--contacts 1000] [--events-per-contact 3] [--runners 2]

A throwaway database with N contacts entered in a "now" scenario whose tree is
*email → score +5 → score +2*, and a score rule *purchase: +10*. Two Odoo
servers run on the database, each with two cron threads (the advance and
dispatch crons run wherever a cron thread takes them). Odoo never runs one
cron job twice at a time, so ``--runners`` more processes call
``_cron_advance`` in a loop beside them: the steps are then taken by several
transactions at once, which is what ``FOR UPDATE SKIP LOCKED`` must make safe.
Meanwhile clients post E purchase events per contact, half of them to each
server, so the dispatcher's score rule and the scenario's score nodes change
the same contacts' scores concurrently.

Checks: each participant has exactly one step per node, all done; one queued
mail per contact; every contact's score is exactly 5 + 2 + 10 * E (no lost
update) and its score history adds up (each line starts from the previous
line's score); the step executions counted by the crons' progress and the
runners equal the steps plus the retries the engine recorded; every event
processed. Exits 1 if any check fails.
"""

import argparse
import random
import sys
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tools.ingest_client import Ledger
from tools.ingest_client import SessionHolder
from tools.ingest_client import post_until_answered
from tools.odoo_process import Workspace
from tools.odoo_process import lingering_locks
from tools.odoo_process import print_table
from tools.odoo_process import query
from tools.odoo_process import script_result
from tools.odoo_process import start_script
from tools.odoo_process import trigger_cron
from tools.odoo_process import verdict

ADVANCE_CRON = "marketing_event_automation.ir_cron_scenario_advance"
DISPATCH_CRON = "marketing_event_automation.ir_cron_dispatch_events"
NODE_DELTAS = (5, 2)
RULE_POINTS = 10

SETUP = """
with registry.cursor() as cr:
    env = api.Environment(cr, SUPERUSER_ID, {{"tracking_disable": True}})
    cr.execute(
        "INSERT INTO res_partner (name, email, email_normalized, ref, active, type, is_company,"
        " create_date, write_date)"
        " SELECT 'Two ' || g, 'two' || g || '@faults.example', 'two' || g || '@faults.example', 'faults2', TRUE,"
        " 'contact', FALSE, now(), now() FROM generate_series(1, %s) g",
        [{contacts}],
    )
    source = env["marketing.event.source"].create({{"name": "Two servers", "rate_limit": 0}})
    key = source._generate_write_key()
    purchase = env["marketing.event.type"].create({{"name": "Purchase", "key": "purchase"}})
    env["marketing.engagement.rule"].create({{"name": "Purchase", "event_type_id": purchase.id, "points": {points}}})
    scenario = env["marketing.scenario"].create({{
        "name": "Two servers", "trigger_type": "now", "timezone": "UTC",
        "entry_policy": "once", "audience_domain": repr([("ref", "=", "faults2")]),
    }})
    Node = env["marketing.scenario.node"]
    email = Node.create({{"scenario_id": scenario.id, "node_type": "email", "name": "Two servers mail"}})
    parent, score_nodes = email, []
    for delta in {deltas!r}:
        parent = Node.create({{"scenario_id": scenario.id, "node_type": "score", "parent_id": parent.id,
                              "score_delta": delta, "score_reason": "two servers"}})
        score_nodes.append(parent.id)
    email._create_missing_mailings()
    email.mailing_id.write({{"body_html": "<p>Hello</p>", "keep_archives": True}})
    env["ir.cron"].search([]).write({{"active": False}})
    env.ref({advance!r}).write({{"active": True, "code": "model._cron_advance(batch_size={batch})"}})
    env.ref({dispatch!r}).write({{"active": True}})
    scenario.action_start()
    cr.commit()
    while scenario._cron_schedule():
        cr.commit()
    cr.execute("SELECT email_normalized, id FROM res_partner WHERE ref = 'faults2'")
    partners = dict(cr.fetchall())
    emit_result({{"scenario": scenario.id, "email": email.id, "scores": score_nodes, "mailing": email.mailing_id.id,
                  "key": key, "partners": partners,
                  "crons": [env.ref({advance!r}).id, env.ref({dispatch!r}).id]}})
"""

RUNNER = """
import time
import psycopg2
stats = {{"batches": 0, "steps": 0, "conflicts": 0}}
deadline = time.monotonic() + {timeout}
while time.monotonic() < deadline:
    try:
        with registry.cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {{}})
            done = env["marketing.scenario.step"]._cron_advance(batch_size={batch})
    except psycopg2.extensions.TransactionRollbackError:
        # What Odoo's cron runner does with any failure: roll back; the steps stay scheduled.
        stats["conflicts"] += 1
        continue
    if done:
        stats["batches"] += 1
        stats["steps"] += done
        continue
    with registry.cursor() as cr:
        cr.execute("SELECT count(*) FROM marketing_scenario_step WHERE scenario_id = %s AND state = 'scheduled'",
                   [{scenario}])
        if not cr.fetchone()[0]:
            break
    time.sleep(0.5)
emit_result(stats)
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=1000)
    parser.add_argument("--events-per-contact", type=int, default=3)
    parser.add_argument("--runners", type=int, default=2, help="extra processes calling _cron_advance in a loop")
    parser.add_argument("--batch", type=int, default=100, help="steps per advance batch")
    parser.add_argument("--event-batch", type=int, default=50, help="events per request")
    parser.add_argument("--timeout", type=int, default=900, help="seconds to wait for everything to be processed")
    parser.add_argument("--keep-db", action="store_true")
    options = parser.parse_args()

    with Workspace("faulttwo", keep_db=options.keep_db) as workspace:
        db = workspace.db_name
        setup = workspace.run_script(
            SETUP.format(
                contacts=options.contacts,
                points=RULE_POINTS,
                deltas=NODE_DELTAS,
                advance=ADVANCE_CRON,
                dispatch=DISPATCH_CRON,
                batch=options.batch,
            )
        )
        scenario_id = setup["scenario"]
        node_ids = [setup["email"], *setup["scores"]]
        [(participants,)] = query(
            db, "SELECT count(*) FROM marketing_scenario_participant WHERE scenario_id = %s", [scenario_id]
        )
        servers = [workspace.server(name=f"odoo-{name}", cron_threads=2) for name in "AB"]
        for server in servers:
            server.start()
        print(
            f"{participants} participants, {participants * len(node_ids)} steps; servers on ports "
            f"{[server.port for server in servers]}; {options.runners} extra runners",
            flush=True,
        )
        started = time.monotonic()
        trigger_cron(db, ADVANCE_CRON)
        runners = [
            start_script(
                db,
                workspace.addons,
                RUNNER.format(timeout=options.timeout, batch=options.batch, scenario=scenario_id),
            )
            for _ in range(options.runners)
        ]

        tag = uuid.uuid4().hex[:6]
        emails = sorted(setup["partners"])
        events = [
            {
                "event": "purchase",
                "event_id": f"{tag}-{round_}-{index}",
                "contact": {"email": email},
                "params": {"total": 10},
            }
            for round_ in range(options.events_per_contact)
            for index, email in enumerate(emails)
        ]
        random.shuffle(events)
        ledger = Ledger()

        def client(server, share):
            holder = SessionHolder()
            for offset in range(0, len(share), options.event_batch):
                post_until_answered(
                    holder, lambda: server.base_url, setup["key"], share[offset : offset + options.event_batch], ledger
                )

        clients = [
            threading.Thread(target=client, args=(server, events[index :: len(servers)]))
            for index, server in enumerate(servers)
        ]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join()
        posted = time.monotonic() - started
        runner_stats = [script_result(runner, timeout=options.timeout + 60) for runner in runners]

        deadline = time.monotonic() + options.timeout
        while time.monotonic() < deadline:
            [(scheduled, pending)] = query(
                db,
                "SELECT (SELECT count(*) FROM marketing_scenario_step WHERE scenario_id = %s AND state = 'scheduled'),"
                " (SELECT count(*) FROM marketing_event WHERE state = 'pending')",
                [scenario_id],
            )
            if not scheduled and not pending:
                break
            time.sleep(2)
        wall = time.monotonic() - started
        time.sleep(2)
        for server in servers:
            server.stop()

        steps = query(
            db,
            "SELECT node_id, state, count(*) FROM marketing_scenario_step WHERE scenario_id = %s GROUP BY 1, 2",
            [scenario_id],
        )
        [(repeated, retries)] = query(
            db,
            """
            SELECT (SELECT count(*) FROM (SELECT 1 FROM marketing_scenario_step WHERE scenario_id = %(s)s
                                           GROUP BY participant_id, node_id HAVING count(*) > 1) AS r),
                   (SELECT COALESCE(sum(attempt), 0) FROM marketing_scenario_step WHERE scenario_id = %(s)s)
            """,
            {"s": scenario_id},
        )
        mails = dict(
            query(
                db,
                "SELECT m.res_id, count(*) FROM mail_mail mm JOIN mail_message m ON m.id = mm.mail_message_id"
                " WHERE mm.mailing_id = %s GROUP BY 1",
                [setup["mailing"]],
            )
        )
        [advance_cron, dispatch_cron] = setup["crons"]
        [(cron_steps,)] = query(
            db, "SELECT COALESCE(sum(done), 0) FROM ir_cron_progress WHERE cron_id = %s", [advance_cron]
        )
        [(cron_events,)] = query(
            db, "SELECT COALESCE(sum(done), 0) FROM ir_cron_progress WHERE cron_id = %s", [dispatch_cron]
        )
        event_states = dict(query(db, "SELECT state, count(*) FROM marketing_event GROUP BY state"))
        scores = dict(query(db, "SELECT id, engagement_score FROM res_partner WHERE ref = 'faults2'"))
        logs = defaultdict(list)
        for partner_id, before, after, delta in query(
            db,
            "SELECT l.partner_id, l.score_before, l.score, l.delta FROM marketing_engagement_log l"
            " JOIN res_partner p ON p.id = l.partner_id WHERE p.ref = 'faults2'",
        ):
            logs[partner_id].append((before, after, delta))
        locks, open_transactions = lingering_locks(db)
        server_errors = [
            line for server in servers for line in server.log_lines("ERROR") + server.log_lines("CRITICAL")
        ]

        acknowledged_per_partner = defaultdict(int)
        email_of_event = {event["event_id"]: event["contact"]["email"] for event in events}
        for event_id in ledger.acknowledged():
            acknowledged_per_partner[setup["partners"][email_of_event[event_id]]] += 1
        expected = {
            int(partner_id): sum(NODE_DELTAS) + RULE_POINTS * acknowledged_per_partner[partner_id]
            for partner_id in setup["partners"].values()
        }
        lost = sum(1 for partner_id, score in expected.items() if (scores.get(partner_id) or 0) < score)
        extra = sum(1 for partner_id, score in expected.items() if (scores.get(partner_id) or 0) > score)
        broken_chains = 0
        for partner_id, lines in logs.items():
            previous = None
            for before, after, delta in sorted(lines, key=lambda line: line[1]):
                # The first line's score before is 0 (an Integer column stores no NULL through the ORM).
                if (before or 0) != (previous or 0) or after != (before or 0) + delta:
                    broken_chains += 1
                    break
                previous = after
            if previous != scores.get(partner_id):
                broken_chains += 1
        runner_steps = sum(stat["steps"] for stat in runner_stats)
        executions = cron_steps + runner_steps
        total_steps = participants * len(node_ids)

        print_table(
            f"RESULTS after {wall:.0f}s (events posted in {posted:.0f}s)",
            [
                ("participants / steps expected", f"{participants} / {total_steps}"),
                ("steps by (node, state)", sorted(steps)),
                ("participant/node pairs run more than once", repeated),
                ("step executions: crons + runners", f"{cron_steps} + {runner_steps} = {executions}"),
                ("retries recorded on steps (concurrent updates)", retries),
                ("runner batches / serialization conflicts", [(s["batches"], s["conflicts"]) for s in runner_stats]),
                ("events sent / acknowledged", f"{len(ledger.sent)} / {len(ledger.acknowledged())}"),
                ("events dispatched by the crons / states", f"{cron_events} / {event_states}"),
                ("queued mails per contact (1 expected)", sorted(set(mails.values()))),
                ("contacts with a lost / extra score update", f"{lost} / {extra}"),
                ("score histories that do not add up", broken_chains),
                ("locks / open transactions after stop", f"{len(locks)} / {len(open_transactions)}"),
                ("ERROR lines in the server logs", len(server_errors)),
            ],
        )
        failures = []
        if repeated:
            failures.append(f"{repeated} participant/node pairs ran more than once")
        done = sum(count for _node, state, count in steps if state == "done")
        if done != total_steps or any(state != "done" for _node, state, _count in steps):
            failures.append(f"steps: {steps}")
        if executions != total_steps + retries:
            failures.append(f"{executions} step executions for {total_steps} steps and {retries} retries")
        if len(mails) != participants or set(mails.values()) != {1}:
            failures.append(f"mails: {len(mails)} contacts, counts {set(mails.values())}")
        if lost or extra or broken_chains:
            failures.append(f"scores: {lost} lost, {extra} extra, {broken_chains} histories do not add up")
        if not events or len(ledger.acknowledged()) != len(events) or event_states.keys() != {"processed"}:
            failures.append(f"events: {len(ledger.acknowledged())} acknowledged of {len(events)}, {event_states}")
        if locks or open_transactions:
            failures.append(f"locks {locks} / open transactions {open_transactions}")
        return verdict(failures, "no step ran twice, no score update lost", server_errors)


if __name__ == "__main__":
    sys.exit(main())
