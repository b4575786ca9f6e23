import hashlib
import hmac
import secrets
import string
from contextlib import contextmanager
from datetime import timedelta
from urllib.parse import urlsplit

from psycopg2.extensions import ISOLATION_LEVEL_READ_COMMITTED
from psycopg2.extensions import TRANSACTION_STATUS_IDLE

from odoo import api
from odoo import fields
from odoo import models
from odoo import tools
from odoo.exceptions import ValidationError
from odoo.http import request
from odoo.tools import SQL

from ..utils.payload import SEGMENT_MAX_MESSAGE_SIZE

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
# Request bodies counted in the current window, by digest: a client re-sending
# the same idempotent request (every event with its id) is counted once.
RATE_REQUEST_TABLE = "marketing_event_source_rate_request"
# Re-sends of one request that go uncounted in a window; beyond, each counts,
# so that replaying one body cannot get round the limit.
RATE_FREE_RESENDS = 10
# What a source has spent of its daily caps (new event types, new contacts).
QUOTA_TABLE = "marketing_event_source_quota"
QUOTA_WINDOW_SECONDS = 24 * 3600
# The requests per minute one visitor (an IP address) may send with a
# website key: a page sends a handful of events per view, a script replaying
# the public key from one machine is stopped long before the source's limit.
DEFAULT_VISITOR_RATE_LIMIT = 120
VISITOR_RATE_TABLE = "marketing_event_source_visitor_rate"
# Segment's message limit: a shop's event has no business being larger.
DEFAULT_MAX_PARAMS_BYTES = SEGMENT_MAX_MESSAGE_SIZE
DEFAULT_MAX_NEW_TYPES_PER_DAY = 100
DEFAULT_MAX_STRUCTURE_PATHS = 500
DEFAULT_MAX_NEW_CONTACTS_PER_DAY = 10000
# Where an HTTP request keeps what it was charged: Odoo replays a request that
# met a serialization failure with the same request object, and the replay
# must not be charged again.
CHARGES_ENVIRON_KEY = "marketing_event_automation.charges"


def request_charges():
    """The charges of the current HTTP request, kept across Odoo's replays of it; a new dict outside requests."""
    if request and getattr(request, "httprequest", None) is not None:
        return request.httprequest.environ.setdefault(CHARGES_ENVIRON_KEY, {})
    return {}


@contextmanager
def counter_cursor(registry):
    """A cursor of its own for the API's shared counters, in READ COMMITTED.

    Odoo's cursors are REPEATABLE READ: there an upsert that meets a counter
    row another worker updated since the snapshot fails with a serialization
    error instead of adding to it. A counter only needs each statement to see
    the latest committed row, which READ COMMITTED gives; the row lock of the
    upsert keeps concurrent increments from being lost.
    """
    with registry.cursor() as cr:
        # A cursor that joins a transaction already open (the shared cursor of
        # HTTP tests) keeps that transaction's level.
        if cr.connection.info.transaction_status == TRANSACTION_STATUS_IDLE:
            cr.connection.set_isolation_level(ISOLATION_LEVEL_READ_COMMITTED)
        yield cr


def is_hex(text):
    return all(character in string.hexdigits for character in text)


def normalize_origin(text):
    """``https://Shop.example.com:443/`` -> ``https://shop.example.com``; None for anything but an origin."""
    text = (text or "").strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        return None
    if parts.query or parts.fragment or parts.username or parts.password:
        return None
    default_port = 443 if parts.scheme == "https" else 80
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default_port else "")


