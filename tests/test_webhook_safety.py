import datetime
import socket
import ssl
import tempfile
import threading
import time
from unittest.mock import patch

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from odoo.addons.mail.tests.common import MockEmail
from odoo.exceptions import UserError
from odoo.exceptions import ValidationError
from odoo.tests import tagged
from odoo.tools import mute_logger

from .scenario_common import ScenarioCommon
from .scenario_common import WebhookReceiver
from .test_engine_rights import marketing_user

ALLOW_PRIVATE_PARAM = "marketing_event_automation.webhook_allow_private"
STEP_LOGGER = "odoo.addons.marketing_event_automation.models.marketing_scenario_step"


class LocalTcpServer:
    """A real TCP server on 127.0.0.1; ``handle`` decides what becomes of each accepted connection."""

    def __init__(self):
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(256)
        self.socket.settimeout(0.2)
        self.port = self.socket.getsockname()[1]
        self.connections = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)

    def serve(self):
        while not self.stopped.is_set():
            try:
                connection, _address = self.socket.accept()
            except OSError:
                continue
            self.handle(connection)

    def handle(self, connection):
        self.connections.append(connection)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.thread.join()
        for connection in self.connections:
            connection.close()
        self.socket.close()


class SilentServer(LocalTcpServer):
    """Accepts connections and never answers."""

    def __init__(self):
        super().__init__()
        self.url = f"http://127.0.0.1:{self.port}/hook"


class TlsServer(LocalTcpServer):
    """A real TLS server on 127.0.0.1 with a self-signed certificate for ``localhost``.

    It records the server name (SNI) each client asks for; no client trusts its certificate.
    """

    def __init__(self):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
        now = datetime.datetime.now(datetime.timezone.utc)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256())
        )
        self.files = tempfile.TemporaryDirectory()
        cert_path, key_path = f"{self.files.name}/cert.pem", f"{self.files.name}/key.pem"
        with open(cert_path, "wb") as cert_file:
            cert_file.write(certificate.public_bytes(serialization.Encoding.PEM))
        with open(key_path, "wb") as key_file:
            key_file.write(
                key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert_path, key_path)
        self.server_names = []
        self.context.sni_callback = lambda _socket, server_name, _context: self.server_names.append(server_name)
        super().__init__()

    def handle(self, connection):
        connection.settimeout(2)
        try:
            self.context.wrap_socket(connection, server_side=True).close()
        except (OSError, ssl.SSLError):
            connection.close()

    def __exit__(self, *exc):
        result = super().__exit__(*exc)
        self.files.cleanup()
        return result


@tagged("post_install", "-at_install")
class TestWebhookUrlChecks(ScenarioCommon):
    """What cannot be parsed the same way by every parser, or reaches inside through IPv6, is refused."""

    def setUp(self):
        super().setUp()
        self.env["ir.config_parameter"].sudo().set_param(ALLOW_PRIVATE_PARAM, "0")
        self.node = self.add_node(self.create_scenario(), "webhook", webhook_url="https://93.184.215.14/hook")

    def test_backslashes_and_spaces_are_refused(self):
        for url in ("http://127.0.0.1:6379\\@example.com/", "http://93.184.215.14\\hook", "http://93.184.215.14/ hook"):
            with self.subTest(url=url), self.assertRaisesRegex(UserError, "backslashes"):
                self.node._check_webhook_url(url)

    def test_user_info_is_refused(self):
        for url in ("https://user:pw@93.184.215.14/hook", "http://user@93.184.215.14/", "http://@93.184.215.14/"):
            with self.subTest(url=url), self.assertRaisesRegex(UserError, "user name or password"):
                self.node._check_webhook_url(url)

    def test_ipv6_addresses_embedding_private_ipv4_are_refused(self):
        for url in (
            "http://[64:ff9b::7f00:1]/hook",  # NAT64 of 127.0.0.1
            "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",  # NAT64 of the metadata address
            "http://[64:ff9b::a00:1]/hook",  # NAT64 of 10.0.0.1
            "http://[2002:7f00:1::1]/hook",  # 6to4 of 127.0.0.1
            "http://[2002:c0a8:101::1]/hook",  # 6to4 of 192.168.1.1
            "http://[2002:a9fe:a9fe::1]/hook",  # 6to4 of 169.254.169.254
        ):
            with self.subTest(url=url), self.assertRaisesRegex(UserError, "is a private or local address"):
                self.node._check_webhook_url(url)

    def test_public_ipv6_forms_pass(self):
        for url in ("http://[64:ff9b::5db8:d70e]/hook", "http://[2002:5db8:d70e::1]/hook"):
            with self.subTest(url=url):
                self.node._check_webhook_url(url)

    def test_timeout_is_at_most_thirty_seconds(self):
        with self.assertRaisesRegex(ValidationError, "between 1 and 30 seconds"):
            self.node.webhook_timeout = 120
        with self.assertRaisesRegex(ValidationError, "between 1 and 30 seconds"):
            self.node.webhook_timeout = 0
        self.node.webhook_timeout = 30


