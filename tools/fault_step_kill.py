#!/usr/bin/env python3
# pylint: disable=print-used
"""Kill during processing: after restart every due step runs exactly once.

    python3 tools/fault_step_kill.py [--contacts 3000] [--batch 100] [--kills 4]

A throwaway database with N contacts entered in a "now" scenario whose tree is
*email → score +5*. An Odoo server with one cron thread runs the advance cron
(batches of ``--batch`` steps, one commit per batch as Odoo's cron runner
does). Once a batch has been committed since the last (re)start, the tool
waits a random fraction of a batch and SIGKILLs the server's process group,
then starts it again; ``ir_cron_progress`` tells whether the kill cut a batch
in flight (its progress row was committed before the batch and not reset
after). After the last restart the server finishes the scenario.

Checks: every participant has exactly one step per node, each done; exactly
one queued ``mail.mail`` and one mailing trace per contact; exactly one score
history line per contact from the score node and a score of 5; no step left
scheduled or in error; every participant completed; the killed PostgreSQL
sessions ended; no lock or open transaction left once the server stopped.
Exits 1 if any check fails.
"""

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tools.odoo_process import Workspace
from tools.odoo_process import lingering_locks
from tools.odoo_process import print_table
from tools.odoo_process import query
from tools.odoo_process import trigger_cron
from tools.odoo_process import verdict
from tools.odoo_process import wait_backends_gone

ADVANCE_CRON = "marketing_event_automation.ir_cron_scenario_advance"
SCORE_DELTA = 5

SETUP = """
with registry.cursor() as cr:
    env = api.Environment(cr, SUPERUSER_ID, {{"tracking_disable": True}})
    cr.execute(
        "INSERT INTO res_partner (name, email, email_normalized, ref, active, type, is_company,"
        " create_date, write_date)"
        " SELECT 'Fault ' || g, 'fault' || g || '@faults.example', 'fault' || g || '@faults.example', 'faults', TRUE,"
        " 'contact', FALSE, now(), now() FROM generate_series(1, %s) g",
        [{contacts}],
    )
    scenario = env["marketing.scenario"].create({{
        "name": "Fault: email then score", "trigger_type": "now", "timezone": "UTC",
        "entry_policy": "once", "audience_domain": repr([("ref", "=", "faults")]),
    }})
    Node = env["marketing.scenario.node"]
    email = Node.create({{"scenario_id": scenario.id, "node_type": "email", "name": "Fault mail"}})
    score = Node.create({{"scenario_id": scenario.id, "node_type": "score", "parent_id": email.id,
                         "score_delta": {delta}, "score_reason": "fault tool"}})
    email._create_missing_mailings()
    email.mailing_id.write({{"body_html": "<p>Hello {{{{ object.name }}}}</p>", "keep_archives": True}})
    # Only the engine under test runs: the mail queue would try to send the
    # mails, the other crons would compete for the two cores.
    env["ir.cron"].search([]).write({{"active": False}})
    cron = env.ref({cron!r})
    cron.write({{"active": True, "code": "model._cron_advance(batch_size={batch})"}})
    scenario.action_start()
    cr.commit()
    while scenario._cron_schedule():
        cr.commit()
    cr.commit()
    emit_result({{"scenario": scenario.id, "email": email.id, "score": score.id, "mailing": email.mailing_id.id,
                  "cron": cron.id}})
"""


def count_steps(db_name, scenario_id, state):
    [(count,)] = query(
        db_name,
        "SELECT count(*) FROM marketing_scenario_step WHERE scenario_id = %s AND state = %s",
        [scenario_id, state],
    )
    return count


def latest_progress(db_name, cron_id):
    rows = query(
        db_name,
        "SELECT id, done, timed_out_counter FROM ir_cron_progress WHERE cron_id = %s ORDER BY id DESC LIMIT 1",
        [cron_id],
    )
    return rows[0] if rows else None


