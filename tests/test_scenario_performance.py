import threading
import time
from datetime import timedelta

import psycopg2

from odoo import SUPERUSER_ID
from odoo import api
from odoo.addons.mail.tests.common import MockEmail
from odoo.api import Transaction
from odoo.tests import TransactionCase
from odoo.tests import tagged
from odoo.tools import SQL
from odoo.tools import mute_logger

from ..models.marketing_scenario_step import CHAIN_FACTOR
from ..utils.table_statistics import STALE_STATISTICS_MARGIN
from ..utils.table_statistics import analyze_if_stale
from .scenario_common import CommittedLeftovers
from .scenario_common import ScenarioCommon

CACHE_SLACK = 2
# A link as most mailings have: its tracking must not cost a query per recipient.
EMAIL_BODY = "<p>Hello <t t-out='object.name'/>, <a href='https://shop.example.com/new'>see what is new</a></p>"


@tagged("post_install", "-at_install")
class TestScenarioQueryCount(ScenarioCommon, MockEmail):
    """Handlers take a node's whole batch at once: queries do not grow with the batch."""

    def build(self, size, label):
        partners = self.env["res.partner"].create(
            [{"name": f"{label} {i}", "email": f"{label}{i}@example.org"} for i in range(size)]
        )
        mailing_list = self.env["mailing.list"].create({"name": f"List {label}"})
        scenario = self.create_scenario(name=label, trigger_type="now", trigger_event_type_id=False)
        self.add_node(scenario, "tag_add", tag_ids=[(6, 0, self.tag_vip.ids)])
        self.add_node(scenario, "score", score_delta=1, score_reason="perf")
        condition = self.add_node(
            scenario, "condition", condition_type="domain", condition_domain="[('email', 'ilike', '0@')]"
        )
        email = self.add_node(scenario, "email", condition, branch="yes")
        email.mailing_id.write({"subject": "Hi", "body_html": EMAIL_BODY})
        self.add_node(scenario, "list_add", condition, branch="no", mailing_list_id=mailing_list.id)
        self.add_node(scenario, "wait", condition, branch="no", wait_amount=1, wait_unit="hours")
        scenario.action_start()
        scenario._enroll_partners(partners.ids)
        self.env.flush_all()
        self.env.invalidate_all()
        return scenario

    def run_advance(self):
        with self.mock_mail_gateway():
            return self.advance()

    def test_advance_queries_do_not_grow_with_batch_size(self):
        # Warm the caches (ir.model, templates, registry lookups) with a first run.
        self.build(3, "warm")
        self.run_advance()
        scenario_10 = self.build(10, "ten")
        before = self.cr.sql_log_count
        self.assertEqual(self.run_advance(), 10 * 4)
        queries_10 = self.cr.sql_log_count - before
        self.assertLess(queries_10, 400)
        scenario_100 = self.build(100, "hundred")
        # Ten times the contacts, the same queries: only a couple of cache
        # misses (users, ormcache) may differ from one run to the other.
        with self.assertQueryCount(queries_10 + CACHE_SLACK):
            self.assertEqual(self.run_advance(), 100 * 4)
        self.assertEqual(scenario_10.completed_count, 1, "the one contact who got the email")
        self.assertEqual(scenario_100.active_count, 90, "the others wait an hour")

    def test_dispatch_queries_do_not_grow_with_batch_size(self):
        scenario = self.create_scenario()
        self.add_node(scenario, "wait", wait_amount=1, wait_unit="hours")
        scenario.action_start()
        counts = self.dispatch_query_counts(self.type_cart, {"total": 1}, (10, 100), "D")
        self.assertEqual(len(scenario.participant_ids), 110)
        self.assertEqual(counts[0], counts[1], f"dispatch queries at 10 and 100 events: {counts}")


