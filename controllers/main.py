import base64
import binascii
import hashlib
import json
import re
import zlib
from pathlib import Path

from werkzeug.exceptions import RequestEntityTooLarge

from odoo import http
from odoo.http import request

from ..models.ir_http import FORM_LABELLED_ENVIRON_KEY
from ..models.marketing_event_source import normalize_origin
from ..utils.payload import SEGMENT_MAX_MESSAGE_SIZE

NATIVE_MAX_BODY = 1024 * 1024
NATIVE_MAX_EVENTS = 1000
SEGMENT_MAX_BATCH_BODY = 500 * 1024
# What browsers may send cross-origin: Segment's and RudderStack's browser
# libraries add Authorization (Basic), RudderStack AnonymousId, SentAt and
# Rsa-* retry headers, Segment X-Retry-Count. A preflight is answered with
# the headers it asks for (header names only): the key is checked on the
# request itself, and no cookie or credential is ever accepted cross-origin.
CORS_ALLOWED_HEADERS = "Authorization, Content-Type, Content-Encoding, AnonymousId, SentAt, X-Retry-Count"
HEADER_NAMES_PATTERN = re.compile(r"^[A-Za-z0-9-]+(\s*,\s*[A-Za-z0-9-]+)*$")
CORS_MAX_AGE = 600
# Where a request keeps the origin its answer may be shared with.
CORS_ORIGIN_ENVIRON_KEY = "marketing_event_automation.cors_origin"
# Segment's browser library names its calls by their first letter
# (/v1/t, /v1/p...), and posts its batches to /v1/b.
SEGMENT_CALLS = {
    "track": "track",
    "identify": "identify",
    "page": "page",
    "screen": "screen",
    "group": "group",
    "alias": "alias",
    "t": "track",
    "i": "identify",
    "p": "page",
    "s": "screen",
    "g": "group",
    "a": "alias",
}
SEGMENT_BATCH_CALLS = ("batch", "import", "b")
OPENAPI_PATH = Path(__file__).resolve().parent.parent / "static" / "openapi.json"


