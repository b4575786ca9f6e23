import hashlib
import hmac
import ipaddress
import json
import logging
import socket
from datetime import timedelta
from time import monotonic
from urllib.parse import urlparse

import requests
import urllib3

from odoo import api
from odoo import fields
from odoo import models
from odoo.exceptions import UserError
from odoo.exceptions import ValidationError

_logger = logging.getLogger(__name__)

WEBHOOK_BACKOFF_SECONDS = 60
MIN_WEBHOOK_TIMEOUT = 1
HTTPS_PORT = 443
# 2xx: the receiver took the call.
HTTP_SUCCESS_MIN, HTTP_SUCCESS_END = 200, 300
ALLOW_PRIVATE_PARAM = "marketing_event_automation.webhook_allow_private"
WEBHOOK_MAX_TIMEOUT = 30
# What one webhook node may spend on HTTP in one advance batch: the batch's
# other steps commit with it, so a slow endpoint may not hold them longer.
WEBHOOK_BATCH_BUDGET_SECONDS = 30


def is_public_address(address):
    """Whether a resolved address is on the public internet.

    ``is_global`` also excludes what ``is_private`` lets through (shared
    100.64.0.0/10, ...); an IPv4 address mapped into IPv6 is judged as IPv4.
    """
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return is_public_address(str(embedded))
    return ip.is_global and not ip.is_multicast


NAT64_NETWORKS = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def _embedded_ipv4(ip):
    """The IPv4 address an IPv6 address carries to an IPv4 host (mapped, 6to4, NAT64), or None.

    Such an address reaches the IPv4 host through a gateway: it is as private
    as that host.
    """
    if ip.ipv4_mapped:
        return ip.ipv4_mapped
    if ip.sixtofour:
        return ip.sixtofour
    if any(ip in network for network in NAT64_NETWORKS):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


