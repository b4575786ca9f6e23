import base64
import csv
import io
from datetime import datetime
from datetime import timedelta

import openpyxl
from freezegun import freeze_time

from odoo import fields
from odoo.addons.mail.tests.common import MockEmail
from odoo.exceptions import AccessError
from odoo.exceptions import ValidationError
from odoo.tests import Form
from odoo.tests import tagged
from odoo.tools import mute_logger

from .common import MarketingAutomationCommon
from .common import MarketingAutomationHttpCommon
from .scenario_common import ScenarioCommon

RUNNER_LOGGER = "odoo.addons.marketing_event_automation.models.marketing_system_automation_run"


class SystemAutomationCommon(MarketingAutomationCommon, MockEmail):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.Automation = cls.env["marketing.system.automation"]
        cls.Run = cls.env["marketing.system.automation.run"]
        cls.type_mailing_done = cls.env.ref("marketing_event_automation.event_type_mailing_done")
        cls.type_imported = cls.env.ref("marketing_event_automation.event_type_contacts_imported")
        cls.type_scenario_finished = cls.env.ref("marketing_event_automation.event_type_scenario_finished")
        cls.type_schedule_fired = cls.env.ref("marketing_event_automation.event_type_schedule_fired")
        cls.company.email = "marketing@company.example.com"
        cls.report_user = cls.marketing_manager
        cls.report_user.partner_id.email = "manager@company.example.com"
        cls.list_new = cls.env["mailing.list"].create({"name": "Newcomers"})
        cls.list_customers = cls.env["mailing.list"].create({"name": "Customers"})
        cls.welcome = cls.env["mailing.mailing"].create(
            {
                "subject": "Welcome aboard",
                "body_html": "<p>Welcome!</p>",
                "mailing_model_id": cls.env["ir.model"]._get_id("mailing.list"),
                "contact_list_ids": [fields.Command.set(cls.list_new.ids)],
            }
        )

    def make_automation(self, event_type, jobs, **values):
        return self.Automation.create(
            {
                "name": values.pop("name", "Test automation"),
                "event_type_id": event_type.id,
                "job_ids": [fields.Command.create(job) for job in jobs],
                **values,
            }
        )

    def emit_and_dispatch(self, key, params, **values):
        event_ids = self.Event._emit(key, [{"params": params, **values}])
        self.Event._cron_dispatch()
        return self.Event.browse(event_ids)

    def run_automations(self):
        return self.Run._cron_run()

    def read_csv(self, attachment):
        return list(csv.reader(io.StringIO(attachment.raw.decode("utf-8-sig"))))

    def read_xlsx(self, attachment):
        workbook = openpyxl.load_workbook(io.BytesIO(attachment.raw), read_only=True)
        return [list(row) for row in workbook.active.iter_rows(values_only=True)]


@tagged("post_install", "-at_install")
class TestSystemAutomationTrigger(SystemAutomationCommon):
    def test_params_filter_is_checked_against_the_learned_structure(self):
        self.emit_and_dispatch("contacts_imported", {"list_id": 1, "count": 3})
        with self.assertRaisesRegex(
            ValidationError, "Parameters Filter of Bad filter: unexpected character '=' at position 9"
        ):
            self.make_automation(self.type_imported, [], name="Bad filter", params_filter="list_id = 1")
        with self.assertRaisesRegex(ValidationError, "Parameters Filter of Bad type: condition 1: count is a number"):
            self.make_automation(self.type_imported, [], name="Bad type", params_filter='count > "many"')
        automation = self.make_automation(self.type_imported, [], params_filter='count > "2"')
        self.emit_and_dispatch("contacts_imported", {"count": 1})
        self.emit_and_dispatch("contacts_imported", {"count": 3})
        self.assertEqual(automation.run_ids.event_id.params, {"count": 3}, "the value is read as a number")

    def test_contact_event_types_are_refused(self):
        with self.assertRaisesRegex(ValidationError, "System Event: Test purchase is a contact"):
            self.make_automation(self.type_purchase, [])

    def test_each_system_event_creates_a_run(self):
        automations = {
            event_type.key: self.make_automation(event_type, [{"job_type": "send_report"}], name=event_type.key)
            for event_type in (
                self.type_mailing_done,
                self.type_imported,
                self.type_scenario_finished,
                self.type_schedule_fired,
            )
        }
        schedule = self.env["marketing.system.schedule"].create({"name": "Mondays", "frequency": "weekly"})
        automations["schedule_fired"].schedule_id = schedule
        params = {
            "mailing_done": {"mailing_id": self.welcome.id},
            "contacts_imported": {"list_id": self.list_new.id, "created": 3},
            "scenario_finished": {"scenario_id": 1, "reason": "completed"},
            "schedule_fired": {"schedule_id": schedule.id},
        }
        for key, automation in automations.items():
            with self.subTest(key=key):
                event = self.emit_and_dispatch(key, params[key])
                self.assertEqual(event.state, "processed")
                run = self.Run.search([("automation_id", "=", automation.id)])
                self.assertEqual(len(run), 1)
                self.assertEqual((run.event_id, run.state), (event, "pending"))
                self.assertEqual(run.run_job_ids.job_type, "send_report")
                self.assertEqual(event.processing_result, {"System automations": [key]})
        # another schedule's event does not start the automation of the first
        self.emit_and_dispatch("schedule_fired", {"schedule_id": schedule.id + 1000})
        self.assertEqual(len(automations["schedule_fired"].run_ids), 1)

    def test_filter_company_and_redispatch(self):
        automation = self.make_automation(
            self.type_imported,
            [{"job_type": "send_report"}],
            params_filter=f"list_id == {self.list_new.id} and count > 1",
        )
        other_company = self.env["res.company"].create({"name": "Other company"})
        self.emit_and_dispatch("contacts_imported", {"list_id": self.list_customers.id, "count": 5})
        self.emit_and_dispatch("contacts_imported", {"list_id": self.list_new.id, "count": 1})
        self.emit_and_dispatch(
            "contacts_imported", {"list_id": self.list_new.id, "count": 5}, company_id=other_company.id
        )
        self.assertFalse(automation.run_ids, "neither the other list, a small import nor the other company triggers it")
        event = self.emit_and_dispatch("contacts_imported", {"list_id": self.list_new.id, "count": 5})
        self.assertEqual(automation.run_ids.event_id, event)
        # an event sent through the dispatcher again does not run the automation twice
        event.write({"state": "pending"})
        self.Event._cron_dispatch()
        self.assertEqual(len(automation.run_ids), 1)