SNIPPET_TEMPLATE = """<!-- Segment's analytics.js (@segment/analytics-next), served from your own assets or a CDN -->
<script src="https://cdn.jsdelivr.net/npm/@segment/analytics-next@1/dist/umd/index.js"></script>
<script>
  AnalyticsNext.AnalyticsBrowser.load({
    writeKey: "WRITE_KEY",
    // The settings Segment's CDN would give: send everything to Odoo.
    cdnSettings: {integrations: {"Segment.io": {apiKey: "WRITE_KEY", apiHost: "%(host)s/automation/segment/v1",
                                               protocol: "%(scheme)s"}}},
  }).then(([analytics]) => { window.analytics = analytics; analytics.page(); });
</script>

<!-- or RudderStack's JavaScript SDK (@rudderstack/analytics-js), bundled build -->
<script src="https://cdn.jsdelivr.net/npm/@rudderstack/analytics-js@3/dist/npm/modern/bundled/umd/index.js"></script>
<script>
  window.rudder = new rudderanalytics.RudderAnalytics();
  rudder.load("WRITE_KEY", "%(base_url)s/automation/segment", {
    // The source settings RudderStack's control plane would give: no destinations.
    getSourceConfig: () => ({source: {id: "odoo", name: "Odoo", workspaceId: "odoo", enabled: true,
                                      config: {}, destinations: []}}),
  });
  rudder.page();
</script>
<!-- WRITE_KEY: the key shown once by Rotate Key, it starts with mea_%(key_id)s_ -->
"""


