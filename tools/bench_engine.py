#!/usr/bin/env python3
# pylint: disable=print-used
# (a command-line tool: its output is for the person who runs it)
"""Scenario engine benchmarks against peers measured in the same run.

    python3 tools/bench_engine.py engine [--contacts 100000] [--peer-contacts 10000] [--runs 3] [--baseline REF]
    python3 tools/bench_engine.py email [--contacts 20000] [--runs 3]
    python3 tools/bench_engine.py scale [--rows 1000000] [--runs 3]

``engine``: N contacts enter a "now" scenario *wait 0 → condition (email domain)
→ yes: add tag / no: change score → exit* (audience entry by the schedule cron,
batches of 1,000; steps by the advance cron, batches of 500; one commit per batch
as the cron runner does). The peer is OCA's ``automation_oca`` 18.0 in a database
of its own: a configuration on the same contacts with one server-action step
adding a tag (``run_automation`` enrolls, ``_cron_automation_steps`` runs).
``--baseline GIT_REF`` also runs the module as it was at that commit (exported
with ``git archive``, a template database of its own), alternately with the
current checkout in each run, and prints current/baseline: the machine's speed
varies from day to day, a ratio measured in the same run does not.

``email``: N contacts reach an email node; recipients/s until their mail.mail are
queued, against ``mailing.mailing.action_send_mail()`` of mass_mailing on the same
contacts with the same subject and body.

``scale``: per-batch time of the native API's ingestion (requests of 500 events,
a third of them from new contacts), of the dispatcher (batches of 1,000 events that enter
a scenario) and of the advance cron (batches of 500 steps) in an empty database,
then again once ``--rows`` events (processed) and ``--rows`` steps (done and
scheduled) were generated with SQL.

Each run prints its figures and ratio; the last lines are the medians of
``--runs``. The databases are created from a template database with the module
installed (created once, about two minutes) and dropped at the end unless
``--keep-db``. automation_oca is not a dependency of the module: the bench
installs the wheel with ``pip install --no-deps --target DIR`` (``--oca-dir``,
default /tmp/oca_addons) and adds ``DIR/odoo/addons`` to the addons path of the
peer database only.
"""

import argparse
import io
import statistics
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tools.bench_fill import env_of as _env
from tools.bench_fill import fill_history
from tools.bench_fill import insert_contacts as _insert_contacts
from tools.dev import MODULE
from tools.dev import addons_path_option
from tools.dev import database_exists
from tools.dev import drop_database
from tools.dev import odoo_addons_paths
from tools.dev import odoo_command
from tools.odoo_process import create_database
from tools.odoo_process import new_database_name
from tools.odoo_process import run_script

OCA_PACKAGE = "odoo-addon-automation-oca>=18.0,<18.1"
OCA_MODULE = "automation_oca"
OUR_TEMPLATE = "mea_bench_template"
PEER_TEMPLATE = "mea_bench_oca_template"


# ----------------------------------------------------------------------
# Workers: run in a subprocess with Odoo loaded on one database
# ----------------------------------------------------------------------


def _registry(db_name):
    """The registry of the database, which the launcher's script (run_worker) has configured and loaded."""
    from odoo.modules.registry import Registry  # noqa: PLC0415

    return Registry(db_name)


def _run_batches(registry, method, context=None):
    """Call ``method(env)`` in a new transaction until it returns 0: [(done, seconds, queries)]."""
    batches = []
    while True:
        started = time.perf_counter()
        with registry.cursor() as cr:
            # Held until the commit: the commit flushes the environments still alive.
            env = _env(cr, context)
            done = method(env)
            env.flush_all()
            queries = cr.sql_log_count
        seconds = time.perf_counter() - started
        if not done:
            return batches
        batches.append((done, seconds, queries))


