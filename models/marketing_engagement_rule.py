from collections import defaultdict
from datetime import timedelta

from odoo import api
from odoo import fields
from odoo import models
from odoo.exceptions import ValidationError
from odoo.tools import SQL

from ..utils.params_filter import ParamsFilterError
from ..utils.params_filter import params_match
from ..utils.params_filter import parse_params_filter

# Scoring a score change would score its own consequence again, forever.
UNSCORABLE_EVENT_KEYS = ("score_changed",)


class MarketingEngagementRule(models.Model):
    _name = "marketing.engagement.rule"
    _description = "Engagement Score Rule"
    _order = "sequence, id"

    name = fields.Char(required=True, translate=True, help="Also the reason written in the score history.")
    sequence = fields.Integer(default=10)
    active = fields.Boolean(default=True)
    event_type_id = fields.Many2one(
        "marketing.event.type",
        required=True,
        ondelete="cascade",
        index=True,
        domain="[('scope', '=', 'contact'), ('key', 'not in', %s)]" % (list(UNSCORABLE_EVENT_KEYS),),
    )
    event_type_key = fields.Char(related="event_type_id.key")
    points = fields.Integer(required=True, default=1, help="Added to the contact's score; negative to take points.")
    params_filter = fields.Text(
        string="Parameter Filter",
        help='Only events whose parameters match count, e.g. total > 100 and category == "shoes". '
        "Leave empty to count every event of the type.",
    )
    params_conditions = fields.Json(
        compute="_compute_params_conditions",
        store=True,
        readonly=True,
        help="The parsed filter, with the value types of the event type's learned structure.",
    )
    once_per_days = fields.Integer(
        string="At Most Once Every (Days)",
        default=0,
        help="Count this rule at most once per contact in this many days; 0 counts every event.",
    )
    company_id = fields.Many2one(
        "res.company",
        index=True,
        default=lambda self: self.env.company,
        help="Leave empty to score the events of every company.",
    )
    params_structure_paths = fields.Text(related="event_type_id.params_structure_paths", string="Known Parameters")
    log_count = fields.Integer(string="Score Changes", compute="_compute_log_count")

    _sql_constraints = [
        ("points_not_zero", "CHECK(points <> 0)", "A score rule gives or takes at least one point."),
        ("once_per_days_positive", "CHECK(once_per_days >= 0)", "The number of days cannot be negative."),
    ]

    @api.depends("params_filter", "event_type_id")
    def _compute_params_conditions(self):
        for rule in self:
            try:
                rule.params_conditions = parse_params_filter(
                    rule.params_filter, rule.event_type_id.params_structure or {}
                )
            except ParamsFilterError:
                rule.params_conditions = []  # _check_params_filter refuses to save it and says why

    @api.constrains("params_filter", "event_type_id")
    def _check_params_filter(self):
        for rule in self:
            try:
                parse_params_filter(rule.params_filter, rule.event_type_id.params_structure or {})
            except ParamsFilterError as error:
                raise ValidationError(
                    self.env._("Parameter Filter of rule %(name)s: %(reason)s", name=rule.name, reason=error)
                ) from error

    @api.constrains("event_type_id")
    def _check_event_type(self):
        for rule in self:
            if rule.event_type_id.key in UNSCORABLE_EVENT_KEYS:
                raise ValidationError(
                    self.env._(
                        "Event Type of rule %(name)s: score changes cannot be scored, the rule would feed itself.",
                        name=rule.name,
                    )
                )
            if rule.event_type_id.scope != "contact":
                raise ValidationError(
                    self.env._(
                        "Event Type of rule %(name)s: %(type)s is a system event, it concerns no contact to score.",
                        name=rule.name,
                        type=rule.event_type_id.name,
                    )
                )

    def _compute_log_count(self):
        counts = dict(
            self.env["marketing.engagement.log"]._read_group(
                [("origin_ref", "in", [f"{self._name},{rule_id}" for rule_id in self.ids])],
                ["origin_ref"],
                ["__count"],
            )
        )
        for rule in self:
            # A reference groups by its "model,id" text.
            rule.log_count = counts.get(f"{self._name},{rule.id}", 0)

    def action_view_logs(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id(
            "marketing_event_automation.action_marketing_engagement_log"
        )
        action["domain"] = [("origin_ref", "=", f"{self._name},{self.id}")]
        action["display_name"] = self.env._("Score History: %(name)s", name=self.name)
        return action

    # ------------------------------------------------------------------
    # Scoring events (called by the event dispatcher)
    # ------------------------------------------------------------------

    def _applies_to_company(self, company_id):
        return not self.company_id or self.company_id.id == company_id

    @api.model
    def _apply_to_events(self, events, results):
        """Score a batch of events with every active rule of their types.

        One query finds the rules, one finds the recent applications of the
        "at most once every N days" rules for the batch's contacts, and one
        score change is made per rule: the number of queries does not grow
        with the batch.
        """
        events = events.filtered("partner_id")
        if not events:
            return
        # sudo: scoring is the dispatcher's own processing, done whoever
        # happens to run it; rules are read, never changed here.
        rules = self.sudo().search([("event_type_id", "in", events.type_id.ids)])
        if not rules:
            return
        now = fields.Datetime.now()
        last_applied = rules.filtered("once_per_days")._last_applications(events.partner_id.ids, now)
        default_company_id = self.env.company.id
        # (rule, company of the event) -> {partner id: points}: the score
        # changes carry the company of the events that caused them, so that
        # they move only that company's score-triggered scenarios.
        deltas = defaultdict(dict)
        for event in events.sorted(lambda event: (event.occurred_at, event.id)):
            company_id = event.company_id.id or event.partner_id.company_id.id or default_company_id
            for rule in rules:
                if rule.event_type_id != event.type_id or not rule._applies_to_company(company_id):
                    continue
                if not params_match(rule.params_conditions, event.params or {}):
                    continue
                partner_id = event.partner_id.id
                if rule.once_per_days:
                    previous = last_applied.get((rule.id, partner_id))
                    if previous and previous > now - timedelta(days=rule.once_per_days):
                        results[event.id]["score"].append(
                            self.env._(
                                "%(rule)s: not counted, already counted in the last %(days)s days",
                                rule=rule.name,
                                days=rule.once_per_days,
                            )
                        )
                        continue
                    last_applied[rule.id, partner_id] = now
                rule_deltas = deltas[rule, event.company_id.id or None]
                rule_deltas[partner_id] = rule_deltas.get(partner_id, 0) + rule.points
                results[event.id]["score"].append(f"{rule.name}: {rule.points:+d}")
        Partner = self.env["res.partner"].sudo()
        for (rule, event_company_id), rule_deltas in deltas.items():
            Partner._marketing_change_score(
                rule_deltas, rule.name, "rule", origin_ref=rule, event_company_id=event_company_id
            )

    def _last_applications(self, partner_ids, now):
        """{(rule id, partner id): last time the rule changed the contact's score} within the rules' windows."""
        if not self or not partner_ids:
            return {}
        Log = self.env["marketing.engagement.log"]
        Log.flush_model(["partner_id", "origin", "origin_ref", "changed_at"])
        self.env.cr.execute(
            SQL(
                """
                SELECT origin_ref, partner_id, max(changed_at)
                  FROM marketing_engagement_log
                 WHERE origin = 'rule'
                   AND origin_ref = ANY(%s)
                   AND partner_id = ANY(%s)
                   AND changed_at > %s
              GROUP BY origin_ref, partner_id
                """,
                [f"{self._name},{rule.id}" for rule in self],
                list(partner_ids),
                now - timedelta(days=max(self.mapped("once_per_days"))),
            )
        )
        return {
            (int(origin_ref.split(",")[1]), partner_id): changed_at
            for origin_ref, partner_id, changed_at in self.env.cr.fetchall()
        }
