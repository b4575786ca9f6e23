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
from urllib.parse import urlparse

import pytz
import requests
from dateutil.relativedelta import relativedelta

from odoo import api
from odoo import fields
from odoo import models
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
            node._field_update_value()

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
        steps.write({"state": "canceled", "result": reason, "processed_at": fields.Datetime.now()})
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

    def _run_steps(self, steps):
        self.ensure_one()
        handler = getattr(self, f"_run_{self.node_type}")
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

    def _condition_domain(self, steps):
        domain = safe_eval(self.condition_domain or "[]", {"context_today": fields.Date.context_today(self)})
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
        members = (
            self.env["marketing.segment.member"]
            .sudo()  # sudo: the engine reads memberships of its own scenario's segment.
            .search([("segment_id", "=", self.condition_segment_id.id), ("partner_id", "in", steps.partner_id.ids)])
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
            dict(deltas), self.score_reason, "scenario", origin_ref=self
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
        steps.partner_id.write({self.field_id.name: value})
        return self._done(steps, f"{self.field_id.field_description} = {self.field_value or ''}")

    def _run_server_action(self, steps):
        partner_ids = steps.partner_id.ids
        self.server_action_id.with_context(
            active_model="res.partner", active_ids=partner_ids, active_id=partner_ids[0]
        ).run()
        return self._done(steps, self.server_action_id.name)

    # Webhook ----------------------------------------------------------------

    def _check_webhook_url(self, url):
        """Refuse what is not http(s), and private or loopback hosts unless the administrator allows them."""
        parsed = urlparse(url or "")
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise UserError(self.env._("URL: give an http:// or https:// address"))
        if self.env["ir.config_parameter"].sudo().get_param(ALLOW_PRIVATE_PARAM) == "1":
            return
        try:
            addresses = {info[4][0] for info in socket.getaddrinfo(parsed.hostname, parsed.port or 443)}
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
                    timeout=max(self.webhook_timeout, 1),
                    allow_redirects=False,
                )
                status = response.status_code
                if not 200 <= status < 300:
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