def _summary(batches):
    done = sum(batch[0] for batch in batches)
    seconds = sum(batch[1] for batch in batches)
    quarter = max(len(batches) // 4, 1)

    def rate(part):
        return sum(b[0] for b in part) / max(sum(b[1] for b in part), 1e-9)

    return {
        "done": done,
        "seconds": seconds,
        "rate": done / seconds if seconds else 0.0,
        "batches": len(batches),
        "first_quarter_rate": rate(batches[:quarter]),
        "last_quarter_rate": rate(batches[-quarter:]),
        "queries_per_batch": sorted({batch[2] for batch in batches}),
        "batch_seconds_median": statistics.median(batch[1] for batch in batches) if batches else 0.0,
    }


def _engine_scenario(env, tag, first_node="wait"):
    """The issue's flow: wait 0 → condition (domain) → yes: add tag / no: change score → exit."""
    category = env["res.partner.category"].create({"name": tag})
    scenario = env["marketing.scenario"].create(
        {
            "name": tag,
            "trigger_type": "now",
            "timezone": "UTC",
            "entry_policy": "every_time",
            "audience_domain": repr([("ref", "=", tag)]),
        }
    )
    node = env["marketing.scenario.node"]
    wait = node.create({"scenario_id": scenario.id, "node_type": first_node, "wait_amount": 0, "wait_unit": "minutes"})
    condition = node.create(
        {
            "scenario_id": scenario.id,
            "node_type": "condition",
            "parent_id": wait.id,
            "condition_type": "domain",
            "condition_domain": "[('email', '=ilike', '%@a.example')]",
        }
    )
    tag_node = node.create(
        {
            "scenario_id": scenario.id,
            "node_type": "tag_add",
            "parent_id": condition.id,
            "branch": "yes",
            "tag_ids": [(6, 0, category.ids)],
        }
    )
    score_node = node.create(
        {
            "scenario_id": scenario.id,
            "node_type": "score",
            "parent_id": condition.id,
            "branch": "no",
            "score_delta": 5,
            "score_reason": "bench",
        }
    )
    node.create(
        [
            {"scenario_id": scenario.id, "node_type": "exit", "parent_id": tag_node.id},
            {"scenario_id": scenario.id, "node_type": "exit", "parent_id": score_node.id},
        ]
    )
    return scenario


def worker_engine(db_name, addons, contacts):
    registry = _registry(db_name)
    tag = "eng-" + uuid.uuid4().hex[:8]
    with registry.cursor() as cr:
        env = _env(cr)
        _insert_contacts(cr, tag, contacts)
        _engine_scenario(env, tag).action_start()
    entry = _run_batches(registry, lambda env: env["marketing.scenario"]._cron_schedule())
    advance = _run_batches(registry, lambda env: env["marketing.scenario.step"]._cron_advance())
    with registry.cursor() as cr:
        cr.execute(
            "SELECT p.state, count(*) FROM marketing_scenario_participant p JOIN marketing_scenario s"
            " ON s.id = p.scenario_id WHERE s.name->>'en_US' = %s GROUP BY p.state",
            [tag],
        )
        participants = dict(cr.fetchall())
    return {"entry": _summary(entry), "advance": _summary(advance), "participants": participants}


def worker_peer(db_name, addons, contacts):
    """automation_oca: one configuration on the same contacts, one server action adding a tag."""
    registry = _registry(db_name)
    tag = "oca-" + uuid.uuid4().hex[:8]
    with registry.cursor() as cr:
        env = _env(cr)
        _insert_contacts(cr, tag, contacts)
        category = env["res.partner.category"].create({"name": tag})
        action = env["ir.actions.server"].create(
            {
                "name": f"Tag {tag}",
                "model_id": env["ir.model"]._get_id("res.partner"),
                "state": "code",
                "code": f"records.write({{'category_id': [(4, {category.id})]}})",
            }
        )
        configuration = env["automation.configuration"].create(
            {
                "name": tag,
                "model_id": env["ir.model"]._get_id("res.partner"),
                "editable_domain": repr([("ref", "=", tag)]),
            }
        )
        # Due in an hour: enrollment only schedules the steps (measured apart from running them).
        env["automation.configuration.step"].create(
            {
                "name": "Add tag",
                "configuration_id": configuration.id,
                "step_type": "action",
                "server_action_id": action.id,
                "trigger_type": "start",
                "trigger_interval": 1,
                "trigger_interval_type": "hours",
            }
        )
        configuration.start_automation()
        configuration_id = configuration.id
    started = time.perf_counter()
    with registry.cursor() as cr:
        env = _env(cr)
        env["automation.configuration"].browse(configuration_id).run_automation()
        env.flush_all()
        entry_queries = cr.sql_log_count
    entry_seconds = time.perf_counter() - started
    with registry.cursor() as cr:
        cr.execute(
            "UPDATE automation_record_step SET scheduled_date = now() at time zone 'UTC' - interval '1 second'"
            " WHERE state = 'scheduled'"
        )
    started = time.perf_counter()
    with registry.cursor() as cr:
        env = _env(cr)
        env["automation.record.step"]._cron_automation_steps()
        env.flush_all()
        step_queries = cr.sql_log_count
    step_seconds = time.perf_counter() - started
    with registry.cursor() as cr:
        cr.execute(
            "SELECT s.state, count(*) FROM automation_record_step s JOIN automation_record r ON r.id = s.record_id"
            " WHERE r.configuration_id = %s GROUP BY s.state",
            [configuration_id],
        )
        states = dict(cr.fetchall())
    steps = states.get("done", 0)
    return {
        "entry": {"done": contacts, "seconds": entry_seconds, "rate": contacts / entry_seconds},
        "advance": {
            "done": steps,
            "seconds": step_seconds,
            "rate": steps / step_seconds,
            "queries_per_step": step_queries / max(steps, 1),
        },
        "entry_queries_per_contact": entry_queries / contacts,
        "states": states,
    }


EMAIL_BODY = (
    "<p>Hello <t t-out='object.name'/>, here is our news.</p><p><a href='https://example.com/news'>Read</a></p>"
)


def worker_email(db_name, addons, contacts):
    registry = _registry(db_name)
    tag = "mail-" + uuid.uuid4().hex[:8]
    with registry.cursor() as cr:
        env = _env(cr)
        _insert_contacts(cr, tag, contacts)
        scenario = env["marketing.scenario"].create(
            {
                "name": tag,
                "trigger_type": "now",
                "timezone": "UTC",
                "entry_policy": "every_time",
                "audience_domain": repr([("ref", "=", tag)]),
            }
        )
        node = env["marketing.scenario.node"].create({"scenario_id": scenario.id, "node_type": "email"})
        node.mailing_id.write({"subject": f"News {tag}", "body_html": EMAIL_BODY, "email_from": "news@example.com"})
        scenario.action_start()
        our_mailing_id = node.mailing_id.id
        peer = env["mailing.mailing"].create(
            {
                "subject": f"News {tag}",
                "mailing_type": "mail",
                "mailing_model_id": env["ir.model"]._get_id("res.partner"),
                "mailing_domain": repr([("ref", "=", tag)]),
                "body_html": EMAIL_BODY,
                "email_from": "news@example.com",
            }
        )
        peer_mailing_id = peer.id
    # Entry is not part of the email node's time.
    _run_batches(registry, lambda env: env["marketing.scenario"]._cron_schedule())
    ours = _summary(_run_batches(registry, lambda env: env["marketing.scenario.step"]._cron_advance()))
    started = time.perf_counter()
    with registry.cursor() as cr:
        env = _env(cr)
        env["mailing.mailing"].browse(peer_mailing_id).action_send_mail()
        env.flush_all()
    peer_seconds = time.perf_counter() - started
    with registry.cursor() as cr:
        cr.execute(
            "SELECT mailing_id, count(*) FROM mail_mail WHERE mailing_id IN %s AND state = 'outgoing'"
            " GROUP BY mailing_id",
            [(our_mailing_id, peer_mailing_id)],
        )
        queued = dict(cr.fetchall())
    ours["queued"] = queued.get(our_mailing_id, 0)
    ours["rate"] = ours["queued"] / ours["seconds"]
    peer_queued = queued.get(peer_mailing_id, 0)
    return {
        "ours": ours,
        "peer": {"queued": peer_queued, "seconds": peer_seconds, "rate": peer_queued / peer_seconds},
    }


def _scale_setup(env, tag):
    """An event type whose events enter a scenario tag → score: the dispatcher and the steps have work."""
    event_type = env["marketing.event.type"].create({"name": tag, "key": tag.replace("-", "_")})
    category = env["res.partner.category"].create({"name": tag})
    scenario = env["marketing.scenario"].create(
        {
            "name": tag,
            "trigger_type": "event",
            "trigger_event_type_id": event_type.id,
            "timezone": "UTC",
            "entry_policy": "every_time",
        }
    )
    node = env["marketing.scenario.node"]
    first = node.create({"scenario_id": scenario.id, "node_type": "tag_add", "tag_ids": [(6, 0, category.ids)]})
    node.create(
        {"scenario_id": scenario.id, "node_type": "score", "parent_id": first.id, "score_delta": 1, "score_reason": "b"}
    )
    scenario.action_start()
    return event_type


def _scale_measure(registry, event_type_id, tag, batches):
    """Dispatch ``batches`` x 1,000 events and run the steps they schedule: per-batch seconds of each."""
    with registry.cursor() as cr:
        _insert_contacts(cr, tag, batches * 1000)
        cr.execute(
            "INSERT INTO marketing_event (type_id, event_key, partner_id, params, occurred_at, received_at, state)"
            " SELECT t.id, t.key, p.id, '{}'::jsonb, now() at time zone 'UTC', now() at time zone 'UTC', 'pending'"
            " FROM res_partner p, marketing_event_type t WHERE p.ref = %s AND t.id = %s",
            [tag, event_type_id],
        )
    dispatch = _run_batches(registry, lambda env: env["marketing.event"]._cron_dispatch())
    advance = _run_batches(registry, lambda env: env["marketing.scenario.step"]._cron_advance())
    return _summary(dispatch), _summary(advance)


# Contacts the ingested events address (two thirds of them; the others create a contact each).
SCALE_KNOWN_CONTACTS = 2000
SCALE_INGEST_BATCH = 500


def _scale_source(env, tag):
    """An API source, bench_ingest's event types and the contacts its events address: the source's id."""
    source = env["marketing.event.source"].create(
        {"name": tag, "rate_limit": 0, "max_new_contacts_per_day": 0, "max_new_types_per_day": 0}
    )
    keys = {"cart_abandoned": "Cart abandoned", "purchase": "Purchase", "signup": "Signup"}
    existing = set(env["marketing.event.type"].search([("key", "in", list(keys))]).mapped("key"))
    env["marketing.event.type"].create(
        [{"name": name, "key": key} for key, name in keys.items() if key not in existing]
    )
    env["res.partner"].with_context(marketing_event_mute=True).create(
        [{"name": f"Known {i}", "email": f"known{i}@load.example"} for i in range(SCALE_KNOWN_CONTACTS)]
    )
    return source.id


def _scale_ingest(registry, source_id, tag, batches):
    """``batches`` requests of 500 native events, as the API ingests them (a transaction each): their summary.

    The events (and the new contacts' contact_created events) are then marked processed, so that the
    dispatcher's batches measured next are all scenario entries.
    """
    from tools.ingest_client import make_event  # noqa: PLC0415

    with registry.cursor() as cr:
        cr.execute("SELECT COALESCE(max(id), 0) FROM marketing_event")
        last_id = cr.fetchone()[0]
    timed = []
    for batch in range(batches):
        events = [make_event(f"{tag}-{batch}", index, SCALE_KNOWN_CONTACTS) for index in range(SCALE_INGEST_BATCH)]
        started = time.perf_counter()
        with registry.cursor() as cr:
            env = _env(cr)
            source = env["marketing.event.source"].browse(source_id)
            # sudo and the source's company: as the API's controller calls it.
            results = env["marketing.event"].sudo().with_company(source.company_id)._ingest(source, events)
            env.flush_all()
            queries = cr.sql_log_count
        timed.append(
            (sum(result["status"] == "accepted" for result in results), time.perf_counter() - started, queries)
        )
    with registry.cursor() as cr:
        cr.execute(
            "UPDATE marketing_event SET state = 'processed', processed_at = now() at time zone 'UTC'"
            " WHERE id > %s AND state = 'pending'",
            [last_id],
        )
    return _summary(timed)


def worker_scale(db_name, addons, rows, batches):
    registry = _registry(db_name)
    tag = "scale-" + uuid.uuid4().hex[:8]
    with registry.cursor() as cr:
        env = _env(cr)
        event_type_id = _scale_setup(env, tag).id
        source_id = _scale_source(env, tag)
    # Warm the caches: the first batches load them.
    _scale_ingest(registry, source_id, tag + "-w", 1)
    _scale_measure(registry, event_type_id, tag + "-w", 1)
    empty = (
        *_scale_measure(registry, event_type_id, tag + "-e", batches),
        _scale_ingest(registry, source_id, tag + "-e", batches),
    )
    fill = fill_history(registry, rows, "live")
    full = (
        *_scale_measure(registry, event_type_id, tag + "-f", batches),
        _scale_ingest(registry, source_id, tag + "-f", batches),
    )
    return {
        "empty": {"dispatch": empty[0], "advance": empty[1], "ingest": empty[2]},
        "full": {"dispatch": full[0], "advance": full[1], "ingest": full[2]},
        "rows": {"events": fill["events"], "steps": fill["steps"], "fill_seconds": fill["seconds"]},
    }


WORKERS = {"engine": worker_engine, "peer": worker_peer, "email": worker_email, "scale": worker_scale}


# ----------------------------------------------------------------------
# Orchestration
# ----------------------------------------------------------------------


def oca_addons_path(oca_dir):
    addons = Path(oca_dir) / "odoo" / "addons"
    if not (addons / OCA_MODULE / "__manifest__.py").is_file():
        print(f"Installing {OCA_PACKAGE} into {oca_dir} (--no-deps, outside the module's dependencies)...")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(oca_dir), OCA_PACKAGE],
            check=True,
        )
    return "--addons-path=" + ",".join([str(addons), *odoo_addons_paths()])


