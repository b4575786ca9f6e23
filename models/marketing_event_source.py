import hashlib
import hmac
import secrets
import string
from datetime import timedelta

from odoo import api
from odoo import fields
from odoo import models
from odoo.exceptions import ValidationError
from odoo.tools import SQL

WRITE_KEY_PREFIX = "mea"
# The visible part of a key: it finds the source with an index lookup, the
# secret part is then compared against the stored hash in constant time.
KEY_ID_LENGTH = 12
# Ten requests a second on average: far above what a shop's tracking sends
# (Segment's libraries flush a batch every 10 s), low enough that a leaked key
# or a runaway client cannot flood the event log.
DEFAULT_RATE_LIMIT = 600
RATE_WINDOW_SECONDS = 60
RATE_TABLE = "marketing_event_source_rate"
# Longer texts are no write key: refused before any lookup.
WRITE_KEY_MAX_LENGTH = 200
SECRET_BYTES = 32


def is_hex(text):
    return all(character in string.hexdigits for character in text)


# The context key that carries a new write key to the dialog showing it once.
WRITE_KEY_CONTEXT = "marketing_new_write_key"


def hash_write_key(secret):
    # Write keys carry 256 bits of randomness, so a plain SHA-256 resists
    # brute force; a slow password hash would cost every API request dearly.
    return hashlib.sha256(secret.encode()).hexdigest()


