import logging
from collections import defaultdict
from datetime import timedelta

import psycopg2
import requests
import urllib3

from odoo import api
from odoo import fields
from odoo import models
from odoo.exceptions import AccessError
from odoo.exceptions import UserError
from odoo.tools import SQL
from odoo.tools import create_index

from ..utils.constants import BRANCHES
from ..utils.constants import STEP_STATES
from ..utils.correlation import correlation_matches
from ..utils.denormalized import CopiedMany2one
from ..utils.denormalized import drop_foreign_keys
from ..utils.params_filter import params_match
from ..utils.params_filter import parse_params_filter
from ..utils.pg_arrays import array_literal
from ..utils.table_statistics import analyze_if_stale

_logger = logging.getLogger(__name__)

ADVANCE_BATCH_SIZE = 500
# Children due at once run in the same batch (see _cron_advance), up to this
# many rounds and this many times the batch's size in all: a tree of
# instant nodes goes through the queue once, and a batch stays bounded.
CHAIN_ROUNDS = 8
CHAIN_FACTOR = 4
TRANSIENT_ERRORS = (
    psycopg2.errors.SerializationFailure,
    psycopg2.errors.DeadlockDetected,
    psycopg2.errors.LockNotAvailable,
)
TRANSIENT_RETRY_SECONDS = 60
NETWORK_ERRORS = (OSError, urllib3.exceptions.HTTPError, requests.RequestException)
# Written only by the engine: see write.
QUEUE_FIELDS = {
    "participant_id",
    "node_id",
    "scenario_id",
    "partner_id",
    "company_id",
    "is_test",
    "state",
    "scheduled_at",
    "processed_at",
    "branch",
    "arm_node_id",
    "attempt",
    "trace_id",
}


class _Chain:
    """The steps of the next round of ``_execute_chained`` that have no row yet, by id.

    Their ids are taken from the table's sequence, their fields are put in
    the cache for the handlers, and ``_apply_outcomes`` inserts each one once
    it has run, in its final state.
    """

    def __init__(self, budget):
        self.budget = budget
        # id -> (participant id, node id, scheduled_at, (scenario, contact, company, is_test))
        self.steps = {}

    def put_off(self, env, rows, copies, exit_ids):
        """Keep out of ``rows`` the children due now of a kind run before its row exists; return the others.

        A child of a participant who exits in this round is inserted: the
        exit cancels it with the others.
        """
        now = fields.Datetime.now()
        Node = env["marketing.scenario.node"]
        nodes = Node.browse({node_id for _participant_id, node_id, due in rows if due <= now})
        kinds = {node.id for node in nodes if node._node_type_spec()["stored_after_run"]}
        kept, put_off = [], []
        for row in rows:
            participant_id, node_id, due = row
            if (
                len(put_off) < self.budget
                and node_id in kinds
                and due <= now
                and participant_id in copies
                and participant_id not in exit_ids
            ):
                put_off.append(row)
            else:
                kept.append(row)
        if put_off:
            env.cr.execute(
                SQL(
                    "SELECT nextval(pg_get_serial_sequence('marketing_scenario_step', 'id'))"
                    " FROM generate_series(1, %s)",
                    len(put_off),
                )
            )
            for [step_id], (participant_id, node_id, due) in zip(env.cr.fetchall(), put_off):
                self.steps[step_id] = (participant_id, node_id, due, copies[participant_id])
        return kept

    def cache(self, steps):
        """Put the fields of ``steps`` that have no row yet in the cache, as the table would give them."""
        unstored = steps.browse([step_id for step_id in steps.ids if step_id in self.steps])
        if not unstored:
            return
        values = [self.steps[step_id] for step_id in unstored.ids]
        cache = unstored.env.cache
        fields_ = unstored._fields
        columns = {
            "participant_id": [value[0] for value in values],
            "node_id": [value[1] for value in values],
            "scheduled_at": [value[2] for value in values],
            "scenario_id": [value[3][0] for value in values],
            "partner_id": [value[3][1] for value in values],
            "company_id": [value[3][2] for value in values],
            "is_test": [bool(value[3][3]) for value in values],
        }
        constants = {
            "state": "scheduled",
            "processed_at": None,
            "branch": None,
            "arm_node_id": None,
            "result": None,
            "attempt": 0,
            "trace_id": None,
            "status_code": 0,
        }
        for name, column in columns.items():
            # The cache holds a many-to-one as its id or None.
            many2one = fields_[name].type == "many2one"
            cache.update(unstored, fields_[name], [value or None for value in column] if many2one else column)
        for name, value in constants.items():
            cache.update(unstored, fields_[name], [value] * len(unstored))