def ensure_template(name, addons, module, refresh=False):
    if database_exists(name):
        if refresh:
            print(f"Updating {module} in the template database {name}...")
            subprocess.run(
                odoo_command("-d", name, addons, "-u", module, "--stop-after-init", "--log-level=warn"), check=True
            )
        return
    create_database(name, addons, module)


def database_from(template):
    name = new_database_name("bench")
    subprocess.run(["createdb", "-T", template, name], check=True)
    return name


def run_worker(kind, db_name, addons, **kwargs):
    """Run the worker ``kind`` in its own process, on the database's registry; return its result."""
    call = f"WORKERS[{kind!r}]({db_name!r}, {addons!r}, **{kwargs!r})"
    return run_script(db_name, addons, f"from tools.bench_engine import WORKERS\nemit_result({call})\n")


def baseline_checkout(ref):
    """The module as it was at ``ref``, exported once into a folder of its own: (commit, addons path option)."""
    repo = Path(__file__).resolve().parent.parent
    commit = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--verify", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    addons = Path("/tmp/mea_bench_baseline") / commit
    module = addons / MODULE
    if not (module / "__manifest__.py").is_file():
        archive = subprocess.run(["git", "-C", str(repo), "archive", commit], capture_output=True, check=True).stdout
        module.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(module, filter="data")
    return commit, "--addons-path=" + ",".join([str(addons), *odoo_addons_paths()])


