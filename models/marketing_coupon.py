from odoo import api
from odoo import fields
from odoo import models
from odoo.tools import SQL
from odoo.tools import create_index

COUPON_STATES = [("available", "Available"), ("given", "Handed out"), ("redeemed", "Redeemed")]
COUPON_STATUSES = [*COUPON_STATES, ("expired", "Expired")]


class MarketingCoupon(models.Model):
    _name = "marketing.coupon"
    _description = "Coupon Code"
    _order = "id"
    _rec_name = "code"
    # Written by the hundred thousand (generation, imports) and claimed in bulk
    # by the engine: given_at and redeemed_at say when, the list says who.
    _log_access = False

    list_id = fields.Many2one("marketing.coupon.list", required=True, ondelete="cascade", readonly=True)
    company_id = fields.Many2one(
        "res.company", related="list_id.company_id", store=True, index=True, readonly=True, precompute=True
    )
    code = fields.Char(required=True, readonly=True)
    state = fields.Selection(COUPON_STATES, required=True, default="available", readonly=True)
    status = fields.Selection(
        COUPON_STATUSES, compute="_compute_status", help="The state, or Expired once the list's expiry date passed."
    )
    # Cascade, as every link to a contact: deleting a contact deletes the codes it held.
    partner_id = fields.Many2one(
        "res.partner", string="Contact", readonly=True, ondelete="cascade", index="btree_not_null"
    )
    scenario_id = fields.Many2one(
        "marketing.scenario", string="Given by Scenario", readonly=True, ondelete="set null", index="btree_not_null"
    )
    node_id = fields.Many2one("marketing.scenario.node", string="Given by Node", readonly=True, ondelete="set null")
    given_at = fields.Datetime(readonly=True)
    redeemed_at = fields.Datetime(readonly=True)
    redeemed_event_id = fields.Many2one(
        "marketing.event",
        string="Redemption Event",
        readonly=True,
        ondelete="set null",
        # Deleting an event (retention) looks up the codes it redeemed.
        index="btree_not_null",
    )
    # The loyalty.card behind the code when the list takes its codes from a
    # loyalty program; an id, not a Many2one: Loyalty may not be installed.
    loyalty_card_id = fields.Integer(readonly=True, index="btree_not_null")

    # One code once per list, whatever writes it (generation, import,
    # Loyalty): the inserts use ON CONFLICT DO NOTHING on it.
    _sql_constraints = [("list_code_uniq", "UNIQUE(list_id, code)", "A code is once in its list.")]

    def init(self):
        # The hand-out takes the first available codes of a list off this index.
        create_index(
            self.env.cr,
            "marketing_coupon_available_idx",
            self._table,
            ["list_id", "id"],
            where="state = 'available'",
        )
        create_index(self.env.cr, "marketing_coupon_list_state_idx", self._table, ["list_id", "state"])

    @api.depends("state", "list_id.expiry_date")
    def _compute_status(self):
        today = fields.Date.context_today(self)
        for coupon in self:
            expiry = coupon.list_id.expiry_date
            expired = coupon.state != "redeemed" and expiry and expiry < today
            coupon.status = "expired" if expired else coupon.state

    @api.model
    def _redeem_from_events(self, events, results):
        """Mark the codes named by ``coupon_redeemed`` events as redeemed, with one statement.

        A code is looked up in the lists of the event's company (and shared
        lists); an unknown or already redeemed code is recorded on the event,
        which stays processed: the shop's sale happened either way.
        """
        by_code = {}
        for event in events:
            code = (event.params or {}).get("code") if isinstance(event.params, dict) else None
            if isinstance(code, str) and code.strip():
                key = (code.strip(), event.company_id.id or 0)
                if key in by_code:
                    # A second report of the same code in one batch: the first redeems it.
                    results[event.id]["coupon"].append(self.env._("%(code)s: already redeemed", code=key[0]))
                else:
                    by_code[key] = event
            else:
                results[event.id]["coupon"].append(self.env._("no code in the event's params"))
        if not by_code:
            return
        self.flush_model()
        self.env["marketing.coupon.list"].flush_model(["company_id"])
        codes, companies, event_ids, partners, moments = [], [], [], [], []
        for (code, company_id), event in by_code.items():
            codes.append(code)
            companies.append(company_id)
            event_ids.append(event.id)
            partners.append(event.partner_id.id or 0)
            moments.append(event.occurred_at)
        self.env.cr.execute(
            SQL(
                """
                WITH v AS (
                    SELECT * FROM unnest(%(codes)s::varchar[], %(companies)s::int[], %(events)s::int[],
                                         %(partners)s::int[], %(moments)s::timestamp[])
                        AS v (code, company_id, event_id, partner_id, occurred_at)
                ), hit AS (
                    SELECT DISTINCT ON (v.event_id) c.id, v.event_id, v.partner_id, v.occurred_at
                      FROM v
                      JOIN marketing_coupon c ON c.code = v.code AND c.state != 'redeemed'
                      JOIN marketing_coupon_list l ON l.id = c.list_id
                     WHERE l.company_id IS NULL OR l.company_id = v.company_id
                     ORDER BY v.event_id, c.id
                )
                UPDATE marketing_coupon c
                   SET state = 'redeemed', redeemed_at = hit.occurred_at, redeemed_event_id = hit.event_id,
                       partner_id = COALESCE(c.partner_id, NULLIF(hit.partner_id, 0))
                  FROM hit
                 WHERE c.id = hit.id
             RETURNING hit.event_id, c.code
                """,
                codes=codes,
                companies=companies,
                events=event_ids,
                partners=partners,
                moments=moments,
            )
        )
        redeemed = dict(self.env.cr.fetchall())
        self.invalidate_model(["state", "redeemed_at", "redeemed_event_id", "partner_id"])
        self.env["marketing.coupon.list"].invalidate_model()
        for (code, _company_id), event in by_code.items():
            if event.id in redeemed:
                results[event.id]["coupon"].append(self.env._("%(code)s redeemed", code=code))
            else:
                results[event.id]["coupon"].append(self.env._("%(code)s: unknown or already redeemed code", code=code))
