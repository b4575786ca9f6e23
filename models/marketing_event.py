import contextlib
import json
import logging
import os
import random
import threading
import time
from collections import defaultdict

import psycopg2

from odoo import api
from odoo import fields
from odoo import models
from odoo.exceptions import AccessError
from odoo.service.model import PG_CONCURRENCY_EXCEPTIONS_TO_RETRY
from odoo.sql_db import connection_info_for
from odoo.sql_db import db_connect
from odoo.tools import SQL
from odoo.tools import create_index

from ..utils.payload import params_leaves
from ..utils.payload import params_summary
from ..utils.pg_arrays import array_literal
from ..utils.table_statistics import analyze_if_stale
from .marketing_event_type import flatten_structure

_logger = logging.getLogger(__name__)

DISPATCH_BATCH_SIZE = 1000
# A batch that meets a concurrent change is run again at once, this many times
# in all, after a random pause of up to attempt x this many seconds.
DISPATCH_ATTEMPTS = 5
DISPATCH_RETRY_PAUSE = 0.05
# The backlog reported to the cron runner is counted up to this many batches.
PROGRESS_COUNT_BATCHES = 10
WAKE_DISPATCHER_FLAG = "marketing_event_automation.wake_dispatcher"

EVENT_STATES = [
    ("pending", "Pending"),
    ("processed", "Processed"),
    ("error", "Error"),
    ("rejected", "Rejected"),
]


_notify_lock = threading.Lock()
_notify_connection = None
_notify_pid = None


def notify_cron_workers(dbname):
    """Wake the cron workers of every server, as ``ir.cron._notifydb`` does, on a connection kept open.

    The cron workers LISTEN on the ``postgres`` database, where the NOTIFY
    has to be sent. One connection per process, opened at its first use and
    opened again after a failure; if it cannot be, Odoo's own way is used.
    """
    global _notify_connection, _notify_pid  # noqa: PLW0603 pylint: disable=global-statement
    with _notify_lock:
        if _notify_pid != os.getpid():
            # A forked worker does not share its parent's connection.
            _notify_connection, _notify_pid = None, os.getpid()
        for _attempt in range(2):
            try:
                if _notify_connection is None or _notify_connection.closed:
                    _notify_connection = psycopg2.connect(**connection_info_for("postgres")[1])
                    _notify_connection.autocommit = True
                with _notify_connection.cursor() as cursor:
                    cursor.execute("SELECT pg_notify('cron_trigger', %s)", [dbname])
                return
            except psycopg2.Error:
                _logger.info("Waking the cron workers failed on the kept connection, opening it again", exc_info=True)
                with contextlib.suppress(psycopg2.Error):
                    if _notify_connection is not None:
                        _notify_connection.close()
                _notify_connection = None
    with db_connect("postgres").cursor() as cr:
        cr.execute("SELECT pg_notify('cron_trigger', %s)", [dbname])


