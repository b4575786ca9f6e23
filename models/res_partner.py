import json
from collections import defaultdict
from datetime import timedelta

from odoo import api
from odoo import fields
from odoo import models
from odoo.exceptions import AccessError
from odoo.tools import SQL
from odoo.tools import create_index

from ..utils.pg_arrays import array_literal
from ..utils.scores import COLD_SCORE
from ..utils.scores import HOT_SCORE
from ..utils.scores import SCORE_BANDS
from ..utils.scores import score_band

WATCHABLE_FIELD_TYPES = (
    "char",
    "text",
    "selection",
    "integer",
    "float",
    "monetary",
    "boolean",
    "date",
    "datetime",
    "many2one",
    "many2many",
)


def _watched_value(partner, field):
    """A contact field's value as event params hold it: names for relations, ISO text for dates."""
    value = partner[field.name]
    if field.type == "many2one":
        return value.display_name or None
    if field.type in ("many2many", "one2many"):
        return sorted(value.mapped("display_name"))
    if field.type in ("date", "datetime"):
        return value.isoformat() if value else None
    if value is False and field.type != "boolean":
        return None
    return value


# Only the dispatcher adds to them (see _add_lifetime_values).
LIFETIME_VALUE_FIELDS = {"marketing_lifetime_value", "marketing_value_currency_id"}

# Events Odoo logs about a contact rather than things the contact did: they do
# not count as activity for the decay (decay itself emits score_changed).
DECAY_IGNORED_EVENT_KEYS = ("score_changed", "email_sent", "sms_sent", "scenario_completed")
DECAY_BATCH_SIZE = 1000


