from collections import defaultdict

from odoo import api
from odoo import fields
from odoo import models
from odoo.exceptions import ValidationError
from odoo.tools import SQL
from odoo.tools.safe_eval import safe_eval

from ..utils.params_filter import init_params_sql_functions


class MarketingSegment(models.Model):
    _name = "marketing.segment"
    _description = "Marketing Segment"
    _order = "name, id"

    name = fields.Char(required=True, translate=True)
    active = fields.Boolean(default=True)
    company_id = fields.Many2one("res.company", required=True, index=True, default=lambda self: self.env.company)
    description = fields.Text(translate=True)
    contact_domain = fields.Char(
        string="Contact Filter", default="[]", help="Only contacts matching this filter can be members."
    )
    logic = fields.Selection(
        [("and", "All rules hold"), ("or", "Any rule holds")],
        string="Combine Rules",
        required=True,
        default="and",
    )
    rule_ids = fields.One2many("marketing.segment.rule", "segment_id", string="Event Rules", copy=True)
    event_type_ids = fields.Many2many(
        "marketing.event.type", compute="_compute_event_type_ids", string="Event Types Used"
    )
    member_ids = fields.One2many("marketing.segment.member", "segment_id", string="Memberships")
    member_count = fields.Integer(string="Members", compute="_compute_member_count")
    refreshed_at = fields.Datetime(
        string="Last Full Pass", readonly=True, copy=False, help="Time-window rules are checked again at each pass."
    )

    def init(self):
        init_params_sql_functions(self.env.cr)

    @api.depends("rule_ids.event_type_id")
    def _compute_event_type_ids(self):
        for segment in self:
            segment.event_type_ids = segment.rule_ids.event_type_id

    def _compute_member_count(self):
        counts = dict(
            self.env["marketing.segment.member"]
            .sudo()  # sudo: counting rows of the segments the user reads; the list shows no contact.
            ._read_group([("segment_id", "in", self.ids)], ["segment_id"], ["__count"])
        )
        for segment in self:
            segment.member_count = counts.get(segment._origin, 0)

    @api.constrains("contact_domain")
    def _check_contact_domain(self):
        for segment in self:
            try:
                self.env["res.partner"].search_count(segment._contact_domain(), limit=1)
            except Exception as error:
                raise ValidationError(
                    self.env._("Contact Filter: %(error)s", error=str(error) or error.__class__.__name__)
                ) from error

    @api.model_create_multi
    def create(self, vals_list):
        segments = super().create(vals_list)
        segments._sync_members()
        return segments

    def write(self, vals):
        result = super().write(vals)
        if {"contact_domain", "logic", "rule_ids", "active", "company_id"} & set(vals):
            self._sync_members()
        return result

    # ------------------------------------------------------------------
    # Who is a member
    # ------------------------------------------------------------------

    def _contact_domain(self):
        self.ensure_one()
        domain = safe_eval(self.contact_domain or "[]", {"context_today": fields.Date.context_today(self)})
        return [*domain, ("company_id", "in", [self.company_id.id, False])]

    def _matching_sql(self, partner_ids=None, now=None):
        """SQL selecting ``id`` of the contacts that match this segment now (among ``partner_ids`` if given)."""
        self.ensure_one()
        now = now or fields.Datetime.now()
        # sudo: a segment's members do not depend on who looks at it; the
        # contact filter is the marketer's own and checked when saved.
        partners = self.env["res.partner"].sudo().with_context(active_test=True)
        domain = self._contact_domain()
        if partner_ids is not None:
            domain = [("id", "in", list(partner_ids)), *domain]
        query = partners._search(domain)
        rules = [
            rule._partner_condition_sql(SQL.identifier("p", "id"), now, partner_ids) for rule in self.rule_ids.sudo()
        ]
        condition = SQL(" AND ") if self.logic == "and" else SQL(" OR ")
        return SQL(
            "SELECT p.id FROM res_partner p WHERE p.id IN (%s) AND (%s)",
            query.subselect(),
            condition.join(rules) if rules else SQL("TRUE"),
        )

    def _count_matching(self):
        """How many contacts match this segment now, counted in the database."""
        self.ensure_one()
        self.env["marketing.event"].flush_model()
        self.env["res.partner"].flush_model()
        self.env.cr.execute(SQL("SELECT count(*) FROM (%s) AS matching", self._matching_sql()))
        return self.env.cr.fetchone()[0]

    def _sync_members(self, partner_ids=None, emit=False):
        """Bring the stored membership up to date (for ``partner_ids`` only, when given).

        One statement per segment inserts the contacts that now match and
        deletes those that no longer do; with ``emit``, each change is logged
        as a ``segment_entered`` or ``segment_left`` event, all in one insert.
        Returns ``{segment id: (entered partner ids, left partner ids)}``.
        """
        changes = {}
        if partner_ids is not None and not partner_ids:
            return changes
        self.env["marketing.event"].flush_model()
        self.env["res.partner"].flush_model()
        self.env["marketing.segment.member"].flush_model()
        now = fields.Datetime.now()
        cr = self.env.cr
        for segment in self:
            member_scope = SQL("TRUE") if partner_ids is None else SQL("m.partner_id = ANY(%s)", list(partner_ids))
            matching = (
                segment._matching_sql(partner_ids, now) if segment.active else SQL("SELECT NULL::int AS id WHERE FALSE")
            )
            cr.execute(
                SQL(
                    """
                    WITH matching AS (%(matching)s),
                    entered AS (
                        INSERT INTO marketing_segment_member (segment_id, partner_id, company_id, entered_at)
                        SELECT %(segment)s, matching.id, %(company)s, %(now)s FROM matching
                        ON CONFLICT (segment_id, partner_id) DO NOTHING
                        RETURNING partner_id
                    ),
                    gone AS (
                        DELETE FROM marketing_segment_member m
                         WHERE m.segment_id = %(segment)s AND %(scope)s
                           AND NOT EXISTS (SELECT 1 FROM matching WHERE matching.id = m.partner_id)
                        RETURNING m.partner_id
                    )
                    SELECT TRUE, partner_id FROM entered
                    UNION ALL
                    SELECT FALSE, partner_id FROM gone
                    """,
                    matching=matching,
                    segment=segment.id,
                    company=segment.company_id.id,
                    now=now,
                    scope=member_scope,
                )
            )
            entered, left = [], []
            for is_entered, partner_id in cr.fetchall():
                (entered if is_entered else left).append(partner_id)
            if entered or left:
                changes[segment.id] = (sorted(entered), sorted(left))
        if partner_ids is None and self:
            cr.execute(SQL("UPDATE marketing_segment SET refreshed_at = %s WHERE id = ANY(%s)", now, self.ids))
            self.invalidate_recordset(["refreshed_at"])
        self.env["marketing.segment.member"].invalidate_model()
        if emit and changes:
            self._emit_membership_changes(changes, now)
        return changes

    def _emit_membership_changes(self, changes, now):
        """Log the entries and exits of ``changes`` as internal events, in one insert."""
        Event = self.env["marketing.event"]
        names = {segment.id: segment.name for segment in self.browse(list(changes))}
        companies = {segment.id: segment.company_id.id for segment in self.browse(list(changes))}
        rows = defaultdict(list)
        for segment_id, (entered, left) in changes.items():
            for key, partner_ids in (("segment_entered", entered), ("segment_left", left)):
                rows[key].extend(
                    {
                        "partner_id": partner_id,
                        "company_id": companies[segment_id],
                        "occurred_at": now,
                        "params": {"segment_id": segment_id, "segment_name": names[segment_id]},
                    }
                    for partner_id in partner_ids
                )
        prepared = [event for key, events in rows.items() for event in Event._prepare_internal_events(key, events)]
        if prepared:
            # sudo: see marketing.event._emit, whose insert this is for two types at once.
            Event.sudo()._insert_events(prepared)

    @api.model
    def _sync_from_events(self, events, results):
        """Dispatcher step: membership of the batch's contacts in the segments that count these events."""
        segmentation_types = events.type_id.filtered("use_for_segmentation")
        if not segmentation_types:
            return
        # sudo: the dispatcher keeps every company's segments current; each
        # segment only counts its own company's and shared events.
        segments = self.sudo().search([("rule_ids.event_type_id", "in", segmentation_types.ids)])
        if not segments:
            return
        changes = segments._sync_members(set(events.partner_id.ids), emit=True)
        names = {segment.id: segment.name for segment in segments}
        for event in events:
            for segment_id, (entered, left) in changes.items():
                if event.partner_id.id in entered:
                    results[event.id]["segments entered"].append(names[segment_id])
                if event.partner_id.id in left:
                    results[event.id]["segments left"].append(names[segment_id])

    @api.model
    def _cron_refresh(self):
        """The full pass: rules over a time window change with time, without any event."""
        self.search([("active", "=", True)])._sync_members(emit=True)

    # ------------------------------------------------------------------
    # Actions
    # ------------------------------------------------------------------

    def _members_domain(self):
        return [("marketing_segment_ids", "in", self.ids)]

    def action_view_members(self):
        self.ensure_one()
        return {
            "type": "ir.actions.act_window",
            "name": self.env._("Members of %(name)s", name=self.name),
            "res_model": "res.partner",
            "view_mode": "list,form",
            "domain": self._members_domain(),
            "context": {"create": False},
        }

    def action_refresh(self):
        self._sync_members(emit=True)
        return True