def load_average():
    return Path("/proc/loadavg").read_text().split()[0]


def _engine_line(label, ours):
    entry, advance = ours["entry"], ours["advance"]
    return (
        f"{label} {entry['done']} contacts entered at {entry['rate']:.0f}/s"
        f" (queries/batch {entry['queries_per_batch']}), {advance['done']} steps at {advance['rate']:.0f}/s"
        f" (first/last quarter {advance['first_quarter_rate']:.0f}/{advance['last_quarter_rate']:.0f} steps/s,"
        f" {advance['batches']} batches, queries/batch {advance['queries_per_batch']}),"
        f" participants {ours['participants']}"
    )


def run_engine(options, our_addons):
    peer_addons = oca_addons_path(options.oca_dir)
    ensure_template(PEER_TEMPLATE, peer_addons, OCA_MODULE)  # never refreshed: it holds no code of ours
    baseline = None
    if options.baseline:
        commit, base_addons = baseline_checkout(options.baseline)
        # One template per commit: its code never changes, so it is never refreshed.
        base_template = f"{options.template}_base_{commit[:10]}"
        ensure_template(base_template, base_addons, MODULE)
        baseline = (commit, base_addons, base_template)
    results = []
    for run in range(options.runs):
        ours_db, peer_db = database_from(options.template), database_from(PEER_TEMPLATE)
        base_db = database_from(baseline[2]) if baseline else None
        try:
            # Alternate which one goes first: the machine's state drifts during a run.
            if baseline and run % 2:
                base = run_worker("engine", base_db, baseline[1], contacts=options.contacts)
                ours = run_worker("engine", ours_db, our_addons, contacts=options.contacts)
            else:
                ours = run_worker("engine", ours_db, our_addons, contacts=options.contacts)
                base = run_worker("engine", base_db, baseline[1], contacts=options.contacts) if baseline else None
            peer = run_worker("peer", peer_db, peer_addons, contacts=options.peer_contacts)
        finally:
            if not options.keep_db:
                for db_name in (ours_db, peer_db, base_db):
                    if db_name:
                        drop_database(db_name)
        entry, advance = ours["entry"], ours["advance"]
        figures = {
            "entry": entry["rate"],
            "steps": advance["rate"],
            "peer_entry": peer["entry"]["rate"],
            "peer_steps": peer["advance"]["rate"],
            "entry_ratio": entry["rate"] / peer["entry"]["rate"],
            "steps_ratio": advance["rate"] / peer["advance"]["rate"],
        }
        if base:
            figures.update(
                {
                    "base_entry": base["entry"]["rate"],
                    "base_steps": base["advance"]["rate"],
                    "entry_vs_base": entry["rate"] / base["entry"]["rate"],
                    "steps_vs_base": advance["rate"] / base["advance"]["rate"],
                }
            )
        results.append(figures)
        print(_engine_line(f"run {run + 1} (load {load_average()}): ours", ours))
        if base:
            print(_engine_line(f"        baseline {baseline[0][:10]}:", base))
            print(
                f"        current/baseline: entry {figures['entry_vs_base']:.2f}x,"
                f" steps {figures['steps_vs_base']:.2f}x"
            )
        print(
            f"        peer automation_oca: {options.peer_contacts} records enrolled at {peer['entry']['rate']:.0f}/s"
            f" ({peer['entry_queries_per_contact']:.1f} queries each), {peer['advance']['done']} steps at"
            f" {peer['advance']['rate']:.0f}/s ({peer['advance']['queries_per_step']:.1f} queries/step)"
        )
        print(f"        ours/peer: entry {figures['entry_ratio']:.1f}x, steps {figures['steps_ratio']:.1f}x")
    medians = {key: statistics.median(result[key] for result in results) for key in results[0]}
    print(
        f"MEDIAN of {options.runs}: entry {medians['entry']:.0f} contacts/s, {medians['steps']:.0f} steps/s;"
        f" automation_oca {medians['peer_entry']:.0f} records/s, {medians['peer_steps']:.0f} steps/s;"
        f" ours/peer entry {medians['entry_ratio']:.1f}x, steps {medians['steps_ratio']:.1f}x"
    )
    if baseline:
        print(
            f"MEDIAN of {options.runs}: baseline {baseline[0][:10]} entry {medians['base_entry']:.0f} contacts/s,"
            f" {medians['base_steps']:.0f} steps/s; current/baseline entry {medians['entry_vs_base']:.2f}x,"
            f" steps {medians['steps_vs_base']:.2f}x (load {load_average()})"
        )


