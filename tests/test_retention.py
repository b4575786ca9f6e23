from datetime import datetime
from datetime import timedelta
from unittest.mock import patch

from dateutil.relativedelta import relativedelta
from freezegun import freeze_time

from odoo.addons.mail.tests.common import MockEmail
from odoo.exceptions import AccessError
from odoo.exceptions import ValidationError
from odoo.tests import new_test_user
from odoo.tests import tagged
from odoo.tools import SQL
from odoo.tools.convert import convert_file

from ..models import marketing_retention
from ..models.marketing_retention import DEFAULT_PURGE_TIME_SHARE
from ..models.marketing_retention import PURGE_PAUSE_MAX_SECONDS
from ..models.marketing_retention import PURGE_TIME_SHARE_PARAM
from .scenario_common import ScenarioCommon

T0 = datetime(2025, 3, 3, 10, 0, 0)


class RetentionCommon(ScenarioCommon):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.Retention = cls.env["marketing.retention"]
        cls.other_company = cls.env["res.company"].create({"name": "Other shop"})

    def purge(self, batch_size=10000):
        """Run the retention cron until it has nothing left; return the batches that deleted rows."""
        batches = []
        while deleted := self.Retention._cron_purge(batch_size):
            batches.append(deleted)
        self.env.invalidate_all()
        return batches

    def purge_at(self, moment, batch_size=10000):
        with freeze_time(moment):
            return self.purge(batch_size)

    def emit_at(self, moment, event_type, partner, params=None, company=None):
        with freeze_time(moment):
            event = self.emit(event_type, partner, params, occurred_at=moment)
        if company:
            self.env.flush_all()
            self.env.cr.execute(SQL("UPDATE marketing_event SET company_id = %s WHERE id = %s", company.id, event.id))
            event.invalidate_recordset()
        return event

    def dispatch_at(self, moment):
        with freeze_time(moment):
            self.dispatch()

    def existing(self, records):
        return records.exists()