@tagged("post_install", "-at_install")
class TestWebhookConnectsToTheCheckedAddress(ScenarioCommon):
    """The address checked is the address connected to, with the URL's own Host."""

    def start_with(self, url, **values):
        self.env["ir.config_parameter"].sudo().set_param(ALLOW_PRIVATE_PARAM, "1")
        scenario = self.create_scenario()
        node = self.add_node(
            scenario, "webhook", webhook_url=url, webhook_secret="s", webhook_retries=0, webhook_timeout=1, **values
        )
        scenario.action_start()
        self.emit(self.type_cart, self.partner, {"total": 1.0, "items": [{"sku": "A"}]})
        self.dispatch()
        return node

    def test_dns_rebinding_cannot_reach_a_local_server(self):
        """The name resolves to a public address when checked, then to 127.0.0.1: no request gets there.

        The name is ``localhost`` because Odoo's tests let ``requests`` reach it
        only: the DNS answers are the fake ones.
        """
        real_getaddrinfo = socket.getaddrinfo
        answers = []

        def rebinding_dns(host, port, *args, **kwargs):
            if host != "localhost":
                return real_getaddrinfo(host, port, *args, **kwargs)
            address = "93.184.215.14" if not answers else "127.0.0.1"
            answers.append(address)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

        with WebhookReceiver() as receiver, patch("socket.getaddrinfo", rebinding_dns):
            port = receiver.server.server_port
            node = self.start_with(f"http://localhost:{port}/hook")
            self.env["ir.config_parameter"].sudo().set_param(ALLOW_PRIVATE_PARAM, "0")
            answers.clear()  # Start checked the URL too: the run resolves it afresh
            with mute_logger(STEP_LOGGER):
                self.advance()
        step = self.Step.search([("node_id", "=", node.id)])
        self.assertEqual(receiver.requests, [], "the second answer of the DNS is never used")
        self.assertEqual(answers, ["93.184.215.14"], "resolved once, for the check")
        self.assertIn(step.state, ("error", "scheduled"))

    def test_tls_speaks_to_the_url_host_and_checks_its_certificate(self):
        """Connected to the resolved address, the TLS handshake names the URL's host and trusts no unknown issuer."""
        with TlsServer() as server:
            node = self.start_with(f"https://localhost:{server.port}/hook")
            with mute_logger(STEP_LOGGER):
                self.advance()
        step = self.Step.search([("node_id", "=", node.id)])
        self.assertEqual(server.server_names, ["localhost"], "the server name is the URL's host, not the address")
        self.assertEqual(step.state, "error")
        self.assertIn("could not be reached", step.result, "a self-signed certificate is refused")

    def test_the_url_host_is_sent_to_the_pinned_address(self):
        with WebhookReceiver() as receiver:
            port = receiver.server.server_port
            node = self.start_with(f"http://localhost:{port}/hook?source=odoo")
            self.advance()
        step = self.Step.search([("node_id", "=", node.id)])
        self.assertEqual((step.state, step.status_code), ("done", 200), step.result)
        self.assertEqual(len(receiver.requests), 1)
        self.assertEqual(receiver.requests[0]["headers"]["Host"], f"localhost:{port}")


