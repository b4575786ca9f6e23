from odoo import fields
from odoo.exceptions import AccessError
from odoo.tests import new_test_user
from odoo.tests import tagged

from .scenario_common import ScenarioCommon

MANAGER_GROUPS = "base.group_user,marketing_event_automation.group_marketing_automation_manager"


@tagged("post_install", "-at_install")
class TestMultiCompany(ScenarioCommon):
    """Records of company A are out of sight of a user of company B, and ingestion stays in A."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.company_a = cls.company
        cls.company_b = cls.env["res.company"].create({"name": "Company B", "country_id": cls.env.ref("base.fr").id})
        cls.user_a = new_test_user(
            cls.env,
            login="mea_manager_a",
            groups=MANAGER_GROUPS,
            company_id=cls.company_a.id,
            company_ids=[fields.Command.set(cls.company_a.ids)],
        )
        cls.user_b = new_test_user(
            cls.env,
            login="mea_manager_b",
            groups=MANAGER_GROUPS,
            company_id=cls.company_b.id,
            company_ids=[fields.Command.set(cls.company_b.ids)],
        )
        # Company A: its own event type, a contact of its own, a scenario with
        # a running participant and its scheduled step, a score rule and its
        # history, a system automation with a run, a schedule.
        cls.type_a = cls.EventType.create({"name": "Loyalty (A)", "key": "loyalty", "company_id": cls.company_a.id})
        cls.contact_a = cls.env["res.partner"].create(
            {"name": "Anna of A", "email": "anna@a.example.com", "company_id": cls.company_a.id}
        )
        cls.rule_a = cls.env["marketing.engagement.rule"].create(
            {"name": "Loyal", "event_type_id": cls.type_a.id, "points": 3, "company_id": cls.company_a.id}
        )
        cls.scenario_a = cls.Scenario.create(
            {"name": "Scenario A", "trigger_type": "event", "trigger_event_type_id": cls.type_a.id, "timezone": "UTC"}
        )
        cls.node_a = cls.Node.create(
            {"scenario_id": cls.scenario_a.id, "node_type": "wait", "wait_amount": 3, "wait_unit": "days"}
        )
        cls.schedule_a = cls.env["marketing.system.schedule"].create({"name": "Mondays A", "frequency": "weekly"})
        cls.automation_a = cls.env["marketing.system.automation"].create(
            {
                "name": "Report A",
                "event_type_id": cls.env.ref("marketing_event_automation.event_type_contacts_imported").id,
                "job_ids": [fields.Command.create({"job_type": "send_report"})],
            }
        )
        cls.scenario_a.action_start()
        cls.events_a = cls.Event.browse(
            [
                result["id"]
                for result in cls.Event.with_company(cls.company_a)._ingest(
                    cls.source, [{"event": "loyalty", "contact": {"email": "anna@a.example.com"}}]
                )
            ]
        )
        cls.events_a |= cls.Event.browse(
            cls.Event._emit("contacts_imported", [{"params": {"count": 1}, "company_id": cls.company_a.id}])
        )
        while cls.Event._cron_dispatch():
            pass
        cls.participant_a = cls.Participant.search([("scenario_id", "=", cls.scenario_a.id)])
        cls.records_a = {
            "marketing.event.source": cls.source,
            "marketing.event.type": cls.type_a,
            "marketing.event": cls.events_a,
            "marketing.scenario": cls.scenario_a,
            "marketing.scenario.node": cls.node_a,
            "marketing.scenario.participant": cls.participant_a,
            "marketing.scenario.step": cls.participant_a.step_ids,
            "marketing.engagement.rule": cls.rule_a,
            "marketing.engagement.log": cls.contact_a.engagement_log_ids,
            "marketing.system.automation": cls.automation_a,
            "marketing.system.automation.job": cls.automation_a.job_ids,
            "marketing.system.automation.run": cls.automation_a.run_ids,
            "marketing.system.automation.run.job": cls.automation_a.run_ids.run_job_ids,
            "marketing.system.schedule": cls.schedule_a,
        }

    def test_fixture_is_complete(self):
        for model_name, records in self.records_a.items():
            with self.subTest(model=model_name):
                self.assertTrue(records, "every kind of record exists in company A")
                if "company_id" in records._fields:
                    self.assertEqual(records.mapped("company_id"), self.company_a)
        self.assertEqual(self.participant_a.partner_id, self.contact_a)
        self.assertEqual(self.contact_a.engagement_score, 3)

    def test_company_b_sees_nothing_of_company_a(self):
        for model_name, records in self.records_a.items():
            with self.subTest(model=model_name):
                domain = [("id", "in", records.ids)]
                self.assertEqual(self.env[model_name].with_user(self.user_a).search(domain), records)
                self.assertFalse(self.env[model_name].with_user(self.user_b).search(domain))
                with self.assertRaises(AccessError):
                    records.with_user(self.user_b).read(["display_name"])
                with self.assertRaises(AccessError):
                    records.with_user(self.user_b).unlink()

    def test_shared_records_are_seen_by_both(self):
        shared_type = self.type_purchase  # no company
        self.assertFalse(shared_type.company_id)
        shared_automation = self.env["marketing.system.automation"].create(
            {
                "name": "Every company",
                "company_id": False,
                "event_type_id": self.env.ref("marketing_event_automation.event_type_mailing_done").id,
            }
        )
        for user in (self.user_a, self.user_b):
            with self.subTest(user=user.login):
                self.assertEqual(shared_type.with_user(user).read(["key"])[0]["key"], "test_purchase")
                self.assertTrue(shared_automation.with_user(user).read(["name"]))
        Type = self.EventType.with_user(self.user_b)
        self.assertNotIn(self.type_a, Type.search([("key", "=", "loyalty")]))

    def test_ingestion_stays_in_the_source_company(self):
        contact_b = self.env["res.partner"].create(
            {"name": "Bert of B", "email": "bert@b.example.com", "company_id": self.company_b.id}
        )
        type_b = self.EventType.create({"name": "Visit (B)", "key": "visit", "company_id": self.company_b.id})
        results = self.Event.with_company(self.company_a)._ingest(
            self.source, [{"event": "visit", "contact": {"email": "bert@b.example.com"}}]
        )
        self.assertEqual(results[0]["status"], "accepted")
        event = self.Event.browse(results[0]["id"])
        self.assertEqual(event.company_id, self.company_a)
        self.assertNotEqual(event.partner_id, contact_b, "a source of A never reaches a contact of B")
        self.assertEqual(
            (event.partner_id.company_id, event.partner_id.email_normalized), (self.company_a, "bert@b.example.com")
        )
        self.assertNotEqual(event.type_id, type_b, "nor an event type of B")
        self.assertEqual(event.type_id.company_id, self.company_a)
        self.assertFalse(self.Event.with_user(self.user_b).search([("id", "=", event.id)]))
        self.assertFalse(
            self.env["res.partner"].with_user(self.user_b).search([("id", "=", event.partner_id.id)]),
            "the contact created for A is out of B's sight",
        )

    def test_events_of_company_b_do_not_enter_scenarios_of_company_a(self):
        shared_contact = self.env["res.partner"].create({"name": "Sam Shared", "email": "sam@example.com"})
        self.Event._insert_events(
            [
                {
                    "type": self.type_a,
                    "key": "loyalty",
                    "partner_id": shared_contact.id,
                    "company_id": self.company_b.id,
                    "params": {},
                }
            ]
        )
        self.dispatch()
        self.assertFalse(self.participant_of(self.scenario_a, shared_contact))
        self.assertFalse(shared_contact.engagement_score_set, "the score rule of A ignores B's events")
