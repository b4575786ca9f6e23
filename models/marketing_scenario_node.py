import hashlib
import hmac
import ipaddress
import json
import logging
import random
import socket
from collections import defaultdict
from datetime import datetime
from datetime import time
from datetime import timedelta
from textwrap import shorten
from time import monotonic
from urllib.parse import urlparse

import pytz
import requests
import urllib3
from dateutil.relativedelta import relativedelta

from odoo import api
from odoo import fields
from odoo import models
from odoo.exceptions import AccessError
from odoo.exceptions import UserError
from odoo.exceptions import ValidationError
from odoo.tools import SQL
from odoo.tools import format_datetime
from odoo.tools.safe_eval import safe_eval

from .params_filter import ParamsFilterError
from .params_filter import params_match
from .params_filter import parse_params_filter
from .res_partner import SCORE_OPERATORS
from .res_partner import score_matches

_logger = logging.getLogger(__name__)

NODE_TYPES = [
    ("wait", "Wait"),
    ("wait_event", "Wait for event"),
    ("condition", "Condition"),
    ("split", "Random split"),
    ("email", "Send email"),
    ("sms", "Send SMS"),
    ("tag_add", "Add tags"),
    ("tag_remove", "Remove tags"),
    ("list_add", "Add to mailing list"),
    ("list_remove", "Remove from mailing list"),
    ("blacklist", "Blacklist"),
    ("score", "Change engagement score"),
    ("webhook", "Webhook"),
    ("activity", "Schedule activity"),
    ("field_update", "Update contact field"),
    ("server_action", "Run server action"),
    ("exit", "Exit"),
]
NODE_KINDS = [("action", "Action"), ("wait", "Wait"), ("condition", "Condition"), ("split", "Split")]
BRANCHES = [("always", "Always"), ("yes", "Yes"), ("no", "No"), ("arm", "Split arm")]
DELAY_UNITS = [
    ("minutes", "Minutes"),
    ("hours", "Hours"),
    ("days", "Days"),
    ("weeks", "Weeks"),
    ("months", "Months"),
    ("years", "Years"),
]
WAIT_MODES = [("delay", "A delay"), ("field", "Until a date of the contact"), ("date", "Until a fixed date")]
CONDITION_TYPES = [
    ("domain", "Contact matches a filter"),
    ("event", "An event happened"),
    ("email", "A previous email was..."),
    ("sms", "A previous SMS was clicked"),
    ("score", "Engagement score"),
    ("segment", "Contact is in a segment"),
]
EMAIL_STATUSES = [("opened", "Opened"), ("clicked", "Clicked"), ("replied", "Replied"), ("bounced", "Bounced")]
FIELD_UPDATE_TYPES = ("char", "text", "selection", "integer", "float", "boolean", "date", "datetime", "many2one")
FLOW_ICONS = {
    "wait": "fa-hourglass-half",
    "wait_event": "fa-bell-o",
    "condition": "fa-code-fork",
    "split": "fa-random",
    "email": "fa-envelope-o",
    "sms": "fa-mobile",
    "tag_add": "fa-tag",
    "tag_remove": "fa-tags",
    "list_add": "fa-user-plus",
    "list_remove": "fa-user-times",
    "blacklist": "fa-ban",
    "score": "fa-star-half-o",
    "webhook": "fa-plug",
    "activity": "fa-tasks",
    "field_update": "fa-pencil",
    "server_action": "fa-cogs",
    "exit": "fa-sign-out",
}
WEBHOOK_BACKOFF_SECONDS = 60
# The links mass_mailing never shortens (its own render post-processing list).
LINK_SHORTENING_BLACKLIST = ["/unsubscribe_from_list", "/view", "/cards"]
ALLOW_PRIVATE_PARAM = "marketing_event_automation.webhook_allow_private"
# Contact fields no node writes, whoever the responsible user is: the identity
# used to log in and to be found (email, external id), the company structure,
# the links to users, and what access rights or accounting decide.
FIELD_UPDATE_FORBIDDEN_NAMES = {
    "email",
    "email_normalized",
    "company_id",
    "parent_id",
    "commercial_partner_id",
    "user_id",
    "user_ids",
    "partner_share",
    "employee",
    "active",
    "type",
    "vat",
    "company_registry",
    "marketing_external_id",
}
FIELD_UPDATE_FORBIDDEN_WORDS = ("email", "login", "password", "signup", "token", "user", "company", "share")
FIELD_UPDATE_FORBIDDEN_PREFIXES = ("property_", "engagement_", "marketing_", "credit", "debit", "bank", "account")
FIELD_UPDATE_FORBIDDEN_COMODELS = ("res.users", "res.company", "res.groups", "res.partner", "res.partner.bank")
FIELD_UPDATE_FORBIDDEN_MODULES = {"account", "base_vat", "auth_signup"}
# Server action types a responsible user who is not a system administrator may
# run: they write the contacts or post on them, and write nothing else.
SERVER_ACTION_SAFE_STATES = {"object_write", "mail_post", "followers", "remove_followers", "next_activity", "multi"}
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
    _name = "marketing.scenario.node"
    _description = "Scenario Node"
    _order = "sequence, id"
    _parent_store = False

    name = fields.Char(translate=True)
    sequence = fields.Integer(default=10)
    active = fields.Boolean(default=True)
    scenario_id = fields.Many2one("marketing.scenario", required=True, ondelete="cascade", index=True)
    scenario_state = fields.Selection(related="scenario_id.state")
    company_id = fields.Many2one(related="scenario_id.company_id", store=True, index=True)
    parent_id = fields.Many2one(
        "marketing.scenario.node",
        string="After",
        ondelete="cascade",
        index=True,
        domain="[('scenario_id', '=', scenario_id), ('id', '!=', id)]",
        help="Empty: the node runs as soon as a contact enters.",
    )
    parent_type = fields.Selection(related="parent_id.node_type", string="Parent Type")
    child_ids = fields.One2many("marketing.scenario.node", "parent_id", string="Next Nodes")
    branch = fields.Selection(BRANCHES, required=True, default="always")
    split_weight = fields.Integer(string="Arm Weight", default=50, help="Share of the split's contacts on this arm.")
    node_type = fields.Selection(NODE_TYPES, string="Type", required=True, default="wait")
    kind = fields.Selection(NODE_KINDS, compute="_compute_kind", store=True)

    # Wait
    wait_mode = fields.Selection(WAIT_MODES, default="delay")
    wait_amount = fields.Integer(string="Duration", default=1)
    wait_unit = fields.Selection(DELAY_UNITS, string="Unit", default="days")
    wait_field_id = fields.Many2one(
        "ir.model.fields",
        string="Contact Date Field",
        ondelete="cascade",
        domain="[('model', '=', 'res.partner'), ('ttype', 'in', ('date', 'datetime'))]",
    )
    wait_yearly = fields.Boolean(
        string="Every Year", help="Roll the date over to its next anniversary (birthdays, contract anniversaries)."
    )
    wait_until = fields.Datetime(string="Until")
    window_enabled = fields.Boolean(string="Send Window")
    window_start = fields.Float(default=9.0)
    window_end = fields.Float(default=18.0)
    window_timezone = fields.Selection(
        [("contact", "Contact's timezone"), ("scenario", "Scenario's timezone")], default="contact"
    )
    wait_event_type_id = fields.Many2one(
        "marketing.event.type", string="Wait For", ondelete="restrict", domain=[("scope", "=", "contact")]
    )
    wait_event_filter = fields.Char(string="Event Filter", help='e.g. total > 100 and category == "shoes"')

    # Condition
    condition_type = fields.Selection(CONDITION_TYPES, default="domain")
    condition_domain = fields.Char(string="Contact Filter", default="[]")
    condition_segment_id = fields.Many2one("marketing.segment", string="Segment", ondelete="restrict")
    condition_event_type_id = fields.Many2one(
        "marketing.event.type", string="Event", ondelete="restrict", domain=[("scope", "=", "contact")]
    )
    condition_event_filter = fields.Char(string="Parameters Filter")
    condition_event_period = fields.Selection(
        [("since_entry", "Since entry"), ("days", "Within the last days")], default="since_entry"
    )
    condition_event_days = fields.Integer(string="Days", default=7)
    condition_node_id = fields.Many2one(
        "marketing.scenario.node",
        string="Message Node",
        ondelete="set null",
        domain="[('scenario_id', '=', scenario_id), ('node_type', 'in', ('email', 'sms'))]",
    )
    condition_email_status = fields.Selection(EMAIL_STATUSES, string="Status", default="opened")
    score_operator = fields.Selection(SCORE_OPERATORS, default=">=")
    score_threshold = fields.Integer()

    # Actions
    mailing_id = fields.Many2one("mailing.mailing", ondelete="restrict")
    tag_ids = fields.Many2many("res.partner.category", string="Tags")
    mailing_list_id = fields.Many2one("mailing.list", ondelete="restrict")
    blacklist_email = fields.Boolean(default=True)
    blacklist_phone = fields.Boolean()
    score_delta = fields.Integer(string="Points")
    score_reason = fields.Char()
    webhook_url = fields.Char(string="URL")
    webhook_secret = fields.Char(
        string="Signing Secret", groups="marketing_event_automation.group_marketing_automation_user", copy=False
    )
    webhook_timeout = fields.Integer(string="Timeout (s)", default=10)
    webhook_retries = fields.Integer(string="Retries", default=3)
    activity_type_id = fields.Many2one("mail.activity.type", ondelete="restrict")
    activity_summary = fields.Char()
    activity_days = fields.Integer(string="Due In (days)", default=0)
    activity_user_id = fields.Many2one(
        "res.users", string="Fallback User", help="For contacts without a salesperson; empty: skip them."
    )
    field_id = fields.Many2one(
        "ir.model.fields",
        string="Contact Field",
        ondelete="cascade",
        domain=f"[('model', '=', 'res.partner'), ('store', '=', True), ('readonly', '=', False), "
        f"('ttype', 'in', {list(FIELD_UPDATE_TYPES)})]",
    )
    field_value = fields.Char(string="New Value")
    server_action_id = fields.Many2one(
        "ir.actions.server", ondelete="restrict", domain="[('model_id.model', '=', 'res.partner')]"
    )

    # Statistics (test runs excluded)
    scheduled_count = fields.Integer(string="Scheduled", compute="_compute_statistics")
    processed_count = fields.Integer(string="Processed", compute="_compute_statistics")
    sent_count = fields.Integer(string="Sent", compute="_compute_statistics")
    opened_count = fields.Integer(string="Opened", compute="_compute_statistics")
    clicked_count = fields.Integer(string="Clicked", compute="_compute_statistics")
    replied_count = fields.Integer(string="Replied", compute="_compute_statistics")
    bounced_count = fields.Integer(string="Bounced", compute="_compute_statistics")
    error_count = fields.Integer(string="Errors", compute="_compute_statistics")
    skipped_count = fields.Integer(string="Skipped", compute="_compute_statistics")
    canceled_count = fields.Integer(string="Canceled", compute="_compute_statistics")
    skipped_reasons = fields.Text(compute="_compute_statistics")
    arm_share = fields.Float(
        string="Arm Share (%)", compute="_compute_statistics", help="Share of the split's contacts sent down this arm."
    )
    drop_off_rate = fields.Float(
        string="Drop-off (%)", compute="_compute_statistics", help="Contacts of the previous node that never got here."
    )

    @api.depends("node_type")
    def _compute_kind(self):
        kinds = {"wait": "wait", "wait_event": "wait", "condition": "condition", "split": "split"}
        for node in self:
            node.kind = kinds.get(node.node_type, "action")

    @api.depends("name", "node_type")
    def _compute_display_name(self):
        labels = dict(self._fields["node_type"]._description_selection(self.env))
        for node in self:
            node.display_name = node.name or labels.get(node.node_type, "")

    def _compute_statistics(self):
        ids = [node_id for node_id in self.ids if node_id]
        counts = defaultdict(int)
        reasons = defaultdict(list)
        mail = {}
        if ids:
            Step = self.env["marketing.scenario.step"]
            for node, state, count in Step._read_group(
                [("node_id", "in", ids), ("is_test", "=", False)], ["node_id", "state"], ["__count"]
            ):
                counts[node.id, state] = count
            for node, result, count in Step._read_group(
                [("node_id", "in", ids), ("is_test", "=", False), ("state", "=", "skipped")],
                ["node_id", "result"],
                ["__count"],
            ):
                reasons[node.id].append(f"{result or '?'}: {count}")
            Step.flush_model(["trace_id", "node_id", "is_test"])
            self.env["mailing.trace"].flush_model()
            self.env.cr.execute(
                SQL(
                    """
                    SELECT s.node_id,
                           count(*) FILTER (WHERE t.trace_status NOT IN ('cancel', 'error')),
                           count(*) FILTER (WHERE t.open_datetime IS NOT NULL OR t.trace_status IN ('open', 'reply')),
                           count(*) FILTER (WHERE t.links_click_datetime IS NOT NULL),
                           count(*) FILTER (WHERE t.trace_status = 'reply' OR t.reply_datetime IS NOT NULL),
                           count(*) FILTER (WHERE t.trace_status = 'bounce')
                      FROM marketing_scenario_step s
                      JOIN mailing_trace t ON t.id = s.trace_id
                     WHERE s.node_id IN %s AND NOT s.is_test
                     GROUP BY s.node_id
                    """,
                    tuple(ids),
                )
            )
            mail = {row[0]: row[1:] for row in self.env.cr.fetchall()}
        arm_counts, split_totals = defaultdict(int), defaultdict(int)
        split_ids = [node.parent_id.id for node in self if node.branch == "arm" and node.parent_id.id]
        if split_ids:
            for split, arm, count in self.env["marketing.scenario.step"]._read_group(
                [("node_id", "in", split_ids), ("is_test", "=", False), ("arm_node_id", "!=", False)],
                ["node_id", "arm_node_id"],
                ["__count"],
            ):
                arm_counts[arm.id] += count
                split_totals[split.id] += count
        reached = {}
        for node in self:
            reached[node.id] = sum(
                counts[node.id, state] for state in ("scheduled", "done", "skipped", "error", "canceled")
            )
        for node in self:
            node.scheduled_count = counts[node.id, "scheduled"]
            node.processed_count = counts[node.id, "done"]
            node.error_count = counts[node.id, "error"]
            node.skipped_count = counts[node.id, "skipped"]
            node.canceled_count = counts[node.id, "canceled"]
            node.skipped_reasons = "\n".join(sorted(reasons[node.id]))
            sent, opened, clicked, replied, bounced = mail.get(node.id, (0, 0, 0, 0, 0))
            node.sent_count, node.opened_count, node.clicked_count = sent, opened, clicked
            node.replied_count, node.bounced_count = replied, bounced
            parent = node.parent_id
            if parent and parent.id in reached:
                parent_done = counts[parent.id, "done"] + counts[parent.id, "skipped"]
            elif parent:
                parent_done = parent.processed_count + parent.skipped_count
            else:
                parent_done = 0
            node.drop_off_rate = 100.0 * max(parent_done - reached[node.id], 0) / parent_done if parent_done else 0.0
            split_total = split_totals.get(node.parent_id.id)
            node.arm_share = 100.0 * arm_counts.get(node.id, 0) / split_total if split_total else 0.0

    # Drill-down ----------------------------------------------------------

    def _steps_domain(self, which=None):
        """The real steps behind one of the node's counts: a step state, or a message status
        (sent, opened, clicked, replied, bounced) read from the mailing traces as the counts are."""
        self.ensure_one()
        domain = [("node_id", "=", self.id), ("is_test", "=", False)]
        if which in dict(self.env["marketing.scenario.step"]._fields["state"].selection):
            return [*domain, ("state", "=", which)]
        trace_conditions = {
            "sent": SQL("t.trace_status NOT IN ('cancel', 'error')"),
            "opened": SQL("t.open_datetime IS NOT NULL OR t.trace_status IN ('open', 'reply')"),
            "clicked": SQL("t.links_click_datetime IS NOT NULL"),
            "replied": SQL("t.trace_status = 'reply' OR t.reply_datetime IS NOT NULL"),
            "bounced": SQL("t.trace_status = 'bounce'"),
        }
        if which in trace_conditions:
            # SQL rather than a domain on trace_id: marketers may have no access to mailing traces.
            self.env["marketing.scenario.step"].flush_model(["trace_id", "node_id", "is_test"])
            self.env["mailing.trace"].flush_model()
            self.env.cr.execute(
                SQL(
                    """
                    SELECT s.id FROM marketing_scenario_step s JOIN mailing_trace t ON t.id = s.trace_id
                     WHERE s.node_id = %s AND NOT s.is_test AND (%s)
                    """,
                    self.id,
                    trace_conditions[which],
                )
            )
            return [*domain, ("id", "in", [row[0] for row in self.env.cr.fetchall()])]
        if which:
            raise UserError(self.env._("Unknown step count: %(which)s", which=which))
        return domain

    def action_view_steps(self):
        """The steps of one count of this node; the count is the context key ``step_count``."""
        self.ensure_one()
        which = self.env.context.get("step_count")
        action = self.env["ir.actions.act_window"]._for_xml_id(
            "marketing_event_automation.action_marketing_scenario_step"
        )
        action["name"] = self.display_name
        action["domain"] = self._steps_domain(which)
        action["context"] = {}
        return action

    # ------------------------------------------------------------------
    # Constraints and editing rules
    # ------------------------------------------------------------------

    @api.constrains("parent_id", "branch", "scenario_id")
    def _check_tree(self):
        if self._has_cycle():
            raise ValidationError(self.env._("A node cannot come after itself (the tree has a loop)."))
        for node in self:
            parent = node.parent_id
            if parent and parent.scenario_id != node.scenario_id:
                raise ValidationError(
                    self.env._("%(node)s: its previous node belongs to another scenario.", node=node.display_name)
                )
            if node.branch in ("yes", "no") and parent.node_type not in ("condition", "wait_event"):
                raise ValidationError(
                    self.env._(
                        "%(node)s: the branches Yes and No only follow a condition or a wait for an event.",
                        node=node.display_name,
                    )
                )
            if (node.branch == "arm") != (parent.node_type == "split"):
                raise ValidationError(
                    self.env._(
                        "%(node)s: the nodes after a random split are its arms (branch 'Split arm'), "
                        "and only they are.",
                        node=node.display_name,
                    )
                )
            if node.branch == "arm" and node.split_weight <= 0:
                raise ValidationError(self.env._("%(node)s: an arm weighs more than 0.", node=node.display_name))

    @api.constrains("wait_event_filter", "wait_event_type_id", "condition_event_filter", "condition_event_type_id")
    def _check_filters(self):
        for node in self:
            for field_name, type_field in (
                ("wait_event_filter", "wait_event_type_id"),
                ("condition_event_filter", "condition_event_type_id"),
            ):
                try:
                    parse_params_filter(node[field_name], node[type_field].params_structure)
                except ParamsFilterError as error:
                    raise ValidationError(
                        self.env._(
                            "%(node)s, %(field)s: %(error)s",
                            node=node.display_name,
                            field=node._fields[field_name].string,
                            error=error,
                        )
                    ) from error

    @api.constrains("field_id", "field_value")
    def _check_field_value(self):
        for node in self.filtered(lambda node: node.node_type == "field_update" and node.field_id):
            refusal = node._field_update_refusal()
            if refusal:
                raise ValidationError(self.env._("%(node)s: %(refusal)s", node=node.display_name, refusal=refusal))
            node._field_update_value()

    @api.constrains("condition_domain", "condition_type", "node_type")
    def _check_condition_domain(self):
        """A contact filter is a domain the user saving it could search contacts with."""
        for node in self.filtered(lambda node: node.node_type == "condition" and node.condition_type == "domain"):
            try:
                domain = node._condition_domain_value()
                self.env["res.partner"].search_count(domain, limit=1)
            except Exception as error:
                raise ValidationError(
                    self.env._(
                        "Contact Filter of %(node)s is not a valid filter: %(error)s",
                        node=node.display_name,
                        error=error,
                    )
                ) from error

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

    # Rights of the responsible user ----------------------------------------

    def _field_update_refusal(self, field_record=None):
        """Why no node may write this contact field (the node's by default), or an empty string.

        Enforced by the server whatever the form offers: the field is a stored,
        writable, plain contact field, open to every user who may edit contacts.
        """
        # sudo: reading the field's definition (its modules), not data.
        field_record = (field_record or self.field_id).sudo()
        name = field_record.name or ""
        field = self.env["res.partner"]._fields.get(name)
        refused = self.env._("the field %(field)s cannot be changed by a scenario", field=name)
        if (
            field is None
            or field_record.model != "res.partner"
            or field.type not in FIELD_UPDATE_TYPES
            or not field.store
            or field.readonly
            or field.compute
            or field.groups
            or field.company_dependent
            or name.startswith("_")
        ):
            return refused
        if (
            name in FIELD_UPDATE_FORBIDDEN_NAMES
            or any(word in name for word in FIELD_UPDATE_FORBIDDEN_WORDS)
            or name.startswith(FIELD_UPDATE_FORBIDDEN_PREFIXES)
        ):
            return refused
        if field.type == "many2one" and (
            field.comodel_name in FIELD_UPDATE_FORBIDDEN_COMODELS or field.comodel_name.startswith("account.")
        ):
            return refused
        modules = set((field_record.modules or "").replace(" ", "").split(","))
        if modules & FIELD_UPDATE_FORBIDDEN_MODULES:
            return refused
        return ""

    def _server_action_refusal(self, user):
        """Why ``user`` may not have this node run its server action, or an empty string.

        Odoo checks the action's groups (or the right to write contacts) when
        it runs; on top of that, code, webhooks and record creation are for
        system administrators only, and a field written is one a field update
        node could write.
        """
        self.ensure_one()
        # sudo: server actions are readable by administrators only; this reads
        # the definition of the node's action to judge it, it runs nothing.
        action = self.server_action_id.sudo()
        if not action:
            return ""
        if action.model_id.model != "res.partner":
            return self.env._("the server action %(action)s is not on contacts", action=action.name)
        if action.groups_id and not action.groups_id & user.groups_id:
            return self.env._(
                "%(user)s is not in the groups allowed to run the server action %(action)s",
                user=user.name,
                action=action.name,
            )
        if user._is_system():
            return ""
        pending, seen = action, action.browse()
        while pending:
            current = pending[0]
            pending -= current
            if current in seen:
                continue
            seen |= current
            if current.state not in SERVER_ACTION_SAFE_STATES or (
                current.state == "multi" and current.child_ids.filtered(lambda child: child.model_id != action.model_id)
            ):
                return self.env._(
                    "the server action %(action)s runs code or changes other records: only a system administrator "
                    "may be responsible for a scenario that runs it",
                    action=current.name,
                )
            if current.state == "object_write":
                written = current.update_field_id.name
                if current.crud_model_id != action.model_id or "." in (current.update_path or ""):
                    return self.env._("the server action %(action)s writes other records", action=current.name)
                if current.evaluation_type != "value":
                    return self.env._(
                        "the server action %(action)s computes its value with code: only a system administrator "
                        "may be responsible for a scenario that runs it",
                        action=current.name,
                    )
                if not written or self._field_update_refusal(current.update_field_id):
                    return self.env._(
                        "the server action %(action)s writes the field %(field)s, which a scenario may not change",
                        action=current.name,
                        field=written or "?",
                    )
            pending |= current.child_ids
        return ""

    def _rights_problems(self, user):
        """What ``user``, as the responsible of this node's scenario, may not do through it, as sentences."""
        self.ensure_one()
        if not user:
            return [self.env._("the scenario has no responsible user")]
        node_type = self.node_type
        Partner = self.env["res.partner"].with_user(user)
        problems = []
        if node_type in ("field_update", "activity", "server_action") and not Partner.has_access("write"):
            problems.append(self.env._("%(user)s may not edit contacts", user=user.name))
        # Segmenting the contacts he can read (tags, lists, blacklists) is
        # what the marketing user group grants, without editing contacts.
        segments = node_type in ("tag_add", "tag_remove", "list_add", "list_remove", "blacklist")
        if segments and not user.has_group("marketing_event_automation.group_marketing_automation_user"):
            problems.append(self.env._("%(user)s is not a marketing automation user", user=user.name))
        if node_type == "field_update" and self.field_id:
            refusal = self._field_update_refusal()
            if refusal:
                problems.append(refusal)
        if node_type == "server_action" and self.server_action_id:
            refusal = self._server_action_refusal(user)
            if refusal:
                problems.append(refusal)
        if node_type in ("list_add", "list_remove") and not self.env["mailing.subscription"].with_user(user).has_access(
            "create"
        ):
            problems.append(self.env._("%(user)s may not manage mailing lists", user=user.name))
        if node_type == "blacklist" and not self.env["mail.blacklist"].with_user(user).has_access("create"):
            problems.append(self.env._("%(user)s may not blacklist addresses", user=user.name))
        return problems

    def _check_rights(self, steps):
        """Raise with the reason when the acting user may not do this node's side effects on these contacts.

        The handlers that write through SQL or as superuser (tags, lists,
        blacklists, activities) rely on it: the user's rights are checked
        once for the whole batch, on the model and on its contacts' records
        (read for segmenting, write or post for the others).
        """
        problems = self._rights_problems(self.env.user)
        if problems:
            raise AccessError("; ".join(problems))
        partners = steps.partner_id
        if self.node_type in ("field_update", "server_action"):
            partners.check_access("write")
        elif self.node_type == "activity":
            partners.check_access(getattr(partners, "_mail_post_access", "write"))
        else:
            partners.check_access("read")

    @api.onchange("parent_id")
    def _onchange_parent_id(self):
        parent_type = self.parent_id.node_type
        if parent_type == "split":
            self.branch = "arm"
        elif parent_type in ("condition", "wait_event"):
            self.branch = self.branch if self.branch in ("yes", "no") else "yes"
        else:
            self.branch = "always"

    def _check_editable(self):
        blocker = self.scenario_id._node_edit_blocker()
        if blocker:
            raise UserError(blocker)

    @api.model_create_multi
    def create(self, vals_list):
        nodes = super().create(vals_list)
        nodes._check_editable()
        nodes._create_missing_mailings()
        return nodes

    def write(self, vals):
        self._check_editable()
        result = super().write(vals)
        if "scenario_id" in vals:
            self._check_editable()
        if vals.get("active") is False:
            self._cancel_scheduled_steps(self.env._("Node archived"))
        if "node_type" in vals:
            self._create_missing_mailings()
        return result

    @api.ondelete(at_uninstall=False)
    def _unlink_except_scheduled(self):
        self._check_editable()
        # Deleting a node deletes the nodes after it (and their steps): none may hold a scheduled step.
        subtree = self.with_context(active_test=False).search([("id", "child_of", self.ids)])
        busy = self.env["marketing.scenario.step"].search_count(
            [("node_id", "in", subtree.ids), ("state", "=", "scheduled")], limit=1
        )
        if busy:
            raise UserError(
                self.env._(
                    "Some contacts are scheduled on these nodes: archive them instead, their steps are then "
                    "canceled with the reason."
                )
            )

    def _cancel_scheduled_steps(self, reason):
        steps = self.env["marketing.scenario.step"].search([("node_id", "in", self.ids), ("state", "=", "scheduled")])
        if not steps:
            return
        # sudo: the queue is the engine's; marketing users only read it. Bounded
        # to the scheduled steps of the nodes being archived.
        steps.sudo().write({"state": "canceled", "result": reason, "processed_at": fields.Datetime.now()})
        steps.participant_id._complete_if_done()

    def _create_missing_mailings(self):
        """Give each email/SMS node a mailing of its own, to edit like any other mailing."""
        nodes = self.filtered(lambda node: node.node_type in ("email", "sms") and not node.mailing_id)
        if not nodes:
            return
        partner_model = self.env["ir.model"]._get("res.partner")
        # sudo: scenario builders edit the node's own mailing; they need no
        # Email Marketing rights to get one created.
        mailings = (
            self.env["mailing.mailing"]
            .sudo()
            .create(
                [
                    {
                        "subject": node.name or node.scenario_id.name,
                        "mailing_type": "mail" if node.node_type == "email" else "sms",
                        "mailing_model_id": partner_model.id,
                        # Sent only by the scenario, never to a whole audience from Email Marketing.
                        "mailing_domain": "[('id', 'in', [])]",
                        "body_html": False,
                    }
                    for node in nodes
                ]
            )
        )
        for node, mailing in zip(nodes, mailings):
            node.write({"mailing_id": mailing.id})

    def _configuration_problems(self):
        """What is missing for this node to run, as sentences."""
        self.ensure_one()
        problems = []
        node_type = self.node_type
        if node_type == "wait":
            if self.wait_mode == "delay" and (self.wait_amount < 0 or not self.wait_unit):
                problems.append(self.env._("give a duration"))
            if self.wait_mode == "field" and not self.wait_field_id:
                problems.append(self.env._("choose the date field of the contact"))
            if self.wait_mode == "date" and not self.wait_until:
                problems.append(self.env._("choose the date to wait for"))
            if self.window_enabled and not 0 <= self.window_start < self.window_end <= 24:
                problems.append(self.env._("the send window must start before it ends, between 00:00 and 24:00"))
        elif node_type == "wait_event":
            if not self.wait_event_type_id:
                problems.append(self.env._("choose the event to wait for"))
            if self.wait_amount <= 0:
                problems.append(self.env._("give a timeout"))
        elif node_type == "condition":
            if self.condition_type == "event" and not self.condition_event_type_id:
                problems.append(self.env._("choose the event"))
            if self.condition_type == "segment" and not self.condition_segment_id:
                problems.append(self.env._("choose the segment"))
            if self.condition_type in ("email", "sms") and not self.condition_node_id:
                problems.append(self.env._("choose the message node to look at"))
            if self.condition_node_id and self.condition_node_id not in self._ancestors():
                problems.append(self.env._("the message node must come before this condition, on its path"))
            if self.condition_type == "email" and self.condition_node_id.node_type not in (False, "email"):
                problems.append(self.env._("the message node must send an email"))
            if self.condition_type == "sms" and self.condition_node_id.node_type not in (False, "sms"):
                problems.append(self.env._("the message node must send an SMS"))
        elif node_type == "split":
            if len(self.child_ids) < 2:
                problems.append(self.env._("a split needs at least two arms"))
        elif node_type == "email":
            mailing = self.mailing_id
            if not mailing or mailing.mailing_type != "mail":
                problems.append(self.env._("choose an email mailing"))
            elif not mailing.subject or not (mailing.body_arch or mailing.body_html):
                problems.append(self.env._("the mailing needs a subject and a body"))
        elif node_type == "sms":
            mailing = self.mailing_id
            if not mailing or mailing.mailing_type != "sms":
                problems.append(self.env._("choose an SMS mailing (the SMS channel)"))
            elif not mailing.body_plaintext:
                problems.append(self.env._("the SMS needs a text"))
        elif node_type in ("tag_add", "tag_remove") and not self.tag_ids:
            problems.append(self.env._("choose the tags"))
        elif node_type in ("list_add", "list_remove") and not self.mailing_list_id:
            problems.append(self.env._("choose the mailing list"))
        elif node_type == "blacklist" and not (self.blacklist_email or self.blacklist_phone):
            problems.append(self.env._("blacklist the email, the phone or both"))
        elif node_type == "score" and (not self.score_delta or not self.score_reason):
            problems.append(self.env._("give the points (not 0) and a reason"))
        elif node_type == "webhook":
            try:
                self._check_webhook_url(self.webhook_url)
            except UserError as error:
                problems.append(str(error))
            if not self.webhook_secret:
                problems.append(self.env._("give a signing secret"))
        elif node_type == "activity" and not self.activity_type_id:
            problems.append(self.env._("choose the activity type"))
        elif node_type == "field_update" and not self.field_id:
            problems.append(self.env._("choose the contact field"))
        elif node_type == "server_action" and not self.server_action_id:
            problems.append(self.env._("choose the server action"))
        if self.parent_id and not self.parent_id.active:
            problems.append(self.env._("its previous node is archived"))
        if self.scenario_id.user_id:
            problems.extend(self._rights_problems(self.scenario_id.user_id))
        return problems

    def _ancestors(self):
        ancestors = self.browse()
        node = self.parent_id
        while node and node not in ancestors:
            ancestors |= node
            node = node.parent_id
        return ancestors

    # ------------------------------------------------------------------
    # Scheduling
    # ------------------------------------------------------------------

    def _delay(self):
        return relativedelta(**{self.wait_unit or "days": self.wait_amount or 0})

    def _constant_due(self, now):
        """When this node's steps are due if it is the same for every contact (naive UTC), else None."""
        self.ensure_one()
        if self.node_type == "wait_event":
            return now + self._delay()
        if self.node_type != "wait":
            return now
        if self.window_enabled or (self.wait_mode == "field" and self.wait_field_id):
            return None
        if self.wait_mode == "date":
            return max(self.wait_until or now, now)
        return now + self._delay()

    def _due_dates(self, participants, now):
        """When each participant's step of this node is due (naive UTC)."""
        self.ensure_one()
        constant = self._constant_due(now)
        if constant is not None:
            return dict.fromkeys(participants.ids, constant)
        if self.node_type == "wait_event":
            return dict.fromkeys(participants.ids, now + self._delay())
        if self.node_type != "wait":
            return dict.fromkeys(participants.ids, now)
        if self.wait_mode == "date":
            due = dict.fromkeys(participants.ids, max(self.wait_until or now, now))
        elif self.wait_mode == "field" and self.wait_field_id:
            due = {}
            field_name = self.wait_field_id.name
            scenario_tz = pytz.timezone(self.scenario_id.timezone or "UTC")
            for participant in participants:
                value = participant.partner_id[field_name]
                if not value:
                    due[participant.id] = now
                    continue
                if not isinstance(value, datetime):
                    tz = self._participant_tz(participant, scenario_tz)
                    value = tz.localize(datetime.combine(value, time())).astimezone(pytz.utc).replace(tzinfo=None)
                if self.wait_yearly:
                    while value < now:
                        value += relativedelta(years=1)
                due[participant.id] = max(value, now)
        else:
            due = dict.fromkeys(participants.ids, now + self._delay())
        if self.window_enabled:
            due = self._apply_window(participants, due)
        return due

    def _participant_tz(self, participant, scenario_tz):
        if self.window_timezone == "contact" and participant.partner_id.tz:
            try:
                return pytz.timezone(participant.partner_id.tz)
            except pytz.UnknownTimeZoneError:
                return scenario_tz
        return scenario_tz

    def _apply_window(self, participants, due):
        """Move each due time into the send window (e.g. 09:00-18:00, local time)."""
        scenario_tz = pytz.timezone(self.scenario_id.timezone or "UTC")
        start_h, end_h = self.window_start, self.window_end
        result = {}
        for participant in participants:
            tz = self._participant_tz(participant, scenario_tz)
            local = pytz.utc.localize(due[participant.id]).astimezone(tz)
            hour = local.hour + local.minute / 60 + local.second / 3600
            if start_h <= hour < end_h:
                result[participant.id] = due[participant.id]
                continue
            day = local.date() if hour < start_h else local.date() + timedelta(days=1)
            opening = datetime.combine(day, time(int(start_h), round((start_h - int(start_h)) * 60) % 60))
            result[participant.id] = tz.localize(opening).astimezone(pytz.utc).replace(tzinfo=None)
        return result

    def _children_for(self, branch, arm_node_id=None):
        self.ensure_one()
        children = self.child_ids  # active ones only: archived nodes are skipped
        if self.node_type == "split":
            return children.filtered(lambda child: child.id == arm_node_id)
        return children.filtered(lambda child: child.branch in ("always", branch))

    # ------------------------------------------------------------------
    # Handlers: each runs on every step of this node in the batch at once and
    # returns {step id: {"state": done|skipped|error|retry, "branch", "result", ...}}
    # ------------------------------------------------------------------

    def _run_steps(self, steps, actor=None):
        """Run the steps with the rights of ``actor``, by default the scenario's responsible user.

        The handler works in the actor's environment, in the scenario's
        company: what it reads and writes through the ORM is checked against
        the actor's rights and record rules, and the side effects it makes
        as superuser or through SQL are checked first (``_check_rights``).
        """
        self.ensure_one()
        actor = actor or self.scenario_id.user_id
        if not actor:
            raise AccessError(self.env._("The scenario has no responsible user: nobody to act for."))
        node = self.with_user(actor).with_company(self.scenario_id.company_id)
        steps = steps.with_env(node.env)
        node._check_rights(steps)
        handler = getattr(node, f"_run_{self.node_type}")
        return handler(steps)

    @staticmethod
    def _done(steps, result=None, branch="always", **extra):
        return {step.id: {"state": "done", "branch": branch, "result": result, **extra} for step in steps}

    @staticmethod
    def _skipped(steps, reason):
        return {step.id: {"state": "skipped", "branch": "always", "result": reason} for step in steps}

    def _skip_without_email(self, steps):
        """Skip the steps whose contact has no valid email: (their outcomes, the other steps)."""
        without_email = steps.filtered(lambda step: not step.partner_id.email_normalized)
        return self._skipped(without_email, self.env._("No valid email address")), steps - without_email

    def _skip_opted_out(self, steps, field_name):
        """Skip the steps whose contact opted out of the mailing lists: (their outcomes, the other steps).

        ``field_name`` is the address compared with the mailing contacts':
        ``email_normalized`` for emails, ``phone_sanitized`` for SMS. As in
        Email Marketing, an address has opted out when it left a mailing list
        and is subscribed to none. Scenario messages go to contacts, not to
        lists, so Odoo's own sending checks only the blacklists for them.
        """
        addresses = [address for address in steps.partner_id.mapped(field_name) if address]
        if not addresses:
            return {}, steps
        # sudo: consent is checked for the scenario, whoever runs the engine.
        subscriptions = (
            self.env["mailing.subscription"]
            .sudo()
            .search_fetch([(f"contact_id.{field_name}", "in", addresses)], ["contact_id", "opt_out"])
        )
        opted_in, opted_out = set(), set()
        for subscription in subscriptions:
            (opted_out if subscription.opt_out else opted_in).add(subscription.contact_id[field_name])
        refused = opted_out - opted_in
        skipped = steps.filtered(lambda step: step.partner_id[field_name] in refused)
        return self._skipped(skipped, self.env._("Opted out of the mailing lists")), steps - skipped

    def _run_wait(self, steps):
        return self._done(steps, self.env._("Waited"))

    def _run_wait_event(self, steps):
        # Reached only at the timeout: an arriving event resumes the step before (yes branch).
        return self._done(steps, self.env._("Timed out"), branch="no")

    def _run_split(self, steps):
        arms = self.child_ids.filtered(lambda child: child.branch == "arm")
        if not arms:
            return self._skipped(steps, self.env._("No arm"))
        chosen = random.choices(arms.ids, weights=arms.mapped("split_weight"), k=len(steps))
        names = dict(zip(arms.ids, arms.mapped("display_name")))
        return {
            step.id: {"state": "done", "branch": "arm", "arm_node_id": arm_id, "result": names[arm_id]}
            for step, arm_id in zip(steps, chosen)
        }

    def _run_exit(self, steps):
        return self._done(steps, self.env._("Exited"), exit=True)

    # Conditions ---------------------------------------------------------

    def _run_condition(self, steps):
        matching = getattr(self, f"_condition_{self.condition_type}")(steps)
        yes, no = self.env._("Yes"), self.env._("No")
        return {
            step.id: {
                "state": "done",
                "branch": "yes" if step.id in matching else "no",
                "result": yes if step.id in matching else no,
            }
            for step in steps
        }

    def _condition_domain_value(self):
        domain = safe_eval(self.condition_domain or "[]", {"context_today": fields.Date.context_today(self)})
        if not isinstance(domain, (list, tuple)):
            raise ValueError(self.env._("a filter is a list of conditions"))
        return list(domain)

    def _condition_domain(self, steps):
        # Searched as the acting user in the scenario's company (see _run_steps):
        # the Yes/No counts reveal nothing that user could not search for.
        domain = self._condition_domain_value()
        partners = (
            self.env["res.partner"]
            .with_context(active_test=False)
            .search([("id", "in", steps.partner_id.ids), *domain], order="id")
        )
        matching_ids = set(partners.ids)
        return {step.id for step in steps if step.partner_id.id in matching_ids}

    def _condition_event(self, steps):
        now = fields.Datetime.now()
        since = {}
        for step in steps:
            if self.condition_event_period == "days":
                since[step.id] = now - timedelta(days=self.condition_event_days)
            else:
                since[step.id] = step.participant_id.entered_at
        events = self.env["marketing.event"].search_read(
            [
                ("partner_id", "in", steps.partner_id.ids),
                ("type_id", "=", self.condition_event_type_id.id),
                ("occurred_at", ">=", min(since.values())),
                ("state", "!=", "rejected"),
            ],
            ["partner_id", "occurred_at", "params"],
        )
        clauses = parse_params_filter(self.condition_event_filter, self.condition_event_type_id.params_structure)
        by_partner = defaultdict(list)
        for event in events:
            by_partner[event["partner_id"][0]].append(event)
        return {
            step.id
            for step in steps
            if any(
                event["occurred_at"] >= since[step.id] and params_match(clauses, event["params"])
                for event in by_partner[step.partner_id.id]
            )
        }

    def _message_traces(self, steps):
        """The trace of the condition's message node for each step's participant."""
        earlier = self.env["marketing.scenario.step"].search(
            [
                ("participant_id", "in", steps.participant_id.ids),
                ("node_id", "=", self.condition_node_id.id),
                ("trace_id", "!=", False),
            ]
        )
        by_participant = {step.participant_id.id: step.trace_id for step in earlier}
        return {step.id: by_participant.get(step.participant_id.id) for step in steps}

    def _condition_email(self, steps):
        status = self.condition_email_status
        checks = {
            "opened": lambda trace: bool(trace.open_datetime) or trace.trace_status in ("open", "reply"),
            "clicked": lambda trace: bool(trace.links_click_datetime),
            "replied": lambda trace: trace.trace_status == "reply" or bool(trace.reply_datetime),
            "bounced": lambda trace: trace.trace_status == "bounce",
        }
        return {step_id for step_id, trace in self._message_traces(steps).items() if trace and checks[status](trace)}

    def _condition_sms(self, steps):
        return {
            step_id for step_id, trace in self._message_traces(steps).items() if trace and trace.links_click_datetime
        }

    def _condition_segment(self, steps):
        """Yes for the contacts who are members of the segment now (the stored membership)."""
        # Read as the acting user (see _run_steps), like the contact filter.
        members = self.env["marketing.segment.member"].search(
            [("segment_id", "=", self.condition_segment_id.id), ("partner_id", "in", steps.partner_id.ids)]
        )
        member_ids = set(members.partner_id.ids)
        return {step.id for step in steps if step.partner_id.id in member_ids}

    def _condition_score(self, steps):
        return {
            step.id
            for step in steps
            if score_matches(
                self.score_operator,
                self.score_threshold,
                step.partner_id.engagement_score if step.partner_id.engagement_score_set else None,
            )
        }

    # Messages -----------------------------------------------------------

    def _params_context(self, steps):
        """The triggering events' params by contact, for the templates (``object.marketing_event_params``)."""
        return json.dumps({step.partner_id.id: step.participant_id.event_params or {} for step in steps})

    def _max_trace_id(self):
        self.env["mailing.trace"].flush_model()
        self.env.cr.execute("SELECT COALESCE(max(id), 0) FROM mailing_trace")
        return self.env.cr.fetchone()[0]

    def _map_traces(self, steps, since_trace_id):
        """Match the traces the sending just created to the steps, by contact."""
        traces = self.env["mailing.trace"].search(
            [
                ("id", ">", since_trace_id),
                ("mass_mailing_id", "=", self.mailing_id.id),
                ("model", "=", "res.partner"),
                ("res_id", "in", steps.partner_id.ids),
            ],
            order="id",
        )
        by_partner = defaultdict(list)
        for trace in traces:
            by_partner[trace.res_id].append(trace)
        failure_labels = dict(self.env["mailing.trace"]._fields["failure_type"]._description_selection(self.env))
        outcomes = {}
        for step in steps.sorted("id"):
            traces_left = by_partner[step.partner_id.id]
            trace = traces_left.pop(0) if traces_left else None
            if not trace:
                outcomes.update(self._skipped(step, self.env._("Not sent (no trace)")))
            elif trace.trace_status in ("cancel", "error"):
                reason = failure_labels.get(trace.failure_type) or trace.failure_type or trace.trace_status
                outcomes[step.id] = {"state": "skipped", "branch": "always", "result": reason, "trace_id": trace.id}
            else:
                outcomes[step.id] = {
                    "state": "done",
                    "branch": "always",
                    "result": self.env._("Sent"),
                    "trace_id": trace.id,
                }
        return outcomes

    def _run_email(self, steps):
        outcomes, sendable = self._skip_without_email(steps)
        opted_out, sendable = self._skip_opted_out(sendable, "email_normalized")
        outcomes.update(opted_out)
        if not sendable:
            return outcomes
        # sudo: the engine sends on behalf of the scenario, whoever runs the cron.
        mailing = self.mailing_id.sudo()
        partner_ids = list(dict.fromkeys(sendable.partner_id.ids))
        before = self._max_trace_id()
        # The template's links are shortened once for the whole batch: each
        # rendered mail then holds only short links, which mass_mailing's
        # shortening after rendering skips, where it would otherwise look up
        # the link tracker once per recipient. Links built per contact
        # (t-attf-href) only exist once rendered and are still shortened then.
        body = mailing._shorten_links(
            mailing._prepend_preview(mailing.body_html or "", mailing.preview),
            mailing._get_link_tracker_values(),
            blacklist=LINK_SHORTENING_BLACKLIST,
        )
        composer_values = {
            "auto_delete": not mailing.keep_archives,
            "author_id": (self.scenario_id.user_id.partner_id or self.env.user.partner_id).id,
            "attachment_ids": [(4, attachment.id) for attachment in mailing.attachment_ids],
            "body": body,
            "composition_mode": "mass_mail",
            "email_from": mailing.email_from,
            "mail_server_id": mailing.mail_server_id.id,
            "mass_mailing_id": mailing.id,
            "model": "res.partner",
            "record_name": False,
            "reply_to_force_new": mailing.reply_to_mode == "new",
            "subject": mailing.subject,
            "template_id": False,
        }
        if mailing.reply_to_mode == "new":
            composer_values["reply_to"] = mailing.reply_to
        composer = (
            self.env["mail.compose.message"]
            .sudo()
            .with_context(
                active_ids=partner_ids,
                default_composition_mode="mass_mail",
                marketing_scenario_send=True,
                marketing_event_params=self._params_context(sendable),
                **mailing._get_mass_mailing_context(),
            )
            .create(composer_values)
        )
        # One mail.mail batch for the whole step batch, without the composer's
        # intermediate commits: sending and the steps' states share the transaction.
        mail_values = list(composer._prepare_mail_values(partner_ids).values())
        mails = self.env["mail.mail"].sudo().create(mail_values)
        self.env["res.partner"].browse(partner_ids)._message_mail_after_hook(mails)
        outcomes.update(self._map_traces(sendable, before))
        return outcomes

    def _run_sms(self, steps):
        country = self.scenario_id.company_id.country_id
        Partner = self.env["res.partner"]
        numbers = {
            step.id: Partner._marketing_phone_e164(step.partner_id.mobile or step.partner_id.phone or "", country)
            if (step.partner_id.mobile or step.partner_id.phone)
            else None
            for step in steps
        }
        outcomes = self._skipped(steps.filtered(lambda step: not numbers[step.id]), self.env._("No valid phone number"))
        opted_out, sendable = self._skip_opted_out(steps.filtered(lambda step: numbers[step.id]), "phone_sanitized")
        outcomes.update(opted_out)
        if not sendable:
            return outcomes
        # sudo: see _run_email.
        mailing = self.mailing_id.sudo()
        partner_ids = list(dict.fromkeys(sendable.partner_id.ids))
        before = self._max_trace_id()
        composer = (
            self.env["sms.composer"]
            .sudo()
            .with_context(
                active_id=False,
                marketing_scenario_send=True,
                marketing_event_params=self._params_context(sendable),
            )
            .create(mailing._send_sms_get_composer_values(partner_ids))
        )
        composer._action_send_sms()
        outcomes.update(self._map_traces(sendable, before))
        return outcomes

    # Contact changes ------------------------------------------------------

    def _change_tags(self, partner_ids, add):
        """Add or remove this node's tags on the contacts with one statement on the relation table.

        The ORM would write the relation row by row and run the contacts'
        write overrides; a tag needs neither.
        """
        if not partner_ids or not self.tag_ids:
            return
        field = self.env["res.partner"]._fields["category_id"]
        self.env["res.partner"].flush_model(["category_id"])
        self.env["res.partner.category"].flush_model(["partner_ids"])
        if add:
            query = SQL(
                "INSERT INTO %(table)s (%(partner)s, %(tag)s)"
                " SELECT partner_id, tag_id FROM unnest(%(partners)s::int[]) partner_id, unnest(%(tags)s::int[]) tag_id"
                " ON CONFLICT DO NOTHING",
                table=SQL.identifier(field.relation),
                partner=SQL.identifier(field.column1),
                tag=SQL.identifier(field.column2),
                partners=partner_ids,
                tags=self.tag_ids.ids,
            )
        else:
            query = SQL(
                "DELETE FROM %(table)s WHERE %(partner)s = ANY(%(partners)s) AND %(tag)s = ANY(%(tags)s)",
                table=SQL.identifier(field.relation),
                partner=SQL.identifier(field.column1),
                tag=SQL.identifier(field.column2),
                partners=partner_ids,
                tags=self.tag_ids.ids,
            )
        self.env.cr.execute(query)
        self.env["res.partner"].invalidate_model(["category_id"])
        self.env["res.partner.category"].invalidate_model(["partner_ids"])

    def _run_tag_add(self, steps):
        self._change_tags(list(set(steps.partner_id.ids)), add=True)
        return self._done(steps, ", ".join(self.tag_ids.mapped("name")))

    def _run_tag_remove(self, steps):
        self._change_tags(list(set(steps.partner_id.ids)), add=False)
        return self._done(steps, ", ".join(self.tag_ids.mapped("name")))

    def _run_list_add(self, steps):
        outcomes, sendable = self._skip_without_email(steps)
        if not sendable:
            return outcomes
        mailing_list = self.mailing_list_id
        # sudo: list membership is managed by the scenario, not by the user running it.
        Contact = self.env["mailing.contact"].sudo()
        Subscription = self.env["mailing.subscription"].sudo()
        partners_by_email = {}
        for partner in sendable.partner_id:
            partners_by_email.setdefault(partner.email_normalized, partner)
        contacts = Contact.search([("email_normalized", "in", list(partners_by_email))])
        contact_by_email = {}
        for contact in contacts:
            contact_by_email.setdefault(contact.email_normalized, contact)
        subscriptions = Subscription.search(
            [
                ("list_id", "=", mailing_list.id),
                ("contact_id", "in", [contact.id for contact in contact_by_email.values()]),
            ]
        )
        # Whoever left the list decides: the scenario does not sign them up again.
        refused = set(subscriptions.filtered("opt_out").contact_id.mapped("email_normalized"))
        subscribed = subscriptions.contact_id
        Subscription.create(
            [
                {"contact_id": contact.id, "list_id": mailing_list.id}
                for contact in contact_by_email.values()
                if contact not in subscribed
            ]
        )
        Contact.create(
            [
                {"name": partner.name, "email": partner.email, "list_ids": [(4, mailing_list.id)]}
                for email, partner in partners_by_email.items()
                if email not in contact_by_email
            ]
        )
        opted_out = sendable.filtered(lambda step: step.partner_id.email_normalized in refused)
        outcomes.update(self._skipped(opted_out, self.env._("Opted out of this list")))
        outcomes.update(self._done(sendable - opted_out, mailing_list.name))
        return outcomes

    def _run_list_remove(self, steps):
        emails = [email for email in steps.partner_id.mapped("email_normalized") if email]
        # sudo: see _run_list_add.
        subscriptions = (
            self.env["mailing.subscription"]
            .sudo()
            .search(
                [
                    ("list_id", "=", self.mailing_list_id.id),
                    ("contact_id.email_normalized", "in", emails),
                    ("opt_out", "=", False),
                ]
            )
        )
        subscriptions.write({"opt_out": True})
        removed = set(subscriptions.contact_id.mapped("email_normalized"))
        outcomes = {}
        for step in steps:
            if step.partner_id.email_normalized in removed:
                outcomes.update(self._done(step, self.mailing_list_id.name))
            else:
                outcomes.update(self._skipped(step, self.env._("Not on the list")))
        return outcomes

    def _blacklist(self, model_name, field_name, values):
        # sudo: blacklists are technical; the scenario adds to them for its contacts.
        Blacklist = self.env[model_name].sudo().with_context(active_test=False)
        existing = Blacklist.search([(field_name, "in", values)])
        existing.filtered(lambda record: not record.active).write({"active": True})
        known = set(existing.mapped(field_name))
        Blacklist.create([{field_name: value} for value in dict.fromkeys(values) if value not in known])

    def _run_blacklist(self, steps):
        outcomes = {}
        emails, phones = [], []
        for step in steps:
            partner = step.partner_id
            parts = []
            if self.blacklist_email and partner.email_normalized:
                emails.append(partner.email_normalized)
                parts.append(partner.email_normalized)
            if self.blacklist_phone and partner.phone_sanitized:
                phones.append(partner.phone_sanitized)
                parts.append(partner.phone_sanitized)
            if parts:
                outcomes.update(self._done(step, ", ".join(parts)))
            else:
                outcomes.update(self._skipped(step, self.env._("Nothing to blacklist")))
        if emails:
            self._blacklist("mail.blacklist", "email", emails)
        if phones:
            self._blacklist("phone.blacklist", "number", phones)
        return outcomes

    def _run_score(self, steps):
        deltas = defaultdict(int)
        for step in steps:
            deltas[step.partner_id.id] += self.score_delta
        changes = self.env["res.partner"]._marketing_change_score(
            dict(deltas),
            self.score_reason,
            "scenario",
            origin_ref=self,
            # A scenario's score change moves only its company's score triggers.
            event_company_id=self.scenario_id.company_id.id,
        )
        return {
            step.id: {
                "state": "done",
                "branch": "always",
                "result": f"{self.score_delta:+d} → {changes.get(step.partner_id.id, (None, '?'))[1]}",
            }
            for step in steps
        }

    def _run_activity(self, steps):
        outcomes = {}
        fallback = self.activity_user_id
        values = []
        deadline = fields.Date.context_today(self) + timedelta(days=self.activity_days)
        model_id = self.env["ir.model"]._get_id("res.partner")
        for step in steps:
            user = step.partner_id.user_id or fallback
            if not user:
                outcomes.update(self._skipped(step, self.env._("No salesperson")))
                continue
            values.append(
                {
                    "res_model_id": model_id,
                    "res_id": step.partner_id.id,
                    "activity_type_id": self.activity_type_id.id,
                    "summary": self.activity_summary or self.activity_type_id.name,
                    "user_id": user.id,
                    "date_deadline": deadline,
                }
            )
            outcomes.update(self._done(step, user.name))
        # sudo: the activity is assigned to the salesperson whoever runs the scenario.
        self.env["mail.activity"].sudo().create(values)
        return outcomes

    def _field_update_value(self):
        field = self.env["res.partner"]._fields.get(self.field_id.name)
        if field is None:
            raise ValidationError(self.env._("%(field)s: no such contact field.", field=self.field_id.name))
        text = (self.field_value or "").strip()
        try:
            if not text:
                return False
            if field.type == "integer":
                return int(text)
            if field.type == "float":
                return float(text)
            if field.type == "boolean":
                return text.lower() in ("1", "true", "yes", "y")
            if field.type == "date":
                return fields.Date.to_date(text)
            if field.type == "datetime":
                return fields.Datetime.to_datetime(text)
            if field.type == "many2one":
                record = self.env[field.comodel_name].browse(int(text)).exists()
                if not record:
                    raise ValueError(f"no {field.comodel_name} with id {text}")
                return record.id
            if field.type == "selection":
                allowed = [key for key, _label in field._description_selection(self.env)]
                if text not in allowed:
                    raise ValueError(f"choose one of {', '.join(map(str, allowed))}")
            return text
        except ValueError as error:
            raise ValidationError(
                self.env._(
                    "New Value of %(node)s: %(value)r does not fit the field %(field)s (%(error)s).",
                    node=self.display_name,
                    value=text,
                    field=self.field_id.field_description,
                    error=error,
                )
            ) from error

    def _run_field_update(self, steps):
        value = self._field_update_value()
        # As the acting user: the ORM checks his rights on the contacts and the field.
        steps.partner_id.write({self.field_id.name: value})
        return self._done(steps, f"{self.field_id.field_description} = {self.field_value or ''}")

    def _run_server_action(self, steps):
        # Runs as the acting user: Odoo checks the action's groups or the
        # right to write these contacts, _check_rights the kind of action.
        partner_ids = steps.partner_id.ids
        self.server_action_id.with_context(
            active_model="res.partner", active_ids=partner_ids, active_id=partner_ids[0]
        ).run()
        return self._done(steps, self.server_action_id.name)

    # Webhook ----------------------------------------------------------------

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
                    if not 200 <= status < 300:
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

    # ------------------------------------------------------------------
    # Flow canvas
    # ------------------------------------------------------------------

    def _flow_cards(self):
        """The canvas's card of each node: kind, description, place in the tree and live statistics.

        Batch method: the statistics, the related records and the branch counts
        are read once for the whole recordset, whatever its size.
        """
        type_labels = dict(self._fields["node_type"]._description_selection(self.env))
        branch_counts = self._flow_branch_counts()
        cards = []
        for node in self:
            cards.append(
                {
                    "id": node.id,
                    "name": node.name or type_labels.get(node.node_type, ""),
                    "node_type": node.node_type,
                    "type_label": type_labels.get(node.node_type, ""),
                    "kind": node.kind,
                    "icon": FLOW_ICONS.get(node.node_type, "fa-circle-o"),
                    "description": node._flow_description(),
                    "parent_id": node.parent_id.id or False,
                    "branch": node.branch,
                    "split_weight": node.split_weight,
                    "arm_share": round(node.arm_share, 1),
                    "active": node.active,
                    "stats": node._flow_stats(branch_counts),
                }
            )
        return cards

    def _flow_branch_counts(self):
        """Done steps of the conditions and waits for an event by the branch they took: {(node id, branch): n}."""
        branching = self.filtered(lambda node: node.node_type in ("condition", "wait_event"))
        if not branching:
            return {}
        groups = self.env["marketing.scenario.step"]._read_group(
            [
                ("node_id", "in", branching.ids),
                ("is_test", "=", False),
                ("state", "=", "done"),
                ("branch", "in", ("yes", "no")),
            ],
            ["node_id", "branch"],
            ["__count"],
        )
        return {(node.id, branch): count for node, branch, count in groups}

    def _flow_stats(self, branch_counts):
        """The statistics that tell how this kind of node is doing, as [{name, label, value, tone}]."""
        self.ensure_one()
        node_type = self.node_type
        stats = []
        if self.kind == "wait":
            stats.append(("scheduled", self.env._("Waiting"), self.scheduled_count))
        if node_type in ("condition", "wait_event"):
            stats.append(("yes", self.env._("Yes"), branch_counts.get((self.id, "yes"), 0)))
            stats.append(("no", self.env._("No"), branch_counts.get((self.id, "no"), 0)))
        elif node_type == "email":
            stats += [
                ("sent", self.env._("Sent"), self.sent_count),
                ("opened", self.env._("Opened"), self.opened_count),
                ("clicked", self.env._("Clicked"), self.clicked_count),
            ]
            if self.bounced_count:
                stats.append(("bounced", self.env._("Bounced"), self.bounced_count))
        elif node_type == "sms":
            stats += [
                ("sent", self.env._("Sent"), self.sent_count),
                ("clicked", self.env._("Clicked"), self.clicked_count),
            ]
            if self.bounced_count:
                stats.append(("bounced", self.env._("Bounced"), self.bounced_count))
        elif self.kind == "wait":
            stats.append(("processed", self.env._("Done"), self.processed_count))
        else:
            if self.kind == "action" and self.scheduled_count:
                stats.append(("scheduled", self.env._("Scheduled"), self.scheduled_count))
            stats.append(("processed", self.env._("Done"), self.processed_count))
        if self.skipped_count:
            stats.append(("skipped", self.env._("Skipped"), self.skipped_count))
        if self.error_count:
            stats.append(("error", self.env._("Errors"), self.error_count))
        danger = {"error", "bounced"}
        return [
            {"name": name, "label": label, "value": value, "tone": "danger" if name in danger else ""}
            for name, label, value in stats
        ]

    def _flow_description(self):
        """One line saying what the node does, in the marketer's words."""
        self.ensure_one()
        node_type = self.node_type
        if node_type == "wait":
            timezone = self.scenario_id.timezone
            if self.wait_mode == "field":
                text = self.env._("Until the contact's %(field)s", field=self.wait_field_id.field_description or "?")
                if self.wait_yearly:
                    text = self.env._("%(text)s, every year", text=text)
            elif self.wait_mode == "date":
                text = (
                    self.env._(
                        "Until %(date)s",
                        date=format_datetime(self.env, self.wait_until, tz=timezone, dt_format="short"),
                    )
                    if self.wait_until
                    else self.env._("Until a date to choose")
                )
            else:
                text = self._flow_duration()
            if self.window_enabled:
                text = self.env._(
                    "%(text)s, sent between %(start)s and %(end)s",
                    text=text,
                    start=_format_hour(self.window_start),
                    end=_format_hour(self.window_end),
                )
            return text
        if node_type == "wait_event":
            text = self.env._(
                "%(event)s within %(duration)s",
                event=self.wait_event_type_id.name or self.env._("an event to choose"),
                duration=self._flow_duration(),
            )
            return f"{text} ({self.wait_event_filter})" if self.wait_event_filter else text
        if node_type == "condition":
            return self._flow_condition_description()
        if node_type == "split":
            arms = self.child_ids.filtered(lambda child: child.branch == "arm")
            return self.env._("%(count)s arms, weighted", count=len(arms))
        if node_type in ("email", "sms"):
            # sudo: the node's own mailing; scenario builders need no Email Marketing rights to see its subject.
            mailing = self.mailing_id.sudo()
            return mailing.subject or mailing.display_name or self.env._("No mailing yet")
        if node_type in ("tag_add", "tag_remove"):
            return ", ".join(self.tag_ids.mapped("name")) or self.env._("No tag chosen")
        if node_type in ("list_add", "list_remove"):
            return self.mailing_list_id.name or self.env._("No list chosen")
        if node_type == "blacklist":
            parts = [self.env._("email")] * self.blacklist_email + [self.env._("phone")] * self.blacklist_phone
            return ", ".join(parts) or self.env._("Nothing chosen")
        if node_type == "score":
            return f"{self.score_delta:+d} {self.score_reason or ''}".strip()
        if node_type == "webhook":
            return urlparse(self.webhook_url or "").hostname or self.env._("No URL yet")
        if node_type == "activity":
            return self.activity_summary or self.activity_type_id.name or self.env._("No activity type chosen")
        if node_type == "field_update":
            if not self.field_id:
                return self.env._("No field chosen")
            return f"{self.field_id.field_description} = {self.field_value or ''}"
        if node_type == "server_action":
            return self.server_action_id.name or self.env._("No server action chosen")
        if node_type == "exit":
            return self.env._("The contact leaves the scenario")
        return ""

    def _flow_duration(self):
        units = dict(self._fields["wait_unit"]._description_selection(self.env))
        return f"{self.wait_amount} {units.get(self.wait_unit or 'days', '').lower()}"

    def _flow_condition_description(self):
        condition_type = self.condition_type
        if condition_type == "event":
            event = self.condition_event_type_id.name or self.env._("an event to choose")
            if self.condition_event_period == "days":
                text = self.env._("%(event)s in the last %(days)s days", event=event, days=self.condition_event_days)
            else:
                text = self.env._("%(event)s since entry", event=event)
            return f"{text} ({self.condition_event_filter})" if self.condition_event_filter else text
        if condition_type in ("email", "sms"):
            statuses = dict(self._fields["condition_email_status"]._description_selection(self.env))
            status = (
                statuses.get(self.condition_email_status, "") if condition_type == "email" else self.env._("Clicked")
            )
            return self.env._(
                "%(message)s: %(status)s?",
                message=self.condition_node_id.display_name or self.env._("a message to choose"),
                status=status.lower(),
            )
        if condition_type == "segment":
            return self.env._(
                "In segment %(segment)s?", segment=self.condition_segment_id.name or self.env._("a segment to choose")
            )
        if condition_type == "score":
            operators = dict(self._fields["score_operator"]._description_selection(self.env))
            text = self.env._("Score %(operator)s", operator=operators.get(self.score_operator, ""))
            if self.score_operator not in ("empty", "not_empty"):
                text = f"{text} {self.score_threshold}"
            return text
        if not self.condition_domain or self.condition_domain.strip() == "[]":
            return self.env._("Every contact matches (no filter yet)")
        return self.env._("Contact matches %(domain)s", domain=shorten(self.condition_domain, 80, placeholder="…"))


def _format_hour(value):
    hours, minutes = divmod(round((value or 0) * 60), 60)
    return f"{hours:02d}:{minutes:02d}"