@tagged("post_install", "-at_install")
class TestScenarioQueryCountByNode(ScenarioCommon, MockEmail):
    """Each kind of node runs a batch of 10 or 100 steps with the same queries, and so does audience entry."""

    def node_values(self, node_type, label):
        mailing_list = self.env["mailing.list"].create({"name": f"List {label}"})
        return {
            "wait": {"wait_amount": 0, "wait_unit": "minutes"},
            "condition": {"condition_type": "domain", "condition_domain": "[('email', 'ilike', '1@')]"},
            "tag_add": {"tag_ids": [(6, 0, self.tag_vip.ids)]},
            "tag_remove": {"tag_ids": [(6, 0, self.tag_vip.ids)]},
            "score": {"score_delta": 3, "score_reason": "perf"},
            "exit": {},
            "email": {},
            "list_add": {"mailing_list_id": mailing_list.id},
            "blacklist": {"blacklist_email": True},
        }[node_type]

    def one_node_batch(self, node_type, size, label):
        """Queries of the advance cron running ``size`` steps of one ``node_type`` node."""
        partners = self.env["res.partner"].create(
            [{"name": f"{label} {i}", "email": f"{label}{i}@example.org"} for i in range(size)]
        )
        scenario = self.create_scenario(name=label, trigger_type="now", trigger_event_type_id=False)
        node = self.add_node(scenario, node_type, **self.node_values(node_type, label))
        if node_type == "email":
            node.mailing_id.write({"subject": "Hi", "body_html": EMAIL_BODY})
        scenario.action_start()
        scenario._enroll_partners(partners.ids)
        self.env.flush_all()
        self.env.invalidate_all()
        before = self.cr.sql_log_count
        with self.mock_mail_gateway():
            self.assertEqual(self.Step._cron_advance(), size)
        self.env.flush_all()
        steps = scenario.participant_ids.step_ids
        self.assertEqual(set(steps.mapped("state")), {"done"}, f"{node_type}: {set(steps.mapped('result'))}")
        return self.cr.sql_log_count - before

    def test_each_node_kind_runs_a_batch_in_constant_queries(self):
        for node_type in ("wait", "condition", "tag_add", "tag_remove", "score", "exit", "email", "list_add"):
            with self.subTest(node_type=node_type):
                self.one_node_batch(node_type, 3, f"warm-{node_type}")  # caches: ir.model, templates, users
                queries_10 = self.one_node_batch(node_type, 10, f"ten-{node_type}")
                queries_100 = self.one_node_batch(node_type, 100, f"hundred-{node_type}")
                self.assertLessEqual(
                    queries_100, queries_10 + CACHE_SLACK, f"{node_type}: {queries_10} then {queries_100} queries"
                )

    def test_tag_nodes_change_the_relation_and_the_cache(self):
        partners = self.env["res.partner"].create([{"name": f"T{i}", "email": f"t{i}@example.org"} for i in range(3)])
        scenario = self.create_scenario(name="Tags", trigger_type="now", trigger_event_type_id=False)
        added = self.add_node(scenario, "tag_add", tag_ids=[(6, 0, (self.tag_vip | self.tag_lost).ids)])
        # An hour apart: the first batch runs the first node only.
        wait = self.add_node(scenario, "wait", added, wait_amount=1, wait_unit="hours")
        self.add_node(scenario, "tag_remove", wait, tag_ids=[(6, 0, self.tag_lost.ids)])
        partners[0].category_id = self.tag_vip  # already tagged: added once, no duplicate row
        scenario.action_start()
        scenario._enroll_partners(partners.ids)
        self.Step._cron_advance()
        self.assertEqual(partners.mapped("category_id"), self.tag_vip | self.tag_lost, "read through the cache")
        self.assertIn(partners[1], self.tag_lost.partner_ids)
        self.advance_at(self.now() + timedelta(hours=2))
        for partner in partners:
            self.assertEqual(partner.category_id, self.tag_vip)
        self.assertFalse(self.tag_lost.partner_ids & partners)

    def test_chained_tag_nodes_read_what_the_node_before_wrote(self):
        """Due at once, the second node runs in the first one's batch: on the relation the first one changed."""
        partners = self.env["res.partner"].create([{"name": f"C{i}", "email": f"c{i}@example.org"} for i in range(3)])
        scenario = self.create_scenario(name="Chained tags", trigger_type="now", trigger_event_type_id=False)
        added = self.add_node(scenario, "tag_add", tag_ids=[(6, 0, (self.tag_vip | self.tag_lost).ids)])
        removed = self.add_node(scenario, "tag_remove", added, tag_ids=[(6, 0, self.tag_lost.ids)])
        condition = self.add_node(
            scenario,
            "condition",
            removed,
            condition_type="domain",
            condition_domain=repr([("category_id", "in", self.tag_lost.ids)]),
        )
        self.add_node(scenario, "score", condition, branch="no", score_delta=7, score_reason="chained")
        scenario.action_start()
        scenario._enroll_partners(partners.ids)
        self.assertEqual(partners.mapped("category_id"), self.env["res.partner.category"], "read before the batch")
        self.assertEqual(self.Step._cron_advance(), 3 * 4, "the whole tree in one batch")
        for partner in partners:
            self.assertEqual(partner.category_id, self.tag_vip)
            self.assertEqual(partner.engagement_score, 7, "the condition saw the tag removed")
        self.assertFalse(self.tag_lost.partner_ids & partners)
        steps = scenario.participant_ids.step_ids
        self.assertEqual(len(steps), 12)
        self.assertEqual(set(steps.mapped("state")), {"done"})
        self.assertEqual(set(scenario.participant_ids.mapped("state")), {"completed"})

    def chain_batch(self, size, label, batch_size=500):
        """The engine bench's tree, wait 0 → condition → yes: tag / no: score → exit: one advance call's queries."""
        partners = self.env["res.partner"].create(
            [{"name": f"{label} {i}", "email": f"{label}{i}@{'a' if i % 2 else 'b'}.example"} for i in range(size)]
        )
        scenario = self.create_scenario(name=label, trigger_type="now", trigger_event_type_id=False)
        wait = self.add_node(scenario, "wait", wait_amount=0, wait_unit="minutes")
        condition = self.add_node(
            scenario,
            "condition",
            wait,
            condition_type="domain",
            condition_domain="[('email', '=ilike', '%@a.example')]",
        )
        tag = self.add_node(scenario, "tag_add", condition, branch="yes", tag_ids=[(6, 0, self.tag_vip.ids)])
        score = self.add_node(scenario, "score", condition, branch="no", score_delta=2, score_reason="chain")
        self.add_node(scenario, "exit", tag)
        self.add_node(scenario, "exit", score)
        scenario.action_start()
        scenario._enroll_partners(partners.ids)
        self.env.flush_all()
        self.env.invalidate_all()
        before = self.cr.sql_log_count
        done = self.Step._cron_advance(batch_size=batch_size)
        self.env.flush_all()
        return scenario, done, self.cr.sql_log_count - before

    def test_due_children_run_in_the_same_batch_in_constant_queries(self):
        self.chain_batch(3, "warm-chain")
        counts = []
        for size in (10, 100):
            scenario, done, queries = self.chain_batch(size, f"chain{size}")
            self.assertEqual(done, size * 4, "the four levels of the tree in one advance call")
            self.assertEqual(set(scenario.participant_ids.step_ids.mapped("state")), {"done"})
            self.assertEqual(set(scenario.participant_ids.mapped("state")), {"exited"})
            self.assertEqual(
                scenario.node_ids.filtered(lambda node: node.node_type == "exit").mapped("processed_count"),
                [size // 2] * 2,
            )
            counts.append(queries)
        self.assertLessEqual(counts[1], counts[0] + CACHE_SLACK, f"chained batch queries at 10 and 100: {counts}")

    def test_chaining_is_bounded_by_the_batch(self):
        # A batch of 2 runs at most CHAIN_FACTOR x 2 steps: the tree's last level waits in the queue.
        scenario, done, _queries = self.chain_batch(2, "bounded", batch_size=1)
        self.assertEqual(done, CHAIN_FACTOR * 1)
        steps = scenario.participant_ids.step_ids
        self.assertEqual(len(steps.filtered(lambda step: step.state == "done")), CHAIN_FACTOR)
        self.assertEqual(len(steps.filtered(lambda step: step.state == "scheduled")), 1, "the first one of the other")
        self.advance()
        self.assertEqual(set(scenario.participant_ids.mapped("state")), {"exited"})
        self.assertEqual(len(scenario.participant_ids.step_ids), 8)

    def test_entry_batch_queries_do_not_grow_with_the_audience(self):
        counts = []
        for size in (3, 10, 100):
            label = f"entry{size}"
            self.env["res.partner"].create(
                [{"name": f"{label} {i}", "email": f"{label}-{i}@example.org", "ref": label} for i in range(size)]
            )
            scenario = self.create_scenario(
                name=label,
                trigger_type="now",
                trigger_event_type_id=False,
                audience_domain=repr([("ref", "=", label)]),
            )
            self.add_node(scenario, "wait", wait_amount=1, wait_unit="hours")
            scenario.action_start()
            self.env.flush_all()
            self.env.invalidate_all()
            before = self.cr.sql_log_count
            self.assertEqual(scenario._schedule_one_batch(self.now(), 1000), size)
            self.env.flush_all()
            counts.append(self.cr.sql_log_count - before)
            self.assertEqual(len(scenario.participant_ids.step_ids), size)
        self.assertLessEqual(counts[2], counts[1] + CACHE_SLACK, f"entry queries at 3, 10 and 100 contacts: {counts}")


@tagged("post_install", "-at_install")
class TestScenarioConcurrency(CommittedLeftovers, TransactionCase):
    """Two advance crons on the same due steps, each with its own database transaction."""

    SIZE = 30

    def setUp(self):
        super().setUp()
        with self.registry.cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {"tracking_disable": True})
            self.remember_last_ids(cr)
            partners = env["res.partner"].create(
                [{"name": f"Concurrent {i}", "email": f"concurrent{i}@example.org"} for i in range(self.SIZE)]
            )
            scenario = env["marketing.scenario"].create(
                {"name": "Concurrency", "trigger_type": "now", "timezone": "UTC", "entry_policy": "every_time"}
            )
            node = env["marketing.scenario.node"].create({"scenario_id": scenario.id, "node_type": "email"})
            node.mailing_id.write({"subject": "Once", "body_html": "<p>Only once</p>"})
            scenario.write({"state": "running"})
            scenario._enroll_partners(partners.ids)
            self.ids = {
                "partners": partners.ids,
                "scenario": scenario.id,
                "mailing": node.mailing_id.id,
            }
        self.addCleanup(self.cleanup)

    def cleanup(self):
        with self.registry.cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {})
            mails = env["mail.mail"].search([("mailing_id", "=", self.ids["mailing"])])
            messages = mails.mail_message_id
            env["mailing.trace"].search([("mass_mailing_id", "=", self.ids["mailing"])]).unlink()
            mails.unlink()
            messages.unlink()
            scenario = env["marketing.scenario"].browse(self.ids["scenario"])
            scenario.write({"state": "stopped"})
            scenario.node_ids.write({"mailing_id": False})
            scenario.unlink()
            env["mailing.mailing"].browse(self.ids["mailing"]).unlink()
            env["res.partner"].browse(self.ids["partners"]).unlink()
            self.remove_leftovers(cr)

    def test_a_step_never_runs_twice(self):
        barrier = threading.Barrier(2)
        processed = [0, 0]
        errors = []

        def worker(index):
            try:
                barrier.wait(timeout=10)
                while True:
                    try:
                        with self.registry.cursor() as cr:
                            # The registry is given, not looked up: the test runner holds
                            # the registry lock while the post-install tests run.
                            cr.transaction = Transaction(self.registry)
                            env = api.Environment(cr, SUPERUSER_ID, {})
                            count = env["marketing.scenario.step"]._cron_advance(batch_size=4)
                    except psycopg2.errors.SerializationFailure:
                        continue  # the cron runner retries such a batch; the other worker took it
                    if not count:
                        break
                    processed[index] += count
            except Exception as error:  # noqa: BLE001 - reported by the main thread
                errors.append(error)

        threads = [threading.Thread(target=worker, args=(index,)) for index in range(2)]
        # Serialization failures between the workers are expected (and retried):
        # PostgreSQL reports them, the cron runner would replay the batch.
        with mute_logger("odoo.sql_db"):
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=120)
        self.assertFalse(errors)
        self.assertEqual(sum(processed), self.SIZE, f"steps per worker: {processed}")
        with self.registry.cursor() as cr:
            cr.execute(
                "SELECT count(*), count(DISTINCT res_id) FROM mailing_trace WHERE mass_mailing_id = %s",
                [self.ids["mailing"]],
            )
            self.assertEqual(cr.fetchone(), (self.SIZE, self.SIZE), "one email per contact")
            cr.execute(
                "SELECT count(*) FROM mail_mail WHERE mailing_id = %s",
                [self.ids["mailing"]],
            )
            self.assertEqual(cr.fetchone()[0], self.SIZE)
            cr.execute(
                "SELECT state, count(*) FROM marketing_scenario_step WHERE scenario_id = %s GROUP BY state",
                [self.ids["scenario"]],
            )
            self.assertEqual(dict(cr.fetchall()), {"done": self.SIZE})