class MarketingScenarioStep(models.Model):
    _name = "marketing.scenario.step"
    _description = "Scenario Step"
    _order = "scheduled_at desc, id desc"
    _rec_name = "node_id"
    # The work queue: scheduled_at and processed_at say when, the participant
    # says who. The four log columns would cost two foreign-key checks and
    # four values on every insert and update of the engine's hot path.
    _log_access = False

    participant_id = fields.Many2one(
        "marketing.scenario.participant", required=True, ondelete="cascade", index=True, readonly=True
    )
    # No index of its own: marketing_scenario_step_node_state_idx starts with it.
    node_id = fields.Many2one("marketing.scenario.node", required=True, ondelete="cascade", readonly=True)
    # No index: the engine reaches steps by due time, node or participant, and
    # every index of the queue is written again each time a step changes state.
    # No foreign key either (CopiedMany2one): the participant's own keeps it,
    # and deleting the scenario deletes its participants, hence their steps.
    scenario_id = CopiedMany2one("marketing.scenario", related="participant_id.scenario_id", store=True, readonly=True)
    # Indexed for the ON DELETE CASCADE of a contact's deletion (and its
    # history): without it, each deleted contact scans the whole queue. Events
    # resuming the scheduled steps of their contacts use it too. Its foreign
    # key stays: merging contacts rewrites the columns that reference
    # res_partner through their foreign keys.
    partner_id = fields.Many2one(
        "res.partner",
        related="participant_id.partner_id",
        store=True,
        readonly=True,
        ondelete="cascade",
        index="btree_not_null",
    )
    # Copied from the participant, whose scenario holds the company: no foreign key of its own.
    company_id = CopiedMany2one("res.company", related="participant_id.company_id", store=True)
    is_test = fields.Boolean(related="participant_id.is_test", store=True, readonly=True)
    node_type = fields.Selection(related="node_id.node_type")
    # No index on the state alone: the steps left to run are found through the
    # partial index on scheduled steps, the statistics through (node, state).
    state = fields.Selection(STEP_STATES, required=True, default="scheduled", readonly=True)
    scheduled_at = fields.Datetime(required=True, readonly=True, default=fields.Datetime.now)
    processed_at = fields.Datetime(readonly=True)
    branch = fields.Selection(BRANCHES, readonly=True, help="The way the run went on after this step.")
    arm_node_id = fields.Many2one(
        "marketing.scenario.node", string="Split Arm", readonly=True, ondelete="set null", help="The arm a split chose."
    )
    result = fields.Text(readonly=True)
    attempt = fields.Integer(readonly=True, default=0, help="Attempts already made (webhook retries).")
    trace_id = fields.Many2one(
        "mailing.trace", string="Mailing Trace", readonly=True, ondelete="set null", index="btree_not_null"
    )
    status_code = fields.Integer(string="HTTP Status", readonly=True)

    def init(self):
        # Created by earlier versions: see scenario_id and company_id.
        drop_foreign_keys(self.env.cr, self._table, ["scenario_id", "company_id"])
        # The advance cron looks only at due scheduled steps: keep that index
        # small, and in the cron's order (scheduled_at, id) so that a batch is
        # read straight off the index, never by sorting every due step.
        create_index(
            self.env.cr,
            "marketing_scenario_step_due_order_idx",
            self._table,
            ["scheduled_at", "id"],
            where="state = 'scheduled'",
        )
        create_index(
            self.env.cr,
            "marketing_scenario_step_node_state_idx",
            self._table,
            ["node_id", "state"],
        )

    def write(self, vals):
        # A step that changes node, contact, state or due time outside the
        # engine would run twice, never, or for somebody else.
        if not self.env.su and set(vals) & QUEUE_FIELDS:
            raise AccessError(self.env._("Scenario steps change only through the engine and the scenario's actions."))
        return super().write(vals)

    # ------------------------------------------------------------------
    # Scheduling
    # ------------------------------------------------------------------

    @api.model
    def _schedule_nodes(self, node_participants, copies=None):
        """Insert the steps of ``[(nodes, participants)]`` in one statement.

        Each node computes its participants' due times in one go (waits read
        the contacts' dates in bulk), so the number of queries does not grow
        with the number of participants. ``copies``: see ``_insert_steps``.
        """
        return self._insert_steps(self._step_rows(node_participants), copies)

    @api.model
    def _step_rows(self, node_participants):
        """The steps of ``[(nodes, participants)]`` to schedule: ``[(participant id, node id, scheduled_at)]``."""
        rows = []
        now = fields.Datetime.now()
        for nodes, participants in node_participants:
            for node in nodes:
                if not participants:
                    continue
                due = node._due_dates(participants, now)
                rows.extend((participant_id, node.id, due[participant_id]) for participant_id in participants.ids)
        return rows

    @api.model
    def _insert_steps(self, rows, copies=None):
        """Insert scheduled steps (participant id, node id, scheduled_at) with one statement.

        ``copies``: the participants' ``(scenario, contact, company, is_test)``
        by participant id when the caller already read them (the parent
        steps' copies), else the statement reads them from the participants.
        Returns the new steps as ``[(id, node id, scheduled_at)]``.
        """
        if not rows:
            return []
        self.env["marketing.scenario.participant"].flush_model()
        self.flush_model()
        participant_ids, node_ids, dates = zip(*rows)
        # Arrays, not a VALUES list: one parameter per column whatever the
        # number of rows, cheaper to build and to parse.
        arrays = {
            "participants": array_literal(participant_ids),
            "nodes": array_literal(node_ids),
            "dates": array_literal(dates),
        }
        if copies is not None and all(participant_id in copies for participant_id in participant_ids):
            # No join: on a large participants' table PostgreSQL hashes it all
            # to find a batch's rows.
            scenario_ids, partner_ids, company_ids, tests = zip(*(copies[pid] for pid in participant_ids))
            steps = SQL(
                """
                SELECT * FROM unnest(%(participants)s::int[], %(nodes)s::int[], %(dates)s::timestamp[],
                                     %(scenarios)s::int[], %(partners)s::int[], %(companies)s::int[], %(tests)s::bool[])
                """,
                scenarios=array_literal(scenario_ids),
                partners=array_literal(partner_ids),
                companies=array_literal(company_ids),
                tests=array_literal(tests),
                **arrays,
            )
        else:
            steps = SQL(
                """
                SELECT r.participant_id, r.node_id, r.scheduled_at, p.scenario_id, p.partner_id, p.company_id, p.is_test
                  FROM unnest(%(participants)s::int[], %(nodes)s::int[], %(dates)s::timestamp[])
                       AS r (participant_id, node_id, scheduled_at)
                  JOIN marketing_scenario_participant p ON p.id = r.participant_id
                """,
                **arrays,
            )
        query = SQL(
            """
            INSERT INTO marketing_scenario_step (
                participant_id, node_id, scheduled_at, scenario_id, partner_id, company_id, is_test, state, attempt
            )
            SELECT s.*, 'scheduled', 0 FROM (%s) AS s
         RETURNING id, node_id, scheduled_at
            """,
            steps,
        )
        self.env.cr.execute(query)
        inserted = self.env.cr.fetchall()
        self.invalidate_model()
        self.env["marketing.scenario.participant"].invalidate_model(["step_ids"])
        return inserted

    @api.model
    def _wake_advance(self, at=None):
        # sudo: whoever enrolls contacts (an API request, a marketer) may wake
        # the engine without the right to manage crons.
        self.env.ref("marketing_event_automation.ir_cron_scenario_advance").sudo()._trigger(at)

    # ------------------------------------------------------------------
    # Advance cron
    # ------------------------------------------------------------------

    @api.model
    def _cron_advance(self, batch_size=ADVANCE_BATCH_SIZE):
        """Run one batch of due steps; the cron runner commits it and calls again while some remain."""
        self.flush_model()
        self.env["marketing.scenario"].flush_model(["state"])
        now = fields.Datetime.now()
        running = self._running_scenario_ids()
        if not running:
            self.env["ir.cron"]._notify_progress(done=0, remaining=0)
            return 0
        analyze_if_stale(self.env.cr, [self._table, self.env["marketing.scenario.participant"]._table])
        # The running scenarios as a list, not a join: PostgreSQL then knows
        # how many steps qualify and reads the first ones off the due index
        # in order, instead of sorting every due step of the queue.
        # SKIP LOCKED: concurrent cron workers take disjoint batches, and the
        # state test rejects a step another worker finished meanwhile: a step
        # never runs twice.
        self.env.cr.execute(
            SQL(
                """
                SELECT s.id, s.node_id
                  FROM marketing_scenario_step s
                 WHERE s.state = 'scheduled' AND s.scheduled_at <= %(now)s AND NOT s.is_test
                   AND s.scenario_id = ANY(%(running)s)
                 ORDER BY s.scheduled_at, s.id
                 LIMIT %(limit)s
                   FOR UPDATE SKIP LOCKED
                """,
                now=now,
                running=running,
                limit=batch_size,
            )
        )
        rows = self.env.cr.fetchall()
        done = self._execute_chained(rows, limit=CHAIN_FACTOR * batch_size)
        remaining = self._count_due(now, running)
        self.env["ir.cron"]._notify_progress(done=done, remaining=remaining)
        if not remaining:
            next_due = self._next_due(now, running)
            if next_due:
                self._wake_advance(next_due)
        return done

    @api.model
    def _execute_chained(self, rows, limit):
        """Run the steps ``[(id, node id)]``, then, round after round, the children they made due now.

        A wait of zero, a condition or a tag is followed at once by its
        children: running them in the same transaction spares each level of
        the tree a trip through the queue (a locked read, an index scan, a
        commit). Every node runs through its own handler and checks (rights,
        frequency caps, quiet hours), the statistics count the steps, and a
        rollback takes the whole chain back to the steps the batch locked.
        A child whose kind allows it (``stored_after_run``) is inserted only
        once it has run, in its final state: an insert, then an update of
        the same row in the same transaction would write it and check its
        foreign keys twice. The other children are inserted as scheduled and
        read again before their round, so that one a round ended (an exit
        cancels its participant's scheduled steps) is left out. Each round
        costs the queries of one batch of its node kinds, whatever its size;
        past ``CHAIN_ROUNDS`` rounds or ``limit`` steps, or for a node whose
        kind is not ``chained`` (a webhook's network time), the children wait
        for the next batch in the queue. Returns the number of steps run.
        """
        done = 0
        chain = None
        for round_number in range(CHAIN_ROUNDS):
            if not rows:
                break
            done += len(rows)
            budget = limit - done
            # Children are put off only for a round that will run.
            next_chain = _Chain(budget) if budget > 0 and round_number + 1 < CHAIN_ROUNDS else None
            children = self.browse([row[0] for row in rows])._execute(
                node_ids=[row[1] for row in rows], chain=chain, next_chain=next_chain
            )
            if next_chain is None:
                break
            now = fields.Datetime.now()
            due_now = [(step_id, node_id) for step_id, node_id, scheduled_at in children if scheduled_at <= now]
            nodes = self.env["marketing.scenario.node"].browse({node_id for _step_id, node_id in due_now})
            chained = {node.id for node in nodes if node._node_type_spec()["chained"]}
            candidates = [step_id for step_id, node_id in due_now if node_id in chained]
            rows = []
            budget -= len(next_chain.steps)
            if candidates and budget > 0:
                self.flush_model()
                self.env.cr.execute(
                    SQL(
                        """
                        SELECT id, node_id FROM marketing_scenario_step
                         WHERE id = ANY(%(ids)s) AND state = 'scheduled'
                         ORDER BY id
                         LIMIT %(limit)s
                        """,
                        ids=candidates,
                        limit=budget,
                    )
                )
                rows = self.env.cr.fetchall()
            rows = sorted(rows + [(step_id, values[1]) for step_id, values in next_chain.steps.items()])
            chain = next_chain
        return done

    @api.model
    def _running_scenario_ids(self):
        """The running scenarios of every company: the engine serves them all, whoever runs the cron."""
        self.env.cr.execute("SELECT id FROM marketing_scenario WHERE state = 'running' ORDER BY id")
        return [row[0] for row in self.env.cr.fetchall()]

    @api.model
    def _count_due(self, now, running, cap=ADVANCE_BATCH_SIZE):
        """How many steps are due, counted up to ``cap``.

        The cron runner only needs to know whether to run again: counting a
        backlog of a million due steps after each batch would make the run
        quadratic, and every step counted is a visit to the queue's table.
        The order makes PostgreSQL read the due index: on a queue of done
        steps it would expect scheduled ones among the past ones and scan the
        whole table for a count that is zero.
        """
        self.flush_model()
        self.env.cr.execute(
            SQL(
                """
                SELECT count(*) FROM (
                    SELECT 1
                      FROM marketing_scenario_step s
                     WHERE s.state = 'scheduled' AND s.scheduled_at <= %(now)s AND NOT s.is_test
                       AND s.scenario_id = ANY(%(running)s)
                     ORDER BY s.scheduled_at, s.id
                     LIMIT %(cap)s
                ) due
                """,
                now=now,
                running=running,
                cap=cap,
            )
        )
        return self.env.cr.fetchone()[0]

    @api.model
    def _next_due(self, now, running):
        """When the next scheduled step falls due (the partial index is read in order: one row)."""
        self.env.cr.execute(
            SQL(
                """
                SELECT s.scheduled_at
                  FROM marketing_scenario_step s
                 WHERE s.state = 'scheduled' AND s.scheduled_at > %(now)s AND NOT s.is_test
                   AND s.scenario_id = ANY(%(running)s)
                 ORDER BY s.scheduled_at
                 LIMIT 1
                """,
                now=now,
                running=running,
            )
        )
        row = self.env.cr.fetchone()
        return row and row[0]

    def _execute(self, node_ids=None, actor=None, chain=None, next_chain=None):
        """Run these steps: one handler call per node, then their children in one insert.

        Returns the children inserted, ``[(id, node id, scheduled_at)]``.

        ``node_ids`` are the steps' nodes in the same order when the caller
        already read them. The handlers act with the rights of ``actor``, by
        default each scenario's responsible user; this bookkeeping (the
        steps' states, the children) is the engine's own. A handler that
        raises marks its steps as error with the reason and rolls back what
        it did (savepoint); the other nodes of the batch go on. ``chain``
        holds those of these steps not inserted yet, ``next_chain`` receives
        the children put off (see ``_execute_chained``).
        """
        if node_ids is None:
            node_ids = [step.node_id.id for step in self]
        step_ids_by_node = defaultdict(list)
        for step_id, node_id in zip(self.ids, node_ids):
            step_ids_by_node[node_id].append(step_id)
        Node = self.env["marketing.scenario.node"]
        outcomes = {}
        for node_id, step_ids in step_ids_by_node.items():
            node, node_steps = Node.browse(node_id), self.browse(step_ids)
            if chain:
                # Again before each handler: a savepoint's rollback clears the cache.
                chain.cache(node_steps)
            try:
                with self.env.cr.savepoint():
                    outcomes.update(node._run_steps(node_steps, actor))
            except TRANSIENT_ERRORS as error:
                # Another transaction changed the same rows (a contact's score, a
                # list): nothing is wrong with the steps, run them again shortly.
                _logger.info("Scenario node %s met a concurrent update, retrying: %s", node.id, error)
                retry_at = fields.Datetime.now() + timedelta(seconds=TRANSIENT_RETRY_SECONDS)
                outcomes.update(
                    {
                        step_id: {
                            "state": "retry",
                            "result": self.env._("Concurrent update, retried"),
                            "scheduled_at": retry_at,
                        }
                        for step_id in node_steps.ids
                    }
                )
            except (UserError, AccessError) as error:  # ValidationError too: the reason is for the user
                _logger.info("Scenario node %s refused %s steps: %s", node.id, len(node_steps), error)
                message = self.env._("%(node)s failed: %(error)s", node=node.display_name, error=error)
                outcomes.update({step_id: {"state": "error", "result": message} for step_id in node_steps.ids})
            except NETWORK_ERRORS:
                # Their text stays in the server log: it tells which hosts and
                # ports answer, what a step's result must not show.
                _logger.warning("Scenario node %s failed on %s steps", node.id, len(node_steps), exc_info=True)
                message = self.env._("%(node)s failed: a network error, logged on the server", node=node.display_name)
                outcomes.update({step_id: {"state": "error", "result": message} for step_id in node_steps.ids})
            except Exception as error:  # any handler failure is recorded on its steps
                _logger.warning("Scenario node %s failed on %s steps", node.id, len(node_steps), exc_info=True)
                message = self.env._("%(node)s failed: %(error)s", node=node.display_name, error=error)
                outcomes.update({step_id: {"state": "error", "result": message} for step_id in node_steps.ids})
        self._wake_queues(outcomes)
        return self._apply_outcomes(outcomes, chain=chain, next_chain=next_chain)

    @api.model
    def _wake_queues(self, outcomes):
        """Wake the crons the handlers asked for (``wake`` of an outcome: the mail or SMS queue), once each.

        Called after every handler's savepoint: a node whose handler failed
        asked for nothing, its messages rolled back with it. The trigger row
        is part of the batch's transaction and its NOTIFY a post-commit hook,
        so the queue wakes once the steps are committed, and never for a
        batch that rolls back.
        """
        for xmlid in sorted({outcome["wake"] for outcome in outcomes.values() if outcome.get("wake")}):
            # sudo: the engine wakes Odoo's queues whoever runs it; the trigger is its only effect.
            self.env.ref(xmlid).sudo()._trigger()

    def _apply_outcomes(self, outcomes, chain=None, next_chain=None):
        """Store each step's outcome with one statement, schedule the children, finish what ended.

        Returns the children inserted, ``[(id, node id, scheduled_at)]``.
        Works on ids, not on records: the statement returns each step's
        participant and node, and the children are computed once per node and
        branch, so a batch costs the same queries whatever its size. The
        steps of ``chain`` are inserted in their final state; with
        ``next_chain``, the children due now whose kind allows it are put off
        into it instead of being inserted (see ``_execute_chained``).
        """
        now = fields.Datetime.now()
        unstored = chain.steps if chain else {}
        columns, new_columns = defaultdict(list), defaultdict(list)
        rows = []
        for step_id in self.ids:
            outcome = outcomes.get(step_id) or {"state": "error", "result": self.env._("The handler gave no result.")}
            state = outcome["state"]
            target = columns
            if step_id in unstored:
                participant_id, node_id, scheduled_at, copies = unstored[step_id]
                rows.append((step_id, participant_id, node_id, *copies))
                target = new_columns
                names = ("participant", "node", "scenario", "partner", "company", "test")
                for name, value in zip(names, (participant_id, node_id, *copies)):
                    target[name].append(value)
                target["due"].append(scheduled_at)
            target["id"].append(step_id)
            target["state"].append("scheduled" if state == "retry" else state)
            target["branch"].append(outcome.get("branch") if state in ("done", "skipped") else None)
            target["arm"].append(outcome.get("arm_node_id"))
            target["result"].append(outcome.get("result"))
            target["trace_id"].append(outcome.get("trace_id"))
            target["status_code"].append(outcome.get("status_code"))
            target["scheduled_at"].append(outcome.get("scheduled_at"))
            # A retry counts an attempt, unless the step was only put off (a webhook batch's budget).
            target["attempts"].append(1 if outcome.get("attempted", state == "retry") else 0)
        self.flush_model()
        if columns:
            self.env.cr.execute(
                SQL(
                    """
                    UPDATE marketing_scenario_step s
                       SET state = v.state, branch = v.branch, arm_node_id = v.arm, result = v.result,
                           trace_id = COALESCE(v.trace_id, s.trace_id),
                           status_code = COALESCE(v.status_code, s.status_code),
                           scheduled_at = COALESCE(v.scheduled_at, s.scheduled_at), attempt = s.attempt + v.attempts,
                           processed_at = CASE WHEN v.state = 'scheduled' THEN NULL ELSE %(now)s END
                      FROM unnest(%(id)s::int[], %(state)s::varchar[], %(branch)s::varchar[], %(arm)s::int[],
                                  %(result)s::text[], %(trace_id)s::int[], %(status_code)s::int[],
                                  %(scheduled_at)s::timestamp[], %(attempts)s::int[])
                           AS v (id, state, branch, arm, result, trace_id, status_code, scheduled_at, attempts)
                     WHERE s.id = v.id AND s.id = ANY(%(id)s)
                 RETURNING s.id, s.participant_id, s.node_id, s.scenario_id, s.partner_id, s.company_id, s.is_test
                    """,
                    now=now,
                    **{name: array_literal(values) for name, values in columns.items()},
                )
            )
            rows += self.env.cr.fetchall()
        if new_columns:
            self._insert_final_steps(new_columns, now)
        self.invalidate_recordset()
        Node = self.env["marketing.scenario.node"]
        Participant = self.env["marketing.scenario.participant"]
        children_cache = {}
        schedule = defaultdict(list)
        exit_ids, busy_ids, ended_ids = [], set(), set()
        # A step's copies are its participant's: its children take them.
        copies = {row[1]: row[3:] for row in rows}
        for step_id, participant_id, node_id, *_copies in rows:
            outcome = outcomes.get(step_id) or {}
            state = outcome.get("state")
            if state == "retry":
                busy_ids.add(participant_id)
                continue
            if state not in ("done", "skipped"):
                ended_ids.add(participant_id)
                continue
            if outcome.get("exit"):
                exit_ids.append(participant_id)
                continue
            key = (node_id, outcome.get("branch") or "always", outcome.get("arm_node_id"))
            if key not in children_cache:
                children_cache[key] = Node.browse(node_id)._children_for(key[1], key[2])
            children = children_cache[key]
            for child in children:
                schedule[child].append(participant_id)
            if children:
                busy_ids.add(participant_id)
            else:
                ended_ids.add(participant_id)
        child_rows = self._step_rows([(child, Participant.browse(ids)) for child, ids in schedule.items()])
        if next_chain is not None:
            child_rows = next_chain.put_off(self.env, child_rows, copies, set(exit_ids))
        children = self._insert_steps(child_rows, copies)
        if exit_ids:
            Participant.browse(list(dict.fromkeys(exit_ids)))._finish("exited", self.env._("Exit node reached"))
        # Only a participant whose step led nowhere may have nothing left to run.
        Participant.browse(sorted(ended_ids - busy_ids - set(exit_ids)))._complete_if_done()
        return children

    @api.model
    def _insert_final_steps(self, columns, now):
        """Insert steps that ran before their row existed, in their final state (see ``_apply_outcomes``)."""
        self.env.cr.execute(
            SQL(
                """
                INSERT INTO marketing_scenario_step (
                    id, participant_id, node_id, scenario_id, partner_id, company_id, is_test, state, branch,
                    arm_node_id, result, trace_id, status_code, scheduled_at, attempt, processed_at
                )
                SELECT v.id, v.participant, v.node, v.scenario, v.partner, v.company, v.test, v.state, v.branch,
                       v.arm, v.result, v.trace_id, v.status_code, COALESCE(v.scheduled_at, v.due), v.attempts,
                       CASE WHEN v.state = 'scheduled' THEN NULL ELSE %(now)s END
                  FROM unnest(%(id)s::int[], %(participant)s::int[], %(node)s::int[], %(scenario)s::int[],
                              %(partner)s::int[], %(company)s::int[], %(test)s::bool[], %(state)s::varchar[],
                              %(branch)s::varchar[], %(arm)s::int[], %(result)s::text[], %(trace_id)s::int[],
                              %(status_code)s::int[], %(scheduled_at)s::timestamp[], %(due)s::timestamp[],
                              %(attempts)s::int[])
                       AS v (id, participant, node, scenario, partner, company, test, state, branch, arm, result,
                             trace_id, status_code, scheduled_at, due, attempts)
                """,
                now=now,
                **{name: array_literal(values) for name, values in columns.items()},
            )
        )
        self.env["marketing.scenario.participant"].invalidate_model(["step_ids"])

    # ------------------------------------------------------------------
    # Waiting for events
    # ------------------------------------------------------------------

    @api.model
    def _resume_waiting(self, events, event_type, results):
        """Send participants waiting for this event type down their 'yes' branch."""
        steps = self.search(
            [
                ("state", "=", "scheduled"),
                ("node_id.node_type", "=", "wait_event"),
                ("node_id.wait_event_type_id", "=", event_type.id),
                ("partner_id", "in", events.partner_id.ids),
                ("scenario_id.state", "=", "running"),
                ("is_test", "=", False),
            ]
        )
        if not steps:
            return
        # Lock them like the advance cron does: a step the cron is running now is skipped.
        self.env.cr.execute(
            SQL(
                "SELECT id FROM marketing_scenario_step WHERE id IN %s AND state = 'scheduled' FOR UPDATE SKIP LOCKED",
                tuple(steps.ids),
            )
        )
        steps = self.browse([row[0] for row in self.env.cr.fetchall()])
        events_by_partner = events.grouped("partner_id")
        outcomes, resumed = {}, defaultdict(list)
        filters = {}
        for step in steps:
            node = step.node_id
            if node.id not in filters:
                filters[node.id] = parse_params_filter(node.wait_event_filter, node.wait_event_type_id.params_structure)
            for event in events_by_partner.get(step.partner_id, ()):
                if (
                    step.scenario_id._reached_by(event)
                    and event.occurred_at >= step.participant_id.entered_at
                    and correlation_matches(
                        step.participant_id.correlation_value, event.params, step.scenario_id._correlation_path()
                    )
                    and params_match(filters[node.id], event.params)
                ):
                    outcomes[step.id] = {
                        "state": "done",
                        "branch": "yes",
                        "result": self.env._("%(type)s received", type=event_type.name),
                    }
                    resumed[event.id].append(step.scenario_id.name)
                    break
        if outcomes:
            self.browse(list(outcomes))._apply_outcomes(outcomes)
            for event_id, names in resumed.items():
                results[event_id]["resumed"].extend(names)
            self._wake_advance()