@tagged("post_install", "-at_install")
class TestRetentionPurge(RetentionCommon):
    """What the retention cron deletes, and what it leaves."""

    def test_old_events_go_pending_and_recent_ones_stay(self):
        old = self.emit_at(T0, self.type_purchase, self.partner, {"total": 1})
        recent = self.emit_at(T0 + relativedelta(months=12), self.type_purchase, self.partner, {"total": 2})
        self.dispatch_at(T0 + relativedelta(months=12))
        still_pending = self.emit_at(T0, self.type_purchase, self.bob, {"total": 3})
        self.purge_at(T0 + relativedelta(months=13, days=1))
        self.assertFalse(self.existing(old), "an event processed 13 months ago is deleted")
        self.assertTrue(self.existing(recent))
        self.assertTrue(self.existing(still_pending), "a pending event is never deleted, however old")
        self.assertEqual(still_pending.state, "pending")

    def test_each_company_keeps_events_its_own_time(self):
        self.other_company.write({"marketing_event_retention_months": 3, "marketing_run_retention_months": 2})
        ours = self.emit_at(T0, self.type_purchase, self.partner, {"total": 1})
        theirs = self.emit_at(T0, self.type_purchase, self.partner, {"total": 1}, company=self.other_company)
        self.dispatch_at(T0)
        self.env.flush_all()
        self.env.cr.execute(SQL("UPDATE marketing_event SET company_id = NULL WHERE id = %s", ours.id))
        shared = ours
        mine = self.emit_at(T0, self.type_purchase, self.bob, {"total": 2})
        self.dispatch_at(T0)
        self.purge_at(T0 + relativedelta(months=4))
        self.assertFalse(self.existing(theirs), "the other shop keeps its events 3 months")
        self.assertTrue(self.existing(mine), "this company keeps them 13 months")
        self.assertTrue(self.existing(shared), "an event of no company stays as long as the longest period")
        self.purge_at(T0 + relativedelta(months=14))
        self.assertFalse(self.existing(mine) | self.existing(shared))

    def test_zero_keeps_events(self):
        self.company.write({"marketing_event_retention_months": 0, "marketing_run_retention_months": 0})
        event = self.emit_at(T0, self.type_purchase, self.partner, {"total": 1})
        self.dispatch_at(T0)
        self.purge_at(T0 + relativedelta(years=5))
        self.assertTrue(self.existing(event))

    def test_finished_runs_go_running_ones_stay(self):
        scenario = self.create_scenario()
        wait = self.add_node(scenario, "wait", wait_amount=3, wait_unit="days")
        self.add_node(scenario, "tag_add", wait, tag_ids=[(6, 0, self.tag_vip.ids)])
        scenario.action_start()
        with freeze_time(T0):
            self.emit(self.type_cart, self.partner, {"total": 1, "items": []})
            self.dispatch()
            self.advance()
        self.advance_at(T0 + timedelta(days=3))
        with freeze_time(T0 + timedelta(days=10)):
            self.emit(self.type_cart, self.bob, {"total": 1, "items": []})
            self.dispatch()
            self.advance()
        finished = self.participant_of(scenario, self.partner)
        running = self.participant_of(scenario, self.bob)
        self.assertEqual((finished.state, running.state), ("completed", "running"))
        finished_steps, running_steps = finished.step_ids, running.step_ids
        self.purge_at(T0 + relativedelta(months=5))
        self.assertTrue(self.existing(finished), "a run that ended 5 months ago stays")
        self.purge_at(T0 + relativedelta(months=7))
        self.assertFalse(self.existing(finished), "6 months after it ended it goes")
        self.assertFalse(self.existing(finished_steps))
        self.assertEqual(self.existing(running), running, "a running participant stays, its wait long due")
        self.assertEqual(self.existing(running_steps), running_steps)
        self.assertEqual(running_steps.filtered(lambda step: step.node_id == wait).state, "scheduled")

    def test_a_run_whose_objective_window_is_open_stays(self):
        scenario = self.create_scenario(objective_event_type_id=self.type_purchase.id, objective_days=300)
        self.add_node(scenario, "tag_add", tag_ids=[(6, 0, self.tag_vip.ids)])
        scenario.action_start()
        with freeze_time(T0):
            self.emit(self.type_cart, self.partner, {"total": 1, "items": []})
            self.dispatch()
            self.advance()
        run = self.participant_of(scenario, self.partner)
        self.assertEqual(run.state, "completed")
        self.purge_at(T0 + relativedelta(months=7))
        self.assertTrue(self.existing(run), "ended 7 months ago, but its purchase may still come for 3 months")
        self.purge_at(T0 + relativedelta(months=10, days=2))
        self.assertFalse(self.existing(run), "its objective window closed: it goes")

    def queries_of_batches(self, sizes):
        """[(rows deleted, queries)] of one purge batch of each size, after a batch of the first size warmed up."""
        self.Retention._cron_purge(sizes[0])
        counts = []
        for size in sizes:
            self.env.flush_all()
            before = self.env.cr.sql_log_count
            deleted = self.Retention._cron_purge(size)
            counts.append((deleted, self.env.cr.sql_log_count - before))
        return counts

    def test_a_batch_costs_the_same_queries_whatever_its_size(self):
        self.type_purchase.use_for_segmentation = True
        self.env["marketing.segment"].create(
            {
                "name": "Buyers",
                "rule_ids": [
                    (0, 0, {"event_type_id": self.type_purchase.id, "aggregate": "sum", "aggregate_path": "total"})
                ],
            }
        )
        partners = self.env["res.partner"].create(
            [{"name": f"Buyer {n}", "email": f"buyer{n}@example.com"} for n in range(16)]
        )
        scenario = self.create_scenario()
        self.add_node(scenario, "tag_add", tag_ids=[(6, 0, self.tag_vip.ids)])
        scenario.action_start()
        with freeze_time(T0):
            for partner in partners:
                self.emit(self.type_cart, partner, {"total": 1, "items": []})
                self.emit(self.type_purchase, partner, {"total": 10})
            self.dispatch()
            self.advance()
        # Runs go after 6 months, events after 13: first the runs, one participant per 10 rows of batch.
        with freeze_time(T0 + relativedelta(months=7)):
            (small, small_queries), (large, large_queries) = self.queries_of_batches([20, 50])
        self.assertEqual((small, large), (4, 10), "2 and 5 participants with their step each")
        self.assertEqual(small_queries, large_queries)
        with freeze_time(T0 + relativedelta(months=14)):
            (small, small_queries), (large, large_queries) = self.queries_of_batches([3, 12])
        self.assertEqual((small, large), (3, 12))
        self.assertEqual(small_queries, large_queries)

    def test_score_history_goes_after_two_years(self):
        Log = self.env["marketing.engagement.log"]
        old, recent = Log.create(
            [
                {"partner_id": self.partner.id, "delta": 5, "score": 5, "reason": "old", "changed_at": T0},
                {
                    "partner_id": self.partner.id,
                    "delta": 5,
                    "score": 10,
                    "reason": "recent",
                    "changed_at": T0 + relativedelta(months=2),
                },
            ]
        )
        self.purge_at(T0 + relativedelta(months=25))
        self.assertFalse(self.existing(old))
        self.assertTrue(self.existing(recent))

    def test_batches_are_bounded_and_each_kind_gets_its_turn(self):
        events = self.Event.browse(
            [self.emit_at(T0, self.type_purchase, self.partner, {"total": n}).id for n in range(5)]
        )
        self.dispatch_at(T0)
        log = self.env["marketing.engagement.log"].create(
            {"partner_id": self.partner.id, "delta": 1, "score": 1, "reason": "old", "changed_at": T0}
        )
        batches = self.purge_at(T0 + relativedelta(months=25), batch_size=2)
        self.assertTrue(all(deleted <= 2 for deleted in batches), batches)
        self.assertFalse(self.existing(events))
        self.assertFalse(self.existing(log))
        self.assertEqual(self.Retention._cron_purge(2), 0, "nothing left: the cron stops")

    def test_the_cron_runs_the_purge(self):
        cron = self.env.ref("marketing_event_automation.ir_cron_retention_purge")
        self.assertEqual(cron.model_id.model, "marketing.retention")
        self.assertEqual(cron.code, "model._cron_purge()")

    def test_an_upgrade_deletes_the_cron_the_purge_replaced(self):
        # The cron of the anonymous events, as a database installed before retention holds it.
        old = self.env["ir.cron"]._load_records(
            [
                {
                    "xml_id": "marketing_event_automation.ir_cron_purge_anonymous_events",
                    "values": {
                        "name": "Marketing Automation: purge anonymous visitors' events",
                        "model_id": self.env["ir.model"]._get_id("marketing.event"),
                        "state": "code",
                        "code": "model._cron_purge_anonymous_events()",
                        "interval_number": 1,
                        "interval_type": "days",
                    },
                    "noupdate": True,
                }
            ]
        )
        action = old.ir_actions_server_id
        convert_file(self.env, "marketing_event_automation", "data/ir_cron_data.xml", {}, mode="update", noupdate=True)
        self.assertFalse(old.exists())
        self.assertFalse(action.exists())
        self.assertFalse(self.env.ref("marketing_event_automation.ir_cron_purge_anonymous_events", False))
        self.assertEqual(self.env.ref("marketing_event_automation.ir_cron_retention_purge").code, "model._cron_purge()")

    def run_purge_job(self):
        """Run the retention cron as Odoo's cron worker does; return the pauses it asked for (time.sleep)."""
        cron = self.env.ref("marketing_event_automation.ir_cron_retention_purge")
        pauses = []
        self.env.flush_all()
        self.registry.enter_test_mode(self.cr)
        try:
            # Only the clock is replaced: the cron runner, its commits and the purge are real.
            job = {**cron.read(load=None)[0], "done": 0, "remaining": 0, "timed_out_counter": 0}
            with patch.object(marketing_retention.time, "sleep", pauses.append), self.registry.cursor() as cron_cr:
                self.registry["ir.cron"]._process_job(self.registry.db_name, cron_cr, job)
        finally:
            self.registry.leave_test_mode()
        self.env.invalidate_all()
        return pauses

    def old_rows(self):
        """An event and a score change older than every default period: two batches of the purge."""
        event = self.emit_at(T0, self.type_purchase, self.partner, {"total": 1})
        self.dispatch_at(T0)
        log = self.env["marketing.engagement.log"].create(
            {
                "partner_id": self.partner.id,
                "delta": 1,
                "score": 1,
                "reason": "old",
                "changed_at": T0 - relativedelta(years=3),
            }
        )
        return event, log

    def test_in_a_cron_job_the_purge_pauses_after_each_batch_for_its_share(self):
        self.env["ir.config_parameter"].set_param(PURGE_TIME_SHARE_PARAM, "20")
        event, log = self.old_rows()
        pauses = self.run_purge_job()
        self.assertFalse(self.existing(event), "both batches ran in the one job run")
        self.assertFalse(self.existing(log))
        self.assertEqual(len(pauses), 2, "one pause per batch that deleted rows, none once nothing is left")
        self.assertTrue(all(0 < pause <= PURGE_PAUSE_MAX_SECONDS for pause in pauses), pauses)

    def test_a_full_share_purges_without_pausing(self):
        self.env["ir.config_parameter"].set_param(PURGE_TIME_SHARE_PARAM, "100")
        event, log = self.old_rows()
        self.assertEqual(self.run_purge_job(), [])
        self.assertFalse(self.existing(event))
        self.assertFalse(self.existing(log))

    def test_the_pause_is_the_rest_of_the_share_and_bounded(self):
        Param = self.env["ir.config_parameter"]
        Param.set_param(PURGE_TIME_SHARE_PARAM, "25")
        self.assertAlmostEqual(self.Retention._purge_pause(0.5), 1.5, msg="busy a quarter of the time")
        self.assertEqual(self.Retention._purge_pause(10.0), PURGE_PAUSE_MAX_SECONDS, "within the cron's time limit")
        Param.set_param(PURGE_TIME_SHARE_PARAM, "not a number")
        self.assertAlmostEqual(
            self.Retention._purge_pause(0.5),
            0.5 * (100 - DEFAULT_PURGE_TIME_SHARE) / DEFAULT_PURGE_TIME_SHARE,
            msg="a broken setting falls back on the default share",
        )
        with self.assertRaises(ValidationError):
            self.env["res.config.settings"].create({"marketing_purge_time_share": 0})


