import json
from datetime import timedelta

from freezegun import freeze_time

from odoo.exceptions import ValidationError
from odoo.tests import new_test_user
from odoo.tests import tagged
from odoo.tools import SQL

from ..utils.params_filter import conditions_sql
from ..utils.params_filter import params_match
from ..utils.params_filter import parse_params_filter
from .common import MarketingAutomationHttpCommon
from .scenario_common import ScenarioCommon


class SegmentCommon(ScenarioCommon):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.Segment = cls.env["marketing.segment"]
        cls.type_purchase.use_for_segmentation = True
        cls.type_opened = cls.env.ref("marketing_event_automation.event_type_email_opened")
        cls.type_opened.use_for_segmentation = True
        cls.carol = cls.env["res.partner"].create({"name": "Carol Quiet", "email": "carol@example.com"})
        cls.people = cls.partner | cls.bob | cls.carol

    def make_segment(self, rules, logic="and", **values):
        return self.Segment.create(
            {
                "name": "Test segment",
                "logic": logic,
                "contact_domain": f"[('id', 'in', {self.people.ids})]",
                "rule_ids": [(0, 0, {"event_type_id": self.type_purchase.id, **rule}) for rule in rules],
                **values,
            }
        )

    def members(self, segment):
        return self.env["marketing.segment.member"].search([("segment_id", "=", segment.id)]).partner_id

    def purchase(self, partner, total, days_ago=0, **params):
        return self.emit(self.type_purchase, partner, {"total": total, **params}, self.now() - timedelta(days=days_ago))


@tagged("post_install", "-at_install")
class TestSegmentRules(SegmentCommon):
    """Each kind of rule, counted in SQL, gives the members a marketer expects."""

    def test_count_with_filter_in_a_time_window(self):
        self.purchase(self.partner, 150, days_ago=10)
        self.purchase(self.partner, 120, days_ago=80)
        self.purchase(self.bob, 150, days_ago=10)
        self.purchase(self.bob, 50, days_ago=20)  # filtered out
        self.purchase(self.carol, 200, days_ago=5)
        self.purchase(self.carol, 200, days_ago=100)  # outside the window
        segment = self.make_segment(
            [{"params_filter": "total > 100", "operator": ">=", "threshold": 2, "window": "days", "window_days": 90}]
        )
        self.assertEqual(self.members(segment), self.partner)
        self.assertEqual(segment.member_count, 1)
        self.assertEqual(segment._count_matching(), 1)

    def test_did_not_in_a_window_keeps_contacts_without_events(self):
        self.emit(self.type_opened, self.partner, {}, self.now() - timedelta(days=3))
        self.emit(self.type_opened, self.bob, {}, self.now() - timedelta(days=70))
        segment = self.make_segment(
            [{"event_type_id": self.type_opened.id, "negate": "did_not", "window": "days", "window_days": 60}]
        )
        self.assertEqual(self.members(segment), self.bob | self.carol, "Carol never opened, Bob not lately")

    def test_sum_min_max_of_a_parameter(self):
        self.purchase(self.partner, 300)
        self.purchase(self.partner, 250)
        self.purchase(self.bob, 499)
        self.purchase(self.bob, "1", note="a string total counts as the number")
        self.purchase(self.carol, 40)
        sums = self.make_segment([{"aggregate": "sum", "aggregate_path": "total", "operator": ">=", "threshold": 500}])
        self.assertEqual(self.members(sums), self.partner | self.bob)
        smallest = self.make_segment(
            [{"aggregate": "min", "aggregate_path": "total", "operator": "<", "threshold": 50}]
        )
        self.assertEqual(self.members(smallest), self.bob | self.carol)
        largest = self.make_segment(
            [{"aggregate": "max", "aggregate_path": "total", "operator": ">", "threshold": 299}]
        )
        self.assertEqual(self.members(largest), self.partner | self.bob)
        low_sum = self.make_segment(
            [{"aggregate": "sum", "aggregate_path": "total", "operator": "<", "threshold": 100}]
        )
        self.assertEqual(self.members(low_sum), self.carol, "a sum below a threshold holds for Carol only")

    def test_and_or_and_contact_filter(self):
        self.purchase(self.partner, 10)
        self.emit(self.type_opened, self.bob, {})
        self.emit(self.type_opened, self.partner, {})
        rules = [{}, {"event_type_id": self.type_opened.id}]
        self.assertEqual(self.members(self.make_segment(rules, logic="and")), self.partner)
        self.assertEqual(self.members(self.make_segment(rules, logic="or")), self.partner | self.bob)
        filtered = self.make_segment(rules, logic="or", contact_domain=f"[('id', '=', {self.bob.id})]")
        self.assertEqual(self.members(filtered), self.bob)

    def test_only_segmentation_types_and_valid_filters(self):
        self.type_cart.use_for_segmentation = False
        with self.assertRaisesRegex(ValidationError, "not used for contact segmentation"):
            self.make_segment([{"event_type_id": self.type_cart.id}])
        with self.assertRaisesRegex(ValidationError, "Parameters Filter"):
            self.make_segment([{"params_filter": "total = 1"}])
        with self.assertRaisesRegex(ValidationError, "Parameter: name"):
            self.make_segment([{"aggregate": "sum"}])

    def test_sql_filter_agrees_with_the_python_filter(self):
        samples = [
            {"total": 120, "category": "Shoes", "tags": ["vip", "new"], "items": [{"sku": "A", "qty": 2}]},
            {"total": "99.5", "category": "bags", "tags": [], "items": [{"sku": "B"}, {"sku": "A", "qty": "3"}]},
            {"total": None, "flag": True, "items": []},
            {"flag": "false", "category": 7},
        ]
        filters = [
            "total > 100",
            "total <= 99.5",
            'category == "shoes"',
            'category contains "HO"',
            'category != "bags"',
            'tags == "vip"',
            'tags not in ["vip", "x"]',
            'items[].sku == "A" and items[].qty >= 3',
            "flag == false",
            "total exists",
            "total not exists",
            'category in ["7", "bags"]',
            'category > "a"',
        ]
        for text in filters:
            conditions = parse_params_filter(text)
            for params in samples:
                self.env.cr.execute(
                    SQL(
                        "SELECT %s FROM (SELECT %s::jsonb AS p) s",
                        conditions_sql(conditions, SQL("p")),
                        json.dumps(params),
                    )
                )
                self.assertEqual(self.env.cr.fetchone()[0], params_match(conditions, params), f"{text!r} on {params}")