@tagged("post_install", "-at_install")
class TestHangingWebhookDelaysOnlyItsOwnSteps(ScenarioCommon, MockEmail):
    """100 steps to an endpoint that never answers and 400 tag steps in one batch: the tags are done in seconds."""

    def test_tag_steps_are_not_held_by_a_hanging_endpoint(self):
        self.env["ir.config_parameter"].sudo().set_param(ALLOW_PRIVATE_PARAM, "1")
        hook_contacts = self.env["res.partner"].create(
            [{"name": f"Hook {i}", "email": f"hook{i}@example.org"} for i in range(100)]
        )
        tag_contacts = self.env["res.partner"].create(
            [{"name": f"Tag {i}", "email": f"tag{i}@example.org"} for i in range(400)]
        )
        with SilentServer() as silent:
            hooks = self.create_scenario(name="Hooks", trigger_type="now", trigger_event_type_id=False)
            webhook = self.add_node(
                hooks, "webhook", webhook_url=silent.url, webhook_secret="s", webhook_timeout=2, webhook_retries=3
            )
            tags = self.create_scenario(name="Tags", trigger_type="now", trigger_event_type_id=False)
            tag = self.add_node(tags, "tag_add", tag_ids=[(6, 0, self.tag_vip.ids)])
            (hooks | tags).action_start()
            hooks._enroll_partners(hook_contacts.ids)
            tags._enroll_partners(tag_contacts.ids)
            started = time.monotonic()
            with mute_logger(STEP_LOGGER):
                self.advance()
            elapsed = time.monotonic() - started
            connections = len(silent.connections)
        tag_steps = self.Step.search([("node_id", "=", tag.id)])
        self.assertEqual(set(tag_steps.mapped("state")), {"done"})
        self.assertEqual(len(tag_steps), 400)
        self.assertLess(elapsed, 10, "the tag steps waited for one timeout at most, not for 100")
        webhook_steps = self.Step.search([("node_id", "=", webhook.id)])
        self.assertEqual(set(webhook_steps.mapped("state")), {"scheduled"}, "retried later, none lost")
        self.assertEqual(sum(webhook_steps.mapped("attempt")), 1, "only the call that timed out counts")
        self.assertLessEqual(connections, 1)


@tagged("post_install", "-at_install")
class TestTestRunHidesNetworkErrors(ScenarioCommon, MockEmail):
    """A failed call shows a kind of failure, never the exception's text (which tells which ports are open)."""

    def test_closed_and_silent_ports_read_the_same(self):
        self.env["ir.config_parameter"].sudo().set_param(ALLOW_PRIVATE_PARAM, "1")
        marketer = marketing_user(self.env, "mea_hook_marketer")
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        closed_url = f"http://127.0.0.1:{closed.getsockname()[1]}/hook"
        closed.close()
        results = []
        with SilentServer() as silent:
            for url in (closed_url, silent.url):
                scenario = self.create_scenario(name=url)
                self.add_node(
                    scenario, "webhook", webhook_url=url, webhook_secret="s", webhook_timeout=1, webhook_retries=0
                )
                wizard = (
                    self.env["marketing.scenario.test.wizard"]
                    .with_user(marketer)
                    .create({"scenario_id": scenario.id, "partner_id": self.partner.id})
                )
                with mute_logger(STEP_LOGGER):
                    wizard.action_run()
                results.append(wizard.step_ids.result)
        self.assertEqual(results[0], results[1], "a closed port and a silent one look alike")
        for result in results:
            for raw in ("Errno", "refused", "Timeout", "Error", "127.0.0.1", "HTTPConnection"):
                self.assertNotIn(raw, result)