@tagged("post_install", "-at_install")
class TestSystemAutomationJobs(SystemAutomationCommon):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        Contact = cls.env["mailing.contact"]
        cls.contact_anna = Contact.create(
            {"name": "Anna", "email": "anna@example.com", "list_ids": [fields.Command.link(cls.list_new.id)]}
        )
        cls.contact_bob = Contact.create(
            {"name": "Bob", "email": "bob@example.com", "list_ids": [fields.Command.link(cls.list_new.id)]}
        )

    def test_send_mailing_to_the_imported_list(self):
        automation = self.make_automation(
            self.type_imported,
            [{"job_type": "send_mailing", "mailing_template_id": self.welcome.id, "audience": "event_list"}],
        )
        self.emit_and_dispatch("contacts_imported", {"list_id": self.list_new.id, "created": 2})
        self.assertEqual(self.run_automations(), 1)
        run_job = automation.run_ids.run_job_ids
        self.assertEqual(run_job.state, "done", run_job.message)
        mailing = run_job.mailing_id
        self.assertNotEqual(mailing, self.welcome, "the template itself is never sent")
        self.assertEqual((mailing.state, mailing.contact_list_ids), ("in_queue", self.list_new))
        self.assertEqual(run_job.processed_count, 2)
        with self.mock_mail_gateway():
            self.env["mailing.mailing"]._process_mass_mailing_queue()
        self.assertEqual(mailing.state, "done")
        traces = self.env["mailing.trace"].search([("mass_mailing_id", "=", mailing.id)])
        self.assertEqual(sorted(traces.mapped("email")), ["anna@example.com", "bob@example.com"])
        sent_to = " ".join(str(mail["email_to"]) for mail in self._mails)
        self.assertEqual(len(self._mails), 2)
        self.assertIn("anna@example.com", sent_to)
        self.assertIn("bob@example.com", sent_to)
        self.assertEqual(self.welcome.state, "draft")

    def test_welcome_mailing_after_a_real_import_into_a_list(self):
        offers = self.env["mailing.list"].create({"name": "Offers"})
        automation = self.make_automation(
            self.type_imported,
            [{"job_type": "send_mailing", "mailing_template_id": self.welcome.id, "audience": "event_list"}],
        )
        self.env["mailing.contact.import"].create(
            {"mailing_list_ids": [(4, offers.id)], "contact_list": "Zoe <zoe@example.com>\nyan@example.com"}
        ).action_import()
        self.Event._cron_dispatch()
        self.run_automations()
        run_job = automation.run_ids.run_job_ids
        self.assertEqual(run_job.state, "done", run_job.message)
        self.assertEqual(run_job.mailing_id.contact_list_ids, offers)
        self.assertEqual(
            sorted(self.env["mailing.contact"].browse(run_job.mailing_id._get_remaining_recipients()).mapped("email")),
            ["yan@example.com", "zoe@example.com"],
        )

    def test_a_mailing_sent_by_an_automation_does_not_trigger_it_again(self):
        automation = self.make_automation(
            self.type_mailing_done,
            [
                {
                    "job_type": "send_mailing",
                    "mailing_template_id": self.welcome.id,
                    "audience": "lists",
                    "mailing_list_ids": [fields.Command.set(self.list_new.ids)],
                }
            ],
        )
        self.emit_and_dispatch("mailing_done", {"mailing_id": self.welcome.id})
        self.run_automations()
        mailing = automation.run_ids.run_job_ids.mailing_id
        with self.mock_mail_gateway():
            self.env["mailing.mailing"]._process_mass_mailing_queue()
        self.assertEqual(mailing.state, "done")
        self.Event._emit("mailing_done", [{"params": {"mailing_id": mailing.id}}])
        self.Event._cron_dispatch()
        self.assertEqual(len(automation.run_ids), 1)

    def test_send_mailing_to_a_contact_filter(self):
        self.env["res.partner"].create({"name": "VIP One", "email": "vip1@example.com", "ref": "VIP"})
        self.env["res.partner"].create({"name": "VIP Two", "email": "vip2@example.com", "ref": "VIP"})
        automation = self.make_automation(
            self.type_mailing_done,
            [
                {
                    "job_type": "send_mailing",
                    "mailing_template_id": self.welcome.id,
                    "audience": "partner_filter",
                    "partner_domain": "[('ref', '=', 'VIP')]",
                }
            ],
        )
        self.emit_and_dispatch("mailing_done", {"mailing_id": self.welcome.id})
        self.run_automations()
        mailing = automation.run_ids.run_job_ids.mailing_id
        self.assertEqual(mailing.mailing_model_real, "res.partner")
        self.assertEqual(
            sorted(self.env["res.partner"].browse(mailing._get_remaining_recipients()).mapped("email")),
            ["vip1@example.com", "vip2@example.com"],
        )

    def test_export_events_csv_and_xlsx_mailed(self):
        self.Event._emit("test_purchase", [{"partner_id": self.partner.id, "params": {"total": 10}}])
        now = fields.Datetime.now()
        old = self.Event._emit(
            "email_opened", [{"partner_id": self.partner.id, "occurred_at": now - timedelta(days=9)}]
        )
        recent = self.Event._emit("email_opened", [{"partner_id": self.partner.id, "params": {"mailing_id": 5}}])
        automation = self.make_automation(
            self.type_mailing_done,
            [
                {
                    "job_type": "export",
                    "export_kind": "events",
                    "export_event_type_ids": [
                        fields.Command.set(self.env.ref("marketing_event_automation.event_type_email_opened").ids)
                    ],
                    "export_period": "week",
                    "export_format": "both",
                    "recipient_user_ids": [fields.Command.set(self.report_user.ids)],
                    "recipient_emails": "boss@example.com",
                }
            ],
        )
        self.emit_and_dispatch("mailing_done", {"mailing_id": self.welcome.id})
        self.run_automations()
        run_job = automation.run_ids.run_job_ids
        self.assertEqual(run_job.state, "done", run_job.message)
        csv_file = run_job.attachment_ids.filtered(lambda attachment: attachment.name.endswith(".csv"))
        xlsx_file = run_job.attachment_ids.filtered(lambda attachment: attachment.name.endswith(".xlsx"))
        csv_rows = self.read_csv(csv_file)
        self.assertEqual(csv_rows[0][:4], ["Event ID", "Occurred At", "Received At", "Event Type"])
        self.assertEqual([row[0] for row in csv_rows[1:]], [str(recent[0])], f"not the 9-day-old event {old}")
        self.assertEqual(csv_rows[1][3:7], ["email_opened", "Alice Shopper", "alice@example.com", "processed"])
        self.assertEqual(csv_rows[1][7], '{"mailing_id": 5}')
        xlsx_rows = self.read_xlsx(xlsx_file)
        self.assertEqual(xlsx_rows[0], csv_rows[0])
        self.assertEqual(xlsx_rows[1][0], recent[0])
        self.assertEqual(xlsx_rows[1][3], "email_opened")
        mail = run_job.mail_id
        self.assertEqual(mail.state, "outgoing")
        self.assertEqual(mail.email_to, "boss@example.com")
        self.assertEqual(mail.recipient_ids, self.report_user.partner_id)
        self.assertEqual(mail.attachment_ids, csv_file | xlsx_file)
        with self.mock_mail_gateway():
            mail.send()
        sent = [email for email in self._mails if "boss@example.com" in str(email["email_to"])]
        self.assertEqual(len(sent), 1)
        self.assertEqual(
            sorted(name for name, _content, _mimetype in sent[0]["attachments"]),
            sorted((csv_file | xlsx_file).mapped("name")),
        )

    def _mailing_with_traces(self):
        mailing = self.welcome.copy({"subject": "Spring sale", "state": "done", "sent_date": fields.Datetime.now()})
        now = fields.Datetime.now()
        partners = self.env["res.partner"].create(
            [{"name": f"P{index}", "email": f"p{index}@example.com"} for index in range(4)]
        )
        self.env["mailing.trace"].create(
            [
                {
                    "mass_mailing_id": mailing.id,
                    "model": "res.partner",
                    "res_id": partners[0].id,
                    "trace_status": "sent",
                    "sent_datetime": now,
                },
                {
                    "mass_mailing_id": mailing.id,
                    "model": "res.partner",
                    "res_id": partners[1].id,
                    "trace_status": "open",
                    "sent_datetime": now,
                },
                {
                    "mass_mailing_id": mailing.id,
                    "model": "res.partner",
                    "res_id": partners[2].id,
                    "trace_status": "open",
                    "sent_datetime": now,
                    "links_click_datetime": now,
                },
                {
                    "mass_mailing_id": mailing.id,
                    "model": "res.partner",
                    "res_id": partners[3].id,
                    "trace_status": "bounce",
                },
            ]
        )
        return mailing

    def test_export_mailing_statistics(self):
        mailing = self._mailing_with_traces()
        automation = self.make_automation(
            self.type_mailing_done,
            [
                {
                    "job_type": "export",
                    "export_kind": "mailing_stats",
                    "export_format": "csv",
                    "recipient_emails": "stats@example.com",
                }
            ],
        )
        self.emit_and_dispatch("mailing_done", {"mailing_id": mailing.id})
        self.run_automations()
        run_job = automation.run_ids.run_job_ids
        self.assertEqual(run_job.state, "done", run_job.message)
        self.assertEqual(run_job.attachment_ids.mapped("name"), ["mailing_statistics.csv"])
        rows = self.read_csv(run_job.attachment_ids)
        stats = dict(zip(rows[0], rows[1]))
        self.assertEqual(stats["Subject"], "Spring sale")
        self.assertEqual(
            {name: stats[name] for name in ("Expected", "Sent", "Delivered", "Opened", "Clicked", "Bounced")},
            {"Expected": "4", "Sent": "3", "Delivered": "3", "Opened": "2", "Clicked": "1", "Bounced": "1"},
        )
        self.assertEqual(run_job.mail_id.attachment_ids, run_job.attachment_ids)

    @mute_logger(RUNNER_LOGGER)
    def test_scenario_exports_need_the_engine(self):
        automation = self.make_automation(
            self.type_scenario_finished,
            [{"job_type": "export", "export_kind": "participants", "recipient_emails": "a@example.com"}],
        )
        self.emit_and_dispatch("scenario_finished", {"scenario_id": 1})
        self.run_automations()
        run_job = automation.run_ids.run_job_ids
        if "marketing.scenario.participant" in self.env:
            self.assertEqual(run_job.state, "done", run_job.message)
            self.assertEqual(
                self.read_xlsx(run_job.attachment_ids.filtered(lambda a: a.name.endswith(".xlsx")))[0][0],
                "Participant ID",
            )
            return
        self.assertEqual(run_job.state, "failed")
        self.assertIn("needs the scenario engine (marketing.scenario.participant)", run_job.message)
        self.assertEqual(automation.last_run_state, "failed")

    def test_import_addresses(self):
        self.contact_bob.subscription_ids.filtered(lambda sub: sub.list_id == self.list_new).opt_out = True
        existing_customer = self.env["mailing.contact"].create(
            {"name": "Carla", "email": "Carla@Example.com", "list_ids": [fields.Command.link(self.list_customers.id)]}
        )
        content = (
            "Name;E-mail\n"
            "Dora;dora@example.com\n"
            "Carla C.;carla@example.com\n"
            "Anna;anna@example.com\n"
            "Bob;bob@example.com\n"
            "Nobody;not-an-email\n"
            "Dora again;DORA@example.com\n"
            ";\n"
            "Empty;\n"
        )
        automation = self.make_automation(
            self.type_imported,
            [
                {
                    "job_type": "import_addresses",
                    "target_list_id": self.list_new.id,
                    "import_file": base64.b64encode(content.encode()),
                    "import_filename": "fair.csv",
                }
            ],
        )
        self.emit_and_dispatch("contacts_imported", {"created": 0})
        self.run_automations()
        run_job = automation.run_ids.run_job_ids
        self.assertEqual(run_job.state, "done", run_job.message)
        self.assertEqual((run_job.processed_count, run_job.skipped_count), (2, 4))
        self.assertIn("1 new contacts, 1 existing contacts added, 1 already in the list, 4 skipped", run_job.message)
        dora = self.env["mailing.contact"].search([("email_normalized", "=", "dora@example.com")])
        self.assertEqual((len(dora), dora.name, dora.list_ids), (1, "Dora", self.list_new))
        self.assertEqual(existing_customer.list_ids, self.list_customers | self.list_new, "merged, not duplicated")
        self.assertEqual(self.env["mailing.contact"].search_count([("email_normalized", "=", "carla@example.com")]), 1)
        self.assertTrue(
            self.contact_bob.subscription_ids.filtered(lambda sub: sub.list_id == self.list_new).opt_out,
            "an opted-out contact stays opted out",
        )
        report = self.read_csv(run_job.attachment_ids)
        self.assertEqual(
            report,
            [
                ["Row", "Email", "Reason"],
                ["5", "bob@example.com", "opted out of Newcomers, left out"],
                ["6", "not-an-email", "invalid email"],
                ["7", "DORA@example.com", "duplicate of row 2, merged"],
                ["9", "", "empty email"],
            ],
        )

    @mute_logger(RUNNER_LOGGER)
    def test_import_without_email_column_fails_clearly(self):
        automation = self.make_automation(
            self.type_imported,
            [
                {
                    "job_type": "import_addresses",
                    "target_list_id": self.list_new.id,
                    "import_file": base64.b64encode(b"name,phone\nAnna,123\n"),
                    "import_filename": "bad.csv",
                }
            ],
        )
        self.emit_and_dispatch("contacts_imported", {})
        self.run_automations()
        run_job = automation.run_ids.run_job_ids
        self.assertEqual(run_job.state, "failed")
        self.assertIn("Address File bad.csv: no email column", run_job.message)

    def test_import_from_the_event_attachment(self):
        attachment = self.env["ir.attachment"].create(
            {"name": "upload.csv", "raw": b"email\nzoe@example.com\n", "mimetype": "text/csv"}
        )
        automation = self.make_automation(
            self.type_imported, [{"job_type": "import_addresses", "target_list_id": self.list_customers.id}]
        )
        self.emit_and_dispatch("contacts_imported", {"attachment_id": attachment.id})
        self.run_automations()
        self.assertEqual(automation.run_ids.run_job_ids.state, "done")
        self.assertIn("zoe@example.com", self.list_customers.contact_ids.mapped("email"))

    def test_list_membership_copy_move_and_hygiene(self):
        self.contact_anna.message_bounce = 5
        self.env["mail.blacklist"]._add("bob@example.com")
        carl = self.env["mailing.contact"].create(
            {"name": "Carl", "email": "carl@example.com", "list_ids": [fields.Command.link(self.list_new.id)]}
        )
        automation = self.make_automation(
            self.type_imported,
            [
                {
                    "job_type": "list_membership",
                    "membership_action": "copy",
                    "source_list_id": self.list_new.id,
                    "target_list_id": self.list_customers.id,
                    "contact_domain": "[('name', 'in', ('Anna', 'Carl'))]",
                    "sequence": 1,
                },
                {
                    "job_type": "list_membership",
                    "membership_action": "hygiene",
                    "source_list_id": self.list_new.id,
                    "bounce_threshold": 3,
                    "sequence": 2,
                },
                {
                    "job_type": "list_membership",
                    "membership_action": "move",
                    "source_list_id": self.list_new.id,
                    "target_list_id": self.list_customers.id,
                    "sequence": 3,
                },
            ],
        )
        self.emit_and_dispatch("contacts_imported", {})
        self.run_automations()
        copy_result, hygiene_result, move_result = automation.run_ids.run_job_ids.sorted("sequence")
        self.assertEqual(copy_result.state, "done", copy_result.message)
        self.assertEqual(copy_result.processed_count, 2)
        self.assertIn("1 bounced, 1 blacklisted", hygiene_result.message)
        self.assertEqual(move_result.processed_count, 1)
        self.assertFalse(self.list_new.contact_ids, "bounced and blacklisted removed, Carl moved")
        self.assertEqual(self.list_customers.contact_ids, self.contact_anna | carl)

    def test_send_report_of_the_mailing(self):
        mailing = self._mailing_with_traces()
        automation = self.make_automation(
            self.type_mailing_done,
            [{"job_type": "send_report", "recipient_user_ids": [fields.Command.set(self.report_user.ids)]}],
        )
        self.emit_and_dispatch("mailing_done", {"mailing_id": mailing.id})
        self.run_automations()
        run_job = automation.run_ids.run_job_ids
        self.assertEqual(run_job.state, "done", run_job.message)
        mail = run_job.mail_id
        self.assertEqual(mail.subject, "Mailing report: Spring sale")
        self.assertEqual(mail.recipient_ids, self.report_user.partner_id)
        self.assertIn("<td>Opened</td><td style='text-align: right; padding-left: 16px'>2</td>", str(mail.body_html))
        self.assertIn("<td>Bounced</td><td style='text-align: right; padding-left: 16px'>1</td>", str(mail.body_html))