def run_email(options, our_addons):
    results = []
    for run in range(options.runs):
        db_name = database_from(options.template)
        try:
            result = run_worker("email", db_name, our_addons, contacts=options.contacts)
        finally:
            if not options.keep_db:
                drop_database(db_name)
        ours, peer = result["ours"], result["peer"]
        ratio = ours["seconds"] / peer["seconds"]
        results.append((ours["rate"], peer["rate"], ratio))
        print(
            f"run {run + 1} (load {load_average()}): email node {ours['queued']} mail.mail queued in"
            f" {ours['seconds']:.1f} s = {ours['rate']:.0f} recipients/s (queries/batch {ours['queries_per_batch']});"
            f" mass_mailing action_send_mail {peer['queued']} in {peer['seconds']:.1f} s = {peer['rate']:.0f}/s;"
            f" time ours/mass_mailing {ratio:.2f}"
        )
    ours_rate, peer_rate, ratio = (statistics.median(values) for values in zip(*results))
    print(
        f"MEDIAN of {options.runs}: email node {ours_rate:.0f} recipients/s, mass_mailing {peer_rate:.0f}"
        f" recipients/s, time ours/mass_mailing {ratio:.2f}"
    )


def run_scale(options, our_addons):
    results = []
    for run in range(options.runs):
        db_name = database_from(options.template)
        try:
            result = run_worker("scale", db_name, our_addons, rows=options.rows, batches=options.batches)
        finally:
            if not options.keep_db:
                drop_database(db_name)
        empty, full = result["empty"], result["full"]
        ingest_ratio = full["ingest"]["batch_seconds_median"] / empty["ingest"]["batch_seconds_median"]
        dispatch_ratio = full["dispatch"]["batch_seconds_median"] / empty["dispatch"]["batch_seconds_median"]
        advance_ratio = full["advance"]["batch_seconds_median"] / empty["advance"]["batch_seconds_median"]
        results.append((ingest_ratio, dispatch_ratio, advance_ratio))
        print(
            f"run {run + 1} (load {load_average()}): {result['rows']['events']} events and"
            f" {result['rows']['steps']} steps generated in {result['rows']['fill_seconds']:.0f} s;"
            f" ingestion batch ({SCALE_INGEST_BATCH} native events, a third of new contacts)"
            f" {empty['ingest']['batch_seconds_median'] * 1000:.0f} ms empty,"
            f" {full['ingest']['batch_seconds_median'] * 1000:.0f} ms full = {ingest_ratio:.2f}x;"
            f" dispatch batch (1,000 events) {empty['dispatch']['batch_seconds_median'] * 1000:.0f} ms empty,"
            f" {full['dispatch']['batch_seconds_median'] * 1000:.0f} ms full = {dispatch_ratio:.2f}x;"
            f" advance batch (500 steps) {empty['advance']['batch_seconds_median'] * 1000:.0f} ms empty,"
            f" {full['advance']['batch_seconds_median'] * 1000:.0f} ms full = {advance_ratio:.2f}x"
            f" (queries/batch ingestion {full['ingest']['queries_per_batch']},"
            f" dispatch {full['dispatch']['queries_per_batch']}, advance {full['advance']['queries_per_batch']})"
        )
    ingest_ratio, dispatch_ratio, advance_ratio = (statistics.median(values) for values in zip(*results))
    print(
        f"MEDIAN of {options.runs} (load {load_average()}): per-batch time with {options.rows:,} events and steps"
        f" / empty: ingestion {ingest_ratio:.2f}x, dispatch {dispatch_ratio:.2f}x, advance {advance_ratio:.2f}x"
        " (target 1.2x)"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep-db", action="store_true", help="keep the run databases (the templates are kept)")
    parser.add_argument(
        "--refresh-template", action="store_true", help="update the module in the template (new indexes, fields)"
    )
    parser.add_argument(
        "--template",
        default=OUR_TEMPLATE,
        help="template database of the module (one per checkout, when several are benchmarked side by side)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    engine = commands.add_parser("engine", help="entry and steps of the issue's flow, against automation_oca")
    engine.add_argument("--contacts", type=int, default=100_000)
    engine.add_argument("--peer-contacts", type=int, default=10_000)
    engine.add_argument("--oca-dir", default="/tmp/oca_addons")
    engine.add_argument(
        "--baseline",
        metavar="GIT_REF",
        help="also run the module of this commit (its own template), alternately with the current one: prints"
        " current/baseline",
    )
    email = commands.add_parser("email", help="email node against mass_mailing's action_send_mail")
    email.add_argument("--contacts", type=int, default=20_000)
    scale = commands.add_parser("scale", help="per-batch time with --rows events and steps against an empty database")
    scale.add_argument("--rows", type=int, default=1_000_000)
    scale.add_argument("--batches", type=int, default=5, help="batches of each kind measured in each state")
    options = parser.parse_args()
    our_addons = addons_path_option()
    ensure_template(options.template, our_addons, MODULE, refresh=options.refresh_template)
    {"engine": run_engine, "email": run_email, "scale": run_scale}[options.command](options, our_addons)


if __name__ == "__main__":
    main()