@tagged("post_install", "-at_install")
class TestRetentionStatistics(RetentionCommon, MockEmail):
    """The figures users see are the same before and after the rows behind them are deleted."""

    def build(self):
        scenario = self.create_scenario(objective_event_type_id=self.type_purchase.id, objective_days=7)
        email = self.add_node(scenario, "email", name="Reminder")
        email.mailing_id.write({"subject": "Your cart", "body_html": "<p>Come back</p>"})
        condition = self.add_node(
            scenario,
            "condition",
            email,
            condition_type="domain",
            condition_domain="[('email', 'ilike', 'alice')]",
        )
        vip = self.add_node(scenario, "tag_add", condition, branch="yes", tag_ids=[(6, 0, self.tag_vip.ids)])
        wait = self.add_node(scenario, "wait", condition, branch="no", wait_amount=3, wait_unit="days")
        split = self.add_node(scenario, "split", wait)
        arm_a = self.add_node(
            scenario, "tag_add", split, branch="arm", split_weight=50, tag_ids=[(6, 0, self.tag_lost.ids)]
        )
        arm_b = self.add_node(scenario, "exit", split, branch="arm", split_weight=50)
        scenario.action_start()
        people = self.partner | self.bob
        people |= self.env["res.partner"].create(
            [{"name": f"Buyer {n}", "email": f"buyer{n}@example.com"} for n in range(6)]
        )
        no_email = self.env["res.partner"].create({"name": "No email at all"})
        late = self.env["res.partner"].create({"name": "Late", "email": "late@example.com"})
        with self.mock_mail_gateway(), freeze_time(T0):
            for partner in people | no_email:
                self.emit(self.type_cart, partner, {"total": 10, "items": []})
            self.dispatch()
            self.advance()
        trace = self.Step.search([("node_id", "=", email.id), ("partner_id", "=", self.partner.id)]).trace_id
        trace.set_opened()
        trace.set_clicked()
        self.emit_at(T0 + timedelta(days=1), self.type_purchase, self.partner, {"total": 99})
        self.dispatch_at(T0 + timedelta(days=1))
        with self.mock_mail_gateway():
            self.advance_at(T0 + timedelta(days=3))
        # One contact enters two months later and still waits when the runs are purged.
        with self.mock_mail_gateway(), freeze_time(T0 + relativedelta(months=2)):
            self.emit(self.type_cart, late, {"total": 10, "items": []})
            self.dispatch()
            self.advance()
        return scenario, (email, condition, vip, wait, split, arm_a, arm_b)

    def figures(self, scenario, nodes):
        scenario.invalidate_recordset()
        nodes[0].invalidate_model()
        self.env["marketing.event.type"].invalidate_model()
        scenario = scenario.with_user(self.marketing_user)
        node_fields = [
            "scheduled_count",
            "processed_count",
            "error_count",
            "skipped_count",
            "canceled_count",
            "skipped_reasons",
            "drop_off_rate",
            "arm_share",
        ]
        flow = scenario.get_flow_data()
        return {
            "scenario": {
                name: scenario[name]
                for name in (
                    "entered_count",
                    "active_count",
                    "completed_count",
                    "exited_count",
                    "objective_count",
                    "conversion_rate",
                    "open_rate",
                    "click_rate",
                )
            },
            "nodes": [{name: node.with_user(self.marketing_user)[name] for name in node_fields} for node in nodes],
            "messages": [(nodes[0].sent_count, nodes[0].opened_count, nodes[0].clicked_count)],
            "funnel": scenario._funnel_data(),
            "flow": {card["id"]: card["stats"] for card in flow["nodes"]},
            "trigger": flow["trigger"]["stats"],
            "event_counts": [
                event_type.with_user(self.marketing_user).event_count
                for event_type in (self.type_cart, self.type_purchase)
            ],
        }

    def test_scenario_node_and_event_figures_survive_the_purge(self):
        scenario, nodes = self.build()
        runs_purged = T0 + relativedelta(months=7)
        with freeze_time(runs_purged):
            before = self.figures(scenario, nodes)
        # The figures say something: runs of every kind, messages, a conversion.
        self.assertEqual(before["scenario"]["entered_count"], 10)
        self.assertEqual(before["scenario"]["active_count"], 1)
        self.assertEqual(before["scenario"]["objective_count"], 1)
        self.assertEqual(before["messages"], [(9, 1, 1)])
        self.assertIn("No valid email address: 1", before["nodes"][0]["skipped_reasons"])
        self.assertEqual(before["nodes"][5]["arm_share"] + before["nodes"][6]["arm_share"], 100.0)
        participants = self.Participant.search([("scenario_id", "=", scenario.id)])

        self.purge_at(runs_purged)
        self.assertEqual(len(self.existing(participants)), 1, "only the late contact's run is left")
        with freeze_time(runs_purged):
            self.assertEqual(self.figures(scenario, nodes), before)

        # The events go too, later: the conversions were counted with the runs.
        events_purged = T0 + relativedelta(months=16)
        with freeze_time(events_purged):
            before = self.figures(scenario, nodes)
        events = self.Event.search([("type_id", "in", (self.type_cart | self.type_purchase).ids)])
        self.purge_at(events_purged)
        self.assertFalse(self.existing(events))
        with freeze_time(events_purged):
            self.assertEqual(self.figures(scenario, nodes), before)

    def test_test_runs_count_nowhere(self):
        scenario, _nodes = self.build()
        self.env.flush_all()
        self.env.cr.execute(
            SQL("UPDATE marketing_scenario_participant SET is_test = TRUE WHERE scenario_id = %s", scenario.id)
        )
        self.env.cr.execute(
            SQL("UPDATE marketing_scenario_step SET is_test = TRUE WHERE scenario_id = %s", scenario.id)
        )
        self.env.invalidate_all()
        self.purge_at(T0 + relativedelta(months=7))
        self.assertFalse(self.env["marketing.scenario.daily"].search([("scenario_id", "=", scenario.id)]))
        self.assertEqual(len(self.Participant.search([("scenario_id", "=", scenario.id)])), 1, "the late run stays")
        self.assertEqual(scenario.entered_count, 0)