@tagged("post_install", "-at_install")
class TestSystemAutomationRetry(SystemAutomationCommon):
    @mute_logger(RUNNER_LOGGER)
    def test_failure_then_retry_without_repeating_done_jobs(self):
        mailing = self.welcome.copy({"subject": "Weekly news", "state": "done"})
        automation = self.make_automation(
            self.type_mailing_done,
            [
                {"job_type": "send_report", "recipient_emails": "boss@example.com", "sequence": 1},
                {"job_type": "import_addresses", "target_list_id": self.list_new.id, "sequence": 2},
                {
                    "job_type": "export",
                    "export_kind": "mailing_stats",
                    "export_format": "csv",
                    "recipient_emails": "boss@example.com",
                    "sequence": 3,
                },
            ],
        )
        self.emit_and_dispatch("mailing_done", {"mailing_id": mailing.id})
        with freeze_time(datetime(2026, 11, 24, 10, 0)):
            self.run_automations()
        run = automation.run_ids
        report, importer, export = run.run_job_ids.sorted("sequence")
        self.assertEqual((run.state, run.attempt_count), ("failed", 1))
        self.assertEqual((report.state, importer.state, export.state), ("done", "failed", "pending"))
        self.assertIn("Address File: attach a CSV file", importer.message)
        self.assertIn("Job 2 (Import addresses) failed", run.error_message)
        self.assertEqual((automation.failed_run_count, automation.last_run_state), (1, "failed"))
        self.assertIn("Address File", automation.last_error)
        report_mail = report.mail_id

        # not due yet: the next cron run a minute later leaves it alone
        with freeze_time(datetime(2026, 11, 24, 10, 1)):
            self.assertEqual(self.run_automations(), 0)

        importer.job_id.write(
            {"import_file": base64.b64encode(b"email\nnew@example.com\n"), "import_filename": "n.csv"}
        )
        with freeze_time(datetime(2026, 11, 24, 10, 10)):
            self.assertEqual(self.run_automations(), 1)
        self.assertEqual((run.state, run.attempt_count), ("done", 2))
        self.assertEqual((report.state, importer.state, export.state), ("done", "done", "done"))
        self.assertEqual(report.mail_id, report_mail, "the report done by the first attempt is not sent again")
        mails = self.env["mail.mail"].search([("email_to", "=", "boss@example.com")])
        self.assertEqual(len(mails), 2, "one report and one export")
        self.assertIn("new@example.com", self.list_new.contact_ids.mapped("email"))
        self.assertEqual(automation.failed_run_count, 0)

    def test_archived_automation_holds_its_runs(self):
        automation = self.make_automation(
            self.type_mailing_done, [{"job_type": "send_report", "recipient_emails": "boss@example.com"}]
        )
        self.emit_and_dispatch("mailing_done", {"mailing_id": self.welcome.id})
        automation.active = False
        self.assertEqual(self.run_automations(), 0)
        self.assertEqual(automation.run_ids.state, "pending")
        automation.active = True
        self.assertEqual(self.run_automations(), 1)
        self.assertEqual(automation.run_ids.state, "done")

    @mute_logger(RUNNER_LOGGER)
    def test_manual_retry_and_attempt_limit(self):
        automation = self.make_automation(self.type_mailing_done, [{"job_type": "send_report"}])
        self.emit_and_dispatch("mailing_done", {})
        run = automation.run_ids
        moment = datetime(2026, 11, 24, 10, 0)
        for _attempt in range(6):
            with freeze_time(moment):
                self.run_automations()
            moment += timedelta(hours=3)
        self.assertEqual((run.state, run.attempt_count), ("failed", 5), "five attempts, then it waits for a person")
        self.assertIn("names no mailing (mailing_id) or scenario (scenario_id)", run.run_job_ids.message)
        automation.with_user(self.marketing_manager).action_retry_failed_runs()
        self.assertEqual(run.attempt_count, 0)
        with freeze_time(moment):
            self.assertEqual(self.run_automations(), 1)


