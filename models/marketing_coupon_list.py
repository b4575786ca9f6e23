import secrets

from odoo import api
from odoo import fields
from odoo import models
from odoo.exceptions import UserError
from odoo.exceptions import ValidationError
from odoo.tools import SQL

# No look-alikes: 0/O, 1/I/L, 2/Z, 5/S, 8/B are left out, so a code read
# aloud or typed from a printed voucher is the code.
COUPON_ALPHABET = "ACDEFGHJKMNPQRTUVWXY34679"
CODE_MAX_LENGTH = 64
MIN_RANDOM_LENGTH = 4
MAX_GENERATE = 1_000_000
GENERATE_CHUNK = 10_000
GENERATE_ATTEMPTS = 20


class MarketingCouponList(models.Model):
    _name = "marketing.coupon.list"
    _description = "Coupon List"
    _inherit = ["mail.thread", "mail.activity.mixin"]
    _order = "name, id"

    name = fields.Char(required=True, translate=True)
    active = fields.Boolean(default=True)
    company_id = fields.Many2one(
        "res.company", required=True, index=True, default=lambda self: self.env.company, tracking=True
    )
    user_id = fields.Many2one(
        "res.users",
        string="Owner",
        default=lambda self: self.env.user,
        tracking=True,
        help="Gets an activity when a scenario finds the list empty.",
    )
    value_description = fields.Char(
        string="Value", translate=True, help="What a code is worth, as the contact reads it: 10% off, free shipping..."
    )
    expiry_date = fields.Date(help="The codes stop being valid after this day: none is handed out any more.")
    source = fields.Selection(
        "_selection_source",
        required=True,
        default="codes",
        help="Codes of the list (imported or generated), or cards created in a program of Odoo's Loyalty app.",
    )
    # A reference, not a Many2one: the module does not depend on Loyalty, and
    # loyalty.program only exists where that app is installed.
    loyalty_program_ref = fields.Reference(
        "_selection_loyalty_program",
        string="Loyalty Program",
        help="Each contact gets a new card (coupon) of this program; its use in an order redeems it.",
    )
    code_prefix = fields.Char(string="Prefix", help="Generated codes start with it, e.g. SPRING-.")
    code_length = fields.Integer(
        string="Random Part Length",
        default=8,
        help="Characters drawn at random after the prefix, from an alphabet without look-alike characters.",
    )
    generate_count = fields.Integer(string="Codes to Generate", default=1000)
    low_threshold = fields.Integer(
        string="Low Stock Threshold",
        help="Below this number of codes left, the system event coupon_list_low is logged once "
        "(a system automation can refill the list). 0: never.",
    )
    low_notified = fields.Boolean(
        readonly=True, copy=False, help="The list is below its threshold and coupon_list_low was logged."
    )
    empty_notified = fields.Boolean(
        readonly=True, copy=False, help="A scenario found the list empty and its owner got an activity."
    )
    coupon_ids = fields.One2many("marketing.coupon", "list_id", string="Codes")
    total_count = fields.Integer(string="Codes in the List", compute="_compute_counts")
    available_count = fields.Integer(string="Left", compute="_compute_counts")
    given_count = fields.Integer(string="Handed Out", compute="_compute_counts")
    redeemed_count = fields.Integer(string="Redeemed", compute="_compute_counts")
    expired_count = fields.Integer(string="Expired", compute="_compute_counts")
    redemption_rate = fields.Float(
        string="Redemption Rate (%)", compute="_compute_counts", help="Redeemed codes among those handed out."
    )

    @api.model
    def _selection_source(self):
        sources = [("codes", self.env._("Imported or generated codes"))]
        if "loyalty.program" in self.env:
            sources.append(("loyalty", self.env._("Loyalty program")))
        return sources

    @api.model
    def _selection_loyalty_program(self):
        return [("loyalty.program", self.env._("Loyalty Program"))] if "loyalty.program" in self.env else []

    @api.constrains("code_length", "code_prefix")
    def _check_pattern(self):
        for coupon_list in self:
            if coupon_list.code_length < MIN_RANDOM_LENGTH:
                raise ValidationError(
                    self.env._(
                        "Random Part Length: at least %(length)s characters, or codes become guessable.",
                        length=MIN_RANDOM_LENGTH,
                    )
                )
            if len(coupon_list.code_prefix or "") + coupon_list.code_length > CODE_MAX_LENGTH:
                raise ValidationError(
                    self.env._("Prefix and random part: at most %(length)s characters.", length=CODE_MAX_LENGTH)
                )

    @api.constrains("source", "loyalty_program_ref")
    def _check_loyalty_program(self):
        for coupon_list in self:
            if coupon_list.source == "loyalty" and not coupon_list.loyalty_program_ref:
                raise ValidationError(self.env._("Loyalty Program: choose the program whose cards are the codes."))

    @api.depends("coupon_ids.state", "expiry_date")
    def _compute_counts(self):
        counts = {}
        if self.ids:
            for coupon_list, state, count in self.env["marketing.coupon"]._read_group(
                [("list_id", "in", self.ids)], ["list_id", "state"], ["__count"]
            ):
                counts[coupon_list.id, state] = count
        today = fields.Date.context_today(self)
        for coupon_list in self:
            available = counts.get((coupon_list.id, "available"), 0)
            given = counts.get((coupon_list.id, "given"), 0)
            redeemed = counts.get((coupon_list.id, "redeemed"), 0)
            expired = bool(coupon_list.expiry_date and coupon_list.expiry_date < today)
            coupon_list.total_count = available + given + redeemed
            coupon_list.available_count = 0 if expired else available
            coupon_list.expired_count = available + given if expired else 0
            coupon_list.given_count = given + redeemed
            coupon_list.redeemed_count = redeemed
            coupon_list.redemption_rate = 100.0 * redeemed / (given + redeemed) if given + redeemed else 0.0

    def _is_expired(self):
        self.ensure_one()
        return bool(self.expiry_date and self.expiry_date < fields.Date.context_today(self))

    # ------------------------------------------------------------------
    # Codes in: generation and import
    # ------------------------------------------------------------------

    def _random_codes(self, count):
        prefix = self.code_prefix or ""
        return [
            prefix + "".join(secrets.choice(COUPON_ALPHABET) for _index in range(self.code_length))
            for _code in range(count)
        ]

    def _insert_codes(self, codes):
        """Insert new available codes with one statement; return how many were new.

        Codes the list already holds are left out by its unique index, so
        nothing written before changes.
        """
        if not codes:
            return 0
        # The statement below bypasses the ORM: whoever adds codes must be
        # allowed to change the list (its company's record rule included).
        self.check_access("write")
        self.env["marketing.coupon"].flush_model()
        self.env.cr.execute(
            SQL(
                """
                INSERT INTO marketing_coupon (list_id, company_id, code, state)
                SELECT %(list)s, %(company)s, code, 'available' FROM unnest(%(codes)s::varchar[]) AS code
                    ON CONFLICT (list_id, code) DO NOTHING
                """,
                list=self.id,
                company=self.company_id.id,
                codes=list(codes),
            )
        )
        inserted = self.env.cr.rowcount
        self.env["marketing.coupon"].invalidate_model()
        self.invalidate_model()
        if inserted and self.empty_notified:
            self.empty_notified = False
        return inserted

    def _generate(self, count):
        """Add ``count`` new unique codes from the list's pattern, in bulk.

        Codes are drawn with ``secrets`` and inserted by chunks; those that
        collide with a code of the list (the unique index drops them) are drawn
        again, so the list always gains exactly ``count`` codes or the pattern
        is reported as exhausted.
        """
        self.ensure_one()
        if self.source != "codes":
            raise UserError(self.env._("%(list)s takes its codes from a loyalty program.", list=self.name))
        if not 0 < count <= MAX_GENERATE:
            raise UserError(self.env._("Codes to Generate: between 1 and %(max)s at a time.", max=MAX_GENERATE))
        missing, attempts = count, 0
        while missing:
            attempts += 1
            if attempts > GENERATE_ATTEMPTS * (count // GENERATE_CHUNK + 1):
                raise UserError(
                    self.env._(
                        "%(list)s: the pattern has almost no unused code left (%(missing)s of %(count)s could not "
                        "be drawn); make the random part longer.",
                        list=self.name,
                        missing=missing,
                        count=count,
                    )
                )
            chunk = min(missing, GENERATE_CHUNK)
            missing -= self._insert_codes(set(self._random_codes(chunk)))
        self._check_low_stock()
        return count

    def action_generate(self):
        for coupon_list in self:
            coupon_list._generate(coupon_list.generate_count)
        return True

    def action_import(self):
        self.ensure_one()
        return {
            "type": "ir.actions.act_window",
            "name": self.env._("Import Codes"),
            "res_model": "marketing.coupon.import.wizard",
            "view_mode": "form",
            "target": "new",
            "context": {"default_list_id": self.id},
        }

    def action_view_coupons(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id("marketing_event_automation.action_marketing_coupon")
        action["domain"] = [("list_id", "=", self.id)]
        action["context"] = {"default_list_id": self.id}
        status = self.env.context.get("coupon_status")
        if status == "expired":
            action["domain"] += [("state", "!=", "redeemed")]
        elif status:
            action["domain"] += [("state", "=", status)]
        return action

    # ------------------------------------------------------------------
    # Codes out: the hand-out (Give a coupon node)
    # ------------------------------------------------------------------

    def _claim(self, partner_ids, node=None):
        """Hand one available code to each contact of ``partner_ids`` (distinct) in one statement.

        Returns {partner id: (coupon id, code)} for the contacts that got one.
        The codes are locked ``FOR UPDATE SKIP LOCKED``: two engines handing
        out codes of one list at the same time take different codes, and the
        state test makes a code claimed by a committed transaction invisible.
        """
        self.ensure_one()
        if not partner_ids:
            return {}
        if self.source == "loyalty":
            # The program's cards are created as needed; codes left over by
            # an earlier batch (a concurrent engine took others) are used first.
            self._loyalty_create_codes(len(partner_ids) - self._available_count())
        Coupon = self.env["marketing.coupon"]
        Coupon.flush_model()
        self.env.cr.execute(
            SQL(
                """
                WITH wanted AS (
                    SELECT partner_id, ordinality AS rank
                      FROM unnest(%(partners)s::int[]) WITH ORDINALITY AS w (partner_id, ordinality)
                ), free AS (
                    SELECT id, row_number() OVER (ORDER BY id) AS rank
                      FROM (SELECT id FROM marketing_coupon
                             WHERE list_id = %(list)s AND state = 'available'
                             ORDER BY id
                             LIMIT %(count)s
                               FOR UPDATE SKIP LOCKED) locked
                )
                UPDATE marketing_coupon c
                   SET state = 'given', partner_id = wanted.partner_id, given_at = %(now)s,
                       scenario_id = %(scenario)s, node_id = %(node)s
                  FROM wanted JOIN free ON free.rank = wanted.rank
                 WHERE c.id = free.id
             RETURNING c.partner_id, c.id, c.code, c.loyalty_card_id
                """,
                partners=list(partner_ids),
                list=self.id,
                count=len(partner_ids),
                now=fields.Datetime.now(),
                scenario=node.scenario_id.id if node else None,
                node=node.id if node else None,
            )
        )
        rows = self.env.cr.fetchall()
        Coupon.invalidate_model()
        self.invalidate_model()
        if self.source == "loyalty":
            self._loyalty_assign([(partner_id, card_id) for partner_id, _id, _code, card_id in rows])
        return {partner_id: (coupon_id, code) for partner_id, coupon_id, code, _card in rows}

    def _held_codes(self, partner_ids):
        """The code of this list each contact already holds (handed out, not redeemed): {partner: (id, code)}."""
        self.ensure_one()
        if not partner_ids:
            return {}
        self.env["marketing.coupon"].flush_model()
        self.env.cr.execute(
            SQL(
                """
                SELECT DISTINCT ON (partner_id) partner_id, id, code
                  FROM marketing_coupon
                 WHERE list_id = %(list)s AND state = 'given' AND partner_id = ANY(%(partners)s)
                 ORDER BY partner_id, id DESC
                """,
                list=self.id,
                partners=list(partner_ids),
            )
        )
        return {partner_id: (coupon_id, code) for partner_id, coupon_id, code in self.env.cr.fetchall()}

    def _available_count(self):
        self.ensure_one()
        self.env["marketing.coupon"].flush_model()
        self.env.cr.execute(
            SQL("SELECT count(*) FROM marketing_coupon WHERE list_id = %s AND state = 'available'", self.id)
        )
        return self.env.cr.fetchone()[0]

    def _set_flag(self, flag, value):
        """Set a notification flag of the list if it is not set already, in the database at once.

        Two engines crossing the same threshold at the same time both reach
        this statement: the second waits for the first's row lock and, once the
        first commits, fails to serialize and retries its batch, so the event
        or the activity that follows happens once.
        """
        self.ensure_one()
        self.flush_recordset([flag])
        self.env.cr.execute(
            SQL(
                "UPDATE marketing_coupon_list SET %(flag)s = %(value)s"
                " WHERE id = %(id)s AND %(flag)s IS DISTINCT FROM %(value)s RETURNING id",
                flag=SQL.identifier(flag),
                value=value,
                id=self.id,
            )
        )
        changed = bool(self.env.cr.fetchone())
        self.invalidate_recordset([flag])
        return changed

    def _check_low_stock(self):
        """Log coupon_list_low once when a list falls below its threshold; re-arm it once refilled."""
        low_events = []
        for coupon_list in self.filtered("low_threshold"):
            if coupon_list.source != "codes":
                continue
            left = coupon_list._available_count()
            if left < coupon_list.low_threshold and not coupon_list.low_notified:
                if coupon_list._set_flag("low_notified", True):
                    low_events.append(
                        {
                            "company_id": coupon_list.company_id.id,
                            "params": {
                                "coupon_list_id": coupon_list.id,
                                "coupon_list_name": coupon_list.name,
                                "left": left,
                                "threshold": coupon_list.low_threshold,
                            },
                        }
                    )
            elif left >= coupon_list.low_threshold and coupon_list.low_notified:
                coupon_list._set_flag("low_notified", False)
        if low_events:
            self.env["marketing.event"]._emit("coupon_list_low", low_events)
            self.env["marketing.event"]._wake_dispatcher()

    def _notify_empty(self, node):
        """Give the list's owner an activity: a scenario needs codes the list no longer has."""
        self.ensure_one()
        owner = self.user_id or node.scenario_id.user_id
        # Once until codes are added again, however many batches find it empty.
        if not owner or self.empty_notified or not self._set_flag("empty_notified", True):
            return
        # sudo: the engine assigns the activity to the owner, whoever runs it.
        self.env["mail.activity"].sudo().create(
            {
                "res_model_id": self.env["ir.model"]._get_id(self._name),
                "res_id": self.id,
                "activity_type_id": self.env.ref("mail.mail_activity_data_todo").id,
                "summary": self.env._("Coupon list %(list)s is empty", list=self.name),
                "note": self.env._(
                    "The node %(node)s of the scenario %(scenario)s found no code left: import or generate more.",
                    node=node.display_name,
                    scenario=node.scenario_id.name,
                ),
                "user_id": owner.id,
                "date_deadline": fields.Date.context_today(self),
            }
        )

    # ------------------------------------------------------------------
    # Loyalty bridge (only where Odoo's Loyalty app is installed)
    # ------------------------------------------------------------------

    def _loyalty_program(self):
        self.ensure_one()
        program = self.loyalty_program_ref
        if self.source != "loyalty" or not program or "loyalty.program" not in self.env:
            raise UserError(self.env._("%(list)s: no loyalty program to take codes from.", list=self.name))
        return program

    def _loyalty_create_codes(self, count):
        """Create ``count`` cards of the program and hold their codes as available codes of the list."""
        if count <= 0:
            return
        program = self._loyalty_program()
        # sudo: the engine creates the program's coupons for the scenario; a
        # marketer needs no Sales rights for a scenario to hand them out.
        cards = (
            self.env["loyalty.card"]
            .sudo()
            .create(
                [
                    {"program_id": program.id, "points": 1, "expiration_date": self.expiry_date or False}
                    for _card in range(count)
                ]
            )
        )
        self.env["marketing.coupon"].flush_model()
        self.env.cr.execute(
            SQL(
                """
                INSERT INTO marketing_coupon (list_id, company_id, code, state, loyalty_card_id)
                SELECT %(list)s, %(company)s, code, 'available', card_id
                  FROM unnest(%(codes)s::varchar[], %(cards)s::int[]) AS v (code, card_id)
                    ON CONFLICT (list_id, code) DO NOTHING
                """,
                list=self.id,
                company=self.company_id.id,
                codes=cards.mapped("code"),
                cards=cards.ids,
            )
        )
        self.env["marketing.coupon"].invalidate_model()
        self.invalidate_model()

    def _loyalty_assign(self, partner_cards):
        """Make each handed-out card the contact's, as Loyalty shows nominative coupons."""
        cards = self.env["loyalty.card"].sudo()  # sudo: see _loyalty_create_codes
        for partner_id, partners in _group_cards(partner_cards).items():
            cards.browse(partners).write({"partner_id": partner_id})

    def _loyalty_sync_redemptions(self):
        """Mark redeemed the codes whose loyalty card was used (in an order, or in its history)."""
        lists = self.filtered(lambda coupon_list: coupon_list.source == "loyalty")
        if not lists or "loyalty.card" not in self.env:
            return 0
        coupons = self.env["marketing.coupon"].search(
            [("list_id", "in", lists.ids), ("state", "!=", "redeemed"), ("loyalty_card_id", "!=", 0)]
        )
        if not coupons:
            return 0
        # sudo: reading the program's coupons the list handed out.
        cards = self.env["loyalty.card"].sudo().browse(coupons.mapped("loyalty_card_id")).exists()
        used = {card.id for card in cards if card.use_count or any(history.used for history in card.history_ids)}
        redeemed = coupons.filtered(lambda coupon: coupon.loyalty_card_id in used)
        if redeemed:
            self.env.cr.execute(
                SQL(
                    "UPDATE marketing_coupon SET state = 'redeemed', redeemed_at = %s WHERE id = ANY(%s)",
                    fields.Datetime.now(),
                    redeemed.ids,
                )
            )
            self.env["marketing.coupon"].invalidate_model()
            self.invalidate_model()
        return len(redeemed)

    def action_loyalty_sync(self):
        self._loyalty_sync_redemptions()
        return True

    @api.model
    def _cron_loyalty_sync(self):
        self.search([("source", "=", "loyalty")])._loyalty_sync_redemptions()


def _group_cards(partner_cards):
    grouped = {}
    for partner_id, card_id in partner_cards:
        grouped.setdefault(partner_id, []).append(card_id)
    return grouped
