import hashlib
import hmac
import ipaddress
import json
import socket
from datetime import timedelta
from urllib.parse import urlparse

import requests

from odoo import api
from odoo import fields
from odoo import models
from odoo.exceptions import UserError

WEBHOOK_BACKOFF_SECONDS = 60
MIN_WEBHOOK_TIMEOUT = 1
HTTPS_PORT = 443
# 2xx: the receiver took the call.
HTTP_SUCCESS_MIN, HTTP_SUCCESS_END = 200, 300
ALLOW_PRIVATE_PARAM = "marketing_event_automation.webhook_allow_private"


def is_public_address(address):
    """Whether a resolved address is on the public internet.

    ``is_global`` also excludes what ``is_private`` lets through (shared
    100.64.0.0/10, ...); an IPv4 address mapped into IPv6 is judged as IPv4.
    """
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


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
            },
        }

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
        """Refuse what is not http(s), and private or loopback hosts unless the administrator allows them."""
        parsed = urlparse(url or "")
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise UserError(self.env._("URL: give an http:// or https:// address"))
        if self.env["ir.config_parameter"].sudo().get_param(ALLOW_PRIVATE_PARAM) == "1":
            return
        try:
            addresses = {info[4][0] for info in socket.getaddrinfo(parsed.hostname, parsed.port or HTTPS_PORT)}
        except OSError as error:
            raise UserError(self.env._("URL: the host %(host)s cannot be resolved", host=parsed.hostname)) from error
        if any(not is_public_address(address) for address in addresses):
            raise UserError(self.env._("URL: %(host)s is a private or local address", host=parsed.hostname))

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
        outcomes = {}
        try:
            self._check_webhook_url(self.webhook_url)
        except UserError as error:
            return {step.id: {"state": "error", "result": str(error)} for step in steps}
        secret = (self.sudo().webhook_secret or "").encode()
        now = fields.Datetime.now()
        for step in steps:
            body = json.dumps(self._webhook_payload(step), sort_keys=True).encode()
            signature = hmac.new(secret, body, hashlib.sha256).hexdigest()
            status, failure = None, None
            try:
                response = requests.post(
                    self.webhook_url,
                    data=body,
                    headers={
                        "Content-Type": "application/json",
                        "X-MEA-Signature": f"sha256={signature}",
                        "X-MEA-Step": str(step.id),
                    },
                    timeout=max(self.webhook_timeout, MIN_WEBHOOK_TIMEOUT),
                    allow_redirects=False,
                )
                status = response.status_code
                if not HTTP_SUCCESS_MIN <= status < HTTP_SUCCESS_END:
                    failure = f"HTTP {status}"
            except requests.RequestException as error:
                failure = type(error).__name__
            if not failure:
                outcomes[step.id] = {
                    "state": "done",
                    "branch": "always",
                    "result": f"HTTP {status}",
                    "status_code": status,
                    "attempted": True,
                }
            elif step.attempt < self.webhook_retries:
                delay = WEBHOOK_BACKOFF_SECONDS * 2**step.attempt
                outcomes[step.id] = {
                    "state": "retry",
                    "result": self.env._("%(failure)s, retry in %(delay)s s", failure=failure, delay=delay),
                    "status_code": status,
                    "scheduled_at": now + timedelta(seconds=delay),
                }
            else:
                outcomes[step.id] = {
                    "state": "error",
                    "result": self.env._(
                        "%(failure)s after %(count)s attempts", failure=failure, count=step.attempt + 1
                    ),
                    "status_code": status,
                    "attempted": True,
                }
        return outcomes

    def _webhook_description(self):
        return urlparse(self.webhook_url or "").hostname or self.env._("No URL yet")