@tagged("post_install", "-at_install")
class TestSystemSchedule(SystemAutomationCommon):
    def test_weekly_schedule_fires_once_per_occurrence_and_exports_last_week(self):
        with freeze_time(datetime(2026, 11, 18, 12, 0)):  # a Wednesday
            schedule = self.env["marketing.system.schedule"].create(
                {
                    "name": "Monday 06:00 Brussels",
                    "frequency": "weekly",
                    "weekday": "0",
                    "time_of_day": 6.5,
                    "tz": "Europe/Brussels",
                }
            )
            # 06:30 in Brussels is 05:30 UTC in winter
            self.assertEqual(schedule.next_occurrence, datetime(2026, 11, 23, 5, 30))
            automation = self.make_automation(
                self.type_schedule_fired,
                [
                    {
                        "job_type": "export",
                        "export_kind": "events",
                        "export_period": "event",
                        "export_format": "csv",
                        "export_event_type_ids": [fields.Command.set(self.type_purchase.ids)],
                        "recipient_emails": "weekly@example.com",
                    }
                ],
                schedule_id=schedule.id,
            )
            self.assertEqual(self.env["marketing.system.schedule"]._cron_fire_due(), 0)
        with freeze_time(datetime(2026, 11, 20, 9, 0)):
            in_period = self.Event._emit("test_purchase", [{"partner_id": self.partner.id, "params": {"total": 1}}])
        with freeze_time(datetime(2026, 11, 23, 5, 29)):
            self.assertEqual(self.env["marketing.system.schedule"]._cron_fire_due(), 0)
        with freeze_time(datetime(2026, 11, 23, 5, 35)):
            self.assertEqual(self.env["marketing.system.schedule"]._cron_fire_due(), 1)
            self.assertEqual(self.env["marketing.system.schedule"]._cron_fire_due(), 0, "once per occurrence")
            self.assertEqual(schedule.next_occurrence, datetime(2026, 11, 30, 5, 30))
            after = self.Event._emit("test_purchase", [{"partner_id": self.partner.id, "params": {"total": 2}}])
            self.Event._cron_dispatch()
            self.run_automations()
        fired = self.Event.search([("type_id", "=", self.type_schedule_fired.id)])
        self.assertEqual(len(fired), 1)
        self.assertEqual(fired.idempotency_key, f"schedule_fired:{schedule.id}:2026-11-23T05:30:00")
        self.assertEqual(fired.params["period_start"], "2026-11-16 05:30:00")
        self.assertEqual(fired.params["period_end"], "2026-11-23 05:30:00")
        # the same occurrence emitted again (another worker) is stored once
        self.assertEqual(
            self.Event._emit("schedule_fired", [{"idempotency_key": fired.idempotency_key, "params": {}}]), [None]
        )
        run_job = automation.run_ids.run_job_ids
        self.assertEqual(run_job.state, "done", run_job.message)
        rows = self.read_csv(run_job.attachment_ids)
        self.assertEqual([row[0] for row in rows[1:]], [str(in_period[0])], f"not {after} after the occurrence")
        self.assertEqual(run_job.attachment_ids.name, "events_20261116_20261123.csv")

    def test_daily_and_monthly_occurrences(self):
        with freeze_time(datetime(2026, 1, 30, 23, 0)):
            daily = self.env["marketing.system.schedule"].create(
                {"name": "Daily", "frequency": "daily", "time_of_day": 22.0, "tz": "UTC"}
            )
            monthly = self.env["marketing.system.schedule"].create(
                {"name": "Monthly", "frequency": "monthly", "month_day": 1, "time_of_day": 0.0, "tz": "UTC"}
            )
            self.assertEqual(daily.next_occurrence, datetime(2026, 1, 31, 22, 0))
            self.assertEqual(monthly.next_occurrence, datetime(2026, 2, 1, 0, 0))
        # after three days of downtime, the daily schedule fires its latest occurrence once
        with freeze_time(datetime(2026, 2, 3, 23, 0)):
            self.assertEqual(self.env["marketing.system.schedule"]._cron_fire_due(), 2)
        events = self.Event.search([("type_id", "=", self.type_schedule_fired.id)])
        by_schedule = {event.params["schedule_id"]: event.params for event in events}
        self.assertEqual(by_schedule[daily.id]["occurrence"], "2026-02-03 22:00:00")
        self.assertEqual(by_schedule[daily.id]["period_start"], "2026-02-02 22:00:00")
        self.assertEqual(by_schedule[monthly.id]["occurrence"], "2026-02-01 00:00:00")
        with self.assertRaisesRegex(ValidationError, "Day of Month: between 1 and 28"):
            monthly.month_day = 31