def wait_for(predicate, timeout, interval=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def per_partner_counts(db_name, sql, params):
    return dict(query(db_name, sql, params))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=100, help="steps per advance batch (the module's default: 500)")
    parser.add_argument("--kills", type=int, default=4)
    parser.add_argument("--workers", type=int, default=0, help="0: threaded server with a cron thread")
    parser.add_argument("--keep-db", action="store_true")
    options = parser.parse_args()

    with Workspace("faultstep", keep_db=options.keep_db) as workspace:
        db = workspace.db_name
        ids = workspace.run_script(
            SETUP.format(contacts=options.contacts, delta=SCORE_DELTA, cron=ADVANCE_CRON, batch=options.batch)
        )
        scenario_id, cron_id = ids["scenario"], ids["cron"]
        [(participants,)] = query(
            db, "SELECT count(*) FROM marketing_scenario_participant WHERE scenario_id = %s", [scenario_id]
        )
        total_steps = participants * 2
        print(f"{participants} participants entered; {total_steps} steps to run in batches of {options.batch}")
        server = workspace.server(workers=options.workers, cron_threads=1)
        kills = []
        started = time.monotonic()
        server.start()
        trigger_cron(db, ADVANCE_CRON)
        for _kill in range(options.kills):
            done_at_start = count_steps(db, scenario_id, "done")
            # A batch committed since the (re)start: the cron is running and
            # Odoo's timeout guard (3 consecutive cut runs) is reset.
            if not wait_for(lambda done=done_at_start: count_steps(db, scenario_id, "done") > done, 300):
                raise RuntimeError("the advance cron made no progress")
            if count_steps(db, scenario_id, "done") >= total_steps:
                break
            time.sleep(random.uniform(0.1, 1.5))
            progress = latest_progress(db, cron_id)
            pids = server.kill()
            cleanup = wait_backends_gone(db, pids)
            done = count_steps(db, scenario_id, "done")
            in_flight = bool(progress and progress[2])
            kills.append({"done_before": done, "in_flight": in_flight, "cleanup": cleanup})
            print(
                f"  kill {len(kills)}: {done} steps done; a batch was {'in flight' if in_flight else 'not running'}; "
                f"sessions ended in {cleanup:.1f}s",
                flush=True,
            )
            server.start()
            trigger_cron(db, ADVANCE_CRON)
        finished = wait_for(lambda: count_steps(db, scenario_id, "scheduled") == 0, 600, interval=1)
        wall = time.monotonic() - started
        time.sleep(2)
        server.stop()

        steps_per_node = query(
            db,
            """
            SELECT node_id, state, count(*), count(DISTINCT participant_id)
              FROM marketing_scenario_step WHERE scenario_id = %s GROUP BY node_id, state ORDER BY node_id, state
            """,
            [scenario_id],
        )
        repeated_steps = query(
            db,
            """
            SELECT count(*) FROM (
                SELECT participant_id, node_id FROM marketing_scenario_step WHERE scenario_id = %s
                 GROUP BY participant_id, node_id HAVING count(*) > 1) AS repeated
            """,
            [scenario_id],
        )[0][0]
        mails = per_partner_counts(
            db,
            """
            SELECT m.res_id, count(*) FROM mail_mail mm JOIN mail_message m ON m.id = mm.mail_message_id
             WHERE mm.mailing_id = %s AND m.model = 'res.partner' GROUP BY m.res_id
            """,
            [ids["mailing"]],
        )
        traces = per_partner_counts(
            db,
            "SELECT res_id, count(*) FROM mailing_trace WHERE mass_mailing_id = %s GROUP BY res_id",
            [ids["mailing"]],
        )
        score_logs = per_partner_counts(
            db,
            "SELECT partner_id, count(*) FROM marketing_engagement_log WHERE origin_ref = %s GROUP BY partner_id",
            [f"marketing.scenario.node,{ids['score']}"],
        )
        scores = dict(
            query(
                db,
                "SELECT engagement_score, count(*) FROM res_partner WHERE ref = 'faults' GROUP BY engagement_score",
            )
        )
        participant_states = dict(
            query(
                db,
                "SELECT state, count(*) FROM marketing_scenario_participant WHERE scenario_id = %s GROUP BY state",
                [scenario_id],
            )
        )
        [(cron_active, failure_count)] = query(db, "SELECT active, failure_count FROM ir_cron WHERE id = %s", [cron_id])
        locks, open_transactions = lingering_locks(db)
        server_errors = server.log_lines("ERROR") + server.log_lines("CRITICAL")

        def spread(counts):
            """(contacts with exactly one, contacts with more than one, contacts with none)."""
            return (
                sum(1 for count in counts.values() if count == 1),
                sum(1 for count in counts.values() if count > 1),
                participants - len(counts),
            )

        mail_ok, mail_twice, mail_none = spread(mails)
        trace_ok, trace_twice, trace_none = spread(traces)
        log_ok, log_twice, log_none = spread(score_logs)
        print_table(
            f"RESULTS: {len(kills)} kills ({sum(kill['in_flight'] for kill in kills)} with a batch in flight), "
            f"scenario finished in {wall:.0f}s",
            [
                ("participants", participants),
                ("steps by node and state (node, state, steps, participants)", steps_per_node),
                ("participant/node pairs with more than one step", repeated_steps),
                ("queued mails: once / more / none", f"{mail_ok} / {mail_twice} / {mail_none}"),
                ("mailing traces: once / more / none", f"{trace_ok} / {trace_twice} / {trace_none}"),
                ("score history lines: once / more / none", f"{log_ok} / {log_twice} / {log_none}"),
                ("contacts by score", scores),
                ("participants by state", participant_states),
                ("advance cron active / failure count", f"{cron_active} / {failure_count}"),
                ("locks / open transactions after stop", f"{len(locks)} / {len(open_transactions)}"),
                ("ERROR lines in the server log", len(server_errors)),
            ],
        )
        failures = []
        if not finished:
            failures.append("steps still scheduled after 10 minutes")
        if repeated_steps:
            failures.append(f"{repeated_steps} participant/node pairs ran more than once")
        done_by_node = {node: count for node, state, count, _p in steps_per_node if state == "done"}
        if any(state != "done" for _node, state, _c, _p in steps_per_node):
            failures.append("steps not done: " + str([row for row in steps_per_node if row[1] != "done"]))
        if done_by_node != {ids["email"]: participants, ids["score"]: participants}:
            failures.append(f"done steps per node {done_by_node}, expected {participants} each")
        if mail_twice or mail_none or trace_twice or trace_none:
            failures.append("mails or traces not exactly one per contact")
        if log_twice or log_none or scores != {SCORE_DELTA: participants}:
            failures.append(f"score changes not exactly one per contact (scores {scores})")
        if participant_states != {"completed": participants}:
            failures.append(f"participants {participant_states}")
        if locks or open_transactions:
            failures.append(f"locks {locks} / open transactions {open_transactions}")
        if server_errors:
            failures.append(f"{len(server_errors)} ERROR lines in {server.log_path}")
        return verdict(failures, "every step ran exactly once; nothing stuck or locked", server_errors)


if __name__ == "__main__":
    sys.exit(main())