def website_snippet(base_url, key_id):
    parts = urlsplit(base_url)
    return SNIPPET_TEMPLATE % {
        "base_url": base_url,
        "host": parts.netloc + parts.path,
        "scheme": parts.scheme or "https",
        "key_id": key_id,
    }


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
    kind = fields.Selection(
        [("server", "Server (the shop's backend)"), ("website", "Website (public key in page code)")],
        required=True,
        default="server",
        help="A server key stays on the shop's servers and is refused from browsers. A website key is public: it "
        "sits in page code, works only from its allowed origins, is rate limited per visitor, never changes "
        "contact details and never addresses a contact by its Odoo id.",
    )
    allowed_origins = fields.Text(
        help="One origin per line, as browsers send it: scheme, host and port (https://shop.example.com). Only "
        "pages of these origins may use a website key.",
    )
    visitor_rate_limit = fields.Integer(
        string="Requests per Minute per Visitor",
        default=DEFAULT_VISITOR_RATE_LIMIT,
        help="API requests one visitor IP address may send per minute with a website key; more are answered "
        "HTTP 429 with Retry-After. 0 means no limit.",
    )
    website_snippet = fields.Text(
        string="Page Snippet",
        compute="_compute_website_snippet",
        help="Paste into the shop's pages; replace the write key placeholder with the key shown by Rotate Key.",
    )
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
    allow_contact_update = fields.Boolean(
        string="May Update Contact Details",
        help="Let identify calls change the name, email, phone and external id of contacts this source did not "
        "create. Contacts of Odoo users (internal or portal) are never changed through the API.",
    )
    max_params_bytes = fields.Integer(
        string="Max Parameters Size (bytes)",
        default=DEFAULT_MAX_PARAMS_BYTES,
        help="Events whose parameters are larger once encoded as JSON are rejected. 0 means no limit.",
    )
    max_new_types_per_day = fields.Integer(
        string="New Event Types per Day",
        default=DEFAULT_MAX_NEW_TYPES_PER_DAY,
        help="Unknown event keys this source may register in 24 hours; beyond, their events are rejected. "
        "0 means no limit.",
    )
    max_structure_paths = fields.Integer(
        string="Parameter Paths per Type",
        default=DEFAULT_MAX_STRUCTURE_PATHS,
        help="Parameter paths the learned structure of an event type may hold from this source's events; "
        "events with more are accepted, the structure stops growing. 0 means no limit.",
    )
    max_new_contacts_per_day = fields.Integer(
        string="New Contacts per Day",
        default=DEFAULT_MAX_NEW_CONTACTS_PER_DAY,
        help="Unknown contacts this source may create in 24 hours; beyond, their events are rejected. "
        "0 means no limit.",
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
        self.env.cr.execute(
            SQL(
                """
                CREATE UNLOGGED TABLE IF NOT EXISTS %s (
                    source_id integer NOT NULL,
                    digest varchar NOT NULL,
                    window_start bigint NOT NULL,
                    resends integer NOT NULL,
                    PRIMARY KEY (source_id, digest)
                )
                """,
                SQL.identifier(RATE_REQUEST_TABLE),
            )
        )
        self.env.cr.execute(
            SQL(
                """
                CREATE UNLOGGED TABLE IF NOT EXISTS %s (
                    source_id integer NOT NULL,
                    kind varchar NOT NULL,
                    window_start bigint NOT NULL,
                    used integer NOT NULL,
                    granted integer NOT NULL,
                    PRIMARY KEY (source_id, kind)
                )
                """,
                SQL.identifier(QUOTA_TABLE),
            )
        )
        # Requests of one visitor IP with a website key, per window; rows of
        # past windows are deleted as requests meet them (window index).
        self.env.cr.execute(
            SQL(
                """
                CREATE UNLOGGED TABLE IF NOT EXISTS %(table)s (
                    source_id integer NOT NULL,
                    visitor_ip varchar NOT NULL,
                    window_start bigint NOT NULL,
                    hits integer NOT NULL,
                    PRIMARY KEY (source_id, visitor_ip)
                );
                CREATE INDEX IF NOT EXISTS %(index)s ON %(table)s (window_start)
                """,
                table=SQL.identifier(VISITOR_RATE_TABLE),
                index=SQL.identifier(f"{VISITOR_RATE_TABLE}_window_idx"),
            )
        )

    @api.constrains(
        "rate_limit",
        "visitor_rate_limit",
        "max_params_bytes",
        "max_new_types_per_day",
        "max_structure_paths",
        "max_new_contacts_per_day",
    )
    def _check_limits(self):
        for source in self:
            for field_name in (
                "rate_limit",
                "visitor_rate_limit",
                "max_params_bytes",
                "max_new_types_per_day",
                "max_structure_paths",
                "max_new_contacts_per_day",
            ):
                if source[field_name] < 0:
                    raise ValidationError(
                        self.env._(
                            "%(field)s of %(name)s: give 0 (no limit) or more.",
                            field=self._fields[field_name].get_description(self.env)["string"],
                            name=source.name,
                        )
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

    @api.constrains("kind", "allowed_origins")
    def _check_allowed_origins(self):
        for source in self:
            for line in (source.allowed_origins or "").splitlines():
                if line.strip() and not normalize_origin(line):
                    raise ValidationError(
                        self.env._(
                            "Allowed Origins of %(name)s: %(origin)s is not an origin; write the scheme, host and "
                            "port only, as https://shop.example.com",
                            name=source.name,
                            origin=line.strip(),
                        )
                    )

    @api.model_create_multi
    def create(self, vals_list):
        sources = super().create(vals_list)
        for source in sources:
            source._generate_write_key()
        self.env.registry.clear_cache()
        return sources

    def write(self, vals):
        result = super().write(vals)
        if {"kind", "allowed_origins", "active", "company_id", "key_id", "key_hash"} & vals.keys():
            # Preflights read the origins of every website source, and requests
            # their key, from caches of each worker; clearing them reaches the
            # other workers too, before their next request.
            self.env.registry.clear_cache()
        return result

    def unlink(self):
        result = super().unlink()
        self.env.registry.clear_cache()
        return result

    def _origin_set(self):
        self.ensure_one()
        return {origin for origin in map(normalize_origin, (self.allowed_origins or "").splitlines()) if origin}

    def _origin_allowed(self, origin):
        """Whether a page of ``origin`` may use this website key."""
        self.ensure_one()
        return self.kind == "website" and normalize_origin(origin or "") in self._origin_set()

    @api.model
    @tools.ormcache()
    def _website_origins(self):
        """The origins some active website source allows: what a CORS preflight, which carries no key, may be told."""
        # sudo: an anonymous preflight learns only whether its own origin is
        # one of these, never which source allows it.
        sources = self.sudo().search([("kind", "=", "website")])
        return frozenset(origin for source in sources for origin in source._origin_set())

    @api.depends("kind", "key_id")
    def _compute_website_snippet(self):
        base_url = self.env["ir.config_parameter"].sudo().get_param("web.base.url") or ""
        for source in self:
            source.website_snippet = (
                website_snippet(base_url.rstrip("/"), source.key_id or "") if source.kind == "website" else False
            )

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
        source_id, key_hash = self._active_keys().get(key_id, (None, ""))
        if not source_id or not hmac.compare_digest(key_hash, hash_write_key(secret)):
            return self.browse()
        # sudo: the caller is an anonymous HTTP client; the key is its identity.
        return self.sudo().browse(source_id)

    @api.model
    @tools.ormcache()
    def _active_keys(self):
        """``{key id: (source id, key hash)}`` of the active sources, kept by each worker until a source changes.

        Every API request authenticates, and sources are few and seldom
        written: a key is checked without a query, and an unknown key (a
        scan of key ids) never reaches the database. ``write`` clears it
        whenever a key, a source's activity or its company changes.
        """
        # sudo: the keys' hashes are readable by system administrators only;
        # this map never leaves the server, a request only learns whether
        # its own key matches.
        sources = self.sudo().search_fetch([("active", "=", True), ("key_id", "!=", False)], ["key_id", "key_hash"])
        return tools.frozendict((source.key_id, (source.id, source.key_hash or "")) for source in sources)

    def _consume_rate_limit(self, digest=None):
        """Count one API request of this source; return 0 if it may go on, else the seconds to wait.

        A fixed window of RATE_WINDOW_SECONDS per source, counted in the
        database so that every worker shares it. The count is written and
        committed on a cursor of its own: in the request's transaction the
        counter row would stay locked until the request ends, so concurrent
        requests of one source would wait for each other.

        A retried request counts once: Odoo's replay of a request after a
        serialization failure finds its first answer on the request, and a
        client re-sending the same body (``digest``, given for bodies whose
        events all carry their id) within the window is not counted again,
        up to RATE_FREE_RESENDS times.
        """
        self.ensure_one()
        if self.rate_limit <= 0:
            return 0
        charges = request_charges()
        if (self.id, "rate") in charges:
            return charges[self.id, "rate"]
        with counter_cursor(self.env.registry) as cr:
            counted = True
            if digest:
                cr.execute(
                    SQL(
                        """
                        WITH clock AS (
                            SELECT floor(extract(epoch FROM clock_timestamp()) / %(window)s)::bigint * %(window)s
                                   AS window_start
                        ), stale AS (
                            -- The source's bodies of older windows: at most its limit per window.
                            DELETE FROM %(table)s
                             WHERE source_id = %(source_id)s AND window_start < (SELECT window_start FROM clock)
                        )
                        INSERT INTO %(table)s AS seen (source_id, digest, window_start, resends)
                        SELECT %(source_id)s, %(digest)s, clock.window_start, 0 FROM clock
                        ON CONFLICT (source_id, digest) DO UPDATE
                           SET resends = CASE WHEN seen.window_start = EXCLUDED.window_start
                                              THEN seen.resends + 1 ELSE 0 END,
                               window_start = EXCLUDED.window_start
                        RETURNING resends
                        """,
                        table=SQL.identifier(RATE_REQUEST_TABLE),
                        source_id=self.id,
                        digest=digest,
                        window=RATE_WINDOW_SECONDS,
                    )
                )
                resends = cr.fetchone()[0]
                counted = resends == 0 or resends > RATE_FREE_RESENDS
            cr.execute(
                SQL(
                    """
                    WITH clock AS (SELECT extract(epoch FROM clock_timestamp()) AS now)
                    INSERT INTO %(table)s AS rate (source_id, window_start, hits)
                    SELECT %(source_id)s, floor(clock.now / %(window)s)::bigint * %(window)s, %(hit)s FROM clock
                    ON CONFLICT (source_id) DO UPDATE
                       SET window_start = EXCLUDED.window_start,
                           hits = CASE WHEN rate.window_start = EXCLUDED.window_start
                                       THEN rate.hits + %(hit)s ELSE %(hit)s END
                    RETURNING hits, ceil(window_start + %(window)s - (SELECT now FROM clock))::integer
                    """,
                    table=SQL.identifier(RATE_TABLE),
                    source_id=self.id,
                    window=RATE_WINDOW_SECONDS,
                    hit=int(counted),
                )
            )
            hits, seconds_left = cr.fetchone()
        charges[self.id, "rate"] = retry_after = max(seconds_left, 1) if hits > self.rate_limit else 0
        return retry_after

    def _consume_visitor_rate_limit(self, visitor_ip):
        """Count one request of ``visitor_ip`` with this website key; 0 if it may go on, else the seconds to wait.

        The same fixed window and own cursor as ``_consume_rate_limit``, one
        counter row per source and visitor; the rows of finished windows are
        deleted by the requests that come after them, through the window index.
        """
        self.ensure_one()
        if self.kind != "website" or self.visitor_rate_limit <= 0 or not visitor_ip:
            return 0
        charges = request_charges()
        if (self.id, "visitor") in charges:
            return charges[self.id, "visitor"]
        with counter_cursor(self.env.registry) as cr:
            cr.execute(
                SQL(
                    """
                    WITH clock AS (SELECT extract(epoch FROM clock_timestamp()) AS now), stale AS (
                        DELETE FROM %(table)s
                         WHERE window_start < (SELECT floor(now / %(window)s)::bigint * %(window)s FROM clock)
                    )
                    INSERT INTO %(table)s AS rate (source_id, visitor_ip, window_start, hits)
                    SELECT %(source_id)s, %(ip)s, floor(clock.now / %(window)s)::bigint * %(window)s, 1 FROM clock
                    ON CONFLICT (source_id, visitor_ip) DO UPDATE
                       SET window_start = EXCLUDED.window_start,
                           hits = CASE WHEN rate.window_start = EXCLUDED.window_start THEN rate.hits + 1 ELSE 1 END
                    RETURNING hits, ceil(window_start + %(window)s - (SELECT now FROM clock))::integer
                    """,
                    table=SQL.identifier(VISITOR_RATE_TABLE),
                    source_id=self.id,
                    ip=visitor_ip[:64],
                    window=RATE_WINDOW_SECONDS,
                )
            )
            hits, seconds_left = cr.fetchone()
        charges[self.id, "visitor"] = retry_after = max(seconds_left, 1) if hits > self.visitor_rate_limit else 0
        return retry_after

    def _consume_quota(self, kind, wanted, cap):
        """Take up to ``wanted`` units of the daily cap ``cap`` (0: none) of ``kind``; return how many may be used.

        Counted like the rate limit, on a cursor of its own and shared by
        every worker, so that two requests cannot both take the last units,
        and without making concurrent requests of the source wait for each
        other. A request replayed by Odoo is charged only for what its first
        attempts did not take.
        """
        self.ensure_one()
        if cap <= 0 or wanted <= 0:
            return wanted
        charges = request_charges()
        taken = charges.get((self.id, kind), 0)
        missing = wanted - taken
        if missing > 0:
            with counter_cursor(self.env.registry) as cr:
                cr.execute(
                    SQL(
                        """
                        WITH clock AS (
                            SELECT floor(extract(epoch FROM clock_timestamp()) / %(window)s)::bigint * %(window)s
                                   AS window_start
                        )
                        INSERT INTO %(table)s AS quota (source_id, kind, window_start, used, granted)
                        SELECT %(source_id)s, %(kind)s, clock.window_start, LEAST(%(missing)s, %(cap)s),
                               LEAST(%(missing)s, %(cap)s)
                          FROM clock
                        ON CONFLICT (source_id, kind) DO UPDATE
                           SET granted = CASE WHEN quota.window_start = EXCLUDED.window_start
                                              THEN GREATEST(LEAST(%(missing)s, %(cap)s - quota.used), 0)
                                              ELSE EXCLUDED.granted END,
                               used = CASE WHEN quota.window_start = EXCLUDED.window_start
                                           THEN quota.used + GREATEST(LEAST(%(missing)s, %(cap)s - quota.used), 0)
                                           ELSE EXCLUDED.used END,
                               window_start = EXCLUDED.window_start
                        RETURNING granted
                        """,
                        table=SQL.identifier(QUOTA_TABLE),
                        source_id=self.id,
                        kind=kind,
                        window=QUOTA_WINDOW_SECONDS,
                        missing=missing,
                        cap=cap,
                    )
                )
                taken += cr.fetchone()[0]
            charges[self.id, kind] = taken
        return min(wanted, taken)

    def _check_type_allowed(self, event_type):
        self.ensure_one()
        return self.allow_all_types or event_type in self.allowed_type_ids