@tagged("post_install", "-at_install")
class TestSegmentMembership(SegmentCommon):
    """The dispatcher keeps memberships current from each batch; the full pass expires time windows."""

    def segment_events(self, key, segment):
        return self.Event.search([("type_id.key", "=", key), ("params", "!=", False)]).filtered(
            lambda event: event.params.get("segment_id") == segment.id
        )

    def test_dispatch_enters_and_emits_segment_entered(self):
        segment = self.make_segment([{"params_filter": "total > 100"}])
        self.assertFalse(self.members(segment))
        event = self.purchase(self.bob, 150)
        self.dispatch()
        self.assertEqual(self.members(segment), self.bob)
        entered = self.segment_events("segment_entered", segment)
        self.assertEqual(entered.partner_id, self.bob)
        self.assertEqual(entered.params["segment_name"], "Test segment")
        self.assertIn("Test segment", event.processing_result["segments entered"])

    def test_a_did_not_rule_is_left_when_the_event_comes(self):
        segment = self.make_segment([{"negate": "did_not"}])
        self.assertEqual(self.members(segment), self.people)
        self.purchase(self.carol, 5)
        self.dispatch()
        self.assertEqual(self.members(segment), self.partner | self.bob)
        self.assertEqual(self.segment_events("segment_left", segment).partner_id, self.carol)

    def test_full_pass_expires_time_windows(self):
        now = self.now()
        with freeze_time(now):
            segment = self.make_segment([{"window": "days", "window_days": 30}])
            self.purchase(self.bob, 10, days_ago=29)
            self.dispatch()
        self.assertEqual(self.members(segment), self.bob)
        with freeze_time(now + timedelta(days=2)):
            self.Segment._cron_refresh()
            self.assertFalse(self.members(segment), "the purchase is now 31 days old")
            self.assertTrue(segment.refreshed_at)
        self.assertEqual(self.segment_events("segment_left", segment).partner_id, self.bob)

    def test_dispatch_queries_do_not_grow_with_batch_size(self):
        self.make_segment([{"params_filter": "total > 100"}], contact_domain="[]")
        self.make_segment(
            [{"aggregate": "sum", "aggregate_path": "total", "threshold": 300}], logic="or", contact_domain="[]"
        )
        # The first batch warms the caches (event types, segments' rules).
        counts = self.dispatch_query_counts(self.type_purchase, {"total": 500}, (5, 10, 100), "S")
        self.assertEqual(
            self.env["marketing.segment.member"].search_count([("partner_id.name", "=like", "S100-%")]), 200
        )
        self.assertEqual(counts[1], counts[2], f"dispatch queries at 10 and 100 events: {counts[1:]}")


