import base64
import binascii
import hashlib
import json
import zlib
from pathlib import Path

from werkzeug.exceptions import RequestEntityTooLarge

from odoo import http
from odoo.http import request

from ..utils.payload import SEGMENT_MAX_MESSAGE_SIZE

NATIVE_MAX_BODY = 1024 * 1024
NATIVE_MAX_EVENTS = 1000
SEGMENT_MAX_BATCH_BODY = 500 * 1024
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


def json_response(payload, status=200, headers=None):
    return request.make_json_response(payload, headers=list((headers or {}).items()), status=status)


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
    @http.route("/automation/v1/events", type="http", auth="public", methods=["POST"], csrf=False, save_session=False)
    def post_events(self, **_kwargs):
        try:
            source = authenticate(bearer_key())
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
        methods=["POST"],
        csrf=False,
        save_session=False,
    )
    def post_segment(self, call, **_kwargs):
        try:
            if call not in ("track", "identify", "page", "screen", "batch", "import"):
                raise ApiError(404, "not_found", f"path: /v1/{call} is not a Segment endpoint this API implements")
            max_size = SEGMENT_MAX_BATCH_BODY if call in ("batch", "import") else SEGMENT_MAX_MESSAGE_SIZE
            body = read_json_body(max_size)
            if not isinstance(body, dict):
                raise ApiError(400, "invalid_body", "body: expected a JSON object")
            source = authenticate(self._segment_write_key(body))
            check_rate_limit(
                source, request_digest(body.get("batch") if call in ("batch", "import") else [body], "messageId")
            )
            if call in ("batch", "import"):
                messages = body.get("batch")
                if not isinstance(messages, list) or not messages:
                    raise ApiError(400, "invalid_body", "batch: must be a non-empty array of messages")
            else:
                # The path says which call it is, as on Segment's own API.
                messages = [dict(body, type=call)]
            Event = request.env["marketing.event"].sudo().with_company(source.company_id)
            results = Event._ingest_segment(source, messages, body.get("context"))
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