class ResPartner(models.Model):
    _inherit = "res.partner"

    marketing_source_id = fields.Many2one(
        "marketing.event.source",
        string="Created by API Source",
        readonly=True,
        copy=False,
        index="btree_not_null",
        ondelete="set null",
        groups="base.group_user",
        help="The API source that created this contact: it may update the contact's details through identify calls.",
    )
    # Marketing data about the contact is for employees only: portal and
    # public users may read their own contact, never its score or history.
    marketing_external_id = fields.Char(
        string="External ID (shop)",
        index="btree_not_null",
        copy=False,
        groups="base.group_user",
        help="The identifier the shops use for this contact; events posted with it reach this contact.",
    )

    # Not readonly so that marketing users can import scores; write() turns
    # that into a logged change and refuses it to everybody else. Views show
    # it read-only.
    engagement_score = fields.Integer(
        index=True,
        copy=False,
        groups="base.group_user",
        help="Rises and falls with what the contact does (score rules, scenarios, manual changes).",
    )
    engagement_score_set = fields.Boolean(
        string="Scored",
        readonly=True,
        copy=False,
        groups="base.group_user",
        help="False while the contact has never been scored: an empty score is not a score of 0.",
    )
    engagement_score_band = fields.Selection(
        SCORE_BANDS,
        string="Engagement",
        compute="_compute_engagement_score_band",
        store=True,
        index=True,
        groups="base.group_user",
        help=f"Hot from {HOT_SCORE} points, cold under {COLD_SCORE}, warm in between.",
    )
    engagement_log_ids = fields.One2many(
        "marketing.engagement.log", "partner_id", string="Score History", groups="base.group_user"
    )
    marketing_event_params = fields.Json(
        string="Triggering Event Parameters",
        compute="_compute_marketing_event_params",
        help="In scenario emails and SMS: the parameters of the event that made the contact enter "
        "(e.g. object.marketing_event_params.get('items')).",
    )
    marketing_coupon_code = fields.Char(
        string="Coupon Code",
        compute="_compute_marketing_coupon_code",
        help="In scenario emails and SMS: the code a Give a coupon node handed to the contact in this run "
        "(object.marketing_coupon_code).",
    )

    engagement_log_count = fields.Integer(
        string="Score Changes", compute="_compute_engagement_log_count", groups="base.group_user"
    )
    marketing_scenario_count = fields.Integer(
        string="Scenarios",
        compute="_compute_marketing_scenarios",
        groups="base.group_user",
        help="Scenarios the contact is running through now.",
    )
    marketing_scenario_names = fields.Char(
        string="In Scenarios", compute="_compute_marketing_scenarios", groups="base.group_user"
    )
    # What the contact's events are worth (their types' value parameters), added
    # up as they are dispatched: the lifetime value outlives the purged events.
    marketing_value_currency_id = fields.Many2one(
        "res.currency", string="Lifetime Value Currency", readonly=True, copy=False, groups="base.group_user"
    )
    marketing_lifetime_value = fields.Monetary(
        string="Lifetime Value",
        currency_field="marketing_value_currency_id",
        readonly=True,
        copy=False,
        groups="base.group_user",
        help="Sum of the values of the contact's events (purchases...), in the currency of the contact's company.",
    )
    marketing_birthday = fields.Date(string="Birthday", help="Birthday scenarios wait for it, year after year.")
    marketing_segment_member_ids = fields.One2many(
        "marketing.segment.member",
        "partner_id",
        string="Segment Memberships",
        readonly=True,
        groups="marketing_event_automation.group_marketing_automation_user",
    )
    marketing_segment_ids = fields.Many2many(
        "marketing.segment",
        string="Segments",
        compute="_compute_marketing_segment_ids",
        search="_search_marketing_segment_ids",
        groups="marketing_event_automation.group_marketing_automation_user",
        help="The segments the contact is a member of now.",
    )

    def _marketing_check_lifetime_value(self, vals):
        if not self.env.su and LIFETIME_VALUE_FIELDS & vals.keys():
            raise AccessError(
                self.env._("Lifetime Value: it adds up the values of the contact's events and cannot be set by hand.")
            )

    @api.model
    def _add_lifetime_values(self, events):
        """Add the values of these events (of one type) to their contacts' lifetime value, in one statement."""
        event_type = events.type_id
        events = events.filtered("partner_id")
        if len(event_type) != 1 or not event_type.value_param or not events:
            return
        amounts = event_type._event_amounts(events)
        if not amounts:
            return
        main_company = self.env.ref("base.main_company")
        requests = []
        targets = {}
        for event, (amount, currency, company) in amounts.items():
            # sudo: the dispatcher may run as any user; only the currency of the
            # contact's own lifetime value is read.
            partner = event.partner_id
            target = targets.setdefault(
                partner.id,
                partner.sudo().marketing_value_currency_id or (partner.company_id or main_company).currency_id,
            )
            requests.append((event.id, amount, currency, target, company, event.occurred_at))
        values = self.env["marketing.event.type"]._convert_amounts(requests)
        totals = defaultdict(float)
        for event in amounts:
            totals[event.partner_id.id] += values[event.id]
        self.flush_model(["marketing_lifetime_value", "marketing_value_currency_id"])
        self.env.cr.execute(
            SQL(
                """
                UPDATE res_partner p
                   SET marketing_lifetime_value = COALESCE(p.marketing_lifetime_value, 0) + v.value,
                       marketing_value_currency_id = v.currency_id
                  FROM unnest(%s::int[], %s::numeric[], %s::int[]) AS v (id, value, currency_id)
                 WHERE p.id = v.id
                """,
                list(totals),
                list(totals.values()),
                [targets[partner_id].id for partner_id in totals],
            )
        )
        self.invalidate_model(["marketing_lifetime_value", "marketing_value_currency_id"])

    def init(self):
        res = super().init()
        # Bulk contact resolution of the event API looks contacts up by these.
        create_index(
            self.env.cr,
            "res_partner_email_normalized_mea_idx",
            self._table,
            ["email_normalized"],
            where="email_normalized IS NOT NULL",
        )
        create_index(
            self.env.cr,
            "res_partner_phone_sanitized_mea_idx",
            self._table,
            ["phone_sanitized"],
            where="phone_sanitized IS NOT NULL",
        )
        return res

    @api.depends("engagement_score", "engagement_score_set")
    def _compute_engagement_score_band(self):
        for partner in self:
            partner.engagement_score_band = score_band(partner.engagement_score, partner.engagement_score_set)

    def _compute_marketing_scenarios(self):
        # sudo: salespeople may not read scenarios, yet they see which ones a
        # contact is running through on its form (names only, nothing else).
        groups = (
            self.env["marketing.scenario.participant"]
            .sudo()
            ._read_group(
                [("partner_id", "in", self.ids), ("state", "=", "running")], ["partner_id"], ["scenario_id:array_agg"]
            )
        )
        scenario_ids = {partner.id: ids for partner, ids in groups}
        names = dict(
            self.env["marketing.scenario"]
            .sudo()
            .browse({i for ids in scenario_ids.values() for i in ids})
            .mapped(lambda scenario: (scenario.id, scenario.name))
        )
        for partner in self:
            ids = sorted(set(scenario_ids.get(partner._origin.id, [])))
            partner.marketing_scenario_count = len(ids)
            partner.marketing_scenario_names = ", ".join(names[i] for i in ids)

    def action_view_marketing_scenarios(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id(
            "marketing_event_automation.action_marketing_scenario_participant"
        )
        action["domain"] = [("partner_id", "=", self.id)]
        action["context"] = {"search_default_filter_running": 1}
        action["display_name"] = self.env._("Scenarios of %(name)s", name=self.display_name)
        return action

    def _compute_engagement_log_count(self):
        counts = dict(
            self.env["marketing.engagement.log"]._read_group(
                [("partner_id", "in", self.ids)], ["partner_id"], ["__count"]
            )
        )
        for partner in self:
            partner.engagement_log_count = counts.get(partner._origin, 0)

    @api.model_create_multi
    def create(self, vals_list):
        for vals in vals_list:
            self._marketing_check_lifetime_value(vals)
        scores = [self._marketing_pop_score_values(vals) for vals in vals_list]
        partners = super().create(vals_list)
        self.env["marketing.event"]._emit(
            "contact_created",
            [
                {
                    "partner_id": partner.id,
                    "company_id": partner.company_id.id or None,
                    "params": {"source": "import" if self.env.context.get("import_file") else "odoo"},
                }
                for partner in partners
            ],
        )
        self._marketing_set_scores(
            {partner.id: score for partner, score in zip(partners, scores) if score is not None}, created=True
        )
        return partners

    @api.model
    def load(self, fields, data):
        result = super().load(fields, data)
        self.env["marketing.event"]._emit_contacts_loaded(self, result)
        return result

    @api.depends_context("marketing_event_params")
    def _compute_marketing_event_params(self):
        # The scenario engine renders a batch of messages with the params of
        # each contact's triggering event in the context, as a JSON string
        # (context values must stay hashable).
        params = json.loads(self.env.context.get("marketing_event_params") or "{}")
        for partner in self:
            partner.marketing_event_params = params.get(str(partner.id)) or {}

    @api.depends_context("marketing_coupon_codes")
    def _compute_marketing_coupon_code(self):
        # As the event params: the engine puts each contact's code of the
        # run in the context of the batch it renders, as a JSON string.
        codes = json.loads(self.env.context.get("marketing_coupon_codes") or "{}")
        for partner in self:
            partner.marketing_coupon_code = codes.get(str(partner.id)) or ""

    def write(self, vals):
        self._marketing_check_lifetime_value(vals)
        score = self._marketing_pop_score_values(vals)
        watched = self._marketing_watched_fields(vals)
        old_values = self._marketing_field_values(watched) if watched else None
        res = super().write(vals)
        if score is not None:
            self._marketing_set_scores(dict.fromkeys(self.ids, score))
        if watched:
            self._marketing_emit_field_changes(watched, old_values)
        return res

    # ------------------------------------------------------------------
    # Segments
    # ------------------------------------------------------------------

    def _compute_marketing_segment_ids(self):
        # sudo: the memberships of the contacts the user reads; the segments
        # themselves are then read with the user's rights.
        members = self.env["marketing.segment.member"].sudo().search([("partner_id", "in", self.ids)])
        by_partner = defaultdict(list)
        for member in members:
            by_partner[member.partner_id.id].append(member.segment_id.id)
        for partner in self:
            partner.marketing_segment_ids = self.env["marketing.segment"].browse(by_partner.get(partner._origin.id, []))

    def _search_marketing_segment_ids(self, operator, value):
        """Contacts by segment: ``("marketing_segment_ids", "in", ids)``, ``"ilike", "VIP"``, ``"=", False``."""
        if operator in ("=", "!=") and value is False:
            return [("marketing_segment_member_ids", operator, False)]
        positive = {"!=": "=", "not in": "in", "not ilike": "ilike", "not like": "like"}.get(operator)
        if positive:
            return [("marketing_segment_member_ids", "not any", [("segment_id", positive, value)])]
        return [("marketing_segment_member_ids", "any", [("segment_id", operator, value)])]

    # ------------------------------------------------------------------
    # Contact field changes
    # ------------------------------------------------------------------

    def _marketing_watched_fields(self, vals):
        """The fields of ``vals`` the company watches (contact_field_changed), in field order."""
        if not self or self.env.context.get("marketing_event_mute"):
            return []
        # sudo: which fields are watched is configuration, not the writer's data.
        names = set(self.env.company.sudo().marketing_watched_field_ids.mapped("name"))
        return [name for name in self._fields if name in names and name in vals]

    def _marketing_field_values(self, field_names):
        """{partner id: {field: (raw value, shown value)}} read in one go."""
        # sudo: the values before and after the write the user is making.
        values = {}
        for partner in self.sudo():
            values[partner.id] = {name: _watched_value(partner, partner._fields[name]) for name in field_names}
        return values

    def _marketing_emit_field_changes(self, field_names, old_values):
        new_values = self._marketing_field_values(field_names)
        events = []
        for partner in self.sudo():
            for name in field_names:
                old, new = old_values[partner.id][name], new_values[partner.id][name]
                if old == new:
                    continue
                params = {"field": name, "field_label": partner._fields[name].string, "old": old, "new": new}
                if isinstance(old, list) and isinstance(new, list):
                    params["added"] = [value for value in new if value not in old]
                    params["removed"] = [value for value in old if value not in new]
                events.append({"partner_id": partner.id, "company_id": partner.company_id.id or None, "params": params})
        if events:
            self.env["marketing.event"]._emit("contact_field_changed", events)

    # ------------------------------------------------------------------
    # Engagement score
    # ------------------------------------------------------------------

    @api.model
    def _marketing_pop_score_values(self, vals):
        """Take the score out of create/write values: it only changes through logged score changes.

        Returns the score asked for, or None. Marketing users may set it (an
        import, a mass edit); the difference is then logged like any change.
        """
        if not {"engagement_score", "engagement_score_set", "engagement_score_band"} & vals.keys():
            return None
        score = vals.pop("engagement_score", None)
        vals.pop("engagement_score_set", None)
        vals.pop("engagement_score_band", None)
        if not self.env.su and not self.env.user.has_group(
            "marketing_event_automation.group_marketing_automation_user"
        ):
            raise AccessError(self.env._("Engagement Score: only marketing automation users may change it."))
        return score

    def _marketing_set_scores(self, scores, created=False):
        """Bring contacts to the given scores ({partner id: score}) through logged changes."""
        if not scores:
            return
        partners = self.browse(list(scores))
        current = {} if created else {partner.id: partner.engagement_score for partner in partners}
        deltas = {partner_id: score - current.get(partner_id, 0) for partner_id, score in scores.items()}
        imported = bool(self.env.context.get("import_file"))
        self._marketing_change_score(
            deltas,
            self.env._("Imported score") if imported else self.env._("Score set by %(user)s", user=self.env.user.name),
            "import" if imported else "manual",
            origin_ref=self.env.user,
        )

    def action_view_engagement_history(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id(
            "marketing_event_automation.action_marketing_engagement_log"
        )
        action["domain"] = [("partner_id", "=", self.id)]
        action["context"] = {"default_partner_id": self.id}
        action["display_name"] = self.env._("Score History: %(name)s", name=self.display_name)
        return action

    def action_open_engagement_adjust(self):
        action = self.env["ir.actions.act_window"]._for_xml_id(
            "marketing_event_automation.action_marketing_engagement_adjust_wizard"
        )
        action["context"] = {"active_model": self._name, "active_ids": self.ids}
        return action

    @api.model
    def _marketing_change_score(self, deltas, reason, origin, origin_ref=None, event_company_id=None):
        """Add ``deltas`` ({partner id: points}) to the scores, atomically, and log each change.

        One UPDATE adds every delta in the database itself, so concurrent
        changes (cron workers, the API, a manual change) never lose one.
        Odoo's transactions are REPEATABLE READ: when another transaction
        committed a change to the same contact since this one started, the
        UPDATE raises a serialization failure instead of overwriting it, and
        the whole transaction is retried (Odoo retries requests itself; the
        event dispatcher leaves its batch pending for the next run).
        ``event_company_id``: the company of what caused the change, given
        to the score_changed events so that they reach only its scenarios.
        Returns {partner id: (score before or None, score after)}.
        """
        deltas = {partner_id: delta for partner_id, delta in deltas.items() if delta}
        if not deltas:
            return {}
        self.flush_model(["engagement_score", "engagement_score_set", "engagement_score_band", "company_id"])
        Log = self.env["marketing.engagement.log"]
        Log.flush_model()
        now = fields.Datetime.now()
        # One statement changes the scores and writes their history: the ORM
        # would create the log lines one INSERT per batch plus a reference
        # check per line.
        self.env.cr.execute(
            SQL(
                """
                WITH delta (id, points) AS (SELECT * FROM unnest(%(ids)s::int[], %(points)s::int[])),
                     previous AS (
                        -- Lock the rows first (in id order, so that concurrent
                        -- batches cannot deadlock) to read the score each
                        -- increment really starts from.
                        SELECT p.id, CASE WHEN p.engagement_score_set THEN p.engagement_score END AS score
                          FROM res_partner p
                          JOIN delta ON delta.id = p.id
                         ORDER BY p.id
                           FOR NO KEY UPDATE OF p
                     ),
                     changed AS (
                        UPDATE res_partner p
                           SET engagement_score = COALESCE(p.engagement_score, 0) + delta.points,
                               engagement_score_set = TRUE,
                               engagement_score_band = CASE
                                   WHEN COALESCE(p.engagement_score, 0) + delta.points >= %(hot)s THEN 'hot'
                                   WHEN COALESCE(p.engagement_score, 0) + delta.points < %(cold)s THEN 'cold'
                                   ELSE 'warm'
                               END
                          FROM delta, previous
                         WHERE p.id = delta.id AND previous.id = p.id
                     RETURNING p.id, previous.score AS before, p.engagement_score AS after, delta.points,
                               p.company_id
                     ),
                     logged AS (
                        INSERT INTO marketing_engagement_log (
                            partner_id, delta, score_before, score, reason, origin, origin_ref, company_id,
                            changed_at, create_uid, create_date, write_uid, write_date
                        )
                        -- 0 for a never-scored contact, as the ORM stores an empty integer.
                        SELECT id, points, COALESCE(before, 0), after, %(reason)s, %(origin)s, %(origin_ref)s,
                               company_id, %(now)s, %(uid)s, %(now)s, %(uid)s, %(now)s
                          FROM changed
                     )
                SELECT id, before, after FROM changed
                """,
                ids=array_literal(deltas),
                points=array_literal(deltas.values()),
                hot=HOT_SCORE,
                cold=COLD_SCORE,
                reason=reason,
                origin=origin,
                origin_ref=f"{origin_ref._name},{origin_ref.id}" if origin_ref else None,
                now=now,
                uid=self.env.uid,
            ),
            # A serialization failure here is expected under concurrency and
            # retried by the caller (see above): not an error worth logging.
            log_exceptions=False,
        )
        changes = {partner_id: (before, after) for partner_id, before, after in self.env.cr.fetchall()}
        self.invalidate_model(["engagement_score", "engagement_score_set", "engagement_score_band"])
        Log.invalidate_model()
        self.env["marketing.event"]._emit(
            "score_changed",
            [
                {
                    "partner_id": partner_id,
                    "company_id": event_company_id,
                    "params": {
                        "old": before,
                        "new": after,
                        "delta": deltas[partner_id],
                        "reason": reason,
                        "origin": origin,
                    },
                }
                for partner_id, (before, after) in changes.items()
            ],
        )
        return changes

    @api.model
    def _cron_marketing_score_decay(self, batch_size=DECAY_BATCH_SIZE):
        """Take points from contacts without activity, one batch per call; the cron runner calls again.

        Each company with decay enabled decays its own contacts; contacts
        shared between companies follow the settings of the company the cron
        runs in. A contact decays once per window of inactivity and never
        below 0.
        """
        companies = self.env["res.company"].search([("engagement_decay_enabled", "=", True)])
        done = remaining = 0
        for company in companies:
            candidates = self._marketing_decay_candidates(company, batch_size - done)
            if candidates:
                self._marketing_change_score(
                    {partner_id: -min(company.engagement_decay_points, score) for partner_id, score in candidates},
                    self.env._(
                        "Decay: %(days)s days without activity",
                        days=company.engagement_decay_days,
                    ),
                    "decay",
                )
                done += len(candidates)
            remaining += self._marketing_decay_candidates(company, count=True)
            if done >= batch_size:
                break
        self.env["ir.cron"]._notify_progress(done=done, remaining=remaining)
        return done

    @api.model
    def _marketing_decay_candidates(self, company, limit=None, count=False):
        """[(partner id, score)] of ``company``'s contacts due for decay (or their number with ``count``).

        Due: scored above 0, created and without any activity event for the
        company's number of days, and not decayed within that time.
        """
        if company.engagement_decay_points <= 0 or company.engagement_decay_days <= 0 or limit == 0:
            return 0 if count else []
        self.flush_model(["engagement_score", "engagement_score_set", "company_id", "create_date"])
        self.env["marketing.event"].flush_model(["partner_id", "type_id", "occurred_at"])
        self.env["marketing.engagement.log"].flush_model(["partner_id", "origin", "changed_at"])
        inactive_since = fields.Datetime.now() - timedelta(days=company.engagement_decay_days)
        # Contacts without a company follow the settings of the cron's company.
        shares_contacts = company == self.env.company
        self.env.cr.execute(
            SQL(
                """
                SELECT %s
                  FROM res_partner p
                 WHERE p.engagement_score_set AND p.engagement_score > 0
                   AND p.active
                   AND (p.company_id = %s OR (%s AND p.company_id IS NULL))
                   AND p.create_date < %s
                   AND NOT EXISTS (
                        SELECT 1
                          FROM marketing_event e
                         WHERE e.partner_id = p.id
                           AND e.occurred_at >= %s
                           AND e.type_id NOT IN (SELECT id FROM marketing_event_type WHERE key IN %s)
                   )
                   AND NOT EXISTS (
                        SELECT 1
                          FROM marketing_engagement_log l
                         WHERE l.partner_id = p.id AND l.origin = 'decay' AND l.changed_at > %s
                   )
                %s
                """,
                SQL("count(*)") if count else SQL("p.id, p.engagement_score"),
                company.id,
                shares_contacts,
                inactive_since,
                inactive_since,
                DECAY_IGNORED_EVENT_KEYS,
                inactive_since,
                SQL("") if count else SQL("ORDER BY p.id LIMIT %s", limit),
            )
        )
        return self.env.cr.fetchone()[0] if count else self.env.cr.fetchall()

    # ------------------------------------------------------------------
    # Contact lookup for internal events
    # ------------------------------------------------------------------

    @api.model
    def _marketing_partner_ids_by(self, field_name, values):
        """Map each value of ``field_name`` (email_normalized, phone_sanitized) to a contact id.

        One query for the whole batch. Several contacts may share an address:
        the oldest one wins, as in the API's contact resolution.
        """
        values = list({value for value in values if value})
        if not values:
            return {}
        # sudo: internal events are logged whatever the triggering user may
        # read (a portal visitor opening a mail); only ids leave this method.
        found = {}
        partners = (
            self.sudo()
            .with_context(active_test=False)
            .search_read([(field_name, "in", values)], [field_name], order="id")
        )
        for record in partners:
            found.setdefault(record[field_name], record["id"])
        return found
