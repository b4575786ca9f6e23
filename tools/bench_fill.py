"""A long history generated with SQL for the benchmarks: contacts, events, scenario runs and their steps.

Shared by ``bench_engine.py scale`` and ``bench_purge.py``. The functions run in a
worker process with Odoo loaded on the database (see ``tools/odoo_process.py``).
"""

import time
import uuid

# Nodes of a generated run: each participant has one step per node.
STEPS_PER_RUN = 10


def env_of(cr, context=None):
    """The superuser's environment on ``cr``, without mail tracking."""
    from odoo import SUPERUSER_ID  # noqa: PLC0415
    from odoo import api  # noqa: PLC0415

    return api.Environment(cr, SUPERUSER_ID, {"tracking_disable": True, **(context or {})})


def insert_contacts(cr, tag, count):
    """``count`` contacts with ``ref = tag``: even ones at a.example, odd ones at b.example."""
    cr.execute(
        "INSERT INTO res_partner (name, email, email_normalized, ref, active, type, is_company, lang,"
        " create_date, write_date)"
        " SELECT 'Bench ' || g, e, e, %s, TRUE, 'contact', FALSE, 'en_US', now(), now()"
        "   FROM generate_series(1, %s) g,"
        "        LATERAL (SELECT %s || '-' || g || CASE WHEN g %% 2 = 0 THEN '@a.example' ELSE '@b.example' END) m(e)",
        [tag, count, tag],
    )
    # Contacts exist long before a scenario targets them, and PostgreSQL has
    # their statistics by then; right after a bulk INSERT it has none until
    # autovacuum's next pass, and plans as if the table were empty.
    cr.execute("ANALYZE res_partner")


# What each kind of history looks like, as SQL fragments over ``now() at time
# zone 'UTC'`` (``now``): the participants' state and dates, each step's state
# and dates by its node's rank (1-10), each event's receipt by its number ``g``.
HISTORIES = {
    # A busy database's live history: a year of events, runs still going on,
    # nine steps done and the tenth scheduled next month.
    "live": {
        "state": "'running'",
        "entered_at": "now - interval '40 days'",
        "ended_at": "NULL",
        "step_state": "CASE WHEN n.rank = 10 THEN 'scheduled' ELSE 'done' END",
        "scheduled_at": "now + (n.rank - 9) * interval '30 days'",
        "processed_at": "CASE WHEN n.rank = 10 THEN NULL ELSE now - interval '30 days' END",
        "received_at": "now - (g % 365) * interval '1 day'",
    },
    # Everything the default retention periods let go: events received 14
    # months ago and more, runs completed 7 months ago with all their steps done.
    "expired": {
        "state": "'completed'",
        "entered_at": "now - interval '7 months 10 days'",
        "ended_at": "now - interval '7 months' - (p.id % 20) * interval '1 hour'",
        "step_state": "'done'",
        "scheduled_at": "pa.entered_at + n.rank * interval '1 day'",
        "processed_at": "pa.entered_at + n.rank * interval '1 day'",
        "received_at": "now - interval '14 months' - (g % 60) * interval '1 day'",
    },
}


def fill_history(registry, rows, history):
    """``rows`` processed events and ``rows`` steps of 10-node runs (a tenth as many participants and contacts).

    ``history`` is a key of ``HISTORIES``. The tables are analyzed afterwards,
    as autovacuum would have done by the time such a history had built up.
    Returns ``{"events", "steps"}`` (the tables' row counts after the fill) and ``"seconds"``.
    """
    sql = {key: fragment.replace("now", "(now() at time zone 'UTC')") for key, fragment in HISTORIES[history].items()}
    # Fragments are constants of this file, not input: formatted into the statements, with %% for psycopg2.
    sql = {key: fragment.replace("%", "%%") for key, fragment in sql.items()}
    participants = max(rows // STEPS_PER_RUN, 1)
    tag = f"{history}-" + uuid.uuid4().hex[:8]
    started = time.perf_counter()
    with registry.cursor() as cr:
        env = env_of(cr)
        insert_contacts(cr, tag, participants)
        scenario = env["marketing.scenario"].create(
            {"name": tag, "trigger_type": "event", "timezone": "UTC", "entry_policy": "every_time"}
        )
        scenario.trigger_event_type_id = env["marketing.event.type"].search([("key", "=", "contact_created")])
        nodes = env["marketing.scenario.node"].create(
            [{"scenario_id": scenario.id, "node_type": "wait", "wait_amount": 1} for _ in range(STEPS_PER_RUN)]
        )
        scenario.write({"state": "running"})
        env.flush_all()
        cr.execute(
            "INSERT INTO marketing_scenario_participant (scenario_id, partner_id, company_id, state, entered_at,"
            " ended_at, is_test)"
            f" SELECT %s, p.id, %s, {sql['state']}, {sql['entered_at']}, {sql['ended_at']}, FALSE"
            "   FROM res_partner p WHERE p.ref = %s",
            [scenario.id, scenario.company_id.id, tag],
        )
        cr.execute(
            "INSERT INTO marketing_scenario_step (participant_id, node_id, scenario_id, partner_id, company_id,"
            " is_test, state, scheduled_at, processed_at, branch, attempt)"
            " SELECT pa.id, n.id, pa.scenario_id, pa.partner_id, pa.company_id, FALSE,"
            f"       {sql['step_state']}, {sql['scheduled_at']}, {sql['processed_at']}, 'always', 0"
            "   FROM marketing_scenario_participant pa,"
            "        (SELECT id, row_number() OVER (ORDER BY id) AS rank FROM unnest(%s::int[]) id) n"
            "  WHERE pa.scenario_id = %s",
            [nodes.ids, scenario.id],
        )
        cr.execute(
            "INSERT INTO marketing_event (type_id, event_key, partner_id, company_id, params, occurred_at,"
            " received_at, state, processed_at)"
            " SELECT t.id, t.key, p.id, %s, jsonb_build_object('n', g), ts, ts, 'processed', ts"
            "   FROM generate_series(1, %s) g"
            f"  JOIN LATERAL (SELECT {sql['received_at']} AS ts) d ON TRUE"
            "   JOIN res_partner p ON p.id = (SELECT min(id) FROM res_partner WHERE ref = %s) + g %% %s"
            "   JOIN marketing_event_type t ON t.key = 'contact_created'",
            [scenario.company_id.id, rows, tag, participants],
        )
    with registry.cursor() as cr:
        for table in ("marketing_event", "marketing_scenario_step", "marketing_scenario_participant", "res_partner"):
            cr.execute(f"ANALYZE {table}")  # constant table names
        cr.execute("SELECT count(*) FROM marketing_event")
        events = cr.fetchone()[0]
        cr.execute("SELECT count(*) FROM marketing_scenario_step")
        steps = cr.fetchone()[0]
    return {"events": events, "steps": steps, "seconds": time.perf_counter() - started}
