import base64
import gzip
import json
import resource
import socket
import zlib
from urllib.parse import urlparse

from odoo.tests import tagged

from .common import MarketingAutomationHttpCommon

EVENTS_URL = "/automation/v1/events"
SEGMENT_URL = "/automation/segment/v1"
NATIVE_MAX_BODY = 1024 * 1024


@tagged("post_install", "-at_install")
class TestHostileInput(MarketingAutomationHttpCommon):
    """The hostile inputs of issue 9, over real HTTP, on both APIs: a clear 4xx naming the field, nothing stored."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.partner.marketing_external_id = "C-1001"
        cls.source.rate_limit = 0

    # -- requests ---------------------------------------------------------

    def native(self, payload=None, data=None, headers=None):
        return self.post_json(EVENTS_URL, payload, data=data, headers=headers)

    def segment(self, call, payload=None, data=None, headers=None):
        basic = "Basic " + base64.b64encode(f"{self.write_key}:".encode()).decode()
        return self.post_json(
            f"{SEGMENT_URL}/{call}", payload, key=False, data=data, headers={"Authorization": basic, **(headers or {})}
        )

    def purchase(self, **overrides):
        return {"event": "test_purchase", "event_id": "p-1", "contact": {"email": "alice@example.com"}, **overrides}

    def track(self, **overrides):
        return {"userId": "C-1001", "event": "Order Completed", "messageId": "m-1", **overrides}

    # -- checks -----------------------------------------------------------

    def stored(self):
        return self.Event.search([("source_id", "=", self.source.id)])

    def assert_refused(self, response, status, *fragments):
        """The status, and a message (or per-event reasons) naming each fragment."""
        self.assertEqual(response.status_code, status, response.text[:500])
        body = response.json()
        text = " | ".join(
            [body.get("error", {}).get("message", "")]
            + [result.get("reason", "") for result in body.get("results", [])]
        )
        for fragment in fragments:
            self.assertIn(fragment, text)
        return body

    def assert_reasons(self, response, expected):
        """Every event was rejected, each with the reason expected for it, in order."""
        body = self.assert_refused(response, 400)
        reasons = [result["reason"] for result in body["results"]]
        self.assertEqual(len(reasons), len(expected))
        for reason, fragment in zip(reasons, expected):
            self.assertIn(fragment, reason)

    # -- tests ------------------------------------------------------------

    def test_deep_nesting(self):
        deep = "[" * 100000 + "]" * 100000
        self.assert_refused(self.native(data='{"events": ' + deep + "}"), 400, "body: JSON nested too deeply")
        # 10,000 levels: deeper than Python parses, within Segment's 32 KB for one message.
        track_deep = "[" * 10000 + "]" * 10000
        self.assert_refused(
            self.segment("track", data='{"userId": "C-1001", "event": "E", "properties": {"a": ' + track_deep + "}}"),
            400,
            "body: JSON nested too deeply",
        )
        self.assert_refused(self.segment("batch", data='{"batch": ' + deep + "}"), 400, "body: JSON nested too deeply")
        # Around Python's recursion limit: whether the parser or a later step
        # gives up, the answer is a 400 naming the depth, never a 500.
        for depth in (21, 200, 900, 960, 990, 1010, 1500, 5000):
            nested = "[" * depth + "]" * depth
            with self.subTest(depth=depth):
                body = '{"event": "test_purchase", "contact": {"email": "a@b.be"}, "params": {"a": ' + nested + "}}"
                self.assert_refused(self.native(data=body), 400, "nested")
                body = '{"userId": "C-1001", "event": "E", "properties": {"a": ' + nested + "}}"
                self.assert_refused(self.segment("track", data=body), 400, "nested")
        response = self.native(self.purchase(params={"a": json.loads("[" * 25 + "]" * 25)}))
        self.assert_refused(response, 400, "params.a" + "[0]" * 20 + ": nested deeper than 20 levels")
        response = self.segment("track", self.track(properties={"a": json.loads("[" * 25 + "]" * 25)}))
        self.assert_refused(response, 400, "properties.a" + "[0]" * 20 + ": nested deeper than 20 levels")
        self.assertFalse(self.stored())

    def test_huge_numbers(self):
        digits_400 = "1" + "0" * 400
        cases = [
            ('{"n": 1e400}', "params.n: is not a finite number"),
            ('{"n": -1e400}', "params.n: is not a finite number"),
            ('{"n": NaN}', "params.n: is not a finite number"),
            ('{"n": Infinity}', "params.n: is not a finite number"),
            ('{"n": ' + digits_400 + "}", "params.n: an integer beyond 64 bits"),
            ('{"items": [{"q": -' + digits_400 + "}]}", "params.items[0].q: an integer beyond 64 bits"),
        ]
        for params, reason in cases:
            with self.subTest(params=params[:30]):
                body = '{"event": "test_purchase", "contact": {"email": "a@b.be"}, "params": ' + params + "}"
                self.assert_refused(self.native(data=body), 400, reason)
                body = '{"userId": "C-1001", "event": "E", "properties": ' + params + "}"
                self.assert_refused(self.segment("track", data=body), 400, reason.replace("params", "properties"))
        # Beyond Python's 4,300-digit conversion limit the JSON itself is refused.
        response = self.native(data='{"event": "test_purchase", "params": {"n": ' + "9" * 5000 + "}}")
        self.assert_refused(response, 400, "body: malformed JSON", "integer string conversion")
        hostile_fields = [
            ('"contact": {"id": ' + digits_400 + "}", "contact.id: must be a positive integer"),
            ('"contact": {"id": 1e400}', "contact.id: must be a positive integer"),
            ('"contact": {"email": "a@b.be"}, "timestamp": 1e400', "timestamp: must be an ISO 8601"),
            ('"contact": {"email": "a@b.be"}, "timestamp": ' + digits_400, "timestamp: must be an ISO 8601"),
            ('"contact": {"email": "a@b.be"}, "event_id": ' + digits_400, "event_id: must have 1 to 200"),
        ]
        for fields_text, reason in hostile_fields:
            with self.subTest(fields=fields_text[:40]):
                self.assert_refused(self.native(data='{"event": "test_purchase", ' + fields_text + "}"), 400, reason)
        # Inside the limits a big number is plain data, stored exactly.
        response = self.native(self.purchase(params={"n": 2**63 - 1, "f": 0.1, "neg": -(2**63)}))
        self.assertEqual(response.status_code, 202, response.text)
        self.assertEqual(self.stored().params, {"n": 2**63 - 1, "f": 0.1, "neg": -(2**63)})

    def test_invalid_utf8(self):
        for raw in (b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\xff"):
            with self.subTest(raw=raw):
                body = b'{"event": "test_purchase", "params": {"a": "' + raw + b'"}}'
                self.assert_refused(self.native(data=body), 400, "body: not valid UTF-8 at byte 44")
                body = b'{"userId": "C-1001", "event": "E", "properties": {"a": "' + raw + b'"}}'
                self.assert_refused(self.segment("track", data=body), 400, "body: not valid UTF-8 at byte 56")
        compressed = gzip.compress(b'{"batch": [{"type": "track", "event": "\xff"}]}')
        response = self.segment("batch", data=compressed, headers={"Content-Encoding": "gzip"})
        self.assert_refused(response, 400, "body: not valid UTF-8 at byte 39")
        # Lone surrogates written as JSON escapes decode, but no database can hold them.
        response = self.native(data='{"event": "test_purchase", "contact": {"email": "a@b.be", "name": "\\ud800"}}')
        self.assert_refused(response, 400, "contact.name: contains an unpaired UTF-16 surrogate")
        response = self.segment("track", data='{"userId": "C-1001", "event": "E", "properties": {"k": "\\udfff"}}')
        self.assert_refused(response, 400, "properties.k: contains an unpaired UTF-16 surrogate")
        self.assertFalse(self.stored())

    def test_wrong_content_types(self):
        for content_type in (
            "text/xml",
            "text/html",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/octet-stream",
            "image/png",
        ):
            with self.subTest(content_type=content_type):
                headers = {"Content-Type": content_type}
                response = self.native(self.purchase(), headers=headers)
                self.assert_refused(response, 415, "Content-Type: expected application/json")
                if content_type == "application/x-www-form-urlencoded":
                    # RudderStack's Node library labels its JSON so: read as JSON (tests/test_anonymous_visitors.py).
                    continue
                response = self.segment("track", self.track(), headers=headers)
                self.assert_refused(response, 415, "Content-Type: expected application/json")
        for encoding in ("br", "deflate", "gzip, gzip", "compress"):
            with self.subTest(encoding=encoding):
                headers = {"Content-Encoding": encoding}
                self.assert_refused(self.native(self.purchase(), headers=headers), 415, "Content-Encoding")
                self.assert_refused(self.segment("track", self.track(), headers=headers), 415, "Content-Encoding")
        self.assertFalse(self.stored())

    def gzip_bomb(self, inflated_size):
        """A gzip stream inflating to ``inflated_size`` bytes of spaces, built without holding them in memory."""
        compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        chunk = b" " * (1024 * 1024)
        parts = [compressor.compress(b'{"batch": [')]
        parts += [compressor.compress(chunk) for _index in range(inflated_size // len(chunk))]
        parts += [compressor.compress(b"]}"), compressor.flush()]
        return b"".join(parts)

    def test_gzip_bombs_stop_at_the_limit(self):
        bomb = self.gzip_bomb(300 * 1024 * 1024)
        self.assertLess(len(bomb), 500 * 1024, "small enough to pass the size limit of the compressed body")
        peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for call in ("batch", "import"):
            response = self.segment(call, data=bomb, headers={"Content-Encoding": "gzip"})
            self.assert_refused(response, 413, "body: larger than 512000 bytes once decompressed")
        response = self.native(data=bomb, headers={"Content-Encoding": "gzip"})
        self.assert_refused(response, 413, f"body: larger than {NATIVE_MAX_BODY} bytes once decompressed")
        response = self.segment("track", data=bomb, headers={"Content-Encoding": "gzip"})
        self.assert_refused(response, 413, "body: larger than 32768 bytes")
        # The server runs in this process: had it inflated the 300 MB, the
        # peak memory of the process would show it (ru_maxrss is in KiB).
        peak_growth_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
        self.assertLess(peak_growth_kib, 100 * 1024, "decompression stopped at the limit")
        self.assertFalse(self.stored())

    def test_ten_megabyte_bodies(self):
        ten_mb = b'{"event": "test_purchase", "params": {"blob": "' + b"x" * (10 * 1024 * 1024) + b'"}}'
        self.assert_refused(self.native(data=ten_mb), 413, f"body: larger than {NATIVE_MAX_BODY} bytes")
        for call, limit in (("track", 32768), ("identify", 32768), ("batch", 512000), ("import", 512000)):
            with self.subTest(call=call):
                self.assert_refused(self.segment(call, data=ten_mb), 413, f"body: larger than {limit} bytes")

        def chunks():
            yield b'{"event": "test_purchase", "params": {"blob": "'
            for _index in range(10):
                yield b"x" * (1024 * 1024)
            yield b'"}}'

        # A chunked upload announces no size: refused before anything is read.
        self.assert_refused(self.native(data=chunks()), 411, "Content-Length: required")
        self.assert_refused(self.segment("batch", data=chunks()), 411, "Content-Length: required")
        self.assertFalse(self.stored())

    def test_announced_ten_megabytes_are_refused_before_reading(self):
        """The answer comes from the Content-Length alone: the server waits for none of the 10 MB."""
        base = urlparse(self.base_url())
        for path, authorization in (
            (EVENTS_URL, f"Bearer {self.write_key}"),
            (f"{SEGMENT_URL}/batch", f"Bearer {self.write_key}"),
        ):
            with self.subTest(path=path), socket.create_connection((base.hostname, base.port), timeout=60) as sock:
                sock.sendall(
                    (
                        f"POST {path} HTTP/1.1\r\nHost: {base.netloc}\r\nContent-Type: application/json\r\n"
                        f"Authorization: {authorization}\r\nContent-Length: {10 * 1024 * 1024}\r\n"
                        "Connection: close\r\n\r\n"
                    ).encode()
                    + b'{"events": ['
                )
                answer = b""
                while b"\r\n\r\n" not in answer:
                    received = sock.recv(65536)
                    if not received:
                        break
                    answer += received
                status_line = answer.split(b"\r\n", 1)[0]
                self.assertIn(b" 413 ", status_line, answer[:300])
        self.assertFalse(self.stored())

    def test_null_bytes(self):
        events = [
            self.purchase(event="test\u0000purchase"),
            self.purchase(event_id="p\u0000"),
            self.purchase(contact={"email": "alice\u0000@example.com"}),
            self.purchase(contact={"email": "a@b.be", "name": "Al\u0000ice"}),
            self.purchase(contact={"external_id": "C-\u0000"}),
            self.purchase(params={"k\u0000": 1}),
            self.purchase(params={"items": [{"sku": "\u0000"}]}),
        ]
        self.assert_reasons(
            self.native({"events": events}),
            [
                "event: use only Latin letters",
                "event_id: contains a NUL character",
                "contact.email: contains a NUL character",
                "contact.name: contains a NUL character",
                "contact.external_id: contains a NUL character",
                "params: a key contains a NUL character",
                "params.items[0].sku: contains a NUL character",
            ],
        )
        messages = [
            self.track(type="track", event="Order\u0000Completed"),
            self.track(type="track", userId="C-\u0000"),
            self.track(type="track", messageId="m\u0000"),
            self.track(type="track", properties={"note": "\u0000"}),
            {"type": "identify", "userId": "C-1001", "traits": {"email": "a\u0000@b.be"}},
            self.track(type="page", context={"traits": {"name": "\u0000"}}),
        ]
        self.assert_reasons(
            self.segment("batch", {"batch": messages}),
            [
                "event: contains a NUL character",
                "userId: contains a NUL character",
                "messageId: contains a NUL character",
                "properties.note: contains a NUL character",
                "traits.email: contains a NUL character",
                "context.traits.name: contains a NUL character",
            ],
        )
        # A raw NUL byte, not even escaped, is not JSON.
        response = self.native(data=b'{"event": "test_purchase", "params": {"a": "\x00"}}')
        self.assert_refused(response, 400, "body: malformed JSON", "Invalid control character")
        # In a write key: 401, not a database error.
        bad_key = "mea_" + "\u0000" * 12 + "_secret"
        response = self.segment("track", self.track(writeKey=bad_key), headers={"Authorization": ""})
        self.assert_refused(response, 401, "Authorization: unknown or revoked write key")
        response = self.post_json(EVENTS_URL, self.purchase(), key="mea_abc\x00defghij_secret")
        self.assert_refused(response, 401, "Authorization: unknown or revoked write key")
        self.assertFalse(self.stored())

    def test_event_key_of_ten_thousand_characters(self):
        response = self.native(self.purchase(event="x" * 10000))
        self.assert_refused(response, 400, "event: longer than 128 characters")
        response = self.segment("track", self.track(event="Order " * 2000))
        self.assert_refused(response, 400, "event: longer than 128 characters")
        self.assert_reasons(
            self.native(
                {
                    "events": [
                        self.purchase(event_id="e" * 10000),
                        self.purchase(contact={"email": "a@b.be", "name": "n" * 10000}),
                        self.purchase(contact={"external_id": "x" * 10000}),
                    ]
                }
            ),
            [
                "event_id: must have 1 to 200 characters",
                "contact.name: longer than 256 characters",
                "contact.external_id: longer than 256 characters",
            ],
        )
        self.assert_reasons(
            self.segment(
                "batch",
                {
                    "batch": [
                        self.track(type="track", messageId="m" * 10000),
                        self.track(type="track", userId="u" * 10000),
                    ]
                },
            ),
            ["messageId: must have 1 to 200 characters", "userId: longer than 256 characters"],
        )
        self.assertFalse(self.stored())
        self.assertFalse(self.EventType.search([("key", "=like", "order_order%")]), "no type registered")

    def test_params_that_are_arrays_or_strings(self):
        self.assert_reasons(
            self.native(
                {
                    "events": [
                        self.purchase(params=[]),
                        self.purchase(params="total=12"),
                        self.purchase(params=12),
                        self.purchase(contact=["alice@example.com"]),
                        self.purchase(contact={"email": ["alice@example.com"]}),
                        self.purchase(contact={"id": "7"}),
                        self.purchase(event=["test_purchase"]),
                        self.purchase(event_id=["p-1"]),
                        self.purchase(timestamp=["2026-01-01"]),
                        self.purchase(timestamp=True),
                    ]
                }
            ),
            [
                "params: must be a JSON object",
                "params: must be a JSON object",
                "params: must be a JSON object",
                "contact: must be a JSON object",
                "contact.email: must be a string",
                "contact.id: must be a positive integer",
                "event: required, the event type key as a string",
                "event_id: must be a string or an integer",
                "timestamp: must be an ISO 8601",
                "timestamp: must be an ISO 8601",
            ],
        )
        self.assert_refused(self.native({"events": "all of them"}), 400, "events: must be an array")
        self.assert_refused(self.native(data='"test_purchase"'), 400, "body: expected an event object")
        self.assert_reasons(
            self.segment(
                "batch",
                {
                    "batch": [
                        self.track(type="track", properties=[1, 2]),
                        self.track(type="track", properties="total=12"),
                        {"type": "identify", "userId": "C-1001", "traits": "alice"},
                        self.track(type="track", context="web"),
                        self.track(type="track", userId=["C-1001"]),
                        self.track(type="track", event=["Order Completed"]),
                        self.track(type=["track"]),
                    ]
                },
            ),
            [
                "properties: must be a JSON object",
                "properties: must be a JSON object",
                "traits: must be a JSON object",
                "context: must be a JSON object",
                "userId: must be a string",
                "event: required for a track call",
                "type: ['track'] messages are not supported",
            ],
        )
        self.assert_refused(self.segment("batch", {"batch": "x"}), 400, "batch: must be a non-empty array")
        self.assert_refused(self.segment("track", data="[1]"), 400, "body: expected a JSON object")
        self.assertFalse(self.stored())
        # Query-string parameters are not event data: only the body counts.
        response = self.post_json(f"{EVENTS_URL}?event=other&params=x&events=1", self.purchase(event_id="q-1"))
        self.assertEqual(response.status_code, 202, response.text)
        self.assertEqual((self.stored().event_key, self.stored().params), ("test_purchase", {}))

    def test_timestamps_far_in_the_past_or_future(self):
        cases = [
            ("0001-01-01T00:00:00Z", "timestamp: before 2000-01-01"),
            ("1999-12-31T23:59:59Z", "timestamp: before 2000-01-01"),
            ("1970-01-01T00:00:00Z", "timestamp: before 2000-01-01"),
            (0, "timestamp: before 2000-01-01"),
            (-(10**10), "timestamp: before 2000-01-01"),
            ("9999-12-31T23:59:59Z", "timestamp: more than 24 hours in the future"),
            ("2999-01-01T00:00:00+14:00", "timestamp: more than 24 hours in the future"),
            (10**10, "timestamp: more than 24 hours in the future"),
            (10**20, "timestamp: must be an ISO 8601"),
            ("+275760-09-13T00:00:00Z", "timestamp: must be an ISO 8601"),
            ("2026-02-30T00:00:00Z", "timestamp: must be an ISO 8601"),
            ("x" * 10000, "timestamp: must be an ISO 8601"),
        ]
        self.assert_reasons(
            self.native(
                {"events": [self.purchase(event_id=f"t-{i}", timestamp=ts) for i, (ts, _r) in enumerate(cases)]}
            ),
            [reason for _timestamp, reason in cases],
        )
        self.assert_reasons(
            self.segment(
                "batch",
                {
                    "batch": [
                        self.track(type="track", messageId=f"t-{index}", timestamp=timestamp)
                        for index, (timestamp, _reason) in enumerate(cases)
                    ]
                    + [self.track(type="track", messageId="orig", originalTimestamp="1900-01-01T00:00:00Z")]
                },
            ),
            # The rejection names originalTimestamp, the field the message carried (issue 17).
            [reason for _timestamp, reason in cases] + ["originalTimestamp: before 2000-01-01"],
        )
        self.assertFalse(self.stored())

    def test_injection_attempts_are_stored_verbatim_as_data(self):
        sql = "x'); DROP TABLE marketing_event; --"
        template = {
            "jinja": "{{ 7 * 7 }}",
            "dollar": "${7*7}",
            "qweb": "<t t-out='7*7'/>",
            "script": "<script>alert(1)</script>",
            "format": "%(password)s {0.__class__}",
            "sql": sql,
        }
        response = self.native(
            {
                "events": [
                    self.purchase(event_id=sql, params=template, contact={"email": "a@b.be", "name": sql}),
                    self.purchase(event_id="named", contact={"email": "c@d.be", "name": "<script>alert(1)</script>"}),
                    self.purchase(event="test_purchase'--", event_id="bad-key"),
                ]
            }
        )
        self.assertEqual(response.status_code, 202, response.text)
        first, second, third = response.json()["results"]
        self.assertEqual(third["reason"], "event: use only Latin letters, digits, '_', '.' and '-'")
        event = self.Event.browse(first["id"])
        self.assertEqual(event.idempotency_key, sql)
        self.assertEqual(event.params, template, "stored as sent, nothing evaluated")
        self.assertEqual(event.partner_id.name, sql)
        self.assertEqual(self.Event.browse(second["id"]).partner_id.name, "<script>alert(1)</script>")
        response = self.segment(
            "track",
            self.track(
                event="Order'); DROP TABLE res_partner; --", userId=sql, properties=template, messageId=sql + "2"
            ),
        )
        self.assertEqual(response.status_code, 200, response.text)
        event = self.Event.browse(response.json()["results"][0]["id"])
        self.assertEqual(event.event_key, "order_drop_table_res_partner_--")
        self.assertEqual(event.type_id.name, "Order'); DROP TABLE res_partner; --", "kept as a name, never as SQL")
        self.assertEqual((event.params, event.partner_id.marketing_external_id), (template, sql))
        # The tables are all there and the events are where they should be.
        self.assertEqual(self.stored().mapped("state"), ["pending"] * 3)
        self.assertTrue(self.env["res.partner"].search_count([]))
