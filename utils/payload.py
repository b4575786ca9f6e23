"""Checks and shaping of posted event payloads, without the ORM.

What the ingestion (``marketing.event.ingestion``) and the event log read from
a request before anything touches the database: the JSON values PostgreSQL can
hold, timestamps, Segment event names, contact identifiers, and how a rejection
names the field as the sender wrote it.
"""

import json
import math
import re
from datetime import datetime
from datetime import timedelta
from datetime import timezone

import phonenumbers

from odoo import tools

EVENT_KEY_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]+$")
EVENT_KEY_MAX_LENGTH = 128
CONTACT_TEXT_MAX_LENGTH = 256
# Beyond 64 bits no database column, spreadsheet or JavaScript client reads a
# number back as sent.
JSON_INTEGER_BITS = 64
# A bare address without display name, quotes, comments or non-ASCII
# characters: what shops send in nearly every event. For it the full RFC 2822
# parse of tools.email_normalize amounts to lowercasing, at a fraction of the
# cost; anything else still goes through email_normalize.
PLAIN_EMAIL_RE = re.compile(r"[A-Za-z0-9_%+\-]+(?:\.[A-Za-z0-9_%+\-]+)*@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*", re.ASCII)
# Longer timestamp texts are no ISO 8601 date-time: refused before parsing.
TIMESTAMP_MAX_LENGTH = 64
IDEMPOTENCY_KEY_MAX_LENGTH = 200
MAX_PARAMS_DEPTH = 20
SEGMENT_MAX_MESSAGE_SIZE = 32 * 1024
PARAMS_SUMMARY_LENGTH = 160
# A client clock may run a little ahead; an event dated further in the future
# or before this floor is a bug on the sender's side.
MAX_CLOCK_SKEW = timedelta(hours=24)
OLDEST_TIMESTAMP = datetime(2000, 1, 1)


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
        # Such identifiers belong in strings.
        if not -(2 ** (JSON_INTEGER_BITS - 1)) <= value < 2 ** (JSON_INTEGER_BITS - 1):
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
        elif isinstance(value, str) and len(value) <= TIMESTAMP_MAX_LENGTH:
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
        raise EventRejected(f"{field_name}: more than {MAX_CLOCK_SKEW // timedelta(hours=1)} hours in the future")
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


def normalize_email(text):
    """``tools.email_normalize(text)``, with a fast path for bare addresses."""
    if isinstance(text, str) and PLAIN_EMAIL_RE.fullmatch(text):
        return text.lower()
    return tools.email_normalize(text)


def phone_e164(phone, country_code=None):
    """The number in E.164 (``+3225550100``), ``country_code`` being the default region; None if invalid."""
    try:
        number = phonenumbers.parse(phone, country_code or None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
