from odoo.addons.mass_mailing.tests.common import MassMailCommon
from odoo.addons.mass_mailing_sms.tests.common import MassSMSCommon
from odoo.tests import tagged

from .common import MarketingAutomationCommon


class InternalEventsMixin:
    def events(self, key, partner=None):
        domain = [("type_id.key", "=", key)]
        if partner is not None:
            domain.append(("partner_id", "=", partner.id))
        return self.env["marketing.event"].search(domain, order="id")


@tagged("post_install", "-at_install")
class TestEmailTraceEvents(InternalEventsMixin, MarketingAutomationCommon, MassMailCommon):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.bob, cls.carol = cls.env["res.partner"].create(
            [
                {"name": "Bob Reader", "email": "bob@example.com"},
                {"name": "Carol Bouncer", "email": "carol@example.com"},
            ]
        )

    def send_mailing(self, recipients, **values):
        mailing = self.env["mailing.mailing"].create(
            {
                "subject": "Spring sale",
                "body_html": '<p>Hello <a href="https://www.example.com/sale">Spring sale</a></p>',
                "mailing_model_id": self.env["ir.model"]._get(recipients._name).id,
                "mailing_domain": repr([("id", "in", recipients.ids)]),
                **values,
            }
        )
        with self.mock_mail_gateway(mail_unlink_sent=False):
            mailing.action_send_mail()
        return mailing

    def click(self, mailing, record):
        """What the redirect controller does when the recipient follows the mail's link."""
        link = self.env["link.tracker"].search([("mass_mailing_id", "=", mailing.id)])
        self.assertEqual(len(link), 1)
        self.env["link.tracker.click"].sudo().add_click(
            link.code, ip="100.200.30.40", country_code="BE", mailing_trace_id=self.trace_of(mailing, record).id
        )
        return link

    def trace_of(self, mailing, record):
        return mailing.mailing_trace_ids.filtered(
            lambda trace: trace.model == record._name and trace.res_id == record.id
        )

    def test_sending_logs_email_sent_once_per_contact(self):
        mailing = self.send_mailing(self.bob | self.carol)
        sent = self.events("email_sent")
        self.assertEqual(sent.partner_id, self.bob | self.carol)
        bob_trace = self.trace_of(mailing, self.bob)
        bob_sent = self.events("email_sent", self.bob)
        self.assertEqual(bob_sent.state, "pending")
        self.assertFalse(bob_sent.source_id, "internal events have no API source")
        self.assertEqual(bob_sent.idempotency_key, f"trace-{bob_trace.id}-sent")
        self.assertEqual(bob_sent.params["mailing_id"], mailing.id)
        self.assertEqual(bob_sent.params["mailing_subject"], "Spring sale")
        self.assertEqual(bob_sent.params["trace_id"], bob_trace.id)
        self.assertEqual(bob_sent.params["mail_mail_id"], bob_trace.mail_mail_id_int)
        self.assertTrue(bob_sent.params["mail_mail_id"])
        self.assertEqual(bob_sent.params["email"], "bob@example.com")
        self.assertTrue(bob_sent.params["delivered"])

        # The same trace reported sent again (a retry) is logged once.
        bob_trace.trace_status = "outgoing"
        bob_trace.set_sent()
        self.assertEqual(self.events("email_sent", self.bob), bob_sent)

    def test_open_click_reply_and_bounce_are_logged(self):
        mailing = self.send_mailing(self.bob | self.carol)
        bob_trace = self.trace_of(mailing, self.bob)

        self.gateway_mail_trace_open(mailing, self.bob)
        opened = self.events("email_opened", self.bob)
        self.assertEqual(len(opened), 1)
        self.assertEqual(opened.idempotency_key, f"trace-{bob_trace.id}-opened")
        self.assertEqual(opened.params["trace_id"], bob_trace.id)
        self.gateway_mail_trace_open(mailing, self.bob)
        self.assertEqual(self.events("email_opened", self.bob), opened, "a second open is not a new event")

        link = self.click(mailing, self.bob)
        self.click(mailing, self.bob)
        clicks = self.events("email_clicked", self.bob)
        self.assertEqual(len(clicks), 2, "every click is an event")
        self.assertTrue(link.url.startswith("https://www.example.com/sale"))
        self.assertEqual([click.params["url"] for click in clicks], [link.url] * 2)
        click_records = self.env["link.tracker.click"].search([("mailing_trace_id", "=", bob_trace.id)], order="id")
        self.assertEqual([click.params["click_id"] for click in clicks], click_records.ids)
        self.assertEqual(clicks.mapped("idempotency_key"), [f"click-{click.id}" for click in click_records])
        self.assertEqual(self.events("email_opened", self.bob), opened, "a click implies an open already logged")

        self.gateway_mail_trace_reply(mailing, self.bob)
        replied = self.events("email_replied", self.bob)
        self.assertEqual(len(replied), 1)
        self.assertEqual(replied.params["mailing_id"], mailing.id)

        carol_trace = self.gateway_mail_trace_bounce(mailing, self.carol)
        bounced = self.events("email_bounced", self.carol)
        self.assertEqual(len(bounced), 1)
        self.assertEqual(bounced.idempotency_key, f"trace-{carol_trace.id}-bounced")
        self.assertEqual(bounced.params["failure_type"], "mail_bounce")
        self.assertIn("This is the bounce email", bounced.params["failure_reason"])
        self.assertFalse(self.events("email_opened", self.carol))

    def test_reply_without_open_logs_the_open_too(self):
        mailing = self.send_mailing(self.bob)
        self.trace_of(mailing, self.bob).write({"trace_status": "reply"})
        self.assertEqual(len(self.events("email_opened", self.bob)), 1)
        self.assertEqual(len(self.events("email_replied", self.bob)), 1)

    def test_mailing_list_contacts_are_resolved_by_email(self):
        mailing_list = self.env["mailing.list"].create(
            {
                "name": "Newsletter",
                "contact_ids": [
                    (0, 0, {"name": "Bob on the list", "email": "BOB@example.com"}),
                    (0, 0, {"name": "Stranger", "email": "stranger@example.com"}),
                ],
            }
        )
        mailing = self.send_mailing(mailing_list.contact_ids, contact_list_ids=[(4, mailing_list.id)])
        self.assertEqual(len(mailing.mailing_trace_ids), 2)
        sent = self.events("email_sent").filtered(lambda event: event.params["mailing_id"] == mailing.id)
        self.assertEqual(sent.partner_id, self.bob, "the stranger matches no contact and is skipped")
        self.assertEqual(sent.params["model"], "mailing.contact")

    def test_traces_on_other_documents_are_about_their_partner(self):
        mailing = self.env["mailing.mailing"].create(
            {"subject": "Users", "mailing_model_id": self.env["ir.model"]._get("res.users").id}
        )
        trace = self._create_sent_traces(mailing, self.marketing_user)
        sent = self.events("email_sent", self.marketing_user.partner_id)
        self.assertEqual(len(sent), 1)
        self.assertEqual(sent.params["model"], "res.users")
        self.assertEqual(sent.params["res_id"], self.marketing_user.id)
        self.assertEqual(sent.params["trace_id"], trace.id)

    def test_emission_is_batched(self):
        partners = self.env["res.partner"].create(
            [{"name": f"Reader {index}", "email": f"reader{index}@example.com"} for index in range(13)]
        )
        mailing = self.env["mailing.mailing"].create(
            {"subject": "Batch", "mailing_model_id": self.env["ir.model"]._get("res.partner").id}
        )
        small = self._create_sent_traces(mailing, partners[:2])
        large = self._create_sent_traces(mailing, partners[2:12])
        # The first opened/clicked events also teach their types their
        # parameters (one more statement each, once): not what is measured here.
        first = self._create_sent_traces(mailing, partners[12:])
        first.set_opened()
        first.set_clicked()
        self.env.flush_all()
        self.env.invalidate_all()
        queries_before = self.env.cr.sql_log_count
        small.set_opened()
        small.set_clicked()
        self.env.flush_all()
        small_queries = self.env.cr.sql_log_count - queries_before
        self.env.invalidate_all()
        queries_before = self.env.cr.sql_log_count
        large.set_opened()
        large.set_clicked()
        self.env.flush_all()
        large_queries = self.env.cr.sql_log_count - queries_before
        self.assertEqual(len(self.events("email_opened").filtered(lambda event: event.partner_id in partners)), 13)
        self.assertEqual(len(self.events("email_clicked").filtered(lambda event: event.partner_id in partners)), 13)
        self.assertGreater(small_queries, 0)
        self.assertEqual(large_queries, small_queries, "5 times more traces, the same number of queries")


