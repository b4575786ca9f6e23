from collections import defaultdict
from datetime import timedelta
from textwrap import shorten

from odoo import api
from odoo import fields
from odoo import models
from odoo.exceptions import ValidationError
from odoo.tools.safe_eval import safe_eval

from ...utils.formatting import format_score_condition
from ...utils.params_filter import params_match
from ...utils.params_filter import parse_params_filter
from ...utils.scores import SCORE_OPERATORS
from ...utils.scores import score_matches
from ...utils.trace_status import trace_has_status

CONDITION_TYPES = [
    ("domain", "Contact matches a filter"),
    ("event", "An event happened"),
    ("email", "A previous email was..."),
    ("sms", "A previous SMS was clicked"),
    ("score", "Engagement score"),
    ("segment", "Contact is in a segment"),
]
EMAIL_STATUSES = [("opened", "Opened"), ("clicked", "Clicked"), ("replied", "Replied"), ("bounced", "Bounced")]
# How much of a contact filter the canvas shows.
DOMAIN_SUMMARY_LENGTH = 80


class MarketingScenarioNode(models.Model):
    """Conditions: yes or no for each contact, from a filter, an event, an earlier message or the score."""

    _inherit = "marketing.scenario.node"

    node_type = fields.Selection(selection_add=[("condition", "Condition")], ondelete={"condition": "cascade"})
    condition_type = fields.Selection(CONDITION_TYPES, default="domain")
    condition_domain = fields.Char(string="Contact Filter", default="[]")
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
    condition_segment_id = fields.Many2one("marketing.segment", string="Segment", ondelete="restrict")

    @api.model
    def _node_type_info(self):
        return {
            **super()._node_type_info(),
            "condition": {
                "family": "condition",
                "stored_after_run": True,
                "kind": "condition",
                "icon": "fa-code-fork",
                "fields": (
                    "condition_type",
                    "condition_domain",
                    "condition_event_type_id",
                    "condition_event_filter",
                    "condition_event_period",
                    "condition_event_days",
                    "condition_node_id",
                    "condition_email_status",
                    "score_operator",
                    "score_threshold",
                    "condition_segment_id",
                ),
                "branches": ("yes", "no"),
                "problems": "_condition_problems",
                "describe": "_condition_description",
                "stats": "_flow_stats_branches",
            },
        }

    @api.constrains("condition_event_filter", "condition_event_type_id")
    def _check_condition_event_filter(self):
        self._check_params_filter("condition_event_filter", "condition_event_type_id")

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

    def _condition_problems(self):
        problems = []
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
        return problems

    # Handler: the condition's type names the method that finds the steps on the yes branch.

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

    def _condition_message_status(self, steps, status):
        return {
            step_id
            for step_id, trace in self._message_traces(steps).items()
            if trace and trace_has_status(trace, status)
        }

    def _condition_email(self, steps):
        return self._condition_message_status(steps, self.condition_email_status)

    def _condition_sms(self, steps):
        return self._condition_message_status(steps, "clicked")

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

    def _condition_segment(self, steps):
        """Yes for the contacts who are members of the segment now (the stored membership)."""
        # Read as the acting user (see _run_steps), like the contact filter.
        members = self.env["marketing.segment.member"].search(
            [("segment_id", "=", self.condition_segment_id.id), ("partner_id", "in", steps.partner_id.ids)]
        )
        member_ids = set(members.partner_id.ids)
        return {step.id for step in steps if step.partner_id.id in member_ids}

    # Flow canvas: the condition's type names the method that describes it.

    def _condition_description(self):
        return getattr(self, f"_describe_condition_{self.condition_type or 'domain'}")()

    def _describe_condition_event(self):
        event = self.condition_event_type_id.name or self.env._("an event to choose")
        if self.condition_event_period == "days":
            text = self.env._("%(event)s in the last %(days)s days", event=event, days=self.condition_event_days)
        else:
            text = self.env._("%(event)s since entry", event=event)
        return f"{text} ({self.condition_event_filter})" if self.condition_event_filter else text

    def _describe_condition_message(self, status):
        return self.env._(
            "%(message)s: %(status)s?",
            message=self.condition_node_id.display_name or self.env._("a message to choose"),
            status=status.lower(),
        )

    def _describe_condition_email(self):
        statuses = dict(self._fields["condition_email_status"]._description_selection(self.env))
        return self._describe_condition_message(statuses.get(self.condition_email_status, ""))

    def _describe_condition_sms(self):
        return self._describe_condition_message(self.env._("Clicked"))

    def _describe_condition_segment(self):
        return self.env._(
            "In segment %(segment)s?", segment=self.condition_segment_id.name or self.env._("a segment to choose")
        )

    def _describe_condition_score(self):
        operators = dict(self._fields["score_operator"]._description_selection(self.env))
        return format_score_condition(self.env, operators, self.score_operator, self.score_threshold)

    def _describe_condition_domain(self):
        if not self.condition_domain or self.condition_domain.strip() == "[]":
            return self.env._("Every contact matches (no filter yet)")
        return self.env._(
            "Contact matches %(domain)s",
            domain=shorten(self.condition_domain, DOMAIN_SUMMARY_LENGTH, placeholder="…"),
        )
