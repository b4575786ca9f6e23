import socket
from contextlib import contextmanager
from unittest.mock import patch

import aiosmtpd.controller

from odoo import modules
from odoo.addons.sms.tests.common import SMSCase
from odoo.tests import tagged

from .scenario_common import ScenarioCommon


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SmtpReceiver:
    """aiosmtpd's handler: every message a real local SMTP server accepts, with its envelope."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append({"to": list(envelope.rcpt_tos), "content": envelope.content.decode(errors="replace")})
        return "250 Message accepted for delivery"


class RollbackBatch(Exception):
    """Rolls back a step batch as a worker killed before its commit would."""


@tagged("post_install", "-at_install")
class TestMessageQueuesWokenAfterCommit(ScenarioCommon, SMSCase):
    """A step batch hands its messages to Odoo's mail and SMS queues and wakes them, once, with its commit."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mail_cron = cls.env.ref("mail.ir_cron_mail_scheduler_action")
        cls.sms_cron = cls.env.ref("sms.ir_cron_sms_scheduler_action")
        cls.contacts = cls.env["res.partner"].create(
            [
                {"name": f"Reader {i}", "email": f"reader{i}@example.org", "phone": f"+32 470 00 00 0{i}"}
                for i in range(3)
            ]
        )

    @contextmanager
    def smtp_server(self):
        """A local SMTP server, and Odoo allowed to reach it during the block.

        Odoo never opens an SMTP connection while a test runs
        (``modules.module.current_test``); its own SMTP tests clear that flag
        to send for real, as this block does.
        """
        receiver = SmtpReceiver()
        port = free_port()
        controller = aiosmtpd.controller.Controller(receiver, hostname="127.0.0.1", port=port)
        controller.start()
        server = self.env["ir.mail_server"].create(
            {"name": "Local SMTP", "smtp_host": "127.0.0.1", "smtp_port": port, "smtp_encryption": "none"}
        )
        try:
            with patch.object(modules.module, "current_test", False):
                yield receiver
        finally:
            controller.stop()
            server.unlink()

    def email_scenario(self):
        scenario = self.create_scenario(name="Welcome", trigger_type="now", trigger_event_type_id=False)
        node = self.add_node(scenario, "email")
        node.mailing_id.write(
            {"subject": "Welcome aboard", "body_html": "<p>Hello</p>", "email_from": "shop@example.com"}
        )
        scenario.action_start()
        scenario._enroll_partners(self.contacts.ids)
        return scenario, node

    def triggers(self, cron):
        return self.env["ir.cron.trigger"].search([("cron_id", "=", cron.id)])

    def test_email_batch_wakes_the_mail_queue_once_and_the_smtp_server_gets_every_message(self):
        scenario, node = self.email_scenario()
        before = self.triggers(self.mail_cron)
        self.assertEqual(self.Step._cron_advance(), 3)
        steps = self.Step.search([("node_id", "=", node.id)])
        self.assertEqual(steps.mapped("state"), ["done"] * 3, steps.mapped("result"))
        woken = self.triggers(self.mail_cron) - before
        self.assertEqual(len(woken), 1, "one wake-up for the batch, not one per message")
        self.assertLessEqual(woken.call_at, self.now(), "due at once")
        mails = self.env["mail.mail"].search([("mailing_id", "=", node.mailing_id.id)])
        self.assertEqual(set(mails.mapped("state")), {"outgoing"}, "handed to the queue, not sent inside the batch")

        with self.smtp_server() as receiver:
            self.mail_cron.method_direct_trigger()
        recipients = sorted(address for message in receiver.messages for address in message["to"])
        self.assertEqual(recipients, sorted(self.contacts.mapped("email")))
        self.assertTrue(all("Welcome aboard" in message["content"] for message in receiver.messages))
        self.assertEqual(set(steps.trace_id.mapped("trace_status")), {"sent"})
        self.assertEqual(scenario.participant_ids.mapped("state"), ["completed"] * 3)

    def test_rolled_back_batch_sends_nothing_and_wakes_nothing(self):
        _scenario, node = self.email_scenario()
        before = self.triggers(self.mail_cron)
        with self.assertRaises(RollbackBatch), self.env.cr.savepoint():
            self.assertEqual(self.Step._cron_advance(), 3)
            self.assertTrue(self.triggers(self.mail_cron) - before, "the batch had woken the queue")
            raise RollbackBatch
        self.env.invalidate_all()
        self.assertFalse(self.triggers(self.mail_cron) - before, "the wake-up rolled back with the batch")
        self.assertFalse(self.env["mail.mail"].search([("mailing_id", "=", node.mailing_id.id)]))
        steps = self.Step.search([("node_id", "=", node.id)])
        self.assertEqual(steps.mapped("state"), ["scheduled"] * 3, "the steps run again later")

        with self.smtp_server() as receiver:
            self.mail_cron.method_direct_trigger()
        self.assertEqual(receiver.messages, [], "nothing reached the SMTP server")

    def test_failing_message_node_wakes_nothing_for_its_steps(self):
        scenario = self.create_scenario(name="Broken", trigger_type="now", trigger_event_type_id=False)
        node = self.add_node(scenario, "email")
        # A template that does not render: the handler raises, its savepoint rolls its mails back.
        node.mailing_id.write({"subject": "Hi", "body_html": "<p t-out='object.no_such_field'/>"})
        scenario.action_start()
        scenario._enroll_partners(self.contacts.ids)
        before = self.triggers(self.mail_cron)
        self.Step._cron_advance()
        steps = self.Step.search([("node_id", "=", node.id)])
        self.assertEqual(steps.mapped("state"), ["error"] * 3)
        self.assertFalse(self.triggers(self.mail_cron) - before)
        self.assertFalse(self.env["mail.mail"].search([("mailing_id", "=", node.mailing_id.id)]))

    def test_sms_batch_goes_through_the_sms_queue_woken_once(self):
        scenario = self.create_scenario(name="Text", trigger_type="now", trigger_event_type_id=False)
        node = self.add_node(scenario, "sms")
        # "Send directly" would send to the provider before the steps are committed: the queue sends them.
        node.mailing_id.write({"body_plaintext": "Your order shipped", "sms_force_send": True})
        scenario.action_start()
        scenario._enroll_partners(self.contacts.ids)
        before = self.triggers(self.sms_cron)
        with self.mockSMSGateway():
            self.assertEqual(self.Step._cron_advance(), 3)
        self.assertEqual(self._sms, [], "nothing sent from inside the batch")
        self.assertEqual(len(self.triggers(self.sms_cron) - before), 1)
        steps = self.Step.search([("node_id", "=", node.id)])
        self.assertEqual(steps.mapped("state"), ["done"] * 3, steps.mapped("result"))

        with self.mockSMSGateway():
            self.sms_cron.method_direct_trigger()
        self.assertEqual(sorted(sms["number"] for sms in self._sms), sorted(steps.trace_id.mapped("sms_number")))
        self.assertEqual(len(self._sms), 3)
        self.assertTrue(all(sms["body"].startswith("Your order shipped") for sms in self._sms))
