from odoo import api
from odoo import fields
from odoo import models
from odoo.tools import SQL


class MarketingSegmentRuleDaily(models.Model):
    """A segment rule's measure of each contact's purged events, per day they occurred.

    A rule measures events through its parameters filter and parameter, which
    no generic aggregate answers: the retention purge measures the events it
    deletes for every rule of their type, in the same transaction. The rule
    then reads these rows for the purged days and the log for the rest. A
    rule created after a purge, or whose event, filter or measure changed,
    knows only the events still in the log.
    """

    _name = "marketing.segment.rule.daily"
    _description = "Segment Rule Measure per Contact and Day"
    _order = "day desc, id desc"
    _log_access = False

    rule_id = fields.Many2one("marketing.segment.rule", required=True, ondelete="cascade", readonly=True)
    company_id = fields.Many2one("res.company", readonly=True, index=True)
    partner_id = fields.Many2one("res.partner", string="Contact", required=True, ondelete="cascade", readonly=True)
    day = fields.Date(required=True, readonly=True)
    event_count = fields.Integer(string="Events", readonly=True)
    value = fields.Float(readonly=True, help="The sum, smallest or largest value of the rule's parameter that day.")

    def init(self):
        # The key of the purge's upsert, and the rule's reading by contact.
        self.env.cr.execute(
            """
            CREATE UNIQUE INDEX IF NOT EXISTS marketing_segment_rule_daily_key_uniq
                ON marketing_segment_rule_daily (rule_id, partner_id, day)
            """
        )
        # Indexed for the ON DELETE CASCADE of a contact's deletion.
        self.env.cr.execute(
            """
            CREATE INDEX IF NOT EXISTS marketing_segment_rule_daily_partner_idx
                ON marketing_segment_rule_daily (partner_id)
            """
        )

    @api.model
    def _fold_events(self, event_ids):
        """Measure these events (about to be deleted) for every rule of their types: one statement per rule."""
        if not event_ids:
            return
        Event = self.env["marketing.event"]
        Event.flush_model()
        self.flush_model()
        self.env.cr.execute(
            SQL(
                "SELECT DISTINCT type_id FROM marketing_event WHERE id = ANY(%s) AND partner_id IS NOT NULL",
                list(event_ids),
            )
        )
        type_ids = [row[0] for row in self.env.cr.fetchall()]
        if not type_ids:
            return
        # sudo: the purge measures for every rule, whoever may read it.
        rules = self.env["marketing.segment.rule"].sudo().search([("event_type_id", "in", type_ids)])
        for rule in rules:
            combine = {
                "count": SQL("NULL"),
                "sum": SQL("daily.value + EXCLUDED.value"),
                "min": SQL("LEAST(daily.value, EXCLUDED.value)"),
                "max": SQL("GREATEST(daily.value, EXCLUDED.value)"),
            }[rule.aggregate]
            self.env.cr.execute(
                SQL(
                    """
                    INSERT INTO marketing_segment_rule_daily AS daily
                           (rule_id, company_id, partner_id, day, event_count, value)
                    SELECT %(rule)s, %(company)s, e.partner_id, e.occurred_at::date, count(*), %(value)s
                      FROM marketing_event e
                     WHERE e.id = ANY(%(ids)s) AND %(conditions)s
                     GROUP BY e.partner_id, e.occurred_at::date
                    ON CONFLICT (rule_id, partner_id, day) DO UPDATE
                       SET event_count = daily.event_count + EXCLUDED.event_count, value = %(combine)s
                    """,
                    rule=rule.id,
                    company=rule.company_id.id,
                    value=SQL("NULL::float") if rule.aggregate == "count" else rule._measure_sql(),
                    ids=list(event_ids),
                    conditions=SQL(" AND ").join(rule._event_conditions_sql()),
                    combine=combine,
                )
            )
        self.invalidate_model()
