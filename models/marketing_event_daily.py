from odoo import api
from odoo import fields
from odoo import models
from odoo.tools import SQL


class MarketingEventDaily(models.Model):
    """Events counted per type, company and day of receipt, for the days whose events were purged.

    Written only by the retention purge, in the transaction that deletes the
    events it counts: a day's events are either still in the log or counted
    here, never both. Figures users see add these counts to the live events.
    """

    _name = "marketing.event.daily"
    _description = "Marketing Events per Day"
    _order = "day desc, id desc"
    _log_access = False

    type_id = fields.Many2one(
        "marketing.event.type", string="Event Type", required=True, ondelete="cascade", index=True, readonly=True
    )
    company_id = fields.Many2one("res.company", ondelete="cascade", readonly=True)
    day = fields.Date(required=True, readonly=True)
    event_count = fields.Integer(string="Events", readonly=True)
    error_count = fields.Integer(string="Errors", readonly=True, help="Events in error or rejected.")

    def init(self):
        # The key of the purge's upsert: one row per type, company and day.
        self.env.cr.execute(
            """
            CREATE UNIQUE INDEX IF NOT EXISTS marketing_event_daily_key_uniq
                ON marketing_event_daily (type_id, COALESCE(company_id, 0), day)
            """
        )

    @api.model
    def _fold_events(self, event_ids):
        """Count these events (about to be deleted) into their days, in one statement."""
        if not event_ids:
            return
        self.env["marketing.event"].flush_model(["type_id", "company_id", "received_at", "state"])
        self.flush_model()
        self.env.cr.execute(
            SQL(
                """
                INSERT INTO marketing_event_daily AS daily (type_id, company_id, day, event_count, error_count)
                SELECT e.type_id, e.company_id, e.received_at::date, count(*),
                       count(*) FILTER (WHERE e.state IN ('error', 'rejected'))
                  FROM marketing_event e
                 WHERE e.id = ANY(%s)
                 GROUP BY e.type_id, e.company_id, e.received_at::date
                ON CONFLICT (type_id, COALESCE(company_id, 0), day) DO UPDATE
                   SET event_count = daily.event_count + EXCLUDED.event_count,
                       error_count = daily.error_count + EXCLUDED.error_count
                """,
                list(event_ids),
            )
        )
        self.invalidate_model()

    @api.model
    def _purged_counts(self, type_ids):
        """{type id: (events, errors)} of the purged days, as far as the user may read them."""
        return {
            event_type.id: (events, errors)
            for event_type, events, errors in self._read_group(
                [("type_id", "in", list(type_ids))], ["type_id"], ["event_count:sum", "error_count:sum"]
            )
        }
