"""Every official Segment and RudderStack library, in its default configuration, against a running Odoo."""

import functools
import json
import resource
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode

from rudderstack.analytics.client import Client as RudderClient
from segment.analytics import Client as SegmentClient

from odoo.tests import tagged

from .common import MarketingAutomationHttpCommon

SDK_DIR = Path(__file__).resolve().parent.parent / "tools" / "sdk"
NODE_TIMEOUT = 60


def ensure_node_packages():
    """Install the JavaScript libraries of tools/sdk/package-lock.json from npm when they are missing."""
    if not (SDK_DIR / "node_modules" / ".package-lock.json").exists():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=SDK_DIR,
            check=True,
            capture_output=True,
            timeout=600,
        )


def lift_address_space_limit():
    """Node reserves address space for WebAssembly far beyond what it uses: Odoo's memory limit is not for it."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (hard, hard))


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class SdkCommon(MarketingAutomationHttpCommon):
    def stored(self, run):
        """The events the library sent: those of its visitor and its contact, not Odoo's own contact_created."""
        return self.Event.search(
            [
                ("source_id", "!=", False),
                "|",
                ("anonymous_id", "=like", f"{run}-%"),
                ("partner_id.email", "=", f"{run}@example.com"),
            ],
            order="id",
        )

    def assert_server_library_delivered(self, run):
        events = self.stored(run)
        self.assertEqual(
            sorted(events.mapped("event_key")), ["alias", "group", "identify", "page_viewed", "product_viewed"]
        )
        user = self.env["res.partner"].search([("marketing_external_id", "=", f"{run}-user")])
        self.assertEqual(user.email, f"{run}@example.com")
        self.assertEqual(events.partner_id, user, "the anonymous product view joined the contact identified")
        self.assertEqual(user.parent_id.marketing_external_id, f"group:{run}-company")
        self.assertTrue(user.parent_id.is_company)
        self.assertEqual(user.parent_id.name, f"{run} Inc.")
        viewed = events.filtered(lambda event: event.event_key == "product_viewed")
        self.assertEqual(viewed.params, {"sku": "SHOE-1"})
        self.assertTrue(viewed.occurred_at, "sentAt and originalTimestamp give the time it happened")


@tagged("post_install", "-at_install")
class TestServerLibraries(SdkCommon):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        ensure_node_packages()

    def run_node(self, script, run):
        completed = subprocess.run(
            ["node", script, self.base_url(), self.write_key, run],
            cwd=SDK_DIR,
            capture_output=True,
            text=True,
            timeout=NODE_TIMEOUT,
            check=False,
            preexec_fn=lift_address_space_limit,
        )
        self.assertEqual(completed.returncode, 0, completed.stdout + completed.stderr)
        self.assertEqual(json.loads(completed.stdout.strip().splitlines()[-1]), {"failures": []})

    def test_segment_python(self):
        errors = []
        client = SegmentClient(
            self.write_key, host=self.base_url() + "/automation/segment", on_error=lambda e, b: errors.append(e)
        )
        self.call_python_library(client, "segpy")
        self.assertEqual(errors, [])
        self.assert_server_library_delivered("segpy")

    def test_rudderstack_python(self):
        errors = []
        client = RudderClient(
            self.write_key, host=self.base_url() + "/automation/segment", on_error=lambda e, b: errors.append(e)
        )
        self.call_python_library(client, "rudpy")
        self.assertEqual(errors, [])
        self.assert_server_library_delivered("rudpy")

    def call_python_library(self, client, run):
        client.identify(f"{run}-user", {"email": f"{run}@example.com"}, anonymous_id=f"{run}-anon")
        client.track(anonymous_id=f"{run}-anon", event="Product Viewed", properties={"sku": "SHOE-1"})
        client.page(f"{run}-user", name="Checkout", properties={"url": "/checkout"})
        client.group(f"{run}-user", f"{run}-company", {"name": f"{run} Inc."})
        client.alias(f"{run}-earlier", f"{run}-user")
        client.flush()
        client.join()

    def test_segment_node(self):
        self.run_node("segment_node.js", "segnode")
        self.assert_server_library_delivered("segnode")

    def test_rudderstack_node(self):
        """Gzipped JSON labelled application/x-www-form-urlencoded, as this library sends by default."""
        self.run_node("rudder_node.js", "rudnode")
        self.assert_server_library_delivered("rudnode")


@tagged("post_install", "-at_install")
class TestBrowserLibraries(SdkCommon):
    """The browser libraries in Chromium, on a page of another origin than Odoo's (a local server of the npm files)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        ensure_node_packages()
        cls.page_server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(SDK_DIR)))
        threading.Thread(target=cls.page_server.serve_forever, daemon=True).start()
        cls.addClassCleanup(cls.page_server.server_close)
        cls.addClassCleanup(cls.page_server.shutdown)
        cls.page_origin = f"http://127.0.0.1:{cls.page_server.server_address[1]}"
        cls.website = cls.env["marketing.event.source"].create(
            {"name": "Shop pages", "kind": "website", "allowed_origins": cls.page_origin}
        )
        cls.website_key = cls.website._generate_write_key()

    # The test server serves requests carrying the test's cookie, and after a
    # browser_js call refuses the others. A page of another origin sends no
    # cookie to Odoo (the libraries send no credentials, as on a real shop):
    # its requests are the test's all the same.
    @property
    def http_request_strict_check(self):
        return False

    @http_request_strict_check.setter
    def http_request_strict_check(self, _value):
        pass

    def page_url(self, page, run):
        query = urlencode({"odoo": self.base_url(), "key": self.website_key, "run": run})
        return f"{self.page_origin}/{page}?{query}"

    def assert_browser_library_delivered(self, run):
        events = self.stored(run).filtered(lambda event: event.source_id == self.website)
        self.assertEqual(
            sorted(events.mapped("event_key")), ["identify", "page_viewed", "product_viewed", "video_watched"]
        )
        contact = self.env["res.partner"].search([("marketing_external_id", "=", f"{run}-user")])
        self.assertEqual(events.partner_id, contact, "the page and product views before identify joined the contact")
        self.assertEqual(len(set(events.mapped("anonymous_id"))), 1, "one visitor")
        page = events.filtered(lambda event: event.event_key == "page_viewed")
        self.assertTrue(page.context["page"]["url"].startswith(self.page_origin), page.context)
        self.assertEqual(page.context["ip"], "127.0.0.1")

    def test_segment_analytics_next(self):
        self.browser_js(
            self.page_url("segment_page.html", "segweb"),
            "window.sdkDone.then((delivered) => delivered.every((d) => d === 'ok')"
            " ? console.log('test successful') : console.error('not delivered: ' + delivered))",
            ready="!!window.sdkDone",
            timeout=60,
        )
        self.assert_browser_library_delivered("segweb")

    def test_rudderstack_analytics_js(self):
        self.browser_js(
            self.page_url("rudder_page.html", "rudweb"),
            """
            const started = Date.now();
            const check = () => {
                const answers = window.odooAnswers;
                if (answers.length >= 4) {
                    answers.every(([, status]) => status === 200)
                        ? console.log('test successful')
                        : console.error('not delivered: ' + JSON.stringify(answers));
                } else if (Date.now() - started > 30000) {
                    console.error('only ' + JSON.stringify(answers) + ' reached Odoo');
                } else {
                    setTimeout(check, 100);
                }
            };
            check();
            """,
            ready="!!window.rudder",
            timeout=60,
        )
        self.assert_browser_library_delivered("rudweb")
