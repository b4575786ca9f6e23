import json
import logging
import math
import random
import re
import time
from collections import defaultdict
from datetime import datetime
from datetime import timedelta
from datetime import timezone

from odoo import api
from odoo import fields
from odoo import models
from odoo.exceptions import AccessError
from odoo.service.model import PG_CONCURRENCY_EXCEPTIONS_TO_RETRY
from odoo.tools import SQL
from odoo.tools import create_index

from .marketing_event_type import EVENT_KEY_MAX_LENGTH
from .marketing_event_type import EVENT_KEY_PATTERN
from .marketing_event_type import flatten_structure
from .table_statistics import analyze_if_stale

_logger = logging.getLogger(__name__)

IDEMPOTENCY_KEY_MAX_LENGTH = 200
MAX_PARAMS_DEPTH = 20
SEGMENT_MAX_MESSAGE_SIZE = 32 * 1024
DISPATCH_BATCH_SIZE = 1000
# A batch that meets a concurrent change is run again at once, this many times
# in all, after a random pause of up to attempt x this many seconds.
DISPATCH_ATTEMPTS = 5
DISPATCH_RETRY_PAUSE = 0.05
PARAMS_SUMMARY_LENGTH = 160
WAKE_DISPATCHER_FLAG = "marketing_event_automation.wake_dispatcher"
# A client clock may run a little ahead; an event dated further in the future
# or before this floor is a bug on the sender's side.
MAX_CLOCK_SKEW = timedelta(hours=24)
OLDEST_TIMESTAMP = datetime(2000, 1, 1)

EVENT_STATES = [
    ("pending", "Pending"),
    ("processed", "Processed"),
    ("error", "Error"),
    ("rejected", "Rejected"),
]


class EventRejected(ValueError):
    """One event of a request cannot be accepted; the message names the field."""

    def __init__(self, reason, code="invalid"):
        super().__init__(reason)
        self.reason = reason
        self.code = code


def segment_event_key(name):
    """Segment events are named ('Order Completed'); our keys are 'order_completed'."""
    if not isinstance(name, str):
        return ""
    return re.sub(r"[^a-z0-9_.\-]+", "_", name.strip().lower()).strip("_")[:EVENT_KEY_MAX_LENGTH]


def is_encodable(text):
    """JSON may escape lone surrogates ("\\ud800") that no UTF-8 text, hence no database, can hold."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def check_json_value(value, path, depth=0):
    """Refuse what PostgreSQL's jsonb cannot hold or what would only do harm."""
    if depth > MAX_PARAMS_DEPTH:
        raise EventRejected(f"{path}: nested deeper than {MAX_PARAMS_DEPTH} levels")
    if isinstance(value, str):
        if "\x00" in value:
            raise EventRejected(f"{path}: contains a NUL character")
        if not is_encodable(value):
            raise EventRejected(f"{path}: contains an unpaired UTF-16 surrogate (\\ud800-\\udfff)")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise EventRejected(f"{path}: is not a finite number")
    elif isinstance(value, int) and not isinstance(value, bool):
        # Beyond 64 bits no database column, spreadsheet or JavaScript client
        # reads the number back as sent: such identifiers belong in strings.
        if not -(2**63) <= value < 2**63:
            raise EventRejected(f"{path}: an integer beyond 64 bits, send it as a string")
    elif isinstance(value, dict):
        for name, item in value.items():
            if "\x00" in name or not is_encodable(name):
                raise EventRejected(f"{path}: a key contains a NUL character or an unpaired surrogate")
            check_json_value(item, f"{path}.{name}", depth + 1)
    elif isinstance(value, list):
        for position, item in enumerate(value):
            check_json_value(item, f"{path}[{position}]", depth + 1)


def relabel(reason, labels):
    """Name the field of a rejection as the sender wrote it: 'params.total: ...' -> 'properties.total: ...'."""
    for native, own in sorted((labels or {}).items(), key=lambda item: -len(item[0])):
        if reason.startswith(native) and reason[len(native) : len(native) + 1] in ("", ".", "[", ":"):
            return own + reason[len(native) :]
    return reason


