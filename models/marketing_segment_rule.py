from datetime import timedelta

from odoo import api
from odoo import fields
from odoo import models
from odoo.exceptions import ValidationError
from odoo.tools import SQL

from ..utils.constants import COMPARISONS
from ..utils.params_filter import PATH_PATTERN
from ..utils.params_filter import ParamsFilterError
from ..utils.params_filter import conditions_sql
from ..utils.params_filter import params_values_sql
from ..utils.params_filter import parse_params_filter

AGGREGATES = [
    ("count", "Number of events"),
    ("sum", "Sum of a parameter"),
    ("min", "Smallest value of a parameter"),
    ("max", "Largest value of a parameter"),
]
RULE_OPERATORS = [(">=", "at least"), (">", "more than"), ("=", "exactly"), ("<=", "at most"), ("<", "less than")]
WINDOWS = [("ever", "Ever"), ("days", "In the last days")]


class MarketingSegmentRule(models.Model):
    _name = "marketing.segment.rule"
    _description = "Marketing Segment Event Rule"
    _order = "segment_id, sequence, id"

    segment_id = fields.Many2one("marketing.segment", required=True, ondelete="cascade", index=True)
    company_id = fields.Many2one(related="segment_id.company_id", store=True, index=True)
    sequence = fields.Integer(default=10)
    negate = fields.Selection(
        [("did", "Did"), ("did_not", "Did not")],
        string="Did / Did Not",
        required=True,
        default="did",
        help="'Did not' keeps the contacts for whom the rule does not hold.",
    )
    event_type_id = fields.Many2one(
        "marketing.event.type",
        string="Event",
        required=True,
        ondelete="restrict",
        domain=[("use_for_segmentation", "=", True), ("scope", "=", "contact")],
    )
    params_filter = fields.Char(
        string="Parameters Filter", help='Only events whose parameters match, e.g. total > 100 and category == "shoes".'
    )
    aggregate = fields.Selection(AGGREGATES, string="Measure", required=True, default="count")
    aggregate_path = fields.Char(string="Parameter", help="The numeric parameter to add up or compare, e.g. total.")
    operator = fields.Selection(RULE_OPERATORS, required=True, default=">=")
    threshold = fields.Float(string="Value", default=1)
    window = fields.Selection(WINDOWS, string="When", required=True, default="ever")
    window_days = fields.Integer(string="Days", default=30)
    summary = fields.Char(compute="_compute_summary")

    @api.depends(
        "negate",
        "event_type_id",
        "params_filter",
        "aggregate",
        "aggregate_path",
        "operator",
        "threshold",
        "window",
        "window_days",
    )
    def _compute_summary(self):
        operators = dict(self._fields["operator"]._description_selection(self.env))
        for rule in self:
            event = rule.event_type_id.key or "?"
            if rule.params_filter:
                event = f"{event} ({rule.params_filter})"
            threshold = f"{rule.threshold:g}"
            if rule.aggregate == "count":
                measure = self.env._(
                    "%(event)s %(operator)s %(count)s times",
                    event=event,
                    count=threshold,
                    operator=operators.get(rule.operator, ""),
                )
            else:
                measure = self.env._(
                    "%(aggregate)s of %(event)s.%(path)s %(operator)s %(value)s",
                    aggregate=rule.aggregate,
                    event=event,
                    path=rule.aggregate_path or "?",
                    operator=rule.operator,
                    value=threshold,
                )
            when = (
                self.env._("in the last %(days)s days", days=rule.window_days)
                if rule.window == "days"
                else self.env._("ever")
            )
            prefix = self.env._("did not") if rule.negate == "did_not" else self.env._("did")
            rule.summary = f"{prefix} {measure} {when}"

    @api.constrains("event_type_id", "params_filter", "aggregate", "aggregate_path", "window", "window_days")
    def _check_rule(self):
        for rule in self:
            if not rule.event_type_id.use_for_segmentation:
                raise ValidationError(
                    self.env._(
                        "Event: %(type)s is not used for contact segmentation; switch it on in the event type first.",
                        type=rule.event_type_id.name,
                    )
                )
            try:
                rule._conditions()
            except ParamsFilterError as error:
                raise ValidationError(self.env._("Parameters Filter: %(error)s", error=error)) from error
            if rule.aggregate != "count" and not PATH_PATTERN.match(rule.aggregate_path or ""):
                raise ValidationError(
                    self.env._("Parameter: name the numeric parameter to measure, e.g. total or items[].price.")
                )
            if rule.window == "days" and rule.window_days < 1:
                raise ValidationError(self.env._("Days: a time window is at least one day long."))

    def _conditions(self):
        return parse_params_filter(self.params_filter, self.event_type_id.params_structure)

    def _holds_for_no_event(self):
        """Whether a contact without any matching event satisfies the measure (count 0, sum 0)."""
        if self.aggregate in ("min", "max"):
            return False
        return COMPARISONS[self.operator](0, self.threshold)

    def _measure_sql(self):
        if self.aggregate == "count":
            return SQL("count(*)")
        per_event = SQL(
            "(SELECT %s(v) FROM (%s) AS values_of_event)",
            SQL(self.aggregate),
            params_values_sql(SQL.identifier("e", "params"), self.aggregate_path, "number"),
        )
        if self.aggregate == "sum":
            # Events without the parameter add nothing: their sum is 0, not unknown.
            return SQL("COALESCE(sum(%s), 0)", per_event)
        return SQL("%s(%s)", SQL(self.aggregate), per_event)

    def _event_conditions_sql(self):
        """SQL conditions on the event ``e`` that this rule measures, whenever it occurred."""
        self.ensure_one()
        return [
            SQL("e.type_id = %s", self.event_type_id.id),
            SQL("e.partner_id IS NOT NULL"),
            SQL("e.state <> 'rejected'"),
            # A shared contact's events in another company are that company's business.
            SQL("(e.company_id IS NULL OR e.company_id = %s)", self.segment_id.company_id.id),
            conditions_sql(self._conditions(), SQL.identifier("e", "params")),
        ]

    def _folded_measure_sql(self):
        """The measure of the purged days' rows ``d`` (see marketing.segment.rule.daily), per contact."""
        if self.aggregate == "count":
            return SQL("sum(d.event_count)")
        if self.aggregate == "sum":
            return SQL("COALESCE(sum(d.value), 0)")
        return SQL("%s(d.value)", SQL(self.aggregate))

    def _combined_measure_sql(self):
        """The measure of the live events and the purged days together, from their measures ``m.measure``."""
        return SQL("%s(m.measure)", SQL(self.aggregate if self.aggregate in ("min", "max") else "sum"))

    def _partner_condition_sql(self, partner_column, now, partner_ids=None):
        """SQL: the contact in ``partner_column`` satisfies this rule at ``now``.

        The events are grouped by contact once: contacts measured as holding
        (or, when no event at all satisfies the measure, as not holding) are
        read with one aggregate over the type's events in the window, and the
        measures of the purged days kept for the rule.
        """
        self.ensure_one()
        conditions = self._event_conditions_sql()
        folded_conditions = [SQL("d.rule_id = %s", self.id)]
        if self.window == "days":
            since = now - timedelta(days=self.window_days)
            conditions.append(SQL("e.occurred_at >= %s", since))
            # The purged days count whole: the window's first day is counted in full.
            folded_conditions.append(SQL("d.day >= %s", since.date()))
        if partner_ids is not None:
            conditions.append(SQL("e.partner_id = ANY(%s)", list(partner_ids)))
            folded_conditions.append(SQL("d.partner_id = ANY(%s)", list(partner_ids)))
        measure_holds = SQL("%s %s %s", self._combined_measure_sql(), SQL(self.operator), self.threshold)
        zero_holds = self._holds_for_no_event()
        # An event is either in the log or measured in the daily rows, never
        # both: the purge measures and deletes it in one transaction.
        grouped = SQL(
            """
            SELECT m.partner_id FROM (
                SELECT e.partner_id, %s AS measure FROM marketing_event e WHERE %s GROUP BY e.partner_id
                UNION ALL
                SELECT d.partner_id, %s FROM marketing_segment_rule_daily d WHERE %s GROUP BY d.partner_id
            ) AS m GROUP BY m.partner_id HAVING %s
            """,
            self._measure_sql(),
            SQL(" AND ").join(conditions),
            self._folded_measure_sql(),
            SQL(" AND ").join(folded_conditions),
            SQL("NOT COALESCE(%s, FALSE)", measure_holds) if zero_holds else measure_holds,
        )
        holds = zero_holds != (self.negate == "did_not")
        return SQL("%s %s (%s)", partner_column, SQL("NOT IN") if holds else SQL("IN"), grouped)

    def write(self, vals):
        definition = ("event_type_id", "params_filter", "aggregate", "aggregate_path")
        before = {}
        if set(definition) & set(vals):
            before = {rule.id: tuple(rule[name] for name in definition) for rule in self}
        result = super().write(vals)
        redefined = self.filtered(
            lambda rule: rule.id in before and before[rule.id] != tuple(rule[name] for name in definition)
        )
        if redefined:
            # The purged days were measured with the rule's former definition,
            # which says nothing of the new one. sudo: the rule's own
            # bookkeeping, which nobody writes by hand.
            self.env["marketing.segment.rule.daily"].sudo().search([("rule_id", "in", redefined.ids)]).unlink()
        return result