@tagged("post_install", "-at_install")
class TestSegmentUses(SegmentCommon):
    """A segment picks contacts wherever a marketer does: contacts, scenarios, conditions, automations, mailings."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.type_cart.use_for_segmentation = True

    def setUp(self):
        super().setUp()
        self.buyers = self.make_segment([{}, {"event_type_id": self.type_cart.id, "negate": "did_not"}], name="Buyers")
        self.purchase(self.bob, 30)
        self.dispatch()

    def test_contact_list_filter_and_search(self):
        Partner = self.env["res.partner"].with_user(self.marketing_user)
        self.assertEqual(Partner.search([("marketing_segment_ids", "in", self.buyers.ids)]), self.bob)
        self.assertEqual(Partner.search([("marketing_segment_ids", "ilike", "buyer")]), self.bob)
        in_any = Partner.search([("marketing_segment_ids", "!=", False), ("id", "in", self.people.ids)])
        self.assertEqual(in_any, self.bob)
        others = Partner.search([("marketing_segment_ids", "not in", self.buyers.ids), ("id", "in", self.people.ids)])
        self.assertEqual(others, self.partner | self.carol)
        self.assertEqual(Partner.browse(self.bob.id).marketing_segment_ids, self.buyers)

    def test_scenario_starts_on_entering_and_exits_on_leaving(self):
        scenario = self.create_scenario(
            trigger_type="segment",
            trigger_event_type_id=False,
            trigger_segment_id=self.buyers.id,
            exit_on_segment_left=True,
        )
        self.add_node(scenario, "wait", wait_amount=1, wait_unit="days")
        scenario.action_start()
        self.assertEqual(scenario.trigger_summary, "Enters Buyers")
        self.purchase(self.partner, 80)
        self.dispatch()
        participant = self.participant_of(scenario, self.partner)
        self.assertEqual(participant.state, "running", "Alice entered the segment, hence the scenario")
        self.assertFalse(self.participant_of(scenario, self.bob), "Bob was a member before the scenario started")
        self.emit(self.type_cart, self.partner, {"total": 1, "items": [{"sku": "X"}]})
        self.dispatch()
        self.assertNotIn(self.partner, self.members(self.buyers))
        self.assertEqual(participant.state, "exited")

    def test_scenario_audience_segment(self):
        scenario = self.create_scenario(trigger_event_type_id=self.type_purchase.id, audience_segment_id=self.buyers.id)
        self.add_node(scenario, "wait", wait_amount=1, wait_unit="days")
        scenario.action_start()
        self.purchase(self.bob, 5)
        self.emit(self.type_cart, self.partner, {"total": 1, "items": [{"sku": "X"}]})
        self.purchase(self.partner, 5)  # Alice abandoned a cart: not a buyer
        self.dispatch()
        self.assertEqual(scenario.participant_ids.partner_id, self.bob)

    def test_condition_node_is_in_segment(self):
        scenario = self.create_scenario(trigger_type="now", trigger_event_type_id=False)
        condition = self.add_node(scenario, "condition", condition_type="segment", condition_segment_id=self.buyers.id)
        yes = self.add_node(scenario, "tag_add", parent=condition, branch="yes", tag_ids=[(6, 0, self.tag_vip.ids)])
        self.assertEqual(condition._condition_description(), "In segment Buyers?")
        self.assertTrue(yes)
        scenario.action_start()
        scenario._enroll_partners((self.bob | self.carol).ids)
        self.advance()
        self.assertIn(self.tag_vip, self.bob.category_id)
        self.assertNotIn(self.tag_vip, self.carol.category_id)

    def test_system_automation_sends_a_mailing_to_the_segment(self):
        mailing_list = self.env["mailing.list"].create({"name": "Any"})
        template = self.env["mailing.mailing"].create(
            {
                "subject": "For buyers",
                "body_html": "<p>Thanks</p>",
                "mailing_model_id": self.env["ir.model"]._get_id("mailing.list"),
                "contact_list_ids": [(6, 0, mailing_list.ids)],
            }
        )
        automation = self.env["marketing.system.automation"].create(
            {
                "name": "Buyers mailing",
                "event_type_id": self.env.ref("marketing_event_automation.event_type_mailing_done").id,
                "job_ids": [
                    (
                        0,
                        0,
                        {
                            "job_type": "send_mailing",
                            "mailing_template_id": template.id,
                            "audience": "segment",
                            "segment_id": self.buyers.id,
                        },
                    )
                ],
            }
        )
        self.Event._emit("mailing_done", [{"params": {"mailing_id": template.id}}])
        self.Event._cron_dispatch()
        self.env["marketing.system.automation.run"]._cron_run()
        mailing = automation.run_ids.run_job_ids.mailing_id
        self.assertEqual(mailing.marketing_segment_id, self.buyers)
        self.assertEqual(mailing._get_remaining_recipients(), self.bob.ids)

    def test_email_and_sms_mailings_sent_to_a_segment(self):
        for mailing_type in ("mail", "sms"):
            mailing = (
                self.env["mailing.mailing"]
                .with_user(self.marketing_user)
                .create(
                    {
                        "subject": "Segment",
                        "body_plaintext" if mailing_type == "sms" else "body_html": "Hello",
                        "mailing_type": mailing_type,
                        "marketing_segment_id": self.buyers.id,
                    }
                )
            )
            self.assertEqual(mailing.mailing_model_real, "res.partner")
            self.assertEqual(mailing.sudo()._get_recipients(), self.bob.ids, mailing_type)
        self.purchase(self.carol, 1)
        self.dispatch()
        self.assertEqual(
            sorted(mailing.sudo()._get_recipients()), sorted((self.bob | self.carol).ids), "the members at sending time"
        )

    def test_event_type_lists_segments_in_its_dependencies(self):
        self.assertEqual(self.type_purchase.segment_count, 1)
        self.assertIn(self.type_cart, self.EventType.search([("segment_count", ">", 0)]))
        action = self.type_purchase.action_view_segments()
        self.assertEqual(self.Segment.search(action["domain"]), self.buyers)
        self.assertNotIn(
            self.type_purchase, self.EventType.search([("dependency_count", "=", 0), ("segment_count", "=", 0)])
        )

    def test_marketing_user_of_another_company_sees_no_segment(self):
        other = self.env["res.company"].create({"name": "Other company"})
        outsider = self.env["res.users"].create(
            {
                "name": "Outsider",
                "login": "mea_segment_outsider",
                "company_id": other.id,
                "company_ids": [(6, 0, other.ids)],
                "groups_id": [
                    (
                        6,
                        0,
                        [
                            self.env.ref("base.group_user").id,
                            self.env.ref("marketing_event_automation.group_marketing_automation_user").id,
                        ],
                    )
                ],
            }
        )
        self.assertFalse(self.Segment.with_user(outsider).search([]))
        self.assertFalse(self.env["marketing.segment.member"].with_user(outsider).search([]))
        self.assertFalse(
            self.env["res.partner"].with_user(outsider).search([("marketing_segment_ids", "in", self.buyers.ids)])
        )


@tagged("post_install", "-at_install")
class TestContactFieldChanged(ScenarioCommon):
    """Watched contact fields log contact_field_changed, one insert per write whatever the number of contacts."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        fields_model = cls.env["ir.model.fields"]
        cls.company.marketing_watched_field_ids = fields_model._get("res.partner", "category_id") | fields_model._get(
            "res.partner", "country_id"
        )

    def changes(self, partners):
        return self.Event.search(
            [("type_id.key", "=", "contact_field_changed"), ("partner_id", "in", partners.ids)], order="id"
        )

    def test_tags_and_country_changes_are_events(self):
        editor = new_test_user(
            self.env, login="mea_contact_editor", groups="base.group_user,base.group_partner_manager"
        )
        self.partner.with_user(editor).write({"category_id": [(4, self.tag_vip.id)], "comment": "x"})
        [event] = self.changes(self.partner)
        self.assertEqual(event.params["field"], "category_id")
        self.assertEqual(event.params["old"], [])
        self.assertEqual(event.params["new"], ["VIP"])
        self.assertEqual(event.params["added"], ["VIP"])
        self.partner.country_id = self.env.ref("base.be")
        self.partner.country_id = self.env.ref("base.be")  # no change, no event
        country = self.changes(self.partner)[1:]
        self.assertEqual(len(country), 1)
        self.assertEqual((country.params["old"], country.params["new"]), (None, "Belgium"))
        self.partner.comment = "not watched"
        self.assertEqual(len(self.changes(self.partner)), 2)

    def test_a_scenario_starts_on_tags_gained_vip(self):
        field_changed = self.env.ref("marketing_event_automation.event_type_contact_field_changed")
        scenario = self.create_scenario(
            trigger_event_type_id=field_changed.id, trigger_params_filter='field == "category_id" and added == "VIP"'
        )
        self.add_node(scenario, "wait", wait_amount=1, wait_unit="days")
        scenario.action_start()
        self.bob.category_id = self.tag_lost
        self.partner.category_id = self.tag_vip
        self.dispatch()
        self.assertEqual(scenario.participant_ids.partner_id, self.partner)

    def test_one_insert_per_write(self):
        partners = self.env["res.partner"].create([{"name": f"W{i}"} for i in range(30)])
        self.env.flush_all()
        counts = []
        # The first write warms the caches (watched fields, the event type).
        for batch in (partners[:2], partners[2:5], partners[5:]):
            before = self.cr.sql_log_count
            batch.write({"category_id": [(4, self.tag_vip.id)], "country_id": self.env.ref("base.fr").id})
            self.env.flush_all()
            counts.append(self.cr.sql_log_count - before)
        self.assertEqual(len(self.changes(partners)), 60)
        self.assertLessEqual(counts[2], counts[1], f"queries of a write of 3 and of 25 contacts: {counts[1:]}")