def parse_timestamp(value, field_name="timestamp"):
    """An aware ISO 8601 string or epoch seconds, as a naive UTC datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise EventRejected(f"{field_name}: must be an ISO 8601 date-time or epoch seconds")
    try:
        if isinstance(value, (int, float)):
            moment = datetime.fromtimestamp(value, tz=timezone.utc)
        elif isinstance(value, str) and len(value) <= 64:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        else:
            raise ValueError(value)
    except (ValueError, OverflowError, OSError) as error:
        raise EventRejected(f"{field_name}: must be an ISO 8601 date-time or epoch seconds") from error
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    if moment < OLDEST_TIMESTAMP:
        raise EventRejected(f"{field_name}: before {OLDEST_TIMESTAMP.date().isoformat()}")
    if moment > datetime.utcnow() + MAX_CLOCK_SKEW:
        raise EventRejected(f"{field_name}: more than 24 hours in the future")
    # Odoo datetimes have whole seconds; Segment's libraries send milliseconds.
    return moment.replace(microsecond=0)


def params_leaves(value, path=""):
    """Yield ``(path, text)`` for every scalar of decoded params: ``items[0].sku``, ``A``."""
    if isinstance(value, dict):
        if not value and path:
            yield path, "{}"
        for name in sorted(value):
            yield from params_leaves(value[name], f"{path}.{name}" if path else str(name))
    elif isinstance(value, list):
        if not value:
            yield path, "[]"
        for position, item in enumerate(value):
            yield from params_leaves(item, f"{path}[{position}]")
    else:
        yield path, json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value


def params_summary(params):
    """One line for lists: ``total: 59.9 · items: [{"sku":"SHOE-1"}]``, cut at PARAMS_SUMMARY_LENGTH."""
    parts = []
    for name in sorted(params):
        value = params[name]
        text = (
            value
            if isinstance(value, str)
            else json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        )
        parts.append(f"{name}: {text}")
    summary = " · ".join(parts)
    return summary if len(summary) <= PARAMS_SUMMARY_LENGTH else summary[: PARAMS_SUMMARY_LENGTH - 1] + "…"


class MarketingEvent(models.Model):
    _name = "marketing.event"
    _description = "Marketing Event"
    _order = "received_at desc, id desc"
    _rec_name = "type_id"
    # An append-only log written in bulk by the API: received_at and
    # processed_at say when, source_id who. The four log columns would cost
    # two foreign-key checks and four values on every event stored.
    _log_access = False

    type_id = fields.Many2one(
        "marketing.event.type", string="Event Type", ondelete="restrict", index=True, readonly=True
    )
    event_key = fields.Char(readonly=True, help="The key as the sender wrote it.")
    category_id = fields.Many2one(related="type_id.category_id")
    scope = fields.Selection(related="type_id.scope")
    partner_id = fields.Many2one("res.partner", string="Contact", ondelete="cascade", readonly=True)
    company_id = fields.Many2one("res.company", readonly=True, index=True)
    source_id = fields.Many2one(
        "marketing.event.source",
        ondelete="restrict",
        readonly=True,
        help="The API credentials it came through; empty for events emitted by Odoo itself.",
    )
    idempotency_key = fields.Char(
        readonly=True, help="The sender's event id: a retried event with the same id is stored once."
    )
    params = fields.Json(string="Parameters", readonly=True)
    params_display = fields.Text(string="Parameters (JSON)", compute="_compute_params_display")
    params_summary = fields.Char(string="Parameters in Brief", compute="_compute_params_display")
    params_readable = fields.Text(string="Parameter Values", compute="_compute_params_display")
    occurred_at = fields.Datetime(readonly=True, required=True, default=fields.Datetime.now)
    received_at = fields.Datetime(readonly=True, required=True, default=fields.Datetime.now)
    processed_at = fields.Datetime(readonly=True)
    state = fields.Selection(EVENT_STATES, required=True, default="pending", readonly=True)
    error_message = fields.Text(readonly=True)
    processing_result = fields.Json(
        readonly=True, help="What processing did: scenarios entered and exited, waits resumed, score changes."
    )
    processing_summary = fields.Text(compute="_compute_processing_summary")
    consumers_done = fields.Json(
        readonly=True,
        copy=False,
        help="The processing steps that already succeeded on this event: a retry does not apply them again.",
    )

    def init(self):
        cr = self.env.cr
        # (source, idempotency key) identifies an event; internal events have
        # no source. Rejected events do not hold the key: the sender may fix
        # the event and send it again under the same id.
        cr.execute(
            """
            CREATE UNIQUE INDEX IF NOT EXISTS marketing_event_idempotency_uniq
                ON marketing_event (COALESCE(source_id, 0), idempotency_key)
             WHERE idempotency_key IS NOT NULL AND state <> 'rejected'
            """
        )
        create_index(cr, "marketing_event_pending_idx", self._table, ["id"], where="state = 'pending'")
        create_index(cr, "marketing_event_type_received_idx", self._table, ["type_id", "received_at"])
        create_index(cr, "marketing_event_source_received_idx", self._table, ["source_id", "received_at"])
        create_index(cr, "marketing_event_partner_type_idx", self._table, ["partner_id", "type_id", "occurred_at"])
        create_index(cr, "marketing_event_received_idx", self._table, ["received_at"])

    @api.depends("params")
    def _compute_params_display(self):
        for event in self:
            params = event.params or {}
            event.params_display = json.dumps(params, indent=2, ensure_ascii=False, sort_keys=True)
            event.params_summary = params_summary(params)
            event.params_readable = "\n".join(f"{path}: {value}" for path, value in params_leaves(params))

    @api.depends("processing_result", "state", "error_message")
    def _compute_processing_summary(self):
        for event in self:
            result = event.processing_result or {}
            lines = [f"{label}: {', '.join(map(str, values))}" for label, values in sorted(result.items()) if values]
            if event.state == "error" and event.error_message:
                lines.append(event.error_message)
            event.processing_summary = "\n".join(lines)

    # ------------------------------------------------------------------
    # Ingestion
    # ------------------------------------------------------------------

    @api.model
    def _normalize_native_event(self, raw):
        """Check one event of the native API and return its normalized form."""
        if not isinstance(raw, dict):
            raise EventRejected("event: must be a JSON object")
        key = raw.get("event")
        if not isinstance(key, str) or not key:
            raise EventRejected("event: required, the event type key as a string")
        if len(key) > EVENT_KEY_MAX_LENGTH:
            raise EventRejected(f"event: longer than {EVENT_KEY_MAX_LENGTH} characters")
        if not EVENT_KEY_PATTERN.match(key):
            raise EventRejected("event: use only Latin letters, digits, '_', '.' and '-'")
        idempotency_key = raw.get("event_id")
        if idempotency_key is not None:
            if isinstance(idempotency_key, bool) or not isinstance(idempotency_key, (str, int)):
                raise EventRejected("event_id: must be a string or an integer")
            idempotency_key = str(idempotency_key)
            if not idempotency_key or len(idempotency_key) > IDEMPOTENCY_KEY_MAX_LENGTH:
                raise EventRejected(f"event_id: must have 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} characters")
            check_json_value(idempotency_key, "event_id")
        params = raw.get("params")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise EventRejected("params: must be a JSON object")
        check_json_value(params, "params")
        contact = raw.get("contact")
        if contact is not None and not isinstance(contact, dict):
            raise EventRejected("contact: must be a JSON object")
        return {
            "key": key,
            "idempotency_key": idempotency_key,
            "occurred_at": parse_timestamp(raw.get("timestamp")),
            "contact": self.env["res.partner"]._marketing_normalize_contact(contact or {}),
            "params": params,
        }

    @api.model
    def _ingest(self, source, raw_events, normalizer=None):
        """Validate, resolve and store the events of one API request.

        Returns one result per raw event, in order: ``{"status": "accepted" |
        "duplicate" | "rejected", "id", "reason", "code"}``. Rejections never
        stop the good events of the same request from being stored.
        """
        normalizer = normalizer or self._normalize_native_event
        company = source.company_id
        results = [None] * len(raw_events)
        candidates = []  # (position, normalized event)
        for position, raw in enumerate(raw_events):
            try:
                candidates.append((position, normalizer(raw)))
            except EventRejected as rejection:
                results[position] = {"status": "rejected", "reason": rejection.reason, "code": rejection.code}

        types_by_key = self._resolve_event_types(
            source, {event["key"]: event.get("name") or event["key"] for _position, event in candidates}
        )
        rows, rejected_rows, row_positions, rejected_positions = [], [], [], []
        contacts_to_resolve = []
        for position, event in candidates:
            event_type = types_by_key.get(event["key"])
            try:
                if isinstance(event_type, EventRejected):
                    raise event_type
                # What Odoo records itself (emails opened, scores, imports,
                # schedules) drives scores and system automations: a shop may
                # not forge it, whatever the source allows.
                if event_type.is_internal:
                    raise EventRejected(f"event: {event['key']!r} is recorded by Odoo itself", code="not_allowed")
                if event_type.scope != "contact":
                    raise EventRejected(
                        f"event: {event['key']!r} is a system event, recorded by Odoo itself", code="not_allowed"
                    )
                if not source._check_type_allowed(event_type):
                    raise EventRejected(
                        f"event: the type {event['key']!r} is not allowed for this source", code="not_allowed"
                    )
                if not event_type.active:
                    raise EventRejected(f"event: the type {event['key']!r} is inactive")
                if source.max_params_bytes:
                    # Measured as Segment measures a message; kept for the INSERT.
                    event["params_json"] = json.dumps(event["params"], ensure_ascii=False, separators=(",", ":"))
                    size = len(event["params_json"].encode())
                    if size > source.max_params_bytes:
                        field_name = relabel("params", event.get("labels"))
                        raise EventRejected(
                            f"{field_name}: larger than {source.max_params_bytes} bytes ({size} bytes)",
                            code="too_large",
                        )
                errors = event_type._params_errors(event["params"])
                if errors:
                    reason = "; ".join(relabel(error, event.get("labels")) for error in errors)
                    rejected_rows.append((event_type, event, reason))
                    rejected_positions.append(position)
                    results[position] = {"status": "rejected", "reason": reason, "code": "invalid_params"}
                    continue
            except EventRejected as rejection:
                results[position] = {"status": "rejected", "reason": rejection.reason, "code": rejection.code}
                continue
            contacts_to_resolve.append((position, event, event_type))

        # The contact_created events of new contacts go into the same INSERT
        # as the request's events, before them.
        contact_events = []
        partner_ids = self.env["res.partner"]._marketing_resolve_contacts(
            [event["contact"] for _position, event, event_type in contacts_to_resolve if event_type.scope == "contact"],
            company,
            create=source.unknown_contact_policy == "create",
            log_events=contact_events,
            source=source,
        )
        partner_iterator = iter(partner_ids)
        for position, event, event_type in contacts_to_resolve:
            partner_id = None
            if event_type.scope == "contact":
                partner_id = next(partner_iterator)
                if isinstance(partner_id, EventRejected):
                    reason = relabel(partner_id.reason, event.get("labels"))
                    results[position] = {"status": "rejected", "reason": reason, "code": partner_id.code}
                    continue
            rows.append((event_type, event, partner_id))
            row_positions.append(position)

        stored = self._insert_events(
            contact_events
            + [
                {
                    "type": event_type,
                    "key": event["key"],
                    "partner_id": partner_id,
                    "company_id": company.id,
                    "source_id": source.id,
                    "idempotency_key": event["idempotency_key"],
                    "params": event["params"],
                    "params_json": event.get("params_json"),
                    "max_structure_paths": source.max_structure_paths,
                    "occurred_at": event["occurred_at"],
                }
                for event_type, event, partner_id in rows
            ]
        )[len(contact_events) :]
        for position, event_id, (_event_type, event, _partner_id) in zip(row_positions, stored, rows):
            if event_id:
                results[position] = {"status": "accepted", "id": event_id}
            else:
                field_name = relabel("event_id", event.get("labels"))
                results[position] = {"status": "duplicate", "reason": f"{field_name}: already received"}
        if rejected_rows:
            rejected_ids = self._insert_events(
                [
                    {
                        "type": event_type,
                        "key": event["key"],
                        "partner_id": None,
                        "company_id": company.id,
                        "source_id": source.id,
                        "idempotency_key": event["idempotency_key"],
                        "params": event["params"],
                        "occurred_at": event["occurred_at"],
                        "state": "rejected",
                        "error_message": reason,
                    }
                    for event_type, event, reason in rejected_rows
                ]
            )
            for position, event_id in zip(rejected_positions, rejected_ids):
                results[position]["id"] = event_id
        return results

    @api.model
    def _normalize_segment_message(self, message):
        """Map one Segment message (track, identify, page, screen) onto a native event.

        Rejections name the fields as Segment wrote them (``properties.total``,
        ``messageId``), not as the native API does.
        """
        if not isinstance(message, dict):
            raise EventRejected("message: must be a JSON object")
        # Measured as Segment's libraries measure it, so that whatever they let
        # through is accepted here too.
        size = len(json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode(errors="surrogatepass"))
        if size > SEGMENT_MAX_MESSAGE_SIZE:
            raise EventRejected(f"message: larger than 32 KB ({size} bytes)", code="too_large")
        call = message.get("type")
        context = message.get("context")
        if context is not None and not isinstance(context, dict):
            raise EventRejected("context: must be a JSON object")
        context = context or {}
        traits_label = "context.traits"
        if call == "track":
            name = message.get("event")
            if not isinstance(name, str) or not name.strip():
                raise EventRejected("event: required for a track call, the event name as a string")
            check_json_value(name, "event")
            if len(name.strip()) > EVENT_KEY_MAX_LENGTH:
                # Cut short, two long names could end up as one event type.
                raise EventRejected(f"event: longer than {EVENT_KEY_MAX_LENGTH} characters")
            params = message.get("properties")
            params_label = "properties"
            traits = context.get("traits")
        elif call in ("page", "screen"):
            name = "Page Viewed" if call == "page" else "Screen Viewed"
            params = message.get("properties")
            params_label = "properties"
            if isinstance(params, dict):
                params = dict(params)
                for field_name in ("name", "category"):
                    if isinstance(message.get(field_name), str):
                        params.setdefault(field_name, message[field_name])
            traits = context.get("traits")
        elif call == "identify":
            name = "Identify"
            traits = message.get("traits")
            traits_label = "traits"
            if traits is None:
                traits, traits_label = context.get("traits"), "context.traits"
            params, params_label = traits, traits_label
        elif call is None:
            raise EventRejected("type: required, one of track, identify, page, screen")
        else:
            raise EventRejected(f"type: {call!r} messages are not supported (use track, identify, page or screen)")
        if traits is not None and not isinstance(traits, dict):
            raise EventRejected(f"{traits_label}: must be a JSON object")
        traits = traits or {}
        key = segment_event_key(name)
        if not key:
            raise EventRejected("event: needs at least one Latin letter or digit")
        contact = {"external_id": message.get("userId")}
        for field_name in ("email", "phone", "name"):
            if traits.get(field_name) not in (None, ""):
                contact[field_name] = traits[field_name]
        if "name" not in contact and (traits.get("firstName") or traits.get("lastName")):
            contact["name"] = " ".join(
                traits[part].strip() for part in ("firstName", "lastName") if isinstance(traits.get(part), str)
            )
        if not any(contact.get(field_name) not in (None, "") for field_name in ("external_id", "email", "phone")):
            raise EventRejected(
                f"userId: required to find the contact: an anonymousId alone is not enough, "
                f"send userId or {traits_label}.email or {traits_label}.phone",
                code="unknown_contact",
            )
        labels = {
            "event_id": "messageId",
            "params": params_label,
            "contact.external_id": "userId",
            "contact.email": f"{traits_label}.email",
            "contact.phone": f"{traits_label}.phone",
            "contact.name": f"{traits_label}.name",
        }
        try:
            event = self._normalize_native_event(
                {
                    "event": key,
                    "event_id": message.get("messageId"),
                    # ``or`` would take a timestamp of 0 for a missing one.
                    "timestamp": message["timestamp"]
                    if message.get("timestamp") not in (None, "")
                    else message.get("originalTimestamp"),
                    "contact": {name: value for name, value in contact.items() if value is not None},
                    "params": params,
                }
            )
        except EventRejected as rejection:
            raise EventRejected(relabel(rejection.reason, labels), rejection.code) from rejection
        return event | {"name": name.strip()[:EVENT_KEY_MAX_LENGTH], "segment_call": call, "labels": labels}

    @api.model
    def _ingest_segment(self, source, messages, batch_context=None):
        """Ingest Segment messages; identify calls also update their contact from its traits."""
        normalized = {}

        def normalizer(message):
            original = message
            if isinstance(message, dict) and isinstance(batch_context, dict) and not message.get("context"):
                message = dict(message, context=batch_context)
            normalized[id(original)] = event = self._normalize_segment_message(message)
            return event

        results = self._ingest(source, messages, normalizer=normalizer)
        identified = {
            result["id"]: normalized[id(message)]["contact"]
            for result, message in zip(results, messages)
            if result["status"] == "accepted" and normalized.get(id(message), {}).get("segment_call") == "identify"
        }
        labels = {
            result["id"]: normalized[id(message)]["labels"]
            for result, message in zip(results, messages)
            if result.get("id") in identified
        }
        not_applied = self.browse(list(identified))._update_contacts_from_traits(identified, source, labels)
        for result in results:
            if not_applied.get(result.get("id")):
                result["not_applied"] = not_applied[result["id"]]
        return results

    def _update_contacts_from_traits(self, contacts_by_event_id, source, labels_by_event_id=None):
        """Write the name, email, phone and external id an identify call gave to its contact, where allowed.

        Contact details belong to Odoo: the contact of an Odoo user (internal
        or portal) never changes through the API, since its email is a login
        and where password resets go; other contacts change only when this
        source created them or may update contact details. A contact keeps
        its external id, and never takes one another contact holds. Returns
        ``{event id: ["traits.email: not applied, <why>"]}`` for the answer.

        Contacts are written one by one because each gets its own values and
        the ORM keeps the normalized email and sanitized phone in step; only
        contacts that really change are written.
        """
        Partner = self.env["res.partner"]
        events = self.filtered("partner_id")
        # sudo: which contacts are Odoo users' and which external ids are
        # taken, whoever may read them; only these facts leave the queries.
        user_partner_ids = set(
            self.env["res.users"]
            .sudo()
            .with_context(active_test=False)
            .search([("partner_id", "in", events.partner_id.ids)])
            .partner_id.ids
        )
        external_ids = [contact.get("external_id") for contact in contacts_by_event_id.values()]
        taken_external_ids = defaultdict(set)
        for record in (
            Partner.sudo()
            .with_context(active_test=False)
            .search_read(
                [("marketing_external_id", "in", [value for value in external_ids if value])],
                ["id", "marketing_external_id"],
            )
        ):
            taken_external_ids[record["marketing_external_id"]].add(record["id"])
        not_applied = defaultdict(list)
        for event in events:
            contact = contacts_by_event_id.get(event.id) or {}
            labels = (labels_by_event_id or {}).get(event.id) or {}
            partner = event.partner_id
            values = {}
            name = contact.get("name")
            if name and name != partner.name:
                values["name"] = name
            email = contact.get("email")
            if email and email != partner.email_normalized:
                values["email"] = email
            if contact.get("phone"):
                phone = Partner._marketing_phone_e164(contact["phone"], event.company_id.country_id)
                if phone and phone != partner.phone_sanitized:
                    values["phone"] = phone
            external_id = contact.get("external_id")
            if external_id and external_id != partner.marketing_external_id:
                if partner.marketing_external_id:
                    reason = self.env._("the contact is linked to another external id")
                elif taken_external_ids[external_id] - {partner.id}:
                    reason = self.env._("another contact holds this external id")
                else:
                    reason = None
                    values["marketing_external_id"] = external_id
                if reason:
                    field_label = labels.get("contact.external_id", "contact.external_id")
                    not_applied[event.id].append(f"{field_label}: not applied, {reason}")
            if not values:
                continue
            if partner.id in user_partner_ids:
                reason = self.env._("the contact belongs to an Odoo user")
            elif partner.marketing_source_id != source and not source.allow_contact_update:
                reason = self.env._("the contact was not created by this source")
            else:
                partner.write(values)
                if "marketing_external_id" in values:
                    taken_external_ids[external_id].add(partner.id)
                continue
            fields_by_value = {
                "name": "contact.name",
                "email": "contact.email",
                "phone": "contact.phone",
                "marketing_external_id": "contact.external_id",
            }
            for field_name in values:
                native = fields_by_value[field_name]
                not_applied[event.id].append(f"{labels.get(native, native)}: not applied, {reason}")
        return not_applied

    @api.model
    def _resolve_event_types(self, source, names_by_key):
        """Map each key to its type, registering unknown ones if the source may."""
        EventType = self.env["marketing.event.type"]
        types_by_key = EventType._get_by_keys(names_by_key, source.company_id)
        unknown = sorted(names_by_key.keys() - types_by_key.keys())
        if not unknown:
            return types_by_key
        if not source.allow_all_types:
            # A type registered now could not be among the source's allowed
            # types: refuse it without leaving a new type behind.
            for key in unknown:
                types_by_key[key] = EventRejected(
                    f"event: the type {key!r} is not allowed for this source", code="not_allowed"
                )
        elif source.unknown_type_policy == "register":
            allowed = source._consume_quota("event_types", len(unknown), source.max_new_types_per_day)
            for key in unknown[allowed:]:
                types_by_key[key] = EventRejected(
                    f"event: unknown event type {key!r}, and this source registered its "
                    f"{source.max_new_types_per_day} new event types of the day",
                    code="limit_exceeded",
                )
            registered = EventType._register_unknown_keys(
                {key: names_by_key[key] for key in unknown[:allowed]}, source.company_id, source=source
            )
            types_by_key.update({event_type.key: event_type for event_type in registered})
        else:
            for key in unknown:
                types_by_key[key] = EventRejected(f"event: unknown event type {key!r}", code="unknown_type")
        return types_by_key

    @api.model
    def _insert_events(self, events):
        """Store events in one statement; return their ids in order (None for a duplicate).

        Raw SQL because this is the hot path of the API: the ORM would cost a
        query per event and could not skip duplicates with ON CONFLICT. The
        rows travel as one array per column (``unnest``): a few parameters
        instead of sixteen per event, which psycopg2 adapts and PostgreSQL
        parses several times faster than a VALUES list.
        """
        if not events:
            return []
        self.flush_model()
        cr = self.env.cr
        now = fields.Datetime.now()
        # Ids are taken from the sequence first so that each stored row maps
        # back to its position: RETURNING promises no order, and duplicates
        # skipped by ON CONFLICT return nothing.
        cr.execute(SQL("SELECT nextval('marketing_event_id_seq') FROM generate_series(1, %s)", len(events)))
        new_ids = [row[0] for row in cr.fetchall()]
        columns = defaultdict(list)
        structures = defaultdict(dict)
        for event in events:
            state = event.get("state", "pending")
            columns["type_id"].append(event["type"].id)
            columns["event_key"].append(event["key"])
            columns["partner_id"].append(event.get("partner_id"))
            columns["company_id"].append(event.get("company_id"))
            columns["source_id"].append(event.get("source_id"))
            columns["idempotency_key"].append(event.get("idempotency_key"))
            columns["params"].append(event.get("params_json") or json.dumps(event.get("params") or {}))
            columns["occurred_at"].append(event.get("occurred_at") or now)
            columns["state"].append(state)
            columns["error_message"].append(event.get("error_message"))
            if state == "pending":
                flatten_structure(event.get("params") or {}, structure=structures[event["type"].id])
        cr.execute(
            SQL(
                """
                INSERT INTO marketing_event (
                    id, type_id, event_key, partner_id, company_id, source_id, idempotency_key, params,
                    occurred_at, state, error_message, received_at
                )
                SELECT row.*, %(now)s
                  FROM unnest(
                        %(ids)s::int[], %(type_ids)s::int[], %(event_keys)s::varchar[], %(partner_ids)s::int[],
                        %(company_ids)s::int[], %(source_ids)s::int[], %(idempotency_keys)s::varchar[],
                        %(params)s::jsonb[], %(occurred_at)s::timestamp[], %(states)s::varchar[],
                        %(error_messages)s::text[]
                       ) AS row
                ON CONFLICT (COALESCE(source_id, 0), idempotency_key)
                   WHERE idempotency_key IS NOT NULL AND state <> 'rejected'
                   DO NOTHING
                RETURNING id
                """,
                now=now,
                ids=new_ids,
                type_ids=columns["type_id"],
                event_keys=columns["event_key"],
                partner_ids=columns["partner_id"],
                company_ids=columns["company_id"],
                source_ids=columns["source_id"],
                idempotency_keys=columns["idempotency_key"],
                params=columns["params"],
                occurred_at=columns["occurred_at"],
                states=columns["state"],
                error_messages=columns["error_message"],
            )
        )
        rows = cr.fetchall()
        self.invalidate_model()
        inserted = {row[0] for row in rows}
        ids = [event_id if event_id in inserted else None for event_id in new_ids]
        if any(ids) and structures:
            max_paths = {event["type"].id: event.get("max_structure_paths", 0) for event in events}
            self.env["marketing.event.type"]._learn_structures(structures, max_paths)
        if any(event_id for event_id, event in zip(ids, events) if event.get("state", "pending") == "pending"):
            self._wake_dispatcher()
        return ids

    @api.model
    def _wake_dispatcher(self):
        """Wake the dispatcher cron when this transaction commits, once however many events it logged.

        An API request logs its events and the contact_created events of its
        new contacts, a dispatch batch emits events of its own: one
        ir.cron.trigger row (and one NOTIFY) per transaction is enough.
        """
        cr = self.env.cr
        if cr.precommit.data.get(WAKE_DISPATCHER_FLAG):
            return
        cr.precommit.data[WAKE_DISPATCHER_FLAG] = True
        # sudo: waking a cron is not something the user logging events does.
        env = self.sudo().env

        def wake():
            env.ref("marketing_event_automation.ir_cron_dispatch_events")._trigger()
            env["ir.cron.trigger"].flush_model()

        cr.precommit.add(wake)

    @api.model
    def _emit(self, key, events):
        """Log internal events of type ``key`` (emails opened, contact created...).

        ``events`` is a list of dicts with ``partner_id`` and optionally
        ``params``, ``idempotency_key``, ``occurred_at``, ``company_id``.
        Returns the new events' ids (None for duplicates).
        """
        # sudo: internal events are emitted on behalf of whoever triggered
        # them (a portal user opening a mail, a salesperson editing a contact).
        return self.sudo()._insert_events(self._prepare_internal_events(key, events))

    @api.model
    def _prepare_internal_events(self, key, events):
        """What ``_emit`` stores, for ``_insert_events``: empty when muted or the type is archived."""
        if not events or self.env.context.get("marketing_event_mute"):
            return []
        # sudo: see _emit.
        event_type = (
            self.env["marketing.event.type"]
            .sudo()
            .with_context(active_test=False)
            .search([("key", "=", key), ("company_id", "=", False)], limit=1)
        )
        if not event_type or not event_type.active:
            return []
        return [
            {
                "type": event_type,
                "key": key,
                "partner_id": event.get("partner_id"),
                "company_id": event.get("company_id"),
                "idempotency_key": event.get("idempotency_key"),
                "params": event.get("params") or {},
                "occurred_at": event.get("occurred_at"),
            }
            for event in events
        ]

    @api.model
    def _emit_contacts_imported(self, records, mailing_lists=None):
        """Log one system event for a batch of imported contacts or mailing contacts.

        ``records`` are the batch's records, created or updated (an import
        updates the rows it matches by external id); the records created in
        this transaction count as created. ``mailing_lists`` defaults to the
        lists the imported mailing contacts belong to.
        """
        if not records:
            return []
        now = self.env.cr.now()
        # sudo: counting and naming what the importing user just wrote.
        records = records.sudo()
        created = records.filtered(lambda record: record.create_date == now)
        if mailing_lists is None:
            mailing_lists = records.list_ids if "list_ids" in records._fields else self.env["mailing.list"]
        mailing_lists = mailing_lists.sudo()
        return self._emit(
            "contacts_imported",
            [
                {
                    "partner_id": None,
                    "company_id": self.env.company.id,
                    "params": {
                        "model": records._name,
                        "count": len(created),
                        "updated": len(records) - len(created),
                        "record_ids": created.ids,
                        "list_id": mailing_lists.id if len(mailing_lists) == 1 else None,
                        "list_name": mailing_lists.name if len(mailing_lists) == 1 else None,
                        "list_ids": mailing_lists.ids,
                        "list_names": mailing_lists.mapped("name"),
                        "user_id": self.env.uid,
                    },
                }
            ],
        )

    # ------------------------------------------------------------------
    # Dispatch
    # ------------------------------------------------------------------

    @api.model
    def _cron_dispatch(self, batch_size=DISPATCH_BATCH_SIZE):
        """Process one batch of pending events; the cron runner commits and calls again."""
        self.flush_model()
        # The events' batch enters contacts and schedules their steps: plan
        # those statements on statistics that know each table's size.
        queues = [self, self.env["marketing.scenario.participant"], self.env["marketing.scenario.step"]]
        analyze_if_stale(self.env.cr, [queue._table for queue in queues])
        # SKIP LOCKED: several cron workers may dispatch at once, each takes
        # a disjoint batch and none waits for the others.
        self.env.cr.execute(
            SQL(
                """
                SELECT id FROM marketing_event
                 WHERE state = 'pending'
                 ORDER BY id
                 LIMIT %s
                   FOR UPDATE SKIP LOCKED
                """,
                batch_size,
            )
        )
        events = self.browse([row[0] for row in self.env.cr.fetchall()])
        done = events._process_with_retries() if events else 0
        # The batch's new states go to the database first: counted before,
        # the batch itself would still look pending and call an empty batch.
        self.flush_model(["state"])
        # Counted up to a cap: the cron runner only needs to know whether to
        # run again, and counting a backlog after each batch would be quadratic.
        # In id order, so that the pending events are read off their partial
        # index and not looked for in a scan of the whole log.
        self.env.cr.execute(
            SQL(
                "SELECT count(*) FROM (SELECT 1 FROM marketing_event WHERE state = 'pending' ORDER BY id LIMIT %s)"
                " pending",
                batch_size * 10,
            )
        )
        remaining = self.env.cr.fetchone()[0]
        self.env["ir.cron"]._notify_progress(done=done, remaining=remaining)
        return done

    def _process_with_retries(self, attempts=DISPATCH_ATTEMPTS):
        """Process this locked batch; when it meets a concurrent change, roll back and run it again.

        The conflicting transaction (another cron worker scoring the same
        contact) has committed by then, so a run with a fresh snapshot goes
        through. Letting the error escape would fail the whole cron job: an
        ERROR in the log, and the batch left pending until the next trigger
        or the cron's interval. Returns the number of events processed.
        """
        events = self
        for attempt in range(1, attempts + 1):
            try:
                if attempt > 1:
                    # The rollback released the locks: take again those still
                    # pending that no other worker has taken meanwhile.
                    self.env.cr.execute(
                        SQL(
                            "SELECT id FROM marketing_event WHERE id = ANY(%s) AND state = 'pending'"
                            " ORDER BY id FOR UPDATE SKIP LOCKED",
                            events.ids,
                        )
                    )
                    events = self.browse([row[0] for row in self.env.cr.fetchall()])
                if events:
                    events._process()
                return len(events)
            except PG_CONCURRENCY_EXCEPTIONS_TO_RETRY as error:
                if attempt == attempts:
                    raise
                self.env.cr.rollback()
                _logger.info("Event dispatch met a concurrent change (attempt %s), running again: %s", attempt, error)
                time.sleep(random.uniform(0, DISPATCH_RETRY_PAUSE * attempt))
        return 0

    def _process(self):
        """Run every consumer of events on this batch, then mark them processed.

        A consumer failing on a group of events marks that group as error
        with the reason and lets the other groups go on.
        """
        results = defaultdict(lambda: defaultdict(list))
        errors = {}
        # What succeeded on an event before its retry (score rules, entries)
        # is not applied again.
        consumers_done = {event.id: set(event.consumers_done or ()) for event in self}
        for consumer in self._event_consumers():
            name = consumer.__name__
            for _type, type_events in self.grouped("type_id").items():
                events = (type_events - self.browse(errors)).filtered(
                    lambda event, name=name: name not in consumers_done[event.id]
                )
                if not events:
                    continue
                try:
                    with self.env.cr.savepoint():
                        consumer(events, results)
                    for event_id in events.ids:
                        consumers_done[event_id].add(name)
                except PG_CONCURRENCY_EXCEPTIONS_TO_RETRY:
                    # Another transaction changed the same rows (two workers
                    # scoring one contact): nothing is wrong with the events.
                    # Roll the whole batch back; it stays pending and is
                    # dispatched again with a fresh snapshot.
                    raise
                except Exception as error:
                    _logger.warning("Processing %s events failed in %s", len(events), consumer.__name__, exc_info=True)
                    message = self.env._("%(step)s failed: %(error)s", step=consumer.__name__, error=error)
                    errors.update(dict.fromkeys(events.ids, message))
        now = fields.Datetime.now()
        failed = self.browse(list(errors))
        for (message, done), events in failed.grouped(
            lambda event: (errors[event.id], tuple(sorted(consumers_done[event.id])))
        ).items():
            events.write(
                {"state": "error", "error_message": message, "processed_at": now, "consumers_done": list(done)}
            )
        succeeded = self - failed
        succeeded.write({"state": "processed", "processed_at": now})
        succeeded._store_processing_results(results)

    def _store_processing_results(self, results):
        """Write each event's own processing result in one statement."""
        own_ids = set(self.ids)
        values = [
            SQL("(%s, %s::jsonb)", event_id, json.dumps(result))
            for event_id, result in results.items()
            if event_id in own_ids
        ]
        if not values:
            return
        self.flush_model(["processing_result"])
        self.env.cr.execute(
            SQL(
                "UPDATE marketing_event e SET processing_result = v.result FROM (VALUES %s) AS v (id, result) "
                "WHERE e.id = v.id",
                SQL(", ").join(values),
            )
        )
        self.invalidate_model(["processing_result", "processing_summary"])

    def _event_consumers(self):
        """The steps that react to events, in order; other parts of the module extend it."""
        return [
            self._apply_score_rules,
            self._dispatch_scenarios,
            self._trigger_system_automations,
            self._update_segments,
        ]

    def _apply_score_rules(self, events, results):
        """Score rules: change the contacts' engagement scores as the rules of these events' types say."""
        self.env["marketing.engagement.rule"]._apply_to_events(events, results)

    def _dispatch_scenarios(self, events, results):
        """Scenarios: exit events, resumed waits, event and score triggers."""
        self.env["marketing.scenario"]._consume_events(events, results)

    def _trigger_system_automations(self, events, results):
        """System (S) events start the system automations listening to them."""
        self.env["marketing.system.automation"]._trigger_for_events(events, results)

    def _update_segments(self, events, results):
        """Segments: the batch's contacts enter or leave the segments counting these events."""
        self.env["marketing.segment"]._sync_from_events(events, results)

    def action_retry(self):
        """Send events that failed processing through the dispatcher again (marketing administrators)."""
        manager = "marketing_event_automation.group_marketing_automation_manager"
        if not (self.env.su or self.env.user.has_group(manager)):
            raise AccessError(self.env._("Only a marketing administrator may retry events."))
        # sudo: events are read-only for everybody; retrying is the one change
        # a marketing administrator may make to the log.
        self.filtered(lambda event: event.state == "error").sudo().write({"state": "pending", "error_message": False})
        self._wake_dispatcher()
        return True