class MarketingEvent(models.Model):
    _name = "marketing.event"
    _inherit = ["marketing.event.ingestion"]
    _description = "Marketing Event"
    _order = "received_at desc, id desc"
    _rec_name = "type_id"
    # An append-only log written in bulk by the API: received_at and
    # processed_at say when, source_id who. The four log columns would cost
    # two foreign-key checks and four values on every event stored.
    _log_access = False

    type_id = fields.Many2one(
        "marketing.event.type", string="Event Type", ondelete="restrict", index=True, readonly=True
    )
    event_key = fields.Char(readonly=True, help="The key as the sender wrote it.")
    category_id = fields.Many2one(related="type_id.category_id")
    scope = fields.Selection(related="type_id.scope")
    partner_id = fields.Many2one("res.partner", string="Contact", ondelete="cascade", readonly=True)
    anonymous_id = fields.Char(
        string="Anonymous ID",
        readonly=True,
        index="btree_not_null",
        help="The visitor's anonymous id (Segment's anonymousId): its events join the contact once the visitor "
        "is identified.",
    )
    context = fields.Json(
        readonly=True, help="Where the event came from, as the sender's library described it: page, IP address..."
    )
    context_display = fields.Text(string="Context (JSON)", compute="_compute_params_display")
    company_id = fields.Many2one("res.company", readonly=True, index=True)
    source_id = fields.Many2one(
        "marketing.event.source",
        ondelete="restrict",
        readonly=True,
        help="The API credentials it came through; empty for events emitted by Odoo itself.",
    )
    idempotency_key = fields.Char(
        readonly=True, help="The sender's event id: a retried event with the same id is stored once."
    )
    params = fields.Json(string="Parameters", readonly=True)
    params_display = fields.Text(string="Parameters (JSON)", compute="_compute_params_display")
    params_summary = fields.Char(string="Parameters in Brief", compute="_compute_params_display")
    params_readable = fields.Text(string="Parameter Values", compute="_compute_params_display")
    occurred_at = fields.Datetime(readonly=True, required=True, default=fields.Datetime.now)
    received_at = fields.Datetime(readonly=True, required=True, default=fields.Datetime.now)
    processed_at = fields.Datetime(readonly=True)
    state = fields.Selection(EVENT_STATES, required=True, default="pending", readonly=True)
    error_message = fields.Text(readonly=True)
    processing_result = fields.Json(
        readonly=True, help="What processing did: scenarios entered and exited, waits resumed, score changes."
    )
    processing_summary = fields.Text(compute="_compute_processing_summary")
    consumers_done = fields.Json(
        readonly=True,
        copy=False,
        help="The processing steps that already succeeded on this event: a retry does not apply them again.",
    )

    def init(self):
        cr = self.env.cr
        # (source, idempotency key) identifies an event; internal events have
        # no source. Rejected events do not hold the key: the sender may fix
        # the event and send it again under the same id.
        cr.execute(
            """
            CREATE UNIQUE INDEX IF NOT EXISTS marketing_event_idempotency_uniq
                ON marketing_event (COALESCE(source_id, 0), idempotency_key)
             WHERE idempotency_key IS NOT NULL AND state <> 'rejected'
            """
        )
        create_index(cr, "marketing_event_pending_idx", self._table, ["id"], where="state = 'pending'")
        create_index(cr, "marketing_event_type_received_idx", self._table, ["type_id", "received_at"])
        create_index(cr, "marketing_event_source_received_idx", self._table, ["source_id", "received_at"])
        create_index(cr, "marketing_event_partner_type_idx", self._table, ["partner_id", "type_id", "occurred_at"])
        create_index(cr, "marketing_event_received_idx", self._table, ["received_at"])
        # The purge of anonymous visitors' events reads them off this index.
        create_index(
            cr,
            "marketing_event_anonymous_received_idx",
            self._table,
            ["received_at"],
            where="partner_id IS NULL AND anonymous_id IS NOT NULL",
        )

    @api.depends("params", "context")
    def _compute_params_display(self):
        for event in self:
            event.context_display = (
                json.dumps(event.context, indent=2, ensure_ascii=False, sort_keys=True) if event.context else False
            )
            params = event.params or {}
            event.params_display = json.dumps(params, indent=2, ensure_ascii=False, sort_keys=True)
            event.params_summary = params_summary(params)
            event.params_readable = "\n".join(f"{path}: {value}" for path, value in params_leaves(params))

    @api.depends("processing_result", "state", "error_message")
    def _compute_processing_summary(self):
        for event in self:
            result = event.processing_result or {}
            lines = [f"{label}: {', '.join(map(str, values))}" for label, values in sorted(result.items()) if values]
            if event.state == "error" and event.error_message:
                lines.append(event.error_message)
            event.processing_summary = "\n".join(lines)

    @api.model
    def _insert_events(self, events):
        """Store events in one statement; return their ids in order (None for a duplicate).

        Raw SQL because this is the hot path of the API: the ORM would cost a
        query per event and could not skip duplicates with ON CONFLICT. The
        rows travel as one array per column (``unnest``): a few parameters
        instead of sixteen per event, each one array literal
        (``array_literal``), which PostgreSQL parses several times faster
        than a VALUES list.
        """
        if not events:
            return []
        self.flush_model()
        cr = self.env.cr
        now = fields.Datetime.now()
        columns = defaultdict(list)
        structures = defaultdict(dict)
        for event in events:
            state = event.get("state", "pending")
            columns["type_id"].append(event["type"].id)
            columns["event_key"].append(event["key"])
            columns["partner_id"].append(event.get("partner_id"))
            columns["anonymous_id"].append(event.get("anonymous_id"))
            columns["context"].append(json.dumps(event["context"]) if event.get("context") else None)
            columns["company_id"].append(event.get("company_id"))
            columns["source_id"].append(event.get("source_id"))
            columns["idempotency_key"].append(event.get("idempotency_key"))
            columns["params"].append(event.get("params_json") or json.dumps(event.get("params") or {}))
            columns["occurred_at"].append(event.get("occurred_at") or now)
            columns["state"].append(state)
            columns["error_message"].append(event.get("error_message"))
            if state != "rejected":
                flatten_structure(event.get("params") or {}, structure=structures[event["type"].id])
        # Each row takes its id from the sequence before the insert, so that
        # it maps back to its position: RETURNING promises no order, and
        # duplicates skipped by ON CONFLICT return nothing. The rows are
        # materialized once (nextval is volatile) and read twice.
        cr.execute(
            SQL(
                """
                WITH row AS MATERIALIZED (
                    SELECT nextval('marketing_event_id_seq') AS id, input.*
                      FROM unnest(
                            %(type_id)s::int[], %(event_key)s::varchar[], %(partner_id)s::int[],
                            %(company_id)s::int[], %(source_id)s::int[], %(idempotency_key)s::varchar[],
                            %(params)s::jsonb[], %(occurred_at)s::timestamp[], %(state)s::varchar[],
                            %(error_message)s::text[], %(anonymous_id)s::varchar[], %(context)s::jsonb[]
                           ) WITH ORDINALITY
                           AS input (type_id, event_key, partner_id, company_id, source_id, idempotency_key, params,
                                     occurred_at, state, error_message, anonymous_id, context, position)
                ), inserted AS (
                    INSERT INTO marketing_event (
                        id, type_id, event_key, partner_id, company_id, source_id, idempotency_key, params,
                        occurred_at, state, error_message, anonymous_id, context, received_at, processed_at
                    )
                    SELECT id, type_id, event_key, partner_id, company_id, source_id, idempotency_key, params,
                           occurred_at, state, error_message, anonymous_id, context,
                           %(now)s, CASE WHEN state = 'processed' THEN %(now)s END
                      FROM row
                    ON CONFLICT (COALESCE(source_id, 0), idempotency_key)
                       WHERE idempotency_key IS NOT NULL AND state <> 'rejected'
                       DO NOTHING
                    RETURNING id
                )
                SELECT inserted.id
                  FROM row LEFT JOIN inserted ON inserted.id = row.id
                 ORDER BY row.position
                """,
                now=now,
                **{name: array_literal(values) for name, values in columns.items()},
            )
        )
        ids = [row[0] for row in cr.fetchall()]
        self.invalidate_model()
        if any(ids) and structures:
            max_paths = {event["type"].id: event.get("max_structure_paths", 0) for event in events}
            self.env["marketing.event.type"]._learn_structures(structures, max_paths)
        if any(event_id for event_id, event in zip(ids, events) if event.get("state", "pending") == "pending"):
            self._wake_dispatcher()
        return ids

    @api.model
    def _anonymous_partner_ids(self, company, anonymous_ids):
        """``{anonymous id: contact id}`` for the ids of ``company``'s visitors already identified, in one query."""
        anonymous_ids = list(set(filter(None, anonymous_ids)))
        if not anonymous_ids:
            return {}
        self.flush_model(["anonymous_id", "partner_id", "company_id"])
        self.env.cr.execute(
            SQL(
                """
                SELECT DISTINCT ON (anonymous_id) anonymous_id, partner_id
                  FROM marketing_event
                 WHERE anonymous_id = ANY(%(ids)s) AND partner_id IS NOT NULL AND company_id = %(company_id)s
                 ORDER BY anonymous_id, id DESC
                """,
                ids=anonymous_ids,
                company_id=company.id,
            )
        )
        return dict(self.env.cr.fetchall())

    @api.model
    def _merge_anonymous_histories(self, company, pairs):
        """Give the events of anonymous visitors of ``company`` the contact each turned out to be.

        ``pairs``: ``(anonymous id, contact id)``, a later pair winning over
        an earlier one for the same id. One statement for all of them. The
        events keep their state: already processed, they start no scenario
        now, and from now on count for the contact's history like any other.
        """
        partner_by_anonymous_id = dict(pairs)
        if not partner_by_anonymous_id:
            return 0
        self.flush_model(["anonymous_id", "partner_id", "company_id"])
        self.env.cr.execute(
            SQL(
                """
                UPDATE marketing_event event
                   SET partner_id = visitor.partner_id
                  FROM unnest(%(anonymous_ids)s::varchar[], %(partner_ids)s::int[])
                       AS visitor (anonymous_id, partner_id)
                 WHERE event.anonymous_id = visitor.anonymous_id
                   AND event.partner_id IS NULL
                   AND event.company_id = %(company_id)s
                """,
                anonymous_ids=list(partner_by_anonymous_id),
                partner_ids=list(partner_by_anonymous_id.values()),
                company_id=company.id,
            )
        )
        self.invalidate_model(["partner_id"])
        return self.env.cr.rowcount

    @api.model
    def _purge_anonymous_events(self, batch_size):
        """Delete one batch of the events of visitors never identified, once their company's period is over.

        Part of the retention purge (marketing.retention); returns how many went.
        """
        self.env["res.company"].flush_model(["marketing_anonymous_retention_days"])
        self.flush_model(["partner_id", "anonymous_id", "received_at", "company_id", "state"])
        self.env.cr.execute(
            SQL(
                """
                SELECT event.id
                  FROM marketing_event event
                  JOIN res_company company ON company.id = event.company_id
                 WHERE event.partner_id IS NULL
                   AND event.anonymous_id IS NOT NULL
                   AND event.state <> 'pending'
                   AND company.marketing_anonymous_retention_days > 0
                   AND event.received_at < (now() AT TIME ZONE 'UTC')
                                           - make_interval(days => company.marketing_anonymous_retention_days)
                 LIMIT %s
                   FOR UPDATE OF event SKIP LOCKED
                """,
                batch_size,
            )
        )
        return self._delete_folded([row[0] for row in self.env.cr.fetchall()])

    @api.model
    def _delete_folded(self, event_ids):
        """Delete these events, counted first into the daily aggregates the statistics read; return how many."""
        if not event_ids:
            return 0
        self.env["marketing.event.daily"]._fold_events(event_ids)
        self.env["marketing.segment.rule.daily"]._fold_events(event_ids)
        self.env.cr.execute(SQL("DELETE FROM marketing_event WHERE id = ANY(%s)", list(event_ids)))
        deleted = self.env.cr.rowcount
        self.invalidate_model()
        self.env["marketing.scenario.participant"].invalidate_model(["event_id"])
        return deleted

    @api.model
    def _wake_dispatcher(self):
        """Wake the dispatcher cron when this transaction commits, once however many events it logged.

        An API request logs its events and the contact_created events of its
        new contacts, a dispatch batch emits events of its own: one
        ir.cron.trigger row (and one NOTIFY) per transaction is enough.

        The trigger row is written in this transaction, as ``_trigger()``
        does: a dispatcher run that began before the commit cannot see it
        (Odoo's cursors are REPEATABLE READ), so it cannot delete it at its
        end without having read these events. It is not coalesced with a
        trigger already due: a run may consume that one after its last read
        and before this commit (see the README, Benchmarks).
        """
        cr = self.env.cr
        if cr.precommit.data.get(WAKE_DISPATCHER_FLAG):
            return
        cr.precommit.data[WAKE_DISPATCHER_FLAG] = True
        # sudo: waking a cron is not something the user logging events does.
        cr.precommit.add(self.sudo()._write_dispatcher_trigger)

    @api.model
    def _write_dispatcher_trigger(self):
        """What ``ir.cron._trigger()`` does for the dispatcher, in one statement instead of three.

        ``_trigger()`` reads the cron twice through the ORM and its NOTIFY
        opens a new connection to the ``postgres`` database on every call
        (Odoo keeps none in its pool); the NOTIFY goes through a connection
        this process keeps open instead (``notify_cron_workers``).
        """
        cron_id = self.env["ir.model.data"]._xmlid_to_res_id("marketing_event_automation.ir_cron_dispatch_events")
        self.env.cr.execute(
            SQL(
                """
                INSERT INTO ir_cron_trigger (cron_id, call_at, create_uid, create_date, write_uid, write_date)
                SELECT id, %(now)s, %(uid)s, %(now)s, %(uid)s, %(now)s FROM ir_cron WHERE id = %(cron_id)s AND active
                RETURNING id
                """,
                now=fields.Datetime.now(),
                uid=self.env.uid,
                cron_id=cron_id,
            )
        )
        if self.env.cr.fetchone():
            self.env["ir.cron.trigger"].invalidate_model()
            dbname = self.env.cr.dbname
            self.env.cr.postcommit.add(lambda: notify_cron_workers(dbname))

    @api.model
    def _emit(self, key, events):
        """Log internal events of type ``key`` (emails opened, contact created...).

        ``events`` is a list of dicts with ``partner_id`` and optionally
        ``params``, ``idempotency_key``, ``occurred_at``, ``company_id``.
        Returns the new events' ids (None for duplicates).
        """
        # sudo: internal events are emitted on behalf of whoever triggered
        # them (a portal user opening a mail, a salesperson editing a contact).
        return self.sudo()._insert_events(self._prepare_internal_events(key, events))

    @api.model
    def _prepare_internal_events(self, key, events):
        """What ``_emit`` stores, for ``_insert_events``: empty when muted or the type is archived."""
        if not events or self.env.context.get("marketing_event_mute"):
            return []
        # sudo: see _emit.
        EventType = self.env["marketing.event.type"].sudo()
        event_type = EventType._get_by_keys([key], self.env["res.company"]).get(key, EventType)
        if not event_type or not event_type.active:
            return []
        return [
            {
                "type": event_type,
                "key": key,
                "partner_id": event.get("partner_id"),
                "company_id": event.get("company_id"),
                "idempotency_key": event.get("idempotency_key"),
                "params": event.get("params") or {},
                "occurred_at": event.get("occurred_at"),
            }
            for event in events
        ]

    @api.model
    def _emit_contacts_loaded(self, model, load_result):
        """After ``model.load()``: the contacts_imported event of a file import's batch.

        base_import loads each batch of a file with import_file set: one
        contacts_imported event per batch, next to each contact's contact_created.
        """
        if self.env.context.get("import_file") and load_result.get("ids"):
            self._emit_contacts_imported(model.browse(load_result["ids"]))

    @api.model
    def _emit_contacts_imported(self, records, mailing_lists=None):
        """Log one system event for a batch of imported contacts or mailing contacts.

        ``records`` are the batch's records, created or updated (an import
        updates the rows it matches by external id); the records created in
        this transaction count as created. ``mailing_lists`` defaults to the
        lists the imported mailing contacts belong to.
        """
        if not records:
            return []
        now = self.env.cr.now()
        # sudo: counting and naming what the importing user just wrote.
        records = records.sudo()
        created = records.filtered(lambda record: record.create_date == now)
        if mailing_lists is None:
            mailing_lists = records.list_ids if "list_ids" in records._fields else self.env["mailing.list"]
        mailing_lists = mailing_lists.sudo()
        return self._emit(
            "contacts_imported",
            [
                {
                    "partner_id": None,
                    "company_id": self.env.company.id,
                    "params": {
                        "model": records._name,
                        "count": len(created),
                        "updated": len(records) - len(created),
                        "record_ids": created.ids,
                        "list_id": mailing_lists.id if len(mailing_lists) == 1 else None,
                        "list_name": mailing_lists.name if len(mailing_lists) == 1 else None,
                        "list_ids": mailing_lists.ids,
                        "list_names": mailing_lists.mapped("name"),
                        "user_id": self.env.uid,
                    },
                }
            ],
        )

    # ------------------------------------------------------------------
    # Dispatch
    # ------------------------------------------------------------------

    @api.model
    def _cron_dispatch(self, batch_size=DISPATCH_BATCH_SIZE):
        """Process one batch of pending events; the cron runner commits and calls again."""
        self.flush_model()
        # The events' batch enters contacts and schedules their steps: plan
        # those statements on statistics that know each table's size.
        queues = [self, self.env["marketing.scenario.participant"], self.env["marketing.scenario.step"]]
        analyze_if_stale(self.env.cr, [queue._table for queue in queues])
        # SKIP LOCKED: several cron workers may dispatch at once, each takes
        # a disjoint batch and none waits for the others.
        self.env.cr.execute(
            SQL(
                """
                SELECT id FROM marketing_event
                 WHERE state = 'pending'
                 ORDER BY id
                 LIMIT %s
                   FOR UPDATE SKIP LOCKED
                """,
                batch_size,
            )
        )
        events = self.browse([row[0] for row in self.env.cr.fetchall()])
        done = events._process_with_retries() if events else 0
        # The batch's new states go to the database first: counted before,
        # the batch itself would still look pending and call an empty batch.
        self.flush_model(["state"])
        # Counted up to a cap: the cron runner only needs to know whether to
        # run again, and counting a backlog after each batch would be quadratic.
        # In id order, so that the pending events are read off their partial
        # index and not looked for in a scan of the whole log.
        self.env.cr.execute(
            SQL(
                "SELECT count(*) FROM (SELECT 1 FROM marketing_event WHERE state = 'pending' ORDER BY id LIMIT %s)"
                " pending",
                batch_size * PROGRESS_COUNT_BATCHES,
            )
        )
        remaining = self.env.cr.fetchone()[0]
        self.env["ir.cron"]._notify_progress(done=done, remaining=remaining)
        return done

    def _process_with_retries(self, attempts=DISPATCH_ATTEMPTS):
        """Process this locked batch; when it meets a concurrent change, roll back and run it again.

        The conflicting transaction (another cron worker scoring the same
        contact) has committed by then, so a run with a fresh snapshot goes
        through. Letting the error escape would fail the whole cron job: an
        ERROR in the log, and the batch left pending until the next trigger
        or the cron's interval. Returns the number of events processed.
        """
        events = self
        for attempt in range(1, attempts + 1):
            try:
                if attempt > 1:
                    # The rollback released the locks: take again those still
                    # pending that no other worker has taken meanwhile.
                    self.env.cr.execute(
                        SQL(
                            "SELECT id FROM marketing_event WHERE id = ANY(%s) AND state = 'pending'"
                            " ORDER BY id FOR UPDATE SKIP LOCKED",
                            events.ids,
                        )
                    )
                    events = self.browse([row[0] for row in self.env.cr.fetchall()])
                if events:
                    events._process()
                return len(events)
            except PG_CONCURRENCY_EXCEPTIONS_TO_RETRY as error:
                if attempt == attempts:
                    raise
                self.env.cr.rollback()
                _logger.info("Event dispatch met a concurrent change (attempt %s), running again: %s", attempt, error)
                time.sleep(random.uniform(0, DISPATCH_RETRY_PAUSE * attempt))
        return 0

    def _process(self):
        """Run every consumer of events on this batch, then mark them processed.

        A consumer failing on a group of events marks that group as error
        with the reason and lets the other groups go on.
        """
        results = defaultdict(lambda: defaultdict(list))
        errors = {}
        # What succeeded on an event before its retry (score rules, entries)
        # is not applied again.
        consumers_done = {event.id: set(event.consumers_done or ()) for event in self}
        for consumer in self._event_consumers():
            name = consumer.__name__
            for _type, type_events in self.grouped("type_id").items():
                events = (type_events - self.browse(errors)).filtered(
                    lambda event, name=name: name not in consumers_done[event.id]
                )
                if not events:
                    continue
                try:
                    with self.env.cr.savepoint():
                        consumer(events, results)
                    for event_id in events.ids:
                        consumers_done[event_id].add(name)
                except PG_CONCURRENCY_EXCEPTIONS_TO_RETRY:
                    # Another transaction changed the same rows (two workers
                    # scoring one contact): nothing is wrong with the events.
                    # Roll the whole batch back; it stays pending and is
                    # dispatched again with a fresh snapshot.
                    raise
                except Exception as error:
                    _logger.warning("Processing %s events failed in %s", len(events), consumer.__name__, exc_info=True)
                    message = self.env._("%(step)s failed: %(error)s", step=consumer.__name__, error=error)
                    errors.update(dict.fromkeys(events.ids, message))
        now = fields.Datetime.now()
        failed = self.browse(list(errors))
        for (message, done), events in failed.grouped(
            lambda event: (errors[event.id], tuple(sorted(consumers_done[event.id])))
        ).items():
            events.write(
                {"state": "error", "error_message": message, "processed_at": now, "consumers_done": list(done)}
            )
        succeeded = self - failed
        succeeded.write({"state": "processed", "processed_at": now})
        succeeded._store_processing_results(results)

    def _store_processing_results(self, results):
        """Write each event's own processing result in one statement."""
        own_ids = set(self.ids)
        values = [
            SQL("(%s, %s::jsonb)", event_id, json.dumps(result))
            for event_id, result in results.items()
            if event_id in own_ids
        ]
        if not values:
            return
        self.flush_model(["processing_result"])
        self.env.cr.execute(
            SQL(
                "UPDATE marketing_event e SET processing_result = v.result FROM (VALUES %s) AS v (id, result) "
                "WHERE e.id = v.id",
                SQL(", ").join(values),
            )
        )
        self.invalidate_model(["processing_result", "processing_summary"])

    def _event_consumers(self):
        """The steps that react to events, in order; other parts of the module extend it."""
        return [
            self._record_conversions,
            self._record_lifetime_values,
            self._apply_score_rules,
            self._dispatch_scenarios,
            self._trigger_system_automations,
            self._update_segments,
        ]

    def _record_conversions(self, events, results):
        """Objectives: the runs these events convert, with the events' value, before they make anyone enter."""
        self.env["marketing.scenario"]._record_conversions(events)

    def _record_lifetime_values(self, events, results):
        """Money: events whose type names a value parameter add it to their contact's lifetime value."""
        self.env["res.partner"]._add_lifetime_values(events)

    def _apply_score_rules(self, events, results):
        """Score rules: change the contacts' engagement scores as the rules of these events' types say."""
        self.env["marketing.engagement.rule"]._apply_to_events(events, results)

    def _dispatch_scenarios(self, events, results):
        """Scenarios: exit events, resumed waits, event and score triggers."""
        self.env["marketing.scenario"]._consume_events(events, results)

    def _trigger_system_automations(self, events, results):
        """System (S) events start the system automations listening to them."""
        self.env["marketing.system.automation"]._trigger_for_events(events, results)

    def _update_segments(self, events, results):
        """Segments: the batch's contacts enter or leave the segments counting these events."""
        self.env["marketing.segment"]._sync_from_events(events, results)

    def action_retry(self):
        """Send events that failed processing through the dispatcher again (marketing administrators)."""
        manager = "marketing_event_automation.group_marketing_automation_manager"
        if not (self.env.su or self.env.user.has_group(manager)):
            raise AccessError(self.env._("Only a marketing administrator may retry events."))
        # sudo: events are read-only for everybody; retrying is the one change
        # a marketing administrator may make to the log.
        self.filtered(lambda event: event.state == "error").sudo().write({"state": "pending", "error_message": False})
        self._wake_dispatcher()
        return True