@tagged("post_install", "-at_install")
class TestSegmentTour(MarketingAutomationHttpCommon, SegmentCommon):
    def test_marketer_builds_a_segment_and_starts_a_scenario_on_it(self):
        self.type_purchase.name = "Tour purchase"
        self.purchase(self.bob, 150)
        self.purchase(self.carol, 20)
        scenario = self.create_scenario(name="Segment tour scenario")
        self.add_node(scenario, "wait", wait_amount=1, wait_unit="days")
        self.start_tour(
            "/odoo/action-marketing_event_automation.action_marketing_segment",
            "marketing_segment_tour",
            login=self.marketing_user.login,
        )
        segment = self.Segment.search([("name", "=", "Tour big buyers")])
        self.assertEqual(segment.rule_ids.event_type_id, self.type_purchase)
        self.assertEqual(segment.rule_ids.params_filter, "total > 100")
        self.assertIn(self.bob, self.members(segment))
        self.assertNotIn(self.carol, self.members(segment))
        self.assertEqual(scenario.state, "running")
        self.assertEqual((scenario.trigger_type, scenario.trigger_segment_id), ("segment", segment))
        self.assertTrue(scenario.exit_on_segment_left)
        self.purchase(self.carol, 500)
        self.dispatch()
        self.assertEqual(
            scenario.participant_ids.partner_id, self.carol, "Carol entered the segment, then the scenario"
        )