class MarketingEventSource(models.Model):
    _name = "marketing.event.source"
    _description = "Marketing Event Source (API credentials)"
    _order = "name, id"

    name = fields.Char(required=True)
    company_id = fields.Many2one("res.company", required=True, index=True, default=lambda self: self.env.company)
    active = fields.Boolean(default=True)
    key_id = fields.Char(
        string="Key Identifier",
        readonly=True,
        copy=False,
        index=True,
        help="The public start of the write key; the secret part is only stored as a hash.",
    )
    key_hash = fields.Char(readonly=True, copy=False, groups="base.group_system")
    key_rotated_at = fields.Datetime(string="Key Created On", readonly=True, copy=False)
    allow_all_types = fields.Boolean(string="Any Event Type", default=True)
    allowed_type_ids = fields.Many2many(
        "marketing.event.type",
        string="Allowed Event Types",
        help="Events of other types are refused with HTTP 403.",
    )
    unknown_type_policy = fields.Selection(
        [("register", "Register the new type (category Other)"), ("refuse", "Refuse the event")],
        string="Unknown Event Types",
        required=True,
        default="register",
    )
    unknown_contact_policy = fields.Selection(
        [("create", "Create the contact"), ("reject", "Reject the event")],
        string="Unknown Contacts",
        required=True,
        default="create",
    )
    rate_limit = fields.Integer(
        string="Requests per Minute",
        default=DEFAULT_RATE_LIMIT,
        help="API requests this source may send per minute (a batch counts once); more are answered "
        "HTTP 429 with Retry-After. 0 means no limit.",
    )
    last_used_at = fields.Datetime(string="Last Used", compute="_compute_usage")
    accepted_count_24h = fields.Integer(string="24h Accepted", compute="_compute_usage")
    rejected_count_24h = fields.Integer(string="24h Rejected", compute="_compute_usage")

    _sql_constraints = [
        ("key_id_unique", "unique(key_id)", "Two sources cannot share a write key."),
    ]

    def init(self):
        # The request counters of the rate limit: one row per source and
        # current window. UNLOGGED because losing them in a crash only resets
        # the counts, and a counter row is not worth a WAL record per request.
        self.env.cr.execute(
            SQL(
                """
                CREATE UNLOGGED TABLE IF NOT EXISTS %s (
                    source_id integer PRIMARY KEY,
                    window_start bigint NOT NULL,
                    hits integer NOT NULL
                )
                """,
                SQL.identifier(RATE_TABLE),
            )
        )

    @api.constrains("rate_limit")
    def _check_rate_limit(self):
        for source in self:
            if source.rate_limit < 0:
                raise ValidationError(
                    self.env._("Requests per Minute of %(name)s: give 0 (no limit) or more.", name=source.name)
                )

    def _compute_usage(self):
        # Derived from the event log instead of written on each request: a
        # counter row updated by every API call would serialize concurrent
        # ingestion requests of one shop.
        since = fields.Datetime.now() - timedelta(hours=24)
        Event = self.env["marketing.event"]
        last_used = dict(Event._read_group([("source_id", "in", self.ids)], ["source_id"], ["received_at:max"]))
        counts = {
            (source.id, state): count
            for source, state, count in Event._read_group(
                [("source_id", "in", self.ids), ("received_at", ">=", since)], ["source_id", "state"], ["__count"]
            )
        }
        for source in self:
            source.last_used_at = last_used.get(source)
            source.rejected_count_24h = counts.get((source.id, "rejected"), 0)
            source.accepted_count_24h = sum(
                counts.get((source.id, state), 0) for state in ("pending", "processed", "error")
            )

    @api.model_create_multi
    def create(self, vals_list):
        sources = super().create(vals_list)
        for source in sources:
            source._generate_write_key()
        return sources

    def _generate_write_key(self):
        """Give the source a new write key and return it: it is never stored in clear."""
        self.ensure_one()
        key_id = secrets.token_hex(KEY_ID_LENGTH // 2)
        secret = secrets.token_urlsafe(SECRET_BYTES)
        # sudo: key_hash is readable by system administrators only, on purpose
        # even marketing administrators never see it, yet they may rotate keys.
        self.sudo().write(
            {"key_id": key_id, "key_hash": hash_write_key(secret), "key_rotated_at": fields.Datetime.now()}
        )
        return f"{WRITE_KEY_PREFIX}_{key_id}_{secret}"

    def action_rotate_key(self):
        """Replace the write key; the new key is shown once, in a dialog."""
        self.ensure_one()
        write_key = self._generate_write_key()
        wizard = self.env["marketing.event.source.key.wizard"].create({"source_id": self.id})
        return {
            "type": "ir.actions.act_window",
            "name": self.env._("New Write Key"),
            "res_model": wizard._name,
            "res_id": wizard.id,
            "view_mode": "form",
            "target": "new",
            "context": {WRITE_KEY_CONTEXT: write_key},
        }

    def action_view_events(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id("marketing_event_automation.action_marketing_event")
        action["domain"] = [("source_id", "=", self.id)]
        action["display_name"] = self.env._("Events from %(name)s", name=self.name)
        return action

    @api.model
    def _authenticate(self, write_key):
        """Return the active source owning ``write_key``, or an empty recordset."""
        if (
            not write_key
            or not isinstance(write_key, str)
            or len(write_key) > WRITE_KEY_MAX_LENGTH
            or not write_key.isascii()
        ):
            return self.browse()
        prefix, _sep, rest = write_key.partition("_")
        key_id, _sep, secret = rest.partition("_")
        # Key ids are hexadecimal: anything else (a NUL byte...) finds no
        # source without ever reaching the database.
        if prefix != WRITE_KEY_PREFIX or len(key_id) != KEY_ID_LENGTH or not secret or not is_hex(key_id):
            return self.browse()
        # sudo: the caller is an anonymous HTTP client; the key is its identity.
        source = self.sudo().search([("key_id", "=", key_id), ("active", "=", True)], limit=1)
        if not source or not hmac.compare_digest(source.key_hash or "", hash_write_key(secret)):
            return self.browse()
        return source

    def _consume_rate_limit(self):
        """Count one API request of this source; return 0 if it may go on, else the seconds to wait.

        A fixed window of RATE_WINDOW_SECONDS per source, counted in the
        database so that every worker shares it. The count is written and
        committed on a cursor of its own: in the request's transaction the
        counter row would stay locked until the request ends, so concurrent
        requests of one source would wait for each other.
        """
        self.ensure_one()
        if self.rate_limit <= 0:
            return 0
        with self.env.registry.cursor() as cr:
            cr.execute(
                SQL(
                    """
                    WITH clock AS (SELECT extract(epoch FROM clock_timestamp()) AS now)
                    INSERT INTO %(table)s AS rate (source_id, window_start, hits)
                    SELECT %(source_id)s, floor(clock.now / %(window)s)::bigint * %(window)s, 1 FROM clock
                    ON CONFLICT (source_id) DO UPDATE
                       SET window_start = EXCLUDED.window_start,
                           hits = CASE WHEN rate.window_start = EXCLUDED.window_start THEN rate.hits + 1 ELSE 1 END
                    RETURNING hits, ceil(window_start + %(window)s - (SELECT now FROM clock))::integer
                    """,
                    table=SQL.identifier(RATE_TABLE),
                    source_id=self.id,
                    window=RATE_WINDOW_SECONDS,
                )
            )
            hits, seconds_left = cr.fetchone()
        return max(seconds_left, 1) if hits > self.rate_limit else 0

    def _check_type_allowed(self, event_type):
        self.ensure_one()
        return self.allow_all_types or event_type in self.allowed_type_ids
