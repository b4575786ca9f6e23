from odoo.addons.mail.tests.common import MockEmail
from odoo.exceptions import UserError
from odoo.tests import tagged

from .scenario_common import ScenarioCommon
from .scenario_common import WebhookReceiver

ALLOW_PRIVATE_PARAM = "marketing_event_automation.webhook_allow_private"
HOSTILE_PARAMS = {
    "note": "<script>alert(1)</script>",
    "jinja": "{{ object.id }}",
    "qweb": "<t t-out='object.id'/>",
    "attribute": '" onmouseover="alert(1)',
}


@tagged("post_install", "-at_install")
class TestEmailRendersParamsEscaped(ScenarioCommon, MockEmail):
    """Event params come from outside: an email shows them as text, never as markup or template code."""

    def test_params_are_escaped_in_the_queued_mail(self):
        self.partner.name = "Eve <b>Bold</b>"
        scenario = self.create_scenario()
        email = self.add_node(scenario, "email", name="Escaping")
        email.mailing_id.write(
            {
                "subject": "About {{ object.marketing_event_params.get('jinja') }}",
                "body_html": "<p>Note: <t t-out=\"object.marketing_event_params.get('note')\"/></p>"
                "<p>Template: <t t-out=\"object.marketing_event_params.get('jinja')\"/></p>"
                "<p>QWeb: <t t-out=\"object.marketing_event_params.get('qweb')\"/></p>"
                "<p><a t-att-title=\"object.marketing_event_params.get('attribute')\">link</a></p>"
                '<p>Name: <t t-out="object.name"/></p>',
            }
        )
        scenario.action_start()
        self.emit(self.type_cart, self.partner, dict(HOSTILE_PARAMS, total=1.0, items=[{"sku": "A"}]))
        self.dispatch()
        with self.mock_mail_gateway():
            self.advance()
        step = self.Step.search([("node_id", "=", email.id)])
        self.assertEqual(step.state, "done", step.result)
        mail = self.env["mail.mail"].sudo().search([("mailing_trace_ids", "in", step.trace_id.ids)])
        body = mail.body_html
        self.assertIn("&lt;script&gt;alert(1)&lt;/script&gt;", body)
        self.assertNotIn("<script", body)
        self.assertIn("{{ object.id }}", body, "a param is text, not a template rendered again")
        self.assertIn("&lt;t t-out=", body)
        self.assertNotIn(f">{self.partner.id}<", body)
        self.assertIn('title="&#34; onmouseover=&#34;alert(1)"', body.replace("&quot;", "&#34;"))
        self.assertNotIn('" onmouseover="', body)
        self.assertIn("Eve &lt;b&gt;Bold&lt;/b&gt;", body)
        self.assertEqual(mail.subject, "About {{ object.id }}", "the subject shows the param as sent")


@tagged("post_install", "-at_install")
class TestWebhookAddresses(ScenarioCommon):
    """The webhook action refuses loopback, private, link-local and reserved addresses unless allowed."""

    def setUp(self):
        super().setUp()
        self.env["ir.config_parameter"].sudo().set_param(ALLOW_PRIVATE_PARAM, "0")
        self.node = self.add_node(self.create_scenario(), "webhook", webhook_url="https://example.com/hook")

    def test_private_and_local_addresses_are_refused(self):
        refused = [
            "http://127.0.0.1/hook",
            "http://127.8.9.10:8069/hook",
            "http://localhost:8069/hook",
            "http://LocalHost/hook",
            "http://2130706433/hook",
            "http://0x7f.1/hook",
            "http://0.0.0.0:8069/hook",
            "http://10.1.2.3/hook",
            "http://172.16.0.1/hook",
            "http://172.31.255.254/hook",
            "http://192.168.1.1/hook",
            "http://100.64.0.1/hook",
            "http://169.254.169.254/latest/meta-data/",
            "http://224.0.0.1/hook",
            "http://255.255.255.255/hook",
            "http://[::1]:8069/hook",
            "http://[::]/hook",
            "http://[fe80::1]/hook",
            "http://[fc00::1]/hook",
            "http://[fd12:3456::1]/hook",
            "http://[::ffff:127.0.0.1]/hook",
            "http://[::ffff:10.0.0.1]/hook",
        ]
        for url in refused:
            with self.subTest(url=url), self.assertRaisesRegex(UserError, "is a private or local address"):
                self.node._check_webhook_url(url)

    def test_other_schemes_are_refused(self):
        for url in ("file:///etc/passwd", "gopher://127.0.0.1/", "ftp://example.com/", "http:///hook", "//example.com"):
            with self.subTest(url=url), self.assertRaisesRegex(UserError, "give an http:// or https:// address"):
                self.node._check_webhook_url(url)

    def test_public_addresses_pass(self):
        for url in ("http://93.184.215.14/hook", "https://[2606:4700:4700::1111]/hook", "https://1.1.1.1:8443/x"):
            with self.subTest(url=url):
                self.node._check_webhook_url(url)

    def test_allowed_by_the_administrator_setting(self):
        self.env["ir.config_parameter"].sudo().set_param(ALLOW_PRIVATE_PARAM, "1")
        for url in ("http://127.0.0.1:8069/hook", "http://localhost/hook", "http://[::1]/hook", "http://10.0.0.1/"):
            with self.subTest(url=url):
                self.node._check_webhook_url(url)

    def run_webhook_once(self, url):
        """Start the scenario while private addresses are allowed, then run its webhook step."""
        self.env["ir.config_parameter"].sudo().set_param(ALLOW_PRIVATE_PARAM, "1")
        self.node.write({"webhook_url": url, "webhook_secret": "x", "webhook_retries": 0})
        self.node.scenario_id.action_start()
        self.emit(self.type_cart, self.partner, {"total": 1.0, "items": [{"sku": "A"}]})
        self.dispatch()

    def test_a_refused_address_fails_the_step_without_a_request(self):
        with WebhookReceiver() as receiver:
            self.run_webhook_once(receiver.url)
            # The administrator withdraws the permission before the step runs.
            self.env["ir.config_parameter"].sudo().set_param(ALLOW_PRIVATE_PARAM, "0")
            self.advance()
        step = self.Step.search([("node_id", "=", self.node.id)])
        self.assertEqual(step.state, "error")
        self.assertIn("is a private or local address", step.result)
        self.assertEqual(receiver.requests, [])

    def test_redirects_are_not_followed(self):
        """Even allowed, a webhook never follows a redirect: a public URL could send it to a private one."""
        with WebhookReceiver() as target, WebhookReceiver(statuses=[302], location=target.url) as redirector:
            self.run_webhook_once(redirector.url)
            self.advance()
        step = self.Step.search([("node_id", "=", self.node.id)])
        self.assertEqual((step.state, step.status_code), ("error", 302))
        self.assertEqual(len(redirector.requests), 1)
        self.assertEqual(target.requests, [], "the redirect was not followed")
