import base64
import gzip
import json
from pathlib import Path

from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from odoo.tests import TransactionCase
from odoo.tests import tagged

from .common import MarketingAutomationHttpCommon

DOCUMENT_PATH = Path(__file__).resolve().parent.parent / "static" / "openapi.json"
DOCUMENT_URI = "urn:marketing-event-automation:openapi"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def load_document():
    return json.loads(DOCUMENT_PATH.read_text(encoding="utf-8"))


def escape_pointer(name):
    return name.replace("~", "~0").replace("/", "~1")


class OpenApiDocument:
    """The shipped OpenAPI document, with its $refs followed and its schemas ready to validate."""

    def __init__(self, document):
        self.document = document
        self.registry = Registry().with_resource(DOCUMENT_URI, DRAFT202012.create_resource(document))

    def resolve(self, pointer):
        """The object at ``pointer`` (``#/a/b``), following OpenAPI $refs; returns (pointer, object)."""
        node = self.document
        for part in pointer.removeprefix("#/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        if isinstance(node, dict) and "$ref" in node and len(node) == 1:
            return self.resolve(node["$ref"])
        return pointer, node

    def operations(self):
        """Every (path, method) the document lists."""
        for path, item in self.document["paths"].items():
            for method in HTTP_METHODS:
                if method in item:
                    yield path, method

    def operation_pointer(self, path, method):
        return f"#/paths/{escape_pointer(path)}/{method}"

    def responses(self, path, method):
        """{status: pointer of the response object} of one operation."""
        _pointer, operation = self.resolve(self.operation_pointer(path, method))
        return {
            status: self.resolve(f"{self.operation_pointer(path, method)}/responses/{status}")[0]
            for status in operation["responses"]
        }

    def validator(self, schema_pointer):
        return Draft202012Validator({"$ref": DOCUMENT_URI + schema_pointer}, registry=self.registry)

    def body_errors(self, response_pointer, media_type, body):
        _pointer, response = self.resolve(response_pointer)
        if media_type not in response.get("content", {}):
            return [f"media type {media_type} not documented (documented: {sorted(response.get('content', {}))})"]
        schema_pointer = f"{response_pointer}/content/{escape_pointer(media_type)}/schema"
        return [
            f"{'/'.join(map(str, error.absolute_path)) or '(body)'}: {error.message}"
            for error in self.validator(schema_pointer).iter_errors(body)
        ]


@tagged("post_install", "-at_install")
class TestOpenApiDocument(TransactionCase):
    """The document is valid OpenAPI 3.1 and its own examples follow its schemas."""

    def test_document_is_valid_openapi_3_1(self):
        document = load_document()
        self.assertEqual(document["openapi"], "3.1.0")
        validate_openapi(document)

    def test_examples_follow_their_schemas(self):
        api = OpenApiDocument(load_document())
        checked = 0
        for path, method in api.operations():
            operation_pointer = api.operation_pointer(path, method)
            _pointer, operation = api.resolve(operation_pointer)
            media_pointers = []
            if "requestBody" in operation:
                request_pointer, request_body = api.resolve(f"{operation_pointer}/requestBody")
                media_pointers += [(request_pointer, media) for media in request_body["content"]]
            for status in operation["responses"]:
                response_pointer, response = api.resolve(f"{operation_pointer}/responses/{status}")
                media_pointers += [(response_pointer, media) for media in response.get("content", {})]
            for owner_pointer, media in media_pointers:
                media_pointer = f"{owner_pointer}/content/{escape_pointer(media)}"
                _pointer, media_object = api.resolve(media_pointer)
                validator = api.validator(f"{media_pointer}/schema")
                for name, example in media_object.get("examples", {}).items():
                    with self.subTest(path=path, media=media_pointer, example=name):
                        errors = [error.message for error in validator.iter_errors(example["value"])]
                        self.assertEqual(errors, [])
                        checked += 1
        self.assertGreater(checked, 20, "every operation has examples")

    def test_every_operation_documents_its_security_and_answers(self):
        document = load_document()
        schemes = document["components"]["securitySchemes"]
        self.assertEqual((schemes["writeKeyBearer"]["type"], schemes["writeKeyBearer"]["scheme"]), ("http", "bearer"))
        self.assertEqual((schemes["segmentBasic"]["type"], schemes["segmentBasic"]["scheme"]), ("http", "basic"))
        api = OpenApiDocument(document)
        for path, method in api.operations():
            with self.subTest(path=path):
                operation = document["paths"][path][method]
                self.assertIn("security", operation)
                self.assertTrue(operation["responses"])
                if method == "post" and "{" not in path:
                    parameter_names = [api.resolve(p["$ref"])[1]["name"] for p in operation["parameters"]]
                    self.assertIn("Content-Encoding", parameter_names)


@tagged("post_install", "-at_install")
class TestOpenApiContract(MarketingAutomationHttpCommon):
    """Real requests for every documented answer of every path; the answers must be documented and match."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.api = OpenApiDocument(load_document())

    # -- requests ---------------------------------------------------------

    def basic(self, key=None):
        return "Basic " + base64.b64encode(f"{key or self.write_key}:".encode()).decode()

    def send(self, method, path, data=None, headers=None, auth="bearer"):
        all_headers = {"Content-Type": "application/json"}
        if auth == "bearer":
            all_headers["Authorization"] = f"Bearer {self.write_key}"
        elif auth == "basic":
            all_headers["Authorization"] = self.basic()
        elif auth:
            all_headers["Authorization"] = auth
        all_headers.update(headers or {})
        if data is not None and not isinstance(data, (str, bytes, type(iter([])))):
            data = json.dumps(data)
        if method == "get":
            return self.url_open(path, headers=all_headers, allow_redirects=False)
        # Not url_open: it turns a POST with an empty body into a GET.
        return self.opener.post(
            self.base_url() + path, data=data or b"", headers=all_headers, timeout=30, allow_redirects=False
        )

    def segment_message(self, call, index=0, **overrides):
        message = {
            "userId": "C-1001",
            "messageId": f"{call}-{index}",
            "timestamp": "2026-01-15T10:00:00Z",
            "context": {"traits": {"email": "alice@example.com"}},
        }
        message |= {
            "track": {"event": "Order Completed", "properties": {"total": 12.5}},
            "identify": {"traits": {"email": "alice@example.com", "name": "Alice Shopper"}},
            "page": {"name": "Checkout", "properties": {"url": "https://shop.example.com/checkout"}},
            "screen": {"name": "Cart"},
        }[call]
        return message | overrides

    def forbid_all_but_purchase(self):
        self.source.write({"allow_all_types": False, "allowed_type_ids": [(6, 0, self.type_purchase.ids)]})

    def allow_all(self):
        self.source.write({"allow_all_types": True, "allowed_type_ids": [(5, 0, 0)], "rate_limit": 0})

    def exhaust_rate_limit(self):
        self.source.rate_limit = 1
        self.source._consume_rate_limit()

    def cases(self):
        """(path, method, expected status, request arguments, setup) for every documented answer."""
        native = "/automation/v1/events"
        event = {"event": "test_purchase", "event_id": "p-1", "contact": {"email": "alice@example.com"}}
        cases = [
            (native, "post", 202, {"data": event}, None),
            (native, "post", 202, {"data": {"events": [event | {"event_id": "p-2"}, {"event": "bad key"}]}}, None),
            (native, "post", 400, {"data": "{not json"}, None),
            (native, "post", 400, {"data": {"events": [{"event": "bad key"}]}}, None),
            (native, "post", 401, {"data": event, "auth": None}, None),
            (native, "post", 403, {"data": event | {"event": "test_cart_abandoned"}}, self.forbid_all_but_purchase),
            (native, "post", 413, {"data": {"events": [event] * 1001}}, None),
            (
                native,
                "post",
                415,
                {"data": "a=b", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
                None,
            ),
            (native, "post", 415, {"data": event, "headers": {"Content-Encoding": "br"}}, None),
            (native, "post", 429, {"data": event}, self.exhaust_rate_limit),
            (native, "post", 411, {"data": iter([json.dumps(event).encode()])}, None),
            ("/automation/segment/v1/merge", "post", 404, {"data": {"previousId": "a"}, "auth": "basic"}, None),
            ("/automation/v1/openapi.json", "get", 200, {"auth": None}, None),
        ]
        for call in ("track", "identify", "page", "screen"):
            path = f"/automation/segment/v1/{call}"
            message = self.segment_message(call)
            anonymous = {key: value for key, value in message.items() if key not in ("userId", "context", "traits")}
            cases += [
                (path, "post", 200, {"data": message, "auth": "basic"}, None),
                (path, "post", 200, {"data": message | {"writeKey": self.write_key}, "auth": None}, None),
                (path, "post", 400, {"data": "[1", "auth": "basic"}, None),
                (path, "post", 400, {"data": anonymous, "auth": "basic"}, None),
                (path, "post", 401, {"data": message, "auth": self.basic("mea_nope")}, None),
                (path, "post", 401, {"data": message, "auth": None}, None),
                (path, "post", 403, {"data": message, "auth": "basic"}, self.forbid_all_but_purchase),
                (path, "post", 413, {"data": message | {"blob": "x" * 40000}, "auth": "basic"}, None),
                (path, "post", 415, {"data": message, "auth": "basic", "headers": {"Content-Type": "text/xml"}}, None),
                (path, "post", 429, {"data": message, "auth": "basic"}, self.exhaust_rate_limit),
                (path, "post", 411, {"data": iter([json.dumps(message).encode()]), "auth": "basic"}, None),
            ]
        for call in ("batch", "import"):
            path = f"/automation/segment/v1/{call}"
            batch = [
                self.segment_message(name, index=f"{call}-{name}") | {"type": name}
                for name in ("track", "identify", "page", "screen")
            ]
            cases += [
                (path, "post", 200, {"data": {"batch": batch}, "auth": "basic"}, None),
                (
                    path,
                    "post",
                    200,
                    {
                        "data": gzip.compress(json.dumps({"batch": batch, "writeKey": self.write_key}).encode()),
                        "auth": None,
                        "headers": {"Content-Encoding": "gzip"},
                    },
                    None,
                ),
                (path, "post", 400, {"data": {"batch": []}, "auth": "basic"}, None),
                (path, "post", 400, {"data": {"batch": [{"type": "alias"}, "x"]}, "auth": "basic"}, None),
                (path, "post", 401, {"data": {"batch": batch}, "auth": None}, None),
                (path, "post", 403, {"data": {"batch": batch}, "auth": "basic"}, self.forbid_all_but_purchase),
                (path, "post", 413, {"data": {"batch": batch * 3000}, "auth": "basic"}, None),
                (
                    path,
                    "post",
                    415,
                    {"data": {"batch": batch}, "auth": "basic", "headers": {"Content-Encoding": "x"}},
                    None,
                ),
                (path, "post", 429, {"data": {"batch": batch}, "auth": "basic"}, self.exhaust_rate_limit),
                (path, "post", 411, {"data": iter([json.dumps({"batch": batch}).encode()]), "auth": "basic"}, None),
            ]
        return cases

    # -- checks -----------------------------------------------------------

    def documented_path(self, url_path):
        if url_path in self.api.document["paths"]:
            return url_path
        for path in self.api.document["paths"]:
            prefix, _sep, _rest = path.partition("{")
            if "{" in path and url_path.startswith(prefix) and "/" not in url_path[len(prefix) :]:
                return path
        self.fail(f"{url_path} is not documented")

    def assert_answer_documented(self, url_path, method, response):
        """The status is listed for this operation and the body follows the schema given for it."""
        path = self.documented_path(url_path)
        responses = self.api.responses(path, method)
        status = str(response.status_code)
        self.assertIn(
            status, responses, f"{method.upper()} {url_path} answered {status}, undocumented: {response.text[:300]}"
        )
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        errors = self.api.body_errors(responses[status], media_type, response.json())
        self.assertEqual(errors, [], f"{method.upper()} {url_path} {status}: the body breaks the documented schema")
        _pointer, documented_response = self.api.resolve(responses[status])
        for header, spec in documented_response.get("headers", {}).items():
            self.assertIn(header, response.headers, f"{method.upper()} {url_path} {status}: {header} missing")
            value = response.headers[header]
            if spec["schema"].get("type") == "integer":
                self.assertRegex(value, r"^[0-9]+$", f"{header} is not an integer")
                value = int(value)
            errors = [error.message for error in Draft202012Validator(spec["schema"]).iter_errors(value)]
            self.assertEqual(errors, [], f"{method.upper()} {url_path} {status}: header {header} breaks its schema")
        return path, status

    def test_every_documented_answer_is_real_and_matches_its_schema(self):
        documented = {
            (path, method, status)
            for path, method in self.api.operations()
            for status in self.api.responses(path, method)
        }
        covered = set()
        for url_path, method, expected, request, setup in self.cases():
            with self.subTest(path=url_path, status=expected, request=str(request.get("data"))[:80]):
                if setup:
                    setup()
                try:
                    response = self.send(method, url_path, **request)
                finally:
                    self.allow_all()
                self.assertEqual(response.status_code, expected, response.text[:500])
                path, status = self.assert_answer_documented(url_path, method, response)
                covered.add((path, method, status))
        self.assertEqual(documented - covered, set(), "documented answers that no request produced")

    def test_hostile_bodies_get_documented_answers(self):
        """Whatever the body, each path answers a documented status with a documented body: never a 500."""
        hostile = [
            "",
            "null",
            "[]",
            "{}",
            '"text"',
            "1e999",
            '{"events": null}',
            '{"events": [null, 1, "x", [], {"event": {"a": 1}}]}',
            '{"event": "x", "event_id": true, "timestamp": [], "contact": {"id": "1", "email": 3}}',
            '{"batch": 5}',
            '{"batch": [null, 1, "x", {"type": "alias"}, {"type": "track"}]}',
            '{"batch": [{"type": "track", "event": 3, "userId": {"a": 1}}], "context": []}',
            '{"type": "identify", "userId": true, "traits": "x"}',
            '{"userId": "u", "event": "E", "properties": [], "context": {"traits": 5}}',
            '{"userId": "u", "event": "E", "messageId": {"a": 1}, "timestamp": "soon"}',
            '{"userId": "u", "event": "\\u0000", "properties": {"k": "\\u0000"}}',
            '{"userId": "' + "u" * 5000 + '", "event": "E"}',
            '{"userId": "u", "event": "E", "properties": {"n": 1e999}}',
            '{"userId": "u", "event": "E", "properties": ' + "[" * 5000 + "]" * 5000 + "}",
            b"\xff\xfe\x00",
            '{"event": "x", "contact": {"email": "a@b.be", "name": "\\ud800"}, "params": {"\\udfff": "\\ud800"}}',
            '{"userId": "u", "event": "Order \\ud800 Completed\\u0000", "traits": {"name": "\\ud800"}}',
            '{"batch": [{"type": "identify", "userId": "u", "traits": {"name": "\\udc00"}}], "writeKey": "\\ud800"}',
        ]
        url_paths = [
            "/automation/v1/events",
            *(f"/automation/segment/v1/{call}" for call in ("track", "identify", "page", "screen", "batch", "import")),
        ]
        for url_path in url_paths:
            for data in hostile:
                with self.subTest(path=url_path, data=data[:60]):
                    auth = "bearer" if url_path == "/automation/v1/events" else "basic"
                    response = self.send("post", url_path, data=data, auth=auth)
                    self.assertLess(response.status_code, 500, response.text[:300])
                    self.assert_answer_documented(url_path, "post", response)

    def test_served_document_is_the_shipped_file(self):
        response = self.url_open("/automation/v1/openapi.json")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.headers["Content-Type"].split(";")[0], "application/json")
        self.assertEqual(response.json(), load_document())
