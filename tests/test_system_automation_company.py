from odoo import fields
from odoo.exceptions import AccessError
from odoo.tests import new_test_user
from odoo.tests import tagged
from odoo.tools import mute_logger

from .scenario_common import ScenarioCommon
from .test_engine_rights import marketing_user
from .test_system_automation import RUNNER_LOGGER
from .test_system_automation import SystemAutomationCommon


@tagged("post_install", "-at_install")
class TestSystemAutomationsStayInTheirCompany(SystemAutomationCommon, ScenarioCommon):
    """Exports, reports and mailing audiences of an automation keep to its company; outside recipients are an
    administrator's setting."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.marketer = marketing_user(cls.env, "mea_company_marketer")
        cls.other_company = cls.env["res.company"].create({"name": "Other company"})
        cls.outsider_user = new_test_user(
            cls.env,
            login="mea_other_company_user",
            groups="marketing_event_automation.group_marketing_automation_user",
            company_id=cls.other_company.id,
            company_ids=[(6, 0, cls.other_company.ids)],
        )
        cls.other_contact = cls.env["res.partner"].create(
            {"name": "Other Contact", "email": "other@other.example", "company_id": cls.other_company.id}
        )

    def export_job(self, kind, **values):
        return {
            "job_type": "export",
            "export_kind": kind,
            "export_format": "csv",
            "recipient_user_ids": [fields.Command.set(self.report_user.ids)],
            **values,
        }

    def run_and_read(self, automation, params=None):
        self.emit_and_dispatch("mailing_done", params or {"mailing_id": self.welcome.id})
        with mute_logger(RUNNER_LOGGER):
            self.run_automations()
        run_job = automation.run_ids.run_job_ids
        return run_job, (self.read_csv(run_job.attachment_ids) if run_job.attachment_ids else [])

    def test_marketer_cannot_share_an_automation_or_a_schedule(self):
        Automation = self.Automation.with_user(self.marketer)
        with self.assertRaises(AccessError):
            Automation.create({"name": "Shared", "event_type_id": self.type_mailing_done.id, "company_id": False})
        mine = Automation.create({"name": "Mine", "event_type_id": self.type_mailing_done.id})
        self.assertEqual(mine.company_id, self.company)
        with self.assertRaises(AccessError):
            mine.company_id = False
        with self.assertRaises(AccessError):
            self.env["marketing.system.schedule"].with_user(self.marketer).create(
                {"name": "Shared", "frequency": "weekly", "company_id": False}
            )
        shared = self.Automation.with_user(self.marketing_manager).create(
            {"name": "Shared by the administrator", "event_type_id": self.type_mailing_done.id, "company_id": False}
        )
        self.assertFalse(shared.company_id)

    def test_marketer_cannot_send_results_outside_the_company(self):
        automation = self.Automation.with_user(self.marketer).create(
            {"name": "Export", "event_type_id": self.type_mailing_done.id}
        )
        with self.assertRaises(AccessError):
            automation.write(
                {"job_ids": [fields.Command.create(self.export_job("events", recipient_emails="x@evil.example"))]}
            )
        with self.assertRaises(AccessError):
            automation.write(
                {
                    "job_ids": [
                        fields.Command.create(
                            self.export_job("events", recipient_user_ids=[fields.Command.set(self.outsider_user.ids)])
                        )
                    ]
                }
            )
        automation.write({"job_ids": [fields.Command.create(self.export_job("events"))]})
        automation.job_ids.with_user(self.marketing_manager).recipient_emails = "reports@example.com"
        self.assertEqual(automation.job_ids.recipient_emails, "reports@example.com", "an administrator's setting")

    def test_participant_and_node_exports_leave_out_other_companies(self):
        scenario_other = self.create_scenario(name="Other company's scenario", company_id=self.other_company.id)
        self.add_node(scenario_other, "wait", wait_amount=1, wait_unit="days")
        scenario_other.sudo().write({"state": "running"})
        scenario_other._enroll_partners([self.other_contact.id])
        scenario_own = self.create_scenario(name="Own scenario")
        self.add_node(scenario_own, "wait", wait_amount=1, wait_unit="days")
        scenario_own.action_start()
        scenario_own._enroll_partners([self.partner.id])
        self.assertTrue(scenario_other.participant_ids, "the other company's contact runs through its scenario")
        participants = self.make_automation(self.type_mailing_done, [self.export_job("participants")], name="P")
        run_job, rows = self.run_and_read(participants)
        self.assertEqual(run_job.state, "done", run_job.message)
        names = {row[2] for row in rows[1:]}
        self.assertIn(self.partner.name, names)
        self.assertNotIn(self.other_contact.name, names)
        nodes = self.make_automation(self.type_mailing_done, [self.export_job("node_stats")], name="N")
        self.emit_and_dispatch("mailing_done", {"mailing_id": self.welcome.id, "n": 1})
        with mute_logger(RUNNER_LOGGER):
            self.run_automations()
        rows = self.read_csv(nodes.run_ids.run_job_ids.attachment_ids)
        scenarios = {row[2] for row in rows[1:]}
        self.assertIn("Own scenario", scenarios)
        self.assertNotIn("Other company's scenario", scenarios)

    def test_events_export_of_a_run_without_company_is_refused(self):
        self.emit_and_dispatch("mailing_done", {"mailing_id": 0}, company_id=self.other_company.id)
        automation = self.make_automation(self.type_mailing_done, [self.export_job("events")], company_id=False)
        self.emit_and_dispatch("mailing_done", {"mailing_id": self.welcome.id, "run": 1})
        with mute_logger(RUNNER_LOGGER):
            self.run_automations()
        run_job = automation.run_ids.filtered(lambda run: not run.company_id).run_job_ids
        self.assertEqual(run_job.state, "failed")
        self.assertIn("belongs to no company", run_job.message)
        self.assertFalse(run_job.attachment_ids)

    def test_scenario_report_of_another_company_is_refused(self):
        scenario_other = self.create_scenario(name="Other company's scenario", company_id=self.other_company.id)
        automation = self.make_automation(
            self.type_scenario_finished,
            [{"job_type": "send_report", "recipient_user_ids": [fields.Command.set(self.report_user.ids)]}],
        )
        self.emit_and_dispatch("scenario_finished", {"scenario_id": scenario_other.id, "reason": "completed"})
        with mute_logger(RUNNER_LOGGER):
            self.run_automations()
        run_job = automation.run_ids.run_job_ids
        self.assertEqual(run_job.state, "failed")
        self.assertIn("belongs to another company", run_job.message)
        self.assertFalse(run_job.mail_id)

    def test_mailing_audience_filter_keeps_to_the_company(self):
        self.env["res.partner"].create({"name": "Own Contact", "email": "own@example.com", "ref": "AUD"})
        self.other_contact.ref = "AUD"
        template = self.env["mailing.mailing"].create(
            {
                "subject": "Hello",
                "body_html": "<p>Hello</p>",
                "mailing_model_id": self.env["ir.model"]._get_id("res.partner"),
            }
        )
        automation = self.make_automation(
            self.type_mailing_done,
            [
                {
                    "job_type": "send_mailing",
                    "mailing_template_id": template.id,
                    "audience": "partner_filter",
                    "partner_domain": "[('ref', '=', 'AUD')]",
                }
            ],
        )
        run_job, _rows = self.run_and_read(automation)
        self.assertEqual(run_job.state, "done", run_job.message)
        self.assertEqual(run_job.processed_count, 1, "the other company's contact is left out")
        recipients = run_job.mailing_id._get_remaining_recipients()
        self.assertNotIn(self.other_contact.id, recipients)