class ApiError(Exception):
    """An answer other than 2xx, with a machine code and a human message."""

    def __init__(self, status, code, message, headers=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def read_json_body(max_size):
    """Read, gunzip and decode the request body, refusing anything oversized or malformed."""
    httprequest = request.httprequest
    if httprequest.content_length is not None and httprequest.content_length > max_size:
        raise ApiError(413, "payload_too_large", f"body: larger than {max_size} bytes")
    if httprequest.content_length is None and httprequest.headers.get("Transfer-Encoding"):
        # A chunked upload announces no size, and the werkzeug of Odoo 18
        # (2.x) would buffer all of it before any limit is checked.
        raise ApiError(411, "length_required", "Content-Length: required, chunked uploads are not accepted")
    content_type = (httprequest.mimetype or "").lower()
    if httprequest.environ.get(FORM_LABELLED_ENVIRON_KEY):
        # RudderStack's Node library labels its JSON a form (ir.http).
        content_type = "application/json"
    if content_type not in ("application/json", "text/plain", ""):
        raise ApiError(415, "unsupported_media_type", f"Content-Type: expected application/json, got {content_type}")
    # With a Content-Length werkzeug reads no further than it. The body stays
    # cached: Odoo replays the whole request after a serialization failure,
    # and the replay must read the same body again.
    httprequest.max_content_length = max_size
    try:
        raw = httprequest.get_data()
    except RequestEntityTooLarge as error:
        raise ApiError(413, "payload_too_large", f"body: larger than {max_size} bytes") from error
    if len(raw) > max_size:
        raise ApiError(413, "payload_too_large", f"body: larger than {max_size} bytes")
    encoding = (httprequest.headers.get("Content-Encoding") or "identity").lower()
    if encoding == "gzip":
        # Bounded decompression: a gzip bomb stops at max_size, unread.
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            raw = decompressor.decompress(raw, max_size + 1)
        except zlib.error as error:
            raise ApiError(400, "invalid_body", f"body: not valid gzip ({error})") from error
        if len(raw) > max_size or decompressor.unconsumed_tail:
            raise ApiError(413, "payload_too_large", f"body: larger than {max_size} bytes once decompressed")
    elif encoding != "identity":
        raise ApiError(415, "unsupported_media_type", f"Content-Encoding: {encoding} is not supported (use gzip)")
    if not raw.strip():
        raise ApiError(400, "invalid_body", "body: empty, expected a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ApiError(400, "invalid_body", f"body: not valid UTF-8 at byte {error.start}") from error
    try:
        return json.loads(text)
    except RecursionError as error:
        raise ApiError(400, "invalid_json", "body: JSON nested too deeply") from error
    except ValueError as error:
        raise ApiError(400, "invalid_json", f"body: malformed JSON ({error})") from error


def cors_headers():
    """The CORS headers of an answer to a page of an origin its website key allows; none for anything else."""
    origin = request.httprequest.environ.get(CORS_ORIGIN_ENVIRON_KEY)
    headers = {"Vary": "Origin"} if request.httprequest.headers.get("Origin") else {}
    if origin:
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Expose-Headers"] = "Retry-After"
    return headers


def json_response(payload, status=200, headers=None):
    headers = cors_headers() | (headers or {})
    return request.make_json_response(payload, headers=list(headers.items()), status=status)


def preflight_response():
    """Answer a CORS preflight, which carries no key: yes to the origins some website source allows, else 403."""
    origin = request.httprequest.headers.get("Origin") or ""
    requested_headers = (request.httprequest.headers.get("Access-Control-Request-Headers") or "").strip()
    if origin and normalize_origin(origin) in request.env["marketing.event.source"]._website_origins():
        headers = {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": requested_headers
            if len(requested_headers) <= 1000 and HEADER_NAMES_PATTERN.match(requested_headers)
            else CORS_ALLOWED_HEADERS,
            "Access-Control-Max-Age": str(CORS_MAX_AGE),
            "Vary": "Origin",
        }
        return request.make_response(b"", headers=list(headers.items()), status=204)
    message = (
        f"Origin: {origin} is not an allowed origin of any website source"
        if origin
        else "Origin: required, a preflight comes from a browser page"
    )
    return json_response(error_body("origin_refused", message), 403)


def check_origin(source):
    """Let a website key be used only from the pages of its origins, and a server key from no page at all.

    A website key is public, so its requests are also limited per visitor
    IP address. Sets the origin the answer is shared with.
    """
    origin = request.httprequest.headers.get("Origin")
    if source.kind != "website":
        if origin:
            raise ApiError(
                403,
                "origin_refused",
                f"Origin: {origin} is a browser page, and a server write key must not sit in page code; "
                "create a website source for it",
            )
        return
    if not origin:
        raise ApiError(403, "origin_refused", "Origin: required, a website write key is used from browser pages")
    if not source._origin_allowed(origin):
        raise ApiError(403, "origin_refused", f"Origin: {origin} is not among the allowed origins of this source")
    request.httprequest.environ[CORS_ORIGIN_ENVIRON_KEY] = origin
    retry_after = source._consume_visitor_rate_limit(request.httprequest.remote_addr)
    if retry_after:
        raise ApiError(
            429,
            "rate_limited",
            f"rate limit: more than {source.visitor_rate_limit} requests per minute from this visitor, "
            f"retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )


def error_body(code, message, segment=False):
    body = {"error": {"code": code, "message": message}}
    # Segment's libraries read the reason of a refusal at the top level; without
    # it they report an unknown error instead of what was wrong.
    return dict(body, code=code, message=message) if segment else body


def error_response(error, segment=False):
    headers = dict(error.headers)
    if error.status == 401:
        scheme = "Basic" if segment else "Bearer"
        headers.setdefault("WWW-Authenticate", f'{scheme} realm="marketing_event_automation"')
    return json_response(error_body(error.code, error.message, segment), error.status, headers)


def results_response(results, success_status=202, segment=False):
    """Answer a batch: 2xx if anything was stored, else the status of the rejections.

    Segment answers also carry Segment's own ``success`` flag.
    """
    summary = {
        "accepted": sum(result["status"] == "accepted" for result in results),
        "duplicate": sum(result["status"] == "duplicate" for result in results),
        "rejected": sum(result["status"] == "rejected" for result in results),
    }
    payload = {
        **summary,
        "results": [dict(result, index=index) for index, result in enumerate(results)],
    }
    if segment:
        payload["success"] = bool(summary["accepted"] or summary["duplicate"] or not results)
    if summary["accepted"] or summary["duplicate"] or not results:
        return json_response(payload, success_status)
    if all(result.get("code") == "not_allowed" for result in results):
        return json_response(payload | error_body("forbidden", results[0]["reason"], segment), 403)
    reasons = "; ".join(result["reason"] for result in results[:5])
    return json_response(payload | error_body("rejected", reasons, segment), 400)


def visitor_ip(source):
    """The IP address a browser's events came from, as Segment records it in ``context.ip``."""
    return request.httprequest.remote_addr if source.kind == "website" else None


def bearer_key():
    header = request.httprequest.headers.get("Authorization") or ""
    scheme, _sep, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def authenticate(write_key):
    if not write_key:
        raise ApiError(401, "unauthorized", "Authorization: missing write key")
    source = request.env["marketing.event.source"]._authenticate(write_key)
    if not source:
        raise ApiError(401, "unauthorized", "Authorization: unknown or revoked write key")
    # sudo: the shop is authenticated by its write key, not as an Odoo user;
    # ingestion is confined to the source's company.
    return source.with_company(source.company_id)


def request_digest(events, id_field):
    """What identifies a request sent again by its client: the ids of its events, when every event has one."""
    if not isinstance(events, list) or not events:
        return None
    ids = []
    for event in events:
        event_id = event.get(id_field) if isinstance(event, dict) else None
        if isinstance(event_id, bool) or not isinstance(event_id, (str, int)) or event_id == "":
            return None
        ids.append(str(event_id))
    return hashlib.sha256("\n".join(sorted(ids)).encode(errors="surrogatepass")).hexdigest()


def check_rate_limit(source, digest=None):
    retry_after = source._consume_rate_limit(digest)
    if retry_after:
        raise ApiError(
            429,
            "rate_limited",
            f"rate limit: more than {source.rate_limit} requests per minute from this source, retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )


def read_counted_body(source, max_size, id_field, events_of):
    """Read the body and count the request against the source's rate limit, which wins over a bad body."""
    try:
        body = read_json_body(max_size)
    except ApiError:
        check_rate_limit(source)
        raise
    check_rate_limit(source, request_digest(events_of(body), id_field))
    return body


class MarketingEventApi(http.Controller):
    @http.route(
        "/automation/v1/events", type="http", auth="public", methods=["POST", "OPTIONS"], csrf=False, save_session=False
    )
    def post_events(self, **_kwargs):
        if request.httprequest.method == "OPTIONS":
            return preflight_response()
        try:
            source = authenticate(bearer_key())
            check_origin(source)
            body = read_counted_body(
                source,
                NATIVE_MAX_BODY,
                "event_id",
                lambda body: body.get("events", [body]) if isinstance(body, dict) else None,
            )
            if isinstance(body, dict) and "events" in body:
                events = body["events"]
                if not isinstance(events, list):
                    raise ApiError(400, "invalid_body", "events: must be an array of events")
                if not events:
                    raise ApiError(400, "invalid_body", "events: empty, send at least one event")
                if len(events) > NATIVE_MAX_EVENTS:
                    raise ApiError(413, "payload_too_large", f"events: more than {NATIVE_MAX_EVENTS} events")
            elif isinstance(body, dict):
                events = [body]
            else:
                raise ApiError(400, "invalid_body", 'body: expected an event object or {"events": [...]}')
            results = request.env["marketing.event"].sudo().with_company(source.company_id)._ingest(source, events)
        except ApiError as error:
            return error_response(error)
        return results_response(results)

    @http.route(
        "/automation/segment/v1/<string:call>",
        type="http",
        auth="public",
        methods=["POST", "OPTIONS"],
        csrf=False,
        save_session=False,
        marketing_json_body=SEGMENT_MAX_BATCH_BODY,
    )
    def post_segment(self, call, **_kwargs):
        if request.httprequest.method == "OPTIONS":
            return preflight_response()
        try:
            if call not in SEGMENT_CALLS and call not in SEGMENT_BATCH_CALLS:
                raise ApiError(404, "not_found", f"path: /v1/{call} is not a Segment endpoint this API implements")
            is_batch = call in SEGMENT_BATCH_CALLS
            max_size = SEGMENT_MAX_BATCH_BODY if is_batch else SEGMENT_MAX_MESSAGE_SIZE
            # A body labelled a form is JSON here (ir.http, marketing_json_body).
            body = read_json_body(max_size)
            if not isinstance(body, dict):
                raise ApiError(400, "invalid_body", "body: expected a JSON object")
            source = authenticate(self._segment_write_key(body))
            check_origin(source)
            check_rate_limit(source, request_digest(body.get("batch") if is_batch else [body], "messageId"))
            if is_batch:
                messages = body.get("batch")
                if not isinstance(messages, list) or not messages:
                    raise ApiError(400, "invalid_body", "batch: must be a non-empty array of messages")
            else:
                # The path says which call it is, as on Segment's own API.
                messages = [dict(body, type=SEGMENT_CALLS[call])]
            Event = request.env["marketing.event"].sudo().with_company(source.company_id)
            results = Event._ingest_segment(
                source, messages, body.get("context"), sent_at=body.get("sentAt"), visitor_ip=visitor_ip(source)
            )
        except ApiError as error:
            return error_response(error, segment=True)
        return results_response(results, success_status=200, segment=True)

    @staticmethod
    def _segment_write_key(body):
        header = request.httprequest.headers.get("Authorization") or ""
        scheme, _sep, value = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _sep, _password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError) as error:
                raise ApiError(401, "unauthorized", "Authorization: malformed Basic credentials") from error
            return user
        if scheme.lower() == "bearer":
            return value.strip()
        write_key = body.get("writeKey")
        return write_key if isinstance(write_key, str) else None

    @http.route("/automation/v1/openapi.json", type="http", auth="public", methods=["GET"], save_session=False)
    def openapi(self, **_kwargs):
        return request.make_response(
            OPENAPI_PATH.read_bytes(), headers=[("Content-Type", "application/json"), ("Cache-Control", "max-age=300")]
        )