@tagged("post_install", "-at_install")
class TestQueueStatistics(TransactionCase):
    """The engine refreshes the planner's statistics of a queue that outgrew them."""

    TABLE = "marketing_statistics_probe"

    def setUp(self):
        super().setUp()
        with self.registry.cursor() as cr:
            cr.execute(SQL("CREATE TABLE %s (id serial PRIMARY KEY, value int)", SQL.identifier(self.TABLE)))
            cr.execute(SQL("ANALYZE %s", SQL.identifier(self.TABLE)))
        self.addCleanup(self.drop_probe)

    def drop_probe(self):
        with self.registry.cursor() as cr:
            cr.execute(SQL("DROP TABLE IF EXISTS %s", SQL.identifier(self.TABLE)))

    def insert_committed(self, count):
        with self.registry.cursor() as cr:
            cr.execute(
                SQL("INSERT INTO %s (value) SELECT g FROM generate_series(1, %s) g", SQL.identifier(self.TABLE), count)
            )
        with self.registry.cursor() as cr:
            # Statistics reach pg_stat_user_tables when a session reports them,
            # at most once a second: wait for this insert's to be there.
            for _attempt in range(50):
                # A transaction reads the statistics once and keeps them: read them anew.
                cr.execute("SELECT pg_stat_clear_snapshot()")
                cr.execute("SELECT n_mod_since_analyze FROM pg_stat_user_tables WHERE relname = %s", [self.TABLE])
                if cr.fetchone()[0] >= count:
                    break
                time.sleep(0.1)

    def analyze_if_stale(self):
        # In a transaction of its own, as each cron batch is: the test's would
        # keep the table's lock after the ANALYZE until the end of the class.
        with self.registry.cursor() as cr:
            return analyze_if_stale(cr, [self.TABLE])

    def test_a_table_grown_past_its_statistics_is_analyzed_once(self):
        self.insert_committed(STALE_STATISTICS_MARGIN // 2)
        self.assertEqual(self.analyze_if_stale(), [], "a few changed rows: autovacuum's job")
        self.insert_committed(STALE_STATISTICS_MARGIN * 3)
        self.assertEqual(self.analyze_if_stale(), [self.TABLE])
        with self.registry.cursor() as cr:
            cr.execute("SELECT reltuples FROM pg_class WHERE relname = %s", [self.TABLE])
            reltuples = cr.fetchone()[0]
        self.assertEqual(reltuples, STALE_STATISTICS_MARGIN * 3 + STALE_STATISTICS_MARGIN // 2)
        self.assertEqual(self.analyze_if_stale(), [], "analyzed: fresh until it grows again")