@tagged("post_install", "-at_install")
class TestSystemAutomationAccess(SystemAutomationCommon):
    def test_marketing_user_builds_an_automation_in_the_form(self):
        with Form(self.Automation.with_user(self.marketing_user)) as form:
            form.name = "Welcome after each import"
            form.event_type_id = self.type_imported
            with form.job_ids.new() as job:
                job.job_type = "send_mailing"
                job.mailing_template_id = self.welcome
                job.audience = "event_list"
            with form.job_ids.new() as job:
                job.job_type = "export"
                job.export_kind = "events"
                job.export_period = "day"
                job.recipient_user_ids.add(self.marketing_user)
        automation = form.record
        self.assertEqual(automation.job_ids.mapped("job_type"), ["send_mailing", "export"])
        self.assertEqual(automation.job_ids[0].summary, "Welcome aboard → Mailing list of the event")
        self.assertIn(self.marketing_user.name, automation.job_ids[1].summary)
        # Outside addresses are an administrator's setting (tests/test_system_automation_company.py).
        export = automation.job_ids[1].with_user(self.marketing_manager)
        export.recipient_emails = "reports@example.com"
        self.assertIn("reports@example.com", export.summary)
        with self.assertRaisesRegex(ValidationError, "Send to Addresses: 'not an address'"):
            export.recipient_emails = "ok@example.com, not an address"

    def test_runs_are_read_only_for_marketing_users_and_rules_follow_companies(self):
        automation = self.make_automation(self.type_mailing_done, [{"job_type": "send_report"}])
        self.emit_and_dispatch("mailing_done", {})
        run = automation.run_ids.with_user(self.marketing_user)
        self.assertEqual(run.state, "pending")
        with self.assertRaises(AccessError):
            run.write({"state": "done"})
        with self.assertRaises(AccessError):
            run.run_job_ids.write({"state": "done"})
        other_company = self.env["res.company"].create({"name": "Other company"})
        hidden = self.make_automation(self.type_mailing_done, [], name="Other company's", company_id=other_company.id)
        visible = self.Automation.with_user(self.marketing_user).search([])
        self.assertIn(automation, visible)
        self.assertNotIn(hidden, visible)
        self.assertFalse(
            self.env["marketing.event.type"]
            .with_user(self.marketing_user)
            .search(self.Automation._fields["event_type_id"].domain)
            .filtered(lambda event_type: event_type.scope != "system"),
            "only system event types are offered",
        )


