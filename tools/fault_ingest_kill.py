#!/usr/bin/env python3
# pylint: disable=print-used
"""Kill during ingestion: every acknowledged event is stored exactly once.

    python3 tools/fault_ingest_kill.py [--kills 5] [--min-events 20000] [--clients 4] [--batch 100]

A throwaway database with the module, an API source and its write key; Odoo
runs with ``--workers=2`` and one cron worker (the dispatcher runs too). Client
threads post batches of events with unique ``event_id``s and keep every answer.
Meanwhile a killer SIGKILLs the server's whole process group every few seconds
(master, HTTP workers, cron worker: open transactions are cut) and starts it
again. A request without an answer (connection refused or reset, timeout, 5xx)
is sent again with the same event ids until it is answered, as a client must.

At the end PostgreSQL is checked: every event answered ``accepted`` or
``duplicate`` is in the log exactly once, no event id is stored twice, no
new contact was created twice by a retry, and the dispatcher processed every
event (none left pending). Prints events sent, acknowledged, stored,
duplicated, lost; exits 1 if any check fails.
"""

import argparse
import itertools
import random
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
from tools.odoo_process import lingering_locks
from tools.odoo_process import print_table
from tools.odoo_process import query
from tools.odoo_process import verdict
from tools.odoo_process import wait_backends_gone


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=5, help="how many times the server is killed")
    parser.add_argument(
        "--kill-after",
        type=float,
        nargs=2,
        default=(3.0, 8.0),
        metavar=("MIN", "MAX"),
        help="seconds of service between a (re)start and the next kill, drawn at random",
    )
    parser.add_argument("--min-events", type=int, default=20000, help="clients go on at least until this many")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=100, help="events per request")
    parser.add_argument("--known", type=int, default=2000, help="contacts that exist before the run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep-db", action="store_true")
    options = parser.parse_args()

    tag = uuid.uuid4().hex[:6]
    with Workspace("faultingest", keep_db=options.keep_db) as workspace:
        write_key, source_id = setup_source(workspace, options.known, dispatch=True)
        server = workspace.server(workers=options.workers, cron_threads=1)
        server.start()
        ledger = Ledger()
        counter = itertools.count()
        counter_lock = threading.Lock()
        killer_done = threading.Event()
        downtime = []
        sessions_cleanup = []

        def client():
            holder = SessionHolder()
            while True:
                with counter_lock:
                    start = next(counter) * options.batch
                if killer_done.is_set() and start >= options.min_events:
                    return
                events = [make_event(tag, index, options.known) for index in range(start, start + options.batch)]
                post_until_answered(holder, lambda: server.base_url, write_key, events, ledger)

        def killer():
            for _kill in range(options.kills):
                time.sleep(random.uniform(*options.kill_after))
                killed_at = time.monotonic()
                pids = server.kill()
                sessions_cleanup.append(wait_backends_gone(workspace.db_name, pids))
                server.start()
                downtime.append(time.monotonic() - killed_at)
                print(
                    f"  kill {server.kills}: {len(pids)} processes killed, back after {downtime[-1]:.1f}s", flush=True
                )
            killer_done.set()

        print(
            f"Posting events ({options.clients} clients, batches of {options.batch}) while killing the server "
            f"{options.kills} times...",
            flush=True,
        )
        started = time.monotonic()
        threads = [threading.Thread(target=client) for _ in range(options.clients)]
        kill_thread = threading.Thread(target=killer)
        for thread in [*threads, kill_thread]:
            thread.start()
        for thread in [*threads, kill_thread]:
            thread.join()
        wall = time.monotonic() - started

        # Let the dispatcher finish, then look at the log.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            [(pending,)] = query(workspace.db_name, "SELECT count(*) FROM marketing_event WHERE state = 'pending'")
            if not pending:
                break
            time.sleep(2)
        rows = query(
            workspace.db_name,
            "SELECT idempotency_key, count(*) FROM marketing_event WHERE source_id = %s GROUP BY idempotency_key",
            [source_id],
        )
        stored_counts = dict(rows)
        states = dict(query(workspace.db_name, "SELECT state, count(*) FROM marketing_event GROUP BY state"))
        contact_rows = query(
            workspace.db_name,
            "SELECT email_normalized, count(*) FROM res_partner WHERE email_normalized LIKE %s GROUP BY 1",
            [f"new-{tag}-%"],
        )
        server.stop()
        locks, open_transactions = lingering_locks(workspace.db_name)
        server_errors = server.log_lines("ERROR") + server.log_lines("CRITICAL")

        acknowledged = ledger.acknowledged()
        duplicated = sum(count - 1 for count in stored_counts.values() if count > 1)
        lost = acknowledged - stored_counts.keys()
        unknown = stored_counts.keys() - ledger.sent
        sent_indexes = (int(event_id.rsplit("-", 1)[1]) for event_id in ledger.sent)
        new_emails_sent = {f"new-{tag}-{index}@load.example" for index in sent_indexes if index % 3 == 2}
        duplicate_contacts = sum(count - 1 for _email, count in contact_rows if count > 1)
        missing_contacts = new_emails_sent - {email for email, _count in contact_rows}

        print_table(
            f"RESULTS: {server.kills} kills in {wall:.0f}s "
            f"(server back after {sum(downtime) / max(len(downtime), 1):.1f}s "
            f"on average; PostgreSQL ended the killed sessions within {max(sessions_cleanup, default=0):.1f}s)",
            [
                ("events sent (unique ids)", f"{len(ledger.sent):,}"),
                ("requests (with retries)", f"{ledger.requests:,}"),
                ("unanswered attempts, retried", ", ".join(f"{k}: {v}" for k, v in ledger.unanswered.items()) or "0"),
                ("first answers", dict(ledger.first_answers)),
                ("answers to retried batches", dict(ledger.answered_after_retry)),
                ("acknowledged (accepted or duplicate)", f"{len(acknowledged):,}"),
                ("stored (distinct ids in the log)", f"{len(stored_counts):,}"),
                ("duplicated (extra rows of one id)", duplicated),
                ("lost (acknowledged, not stored)", len(lost)),
                ("stored but never sent", len(unknown)),
                ("other answers (4xx)", len(ledger.errors)),
                ("new contacts expected / found", f"{len(new_emails_sent):,} / {len(contact_rows):,}"),
                ("duplicate contacts", duplicate_contacts),
                ("event states after dispatch", states),
                ("locks / open transactions at the end", f"{len(locks)} / {len(open_transactions)}"),
                ("ERROR lines in the server log", len(server_errors)),
            ],
        )
        failures = []
        if duplicated:
            failures.append(f"{duplicated} duplicated events")
        if lost:
            failures.append(f"{len(lost)} acknowledged events lost, e.g. {sorted(lost)[:5]}")
        if unknown:
            failures.append(f"{len(unknown)} stored events never sent")
        if len(stored_counts) != len(ledger.sent):
            failures.append(f"{len(ledger.sent) - len(stored_counts)} sent events not stored although answered")
        if ledger.errors:
            failures.append(f"{len(ledger.errors)} 4xx answers, e.g. {ledger.errors[:2]}")
        if duplicate_contacts or missing_contacts:
            failures.append(f"contacts: {duplicate_contacts} duplicated, {len(missing_contacts)} missing")
        if states.get("pending") or states.get("error"):
            failures.append(f"events left pending or in error: {states}")
        if locks or open_transactions:
            failures.append(f"locks {locks} / open transactions {open_transactions}")
        return verdict(failures, "every acknowledged event stored exactly once", server_errors)


if __name__ == "__main__":
    sys.exit(main())