@tagged("post_install", "-at_install")
class TestSmsTraceEvents(InternalEventsMixin, MarketingAutomationCommon, MassSMSCommon):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.dave, cls.erin = cls.env["res.partner"].create(
            [
                {"name": "Dave Texter", "phone": "+32 456 01 02 03"},
                {"name": "Erin Wrongnumber", "phone": "+32 456 04 05 06"},
            ]
        )

    def test_sms_sent_clicked_and_bounced_are_logged(self):
        mailing = self.env["mailing.mailing"].create(
            {
                "subject": "Flash sale",
                "mailing_type": "sms",
                "body_plaintext": "Flash sale today: https://www.example.com/flash",
                "mailing_model_id": self.env["ir.model"]._get("res.partner").id,
                "mailing_domain": repr([("id", "in", (self.dave | self.erin).ids)]),
                "sms_force_send": True,
            }
        )
        with self.mockSMSGateway():
            mailing.action_send_sms()
        traces = mailing.mailing_trace_ids
        self.assertEqual(len(traces), 2)
        sent = self.events("sms_sent")
        self.assertEqual(sent.partner_id, self.dave | self.erin)
        dave_trace = traces.filtered(lambda trace: trace.res_id == self.dave.id)
        dave_sent = self.events("sms_sent", self.dave)
        self.assertEqual(dave_sent.idempotency_key, f"trace-{dave_trace.id}-sent")
        self.assertEqual(dave_sent.params["sms_number"], "+32456010203")
        self.assertEqual(dave_sent.params["mailing_subject"], "Flash sale")
        self.assertFalse(self.events("email_sent"), "SMS traces never log email events")

        self.gateway_sms_click(mailing, self.dave)
        clicked = self.events("sms_clicked", self.dave)
        self.assertEqual(len(clicked), 1)
        self.assertEqual(clicked.params["url"], "https://www.example.com/flash")
        self.assertFalse(self.events("email_opened"), "an SMS click is not an email open")

        erin_trace = traces.filtered(lambda trace: trace.res_id == self.erin.id)
        erin_trace.sms_tracker_ids._action_update_from_provider_error("invalid_destination")
        bounced = self.events("sms_bounced", self.erin)
        self.assertEqual(len(bounced), 1)
        self.assertEqual(bounced.params["failure_type"], "sms_invalid_destination")
        self.assertEqual(bounced.idempotency_key, f"trace-{erin_trace.id}-bounced")

    def test_sms_to_a_mailing_contact_is_about_the_contact_with_that_number(self):
        mailing_contact = self.env["mailing.contact"].create({"name": "Dave on the list", "mobile": "0456 01 02 03"})
        mailing = self.env["mailing.mailing"].create(
            {
                "subject": "List SMS",
                "mailing_type": "sms",
                "body_plaintext": "Hello",
                "mailing_model_id": self.env["ir.model"]._get("mailing.contact").id,
            }
        )
        self.env["mailing.trace"].create(
            {
                "trace_type": "sms",
                "mass_mailing_id": mailing.id,
                "model": "mailing.contact",
                "res_id": mailing_contact.id,
                "sms_number": "+32456010203",
                "trace_status": "pending",
            }
        )
        sent = self.events("sms_sent")
        self.assertEqual(sent.partner_id, self.dave)
        self.assertEqual(sent.params["model"], "mailing.contact")
        self.assertFalse(sent.params["delivered"])