@tagged("post_install", "-at_install")
class TestSystemAutomationScenarios(SystemAutomationCommon, ScenarioCommon):
    def test_scenario_run_finished_reports_and_exports(self):
        audience = self.env["res.partner"].create(
            [{"name": f"Audience {index}", "email": f"aud{index}@example.org", "ref": "AUD"} for index in range(2)]
        )
        scenario = self.create_scenario(
            trigger_type="now", trigger_event_type_id=False, audience_domain="[('ref', '=', 'AUD')]"
        )
        tag = self.add_node(scenario, "tag_add", tag_ids=[(6, 0, self.tag_vip.ids)])
        automation = self.make_automation(
            self.type_scenario_finished,
            [
                {"job_type": "send_report", "recipient_emails": "boss@example.com", "sequence": 1},
                {
                    "job_type": "export",
                    "export_kind": "participants",
                    "export_format": "csv",
                    "recipient_emails": "boss@example.com",
                    "sequence": 2,
                },
                {
                    "job_type": "export",
                    "export_kind": "node_stats",
                    "export_format": "xlsx",
                    "recipient_emails": "boss@example.com",
                    "sequence": 3,
                },
            ],
        )
        scenario.action_start()
        while self.Scenario._cron_schedule():
            pass
        self.advance()
        finished = self.Event.search([("type_id", "=", self.type_scenario_finished.id)]).filtered(
            lambda event: event.params.get("scenario_id") == scenario.id
        )
        self.assertEqual(len(finished), 1)
        self.assertEqual(finished.params["reason"], "completed")
        self.assertEqual(finished.params["participants"], {"completed": 2})
        scenario.action_stop()
        self.assertEqual(
            self.Event.search_count(
                [("type_id", "=", self.type_scenario_finished.id), ("idempotency_key", "=", finished.idempotency_key)]
            ),
            1,
            "one event per run",
        )
        self.dispatch()
        self.run_automations()
        report, participants_export, node_export = automation.run_ids.run_job_ids.sorted("sequence")
        self.assertEqual(
            [report.state, participants_export.state, node_export.state],
            ["done", "done", "done"],
            automation.run_ids.error_message,
        )
        self.assertEqual(report.mail_id.subject, "Scenario report: Test scenario")
        self.assertIn(
            "<td>Completed</td><td style='text-align: right; padding-left: 16px'>2</td>", str(report.mail_id.body_html)
        )
        rows = self.read_csv(participants_export.attachment_ids)
        self.assertEqual(rows[0][:4], ["Participant ID", "Scenario", "Contact", "State"])
        self.assertEqual(sorted(row[2] for row in rows[1:]), audience.mapped("name"))
        self.assertEqual({row[3] for row in rows[1:]}, {"completed"})
        step_state_column = rows[0].index("Step: State")
        self.assertEqual({row[step_state_column] for row in rows[1:]}, {"done"})
        node_rows = self.read_xlsx(node_export.attachment_ids)
        header = node_rows[0]
        self.assertEqual(header[:3], ["Node ID", "Node", "Scenario"])
        self.assertEqual(len(node_rows), 2)
        self.assertEqual(node_rows[1][0], tag.id)
        self.assertEqual(node_rows[1][header.index("done")], 2)
        self.assertEqual(node_rows[1][header.index("Total")], 2)
        self.assertEqual(participants_export.mail_id.attachment_ids, participants_export.attachment_ids)

    def test_stopping_a_scenario_emits_scenario_finished(self):
        scenario = self.create_scenario()
        self.add_node(scenario, "wait", wait_amount=1, wait_unit="days")
        scenario.action_start()
        self.emit(self.type_cart, self.partner, {"total": 1, "items": []})
        self.dispatch()
        scenario.action_stop()
        finished = self.Event.search([("type_id", "=", self.type_scenario_finished.id)]).filtered(
            lambda event: event.params.get("scenario_id") == scenario.id
        )
        self.assertEqual(finished.params["reason"], "stopped")
        self.assertEqual(finished.params["participants"], {"canceled": 1})
        self.assertEqual(finished.company_id, scenario.company_id)


@tagged("post_install", "-at_install")
class TestSystemAutomationTour(MarketingAutomationHttpCommon):
    def test_marketer_builds_an_automation_in_the_browser(self):
        system_category = self.env.ref("marketing_event_automation.event_category_system")
        system_type = self.EventType.create(
            {"name": "Tour system type", "key": "tour_system", "scope": "system", "category_id": system_category.id}
        )
        self.EventType.create({"name": "Tour contact type", "key": "tour_contact", "scope": "contact"})
        self.start_tour(
            "/odoo/action-marketing_event_automation.action_marketing_system_automation",
            "marketing_system_automation_tour",
            login="mea_marketer",
        )
        automation = self.env["marketing.system.automation"].search([("name", "=", "Tour weekly export")])
        self.assertEqual(automation.event_type_id, system_type)
        self.assertEqual(automation.job_ids.job_type, "export")
        self.assertEqual(automation.job_ids.export_kind, "events")
        self.assertEqual(automation.job_ids.recipient_user_ids, self.marketing_user)
        self.assertFalse(automation.job_ids.recipient_emails)