@tagged("post_install", "-at_install")
class TestRetentionSegments(RetentionCommon):
    """Segment rules over windows longer than the events are kept count the same contacts after the purge."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.type_purchase.use_for_segmentation = True
        cls.carol = cls.env["res.partner"].create({"name": "Carol Quiet", "email": "carol@example.com"})
        cls.people = cls.partner | cls.bob | cls.carol

    def make_segment(self, **rule):
        return self.env["marketing.segment"].create(
            {
                "name": "Buyers",
                "contact_domain": f"[('id', 'in', {self.people.ids})]",
                "rule_ids": [(0, 0, {"event_type_id": self.type_purchase.id, **rule})],
            }
        )

    def buy(self, moment, partner, total, category="shoes"):
        self.emit_at(moment, self.type_purchase, partner, {"total": total, "category": category})

    def members(self, segment):
        segment._sync_members()
        return (
            self.env["marketing.segment.member"].search([("segment_id", "=", segment.id)]).partner_id,
            segment._count_matching(),
        )

    def test_counts_and_sums_are_the_same_after_the_purge(self):
        now = T0 + relativedelta(months=20)
        for months_ago, partner, total, category in (
            (19, self.partner, 300, "shoes"),
            (18, self.partner, 250, "shoes"),
            (18, self.partner, 30, "hats"),
            (15, self.bob, 499, "shoes"),
            (1, self.bob, 2, "shoes"),
            (17, self.carol, 40, "hats"),
            (2, self.carol, 45, "shoes"),
        ):
            self.buy(now - relativedelta(months=months_ago), partner, total, category)
        self.dispatch_at(now - relativedelta(months=1))
        rules = [
            {"operator": ">=", "threshold": 3},
            {"params_filter": 'category == "shoes"', "operator": ">=", "threshold": 2},
            {"aggregate": "sum", "aggregate_path": "total", "operator": ">=", "threshold": 500},
            {"aggregate": "sum", "aggregate_path": "total", "operator": "<", "threshold": 100},
            {"aggregate": "min", "aggregate_path": "total", "operator": "<", "threshold": 35},
            {"aggregate": "max", "aggregate_path": "total", "operator": ">", "threshold": 299},
            {"window": "days", "window_days": 500, "operator": ">=", "threshold": 2},
            {"window": "days", "window_days": 500, "aggregate": "sum", "aggregate_path": "total", "threshold": 300},
            {"negate": "did_not", "window": "days", "window_days": 530, "params_filter": 'category == "hats"'},
        ]
        with freeze_time(now):
            segments = [self.make_segment(**rule) for rule in rules]
            before = [self.members(segment) for segment in segments]
        # Every contact is in some segment and out of some other: the figures are not trivial.
        self.assertEqual({partner for partners, _count in before for partner in partners}, set(self.people))
        self.assertTrue(all(count < 3 for _partners, count in before))
        purged_events = self.Event.search([("type_id", "=", self.type_purchase.id)])
        self.purge_at(now)
        self.assertEqual(len(self.existing(purged_events)), 2, "only the last year's purchases stay in the log")
        with freeze_time(now):
            self.assertEqual([self.members(segment) for segment in segments], before)

    def test_a_redefined_rule_forgets_the_purged_days(self):
        now = T0 + relativedelta(months=20)
        self.buy(now - relativedelta(months=19), self.partner, 300)
        self.dispatch_at(now - relativedelta(months=19))
        with freeze_time(now):
            segment = self.make_segment()
        self.purge_at(now)
        Daily = self.env["marketing.segment.rule.daily"]
        self.assertEqual(Daily.search([("rule_id", "=", segment.rule_ids.id)]).event_count, 1)
        with freeze_time(now):
            self.assertEqual(self.members(segment)[0], self.partner)
            segment.rule_ids.threshold = 1
            self.assertTrue(Daily.search([("rule_id", "=", segment.rule_ids.id)]), "a new threshold keeps the measure")
            segment.rule_ids.params_filter = "total > 100"
            self.assertFalse(Daily.search([("rule_id", "=", segment.rule_ids.id)]))
            self.assertFalse(self.members(segment)[0])


@tagged("post_install", "-at_install")
class TestRetentionSettings(RetentionCommon):
    """Each company's periods, their checks, and who reads the daily figures."""

    def test_defaults_and_settings(self):
        company = self.env["res.company"].create({"name": "New shop"})
        self.assertEqual(
            (
                company.marketing_event_retention_months,
                company.marketing_run_retention_months,
                company.marketing_score_history_retention_months,
                company.marketing_anonymous_retention_days,
            ),
            (13, 6, 24, 30),
        )
        settings = self.env["res.config.settings"].create(
            {
                "marketing_event_retention_months": 24,
                "marketing_run_retention_months": 12,
                "marketing_score_history_retention_months": 36,
            }
        )
        settings.execute()
        self.assertEqual(
            (
                self.env.company.marketing_event_retention_months,
                self.env.company.marketing_run_retention_months,
                self.env.company.marketing_score_history_retention_months,
            ),
            (24, 12, 36),
        )
        self.assertEqual(self.other_company.marketing_event_retention_months, 13, "another company keeps its own")

    def test_periods_are_checked(self):
        with self.assertRaisesRegex(ValidationError, "Keep Events: give 0"):
            self.other_company.marketing_event_retention_months = -1
        with self.assertRaisesRegex(ValidationError, "Keep Finished Runs: keep runs at most as long as events"):
            self.other_company.write({"marketing_event_retention_months": 13, "marketing_run_retention_months": 14})
        with self.assertRaisesRegex(ValidationError, "Keep Finished Runs"):
            self.other_company.write({"marketing_event_retention_months": 13, "marketing_run_retention_months": 0})
        self.other_company.write({"marketing_event_retention_months": 0, "marketing_run_retention_months": 0})

    def test_daily_figures_are_read_only_and_of_the_allowed_companies(self):
        self.other_company.write({"marketing_event_retention_months": 3, "marketing_run_retention_months": 2})
        self.emit_at(T0, self.type_purchase, self.partner, {"total": 1})
        self.emit_at(T0, self.type_purchase, self.partner, {"total": 1}, company=self.other_company)
        self.dispatch_at(T0)
        self.purge_at(T0 + relativedelta(months=14))
        Daily = self.env["marketing.event.daily"]
        self.assertEqual(len(Daily.search([("type_id", "=", self.type_purchase.id)])), 2)
        self.assertEqual(Daily.with_user(self.marketing_user).search([]).company_id, self.company)
        other_marketer = new_test_user(
            self.env,
            login="mea_other_marketer",
            company_id=self.other_company.id,
            company_ids=[(6, 0, self.other_company.ids)],
            groups="base.group_user,marketing_event_automation.group_marketing_automation_user",
        )
        self.assertEqual(Daily.with_user(other_marketer).search([]).company_id, self.other_company)
        self.assertEqual(self.type_purchase.with_user(other_marketer).event_count, 1, "its own purged event only")
        for model_name in ("marketing.event.daily", "marketing.scenario.daily", "marketing.segment.rule.daily"):
            with self.assertRaises(AccessError):
                self.env[model_name].with_user(self.marketing_manager).create({})
        with self.assertRaises(AccessError):
            Daily.search([], limit=1).with_user(self.marketing_manager).write({"event_count": 0})
        with self.assertRaises(AccessError):
            Daily.with_user(self.sales_user).search([])