class MarketingScenarioNode(models.Model):
    """Webhooks: a signed POST of the contact and its event to a public address, retried with a growing delay."""

    _inherit = "marketing.scenario.node"

    node_type = fields.Selection(
        selection_add=[("score",), ("webhook", "Webhook"), ("activity",)],
        ondelete={"webhook": "cascade"},
    )
    webhook_url = fields.Char(string="URL")
    webhook_secret = fields.Char(
        string="Signing Secret", groups="marketing_event_automation.group_marketing_automation_user", copy=False
    )
    webhook_timeout = fields.Integer(string="Timeout (s)", default=10)
    webhook_retries = fields.Integer(string="Retries", default=3)

    @api.model
    def _node_type_info(self):
        return {
            **super()._node_type_info(),
            "webhook": {
                "family": "webhook",
                "icon": "fa-plug",
                "fields": ("webhook_url", "webhook_secret", "webhook_timeout", "webhook_retries"),
                "problems": "_webhook_problems",
                "describe": "_webhook_description",
                # Its batch may spend its whole time budget on the network:
                # not in the transaction of the steps before it.
                "chained": False,
            },
        }

    @api.constrains("webhook_timeout")
    def _check_webhook_timeout(self):
        for node in self.filtered(lambda node: node.node_type == "webhook"):
            if not 1 <= node.webhook_timeout <= WEBHOOK_MAX_TIMEOUT:
                raise ValidationError(
                    self.env._(
                        "Timeout of %(node)s: between 1 and %(max)s seconds.",
                        node=node.display_name,
                        max=WEBHOOK_MAX_TIMEOUT,
                    )
                )

    def _webhook_problems(self):
        problems = []
        try:
            self._check_webhook_url(self.webhook_url)
        except UserError as error:
            problems.append(str(error))
        if not self.webhook_secret:
            problems.append(self.env._("give a signing secret"))
        return problems

    def _check_webhook_url(self, url):
        """Check ``url`` and resolve its host once: (parsed URL, the address to connect to).

        Refuses what is not plain http(s), user info and backslashes (which
        parsers read differently), and any resolved address that is private,
        loopback, link-local, reserved or carries such an IPv4 address (mapped,
        6to4, NAT64), unless the administrator allows private addresses. The
        request then goes to the returned address: a second resolution could
        answer differently (DNS rebinding).
        """
        url = url or ""
        if "\\" in url or any(char.isspace() or ord(char) < 32 or ord(char) == 127 for char in url):
            raise UserError(self.env._("URL: backslashes, spaces and control characters are refused"))
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise UserError(self.env._("URL: give an http:// or https:// address"))
        if "@" in parsed.netloc:
            raise UserError(self.env._("URL: a user name or password in the address is refused"))
        try:
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
        except ValueError as error:
            raise UserError(self.env._("URL: the port is not a number between 1 and 65535")) from error
        try:
            infos = socket.getaddrinfo(parsed.hostname, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as error:
            raise UserError(self.env._("URL: the host %(host)s cannot be resolved", host=parsed.hostname)) from error
        addresses = list(dict.fromkeys(info[4][0] for info in infos))
        if not addresses:
            raise UserError(self.env._("URL: the host %(host)s cannot be resolved", host=parsed.hostname))
        allow_private = self.env["ir.config_parameter"].sudo().get_param(ALLOW_PRIVATE_PARAM) == "1"
        if not allow_private and any(not is_public_address(address) for address in addresses):
            raise UserError(self.env._("URL: %(host)s is a private or local address", host=parsed.hostname))
        return parsed, addresses[0].split("%")[0]

    def _webhook_connection(self, parsed, address, timeout):
        """A connection pool to ``address``, the resolved and checked one, that speaks to the URL's host.

        The Host header and, for https, the TLS server name and the
        certificate's checked name are the URL's host, as if its name had been
        resolved again; nothing is retried, no redirect followed.
        """
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        options = {
            "timeout": urllib3.Timeout(connect=timeout, read=timeout),
            "retries": False,
            "maxsize": 1,
        }
        if parsed.scheme == "https":
            return urllib3.HTTPSConnectionPool(
                address,
                port,
                cert_reqs="CERT_REQUIRED",
                ca_certs=requests.certs.where(),
                assert_hostname=parsed.hostname,
                server_hostname=parsed.hostname,
                **options,
            )
        return urllib3.HTTPConnectionPool(address, port, **options)

    def _webhook_failure_label(self):
        """What a step tells of a call that got no answer: the same for a timeout, a refused
        connection or a TLS failure, never the exception's text (it would map the network)."""
        return self.env._("The endpoint could not be reached")

    def _webhook_payload(self, step):
        partner = step.partner_id
        return {
            "scenario": {"id": self.scenario_id.id, "name": self.scenario_id.name},
            "node": {"id": self.id, "name": self.display_name},
            "step_id": step.id,
            "attempt": step.attempt + 1,
            "contact": {
                "id": partner.id,
                "name": partner.name,
                "email": partner.email_normalized or None,
                "phone": partner.phone_sanitized or None,
                "external_id": partner.marketing_external_id or None,
            },
            "event": step.participant_id.event_params or {},
        }

    def _run_webhook(self, steps):
        """POST each step's payload to the checked address, within a time budget for the batch.

        An endpoint that does not answer costs one timeout per batch: after a
        timeout or a failed connection, the node's other steps of the batch
        wait for a later one without losing an attempt, and so do those left
        once the batch's budget is spent. The other nodes' steps of the batch
        are thus delayed by seconds, never by the node's size.
        """
        outcomes = {}
        try:
            parsed, address = self._check_webhook_url(self.webhook_url)
        except UserError as error:
            return {step.id: {"state": "error", "result": str(error)} for step in steps}
        secret = (self.sudo().webhook_secret or "").encode()
        timeout = min(max(self.webhook_timeout, 1), WEBHOOK_MAX_TIMEOUT)
        path = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
        pool = self._webhook_connection(parsed, address, timeout)
        now = fields.Datetime.now()
        started = monotonic()
        unreachable = False
        try:
            for step in steps:
                if unreachable or monotonic() - started > WEBHOOK_BATCH_BUDGET_SECONDS:
                    outcomes[step.id] = {
                        "state": "retry",
                        "attempted": False,
                        "result": self.env._("Waiting: the endpoint was slow or unreachable in this batch"),
                        "scheduled_at": now + timedelta(seconds=WEBHOOK_BACKOFF_SECONDS),
                    }
                    continue
                body = json.dumps(self._webhook_payload(step), sort_keys=True).encode()
                signature = hmac.new(secret, body, hashlib.sha256).hexdigest()
                status, failure = None, None
                try:
                    response = pool.urlopen(
                        "POST",
                        path,
                        body=body,
                        headers={
                            "Host": parsed.netloc,
                            "Content-Type": "application/json",
                            "User-Agent": "Odoo marketing_event_automation",
                            "X-MEA-Signature": f"sha256={signature}",
                            "X-MEA-Step": str(step.id),
                        },
                        redirect=False,
                        assert_same_host=False,
                        retries=False,
                        preload_content=True,
                    )
                    status = response.status
                    if not HTTP_SUCCESS_MIN <= status < HTTP_SUCCESS_END:
                        failure = f"HTTP {status}"
                except urllib3.exceptions.HTTPError as error:
                    _logger.info("Webhook node %s could not reach %s: %s", self.id, parsed.hostname, error)
                    failure = self._webhook_failure_label()
                    unreachable = True
                outcomes[step.id] = self._webhook_outcome(step, status, failure, now)
        finally:
            pool.close()
        return outcomes

    def _webhook_outcome(self, step, status, failure, now):
        if not failure:
            return {
                "state": "done",
                "branch": "always",
                "result": f"HTTP {status}",
                "status_code": status,
                "attempted": True,
            }
        if step.attempt < self.webhook_retries:
            delay = WEBHOOK_BACKOFF_SECONDS * 2**step.attempt
            return {
                "state": "retry",
                "result": self.env._("%(failure)s, retry in %(delay)s s", failure=failure, delay=delay),
                "status_code": status,
                "scheduled_at": now + timedelta(seconds=delay),
            }
        return {
            "state": "error",
            "result": self.env._("%(failure)s after %(count)s attempts", failure=failure, count=step.attempt + 1),
            "status_code": status,
            "attempted": True,
        }

    def _webhook_description(self):
        return urlparse(self.webhook_url or "").hostname or self.env._("No URL yet")
