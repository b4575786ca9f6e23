"""A small, safe filter language over event parameters.

Marketers write ``total > 100 and category == "shoes"``; the text is parsed
(never evaluated) into a list of conditions, all of which must hold::

    [{"path": "total", "operator": ">", "value": 100, "type": "number"},
     {"path": "category", "operator": "==", "value": "shoes", "type": "string"}]

``parse_params_filter`` turns text into conditions (raising
``ParamsFilterError`` with the position and the reason), ``normalize_conditions``
checks conditions built elsewhere (JSON), and ``params_match`` tests event
parameters against them. Score rules use it for their parameter filter; the
scenario engine uses it for "on event" triggers and "wait for event".

Semantics:

- A path is a dotted name (``customer.city``); ``[]`` goes through the items of
  an array (``items[].sku == "SHOE-1"`` holds when any item's sku is SHOE-1).
  A path reaching an array compares its items (``tags == "vip"``).
- Positive operators (``==``, ``>``, ``>=``, ``<``, ``<=``, ``contains``, ``in``)
  hold when any reached value satisfies them; negative ones (``!=``,
  ``not in``) hold when the path exists and none of its values equals.
- A missing path (or null) satisfies nothing but ``not exists``.
- The value of a condition has a type (number, string, boolean), taken from the
  event type's learned structure when the path is known there, else from the
  literal. Parameter values are coerced to that type before comparing
  (``"120"`` counts as the number 120 for ``total > 100``); a value that cannot
  be coerced does not match.
"""

import json
import math
import re

from odoo.tools import SQL

from .constants import COMPARISONS

PARAMS_FILTER_MAX_LENGTH = 2000
PARAMS_FILTER_MAX_CONDITIONS = 20

COMPARISON_OPERATORS = ("==", "!=", ">", ">=", "<", "<=")
ORDER_OPERATORS = (">", ">=", "<", "<=")
LIST_OPERATORS = ("in", "not in")
UNARY_OPERATORS = ("exists", "not exists")
OPERATORS = (*COMPARISON_OPERATORS, "contains", *LIST_OPERATORS, *UNARY_OPERATORS)
NEGATIVE_OPERATORS = ("!=", "not in")
VALUE_TYPES = ("number", "string", "boolean")

# Learned structure types (JSON Schema names) -> filter value types.
STRUCTURE_TYPES = {"integer": "number", "number": "number", "string": "string", "boolean": "boolean"}

_PATH_PART = r"[A-Za-z_$][A-Za-z0-9_$\-]*(?:\[\])?"
PATH_PATTERN = re.compile(rf"^{_PATH_PART}(?:\.{_PATH_PART})*$")

_TOKEN_PATTERN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<number>-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<operator>==|!=|>=|<=|>|<)
  | (?P<punctuation>[\[\],])
  | (?P<word>"""
    + _PATH_PART
    + r"(?:\."
    + _PATH_PART
    + r""")*)
    """,
    re.VERBOSE,
)


class ParamsFilterError(ValueError):
    """A filter that cannot be parsed or checked; the message says where and why."""


def _tokenize(text):
    tokens, position = [], 0
    while position < len(text):
        match = _TOKEN_PATTERN.match(text, position)
        if not match:
            hint = " (use == to compare)" if text[position] == "=" else ""
            raise ParamsFilterError(f"unexpected character {text[position]!r} at position {position + 1}{hint}")
        kind = match.lastgroup
        if kind != "space":
            tokens.append((kind, match.group(), position + 1))
        position = match.end()
    return tokens


def _string_literal(raw):
    body = raw[1:-1]
    if raw[0] == "'":
        body = body.replace('\\"', '"').replace("\\'", "'").replace('"', '\\"')
    try:
        return json.loads(f'"{body}"')
    except ValueError as error:
        raise ParamsFilterError(f"invalid string {raw}") from error


def _literal(token):
    kind, raw, position = token
    if kind == "string":
        return _string_literal(raw), "string"
    if kind == "number":
        number = float(raw)
        if not math.isfinite(number):
            raise ParamsFilterError(f"number {raw} at position {position} is too large")
        return (int(number) if number.is_integer() and "." not in raw and "e" not in raw.lower() else number), "number"
    if kind == "word" and raw.lower() in ("true", "false"):
        return raw.lower() == "true", "boolean"
    raise ParamsFilterError(f'expected a value (number, "string", true or false) at position {position}, got {raw!r}')


class _Parser:
    def __init__(self, text):
        self.tokens = _tokenize(text)
        self.index = 0

    def peek(self, offset=0):
        position = self.index + offset
        return self.tokens[position] if position < len(self.tokens) else None

    def take(self):
        token = self.peek()
        if token is None:
            raise ParamsFilterError("the filter ends too early")
        self.index += 1
        return token

    def word_is(self, word, offset=0):
        token = self.peek(offset)
        return token is not None and token[0] == "word" and token[1].lower() == word

    def parse(self):
        conditions = [self.condition()]
        while self.peek() is not None:
            if not self.word_is("and"):
                _kind, raw, position = self.peek()
                hint = " (only 'and' joins conditions)" if raw.lower() == "or" else ""
                raise ParamsFilterError(f"expected 'and' at position {position}, got {raw!r}{hint}")
            self.take()
            conditions.append(self.condition())
        return conditions

    def condition(self):
        kind, path, position = self.take()
        if kind != "word" or path.lower() in ("and", "not", "in", "contains", "exists", "true", "false"):
            raise ParamsFilterError(f"expected a parameter name at position {position}, got {path!r}")
        operator = self.operator()
        if operator in UNARY_OPERATORS:
            return {"path": path, "operator": operator}
        if operator in LIST_OPERATORS:
            return {"path": path, "operator": operator, "value": self.list_value()}
        return {"path": path, "operator": operator, "value": _literal(self.take())}

    def operator(self):
        kind, raw, position = self.take()
        if kind == "operator":
            return raw
        lowered = raw.lower()
        if kind == "word" and lowered in ("contains", "in", "exists"):
            return lowered
        if kind == "word" and lowered == "not" and (self.word_is("in") or self.word_is("exists")):
            return "not " + self.take()[1].lower()
        raise ParamsFilterError(f"expected an operator ({', '.join(OPERATORS)}) at position {position}, got {raw!r}")

    def list_value(self):
        _kind, raw, position = self.take()
        if raw != "[":
            raise ParamsFilterError(f"expected a list like [1, 2] at position {position}, got {raw!r}")
        values = []
        while True:
            values.append(_literal(self.take()))
            _kind, raw, position = self.take()
            if raw == "]":
                return values
            if raw != ",":
                raise ParamsFilterError(f"expected ',' or ']' at position {position}, got {raw!r}")


def _coerce_literal(value, value_type, target_type, path):
    """Convert a literal to the type the learned structure gives its path."""
    if value_type == target_type:
        return value
    coerced = coerce_value(value, target_type)
    if coerced is None:
        shown = json.dumps(value)
        raise ParamsFilterError(f"{path} is a {target_type} in the learned structure, {shown} is not")
    if isinstance(coerced, float) and coerced.is_integer():
        return int(coerced)
    return coerced


def normalize_conditions(conditions, structure=None):
    """Check conditions (from the parser or from JSON) and give each value its type.

    ``structure`` is an event type's learned ``{path: json type}``; when it
    knows a path, the condition's values are converted to that type. Raises
    ParamsFilterError naming the condition and the reason.
    """
    if not isinstance(conditions, list):
        raise ParamsFilterError("the filter must be a list of conditions")
    if len(conditions) > PARAMS_FILTER_MAX_CONDITIONS:
        raise ParamsFilterError(f"at most {PARAMS_FILTER_MAX_CONDITIONS} conditions")
    structure = structure or {}
    normalized = []
    for number, condition in enumerate(conditions, start=1):
        if not isinstance(condition, dict):
            raise ParamsFilterError(f"condition {number}: must be an object with path, operator and value")
        path, operator = condition.get("path"), condition.get("operator")
        if not isinstance(path, str) or not PATH_PATTERN.match(path):
            raise ParamsFilterError(f"condition {number}: invalid parameter path {path!r}")
        if operator not in OPERATORS:
            raise ParamsFilterError(f"condition {number}: unknown operator {operator!r}")
        if operator in UNARY_OPERATORS:
            normalized.append({"path": path, "operator": operator})
            continue
        if structure and path not in structure and f"{path}[]" not in structure:
            # A typo in a path would make the filter silently match nothing.
            known = ", ".join(sorted(structure)[:20])
            raise ParamsFilterError(
                f"condition {number}: {path}: no such parameter in the events of this type (known: {known})"
            )
        target_type = STRUCTURE_TYPES.get(structure.get(path) or structure.get(f"{path}[]"))
        raw_values = condition.get("value")
        if operator in LIST_OPERATORS:
            if not isinstance(raw_values, list) or not raw_values:
                raise ParamsFilterError(f"condition {number}: {operator} needs a non-empty list of values")
        else:
            raw_values = [raw_values]
        values, types = [], set()
        for raw_value in raw_values:
            if isinstance(raw_value, tuple):  # (value, type) from the parser
                value, value_type = raw_value
            else:
                value, value_type = raw_value, _json_value_type(raw_value)
                if value_type is None:
                    raise ParamsFilterError(
                        f"condition {number}: {path}: the value must be a number, a string or a boolean"
                    )
            if target_type:
                try:
                    value = _coerce_literal(value, value_type, target_type, path)
                except ParamsFilterError as error:
                    raise ParamsFilterError(f"condition {number}: {error}") from error
                value_type = target_type
            values.append(value)
            types.add(value_type)
        if len(types) > 1:
            raise ParamsFilterError(f"condition {number}: {path}: the values mix {' and '.join(sorted(types))}")
        value_type = types.pop()
        if operator in ORDER_OPERATORS and value_type == "boolean":
            raise ParamsFilterError(f"condition {number}: {path}: {operator} compares numbers or strings, not booleans")
        if operator == "contains" and value_type == "boolean" and target_type != "boolean":
            raise ParamsFilterError(f"condition {number}: {path}: contains needs a string or a number")
        normalized.append(
            {
                "path": path,
                "operator": operator,
                "value": values if operator in LIST_OPERATORS else values[0],
                "type": value_type,
            }
        )
    return normalized


def parse_params_filter(text, structure=None):
    """Parse ``total > 100 and category == "shoes"`` into normalized conditions.

    An empty text is the empty list (no filter). Raises ParamsFilterError.
    """
    text = (text or "").strip()
    if not text:
        return []
    if len(text) > PARAMS_FILTER_MAX_LENGTH:
        raise ParamsFilterError(f"longer than {PARAMS_FILTER_MAX_LENGTH} characters")
    return normalize_conditions(_Parser(text).parse(), structure)


def _json_value_type(value):
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)) and math.isfinite(value):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def coerce_value(value, value_type):
    """``value`` converted to ``value_type`` (number, string, boolean), or None when it cannot be."""
    if value is None or isinstance(value, (dict, list)):
        return None
    if value_type == "number":
        if isinstance(value, bool):
            return None
        if isinstance(value, (int, float)):
            return value
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    if value_type == "string":
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)
    if value_type == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        return None
    return None


def resolve_path(params, path):
    """Every value ``path`` reaches in ``params`` (arrays are flattened), nulls left out."""
    values = [params]
    for part in path.split("."):
        through_items = part.endswith("[]")
        name = part[:-2] if through_items else part
        reached = []
        for value in values:
            if isinstance(value, dict) and name in value:
                child = value[name]
                if through_items:
                    if isinstance(child, list):
                        reached.extend(child)
                else:
                    reached.append(child)
        values = reached
    flattened = []
    for value in values:
        if isinstance(value, list):
            flattened.extend(value)
        elif value is not None:
            flattened.append(value)
    return flattened


def _value_satisfies(operator, actual, expected, value_type):
    actual = coerce_value(actual, value_type)
    if actual is None:
        return False
    if operator in ("==", "!="):
        return actual == expected
    if operator in ("in", "not in"):
        return actual in expected
    if operator == "contains":
        if value_type == "string":
            return str(expected).lower() in actual.lower()
        return actual == expected
    if value_type == "string":
        # Strings compare in text order, which also orders ISO 8601 dates.
        actual, expected = str(actual), str(expected)
    return COMPARISONS[operator](actual, expected)


def condition_matches(condition, params):
    values = resolve_path(params if isinstance(params, dict) else {}, condition["path"])
    operator = condition["operator"]
    if operator == "exists":
        return bool(values)
    if operator == "not exists":
        return not values
    if not values:
        return False
    positive = {"!=": "==", "not in": "in"}.get(operator, operator)
    expected, value_type = condition["value"], condition["type"]
    found = any(_value_satisfies(positive, value, expected, value_type) for value in values)
    return not found if operator in NEGATIVE_OPERATORS else found


def params_match(conditions, params):
    """Whether event ``params`` satisfy every condition (normalized ones; an empty list matches all)."""
    return all(condition_matches(condition, params) for condition in conditions or ())


def format_conditions(conditions):
    """The text form of conditions, parseable by ``parse_params_filter``."""
    parts = []
    for condition in conditions or ():
        operator = condition["operator"]
        if operator in UNARY_OPERATORS:
            parts.append(f"{condition['path']} {operator}")
            continue
        values = condition["value"] if operator in LIST_OPERATORS else [condition["value"]]
        shown = [json.dumps(value, ensure_ascii=False) for value in values]
        value_text = f"[{', '.join(shown)}]" if operator in LIST_OPERATORS else shown[0]
        parts.append(f"{condition['path']} {operator} {value_text}")
    return " and ".join(parts)


# ----------------------------------------------------------------------
# The same conditions as SQL over a jsonb column
# ----------------------------------------------------------------------
#
# Segments count events in the database instead of loading them: each
# condition becomes a test on the values ``jsonb_path_query`` reaches, with
# the coercions above done by the SQL functions ``init_params_sql_functions``
# creates. Strings compare in byte order (COLLATE "C") as Python does.

PARAMS_SQL_FUNCTIONS = """
CREATE OR REPLACE FUNCTION marketing_params_number(value jsonb) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE jsonb_typeof(value)
        WHEN 'number' THEN (value #>> '{}')::numeric
        WHEN 'string' THEN CASE WHEN value #>> '{}' ~ '^\\s*[-+]?([0-9]+\\.?[0-9]*|\\.[0-9]+)([eE][-+]?[0-9]+)?\\s*$'
                                THEN trim(value #>> '{}')::numeric END
    END
$$;
CREATE OR REPLACE FUNCTION marketing_params_text(value jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE jsonb_typeof(value)
        WHEN 'string' THEN value #>> '{}'
        WHEN 'boolean' THEN value #>> '{}'
        WHEN 'number' THEN CASE WHEN (value #>> '{}')::numeric = trunc((value #>> '{}')::numeric)
                                THEN trunc((value #>> '{}')::numeric)::text ELSE value #>> '{}' END
    END
$$;
CREATE OR REPLACE FUNCTION marketing_params_boolean(value jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE jsonb_typeof(value)
        WHEN 'boolean' THEN (value #>> '{}')::boolean
        WHEN 'string' THEN CASE lower(trim(value #>> '{}')) WHEN 'true' THEN TRUE WHEN 'false' THEN FALSE END
        WHEN 'number' THEN CASE (value #>> '{}')::numeric WHEN 1 THEN TRUE WHEN 0 THEN FALSE END
    END
$$;
"""

_SQL_COERCIONS = {
    "number": ("marketing_params_number", "numeric"),
    "string": ("marketing_params_text", "text"),
    "boolean": ("marketing_params_boolean", "boolean"),
}


def init_params_sql_functions(cr):
    cr.execute(PARAMS_SQL_FUNCTIONS)


def path_jsonpath(path):
    """``items[].sku`` -> ``lax $."items"[*]."sku"[*]``: every non-array value the path reaches, arrays flattened."""
    parts = []
    for part in path.split("."):
        through_items = part.endswith("[]")
        name = part[:-2] if through_items else part
        parts.append(json.dumps(name) + ("[*]" if through_items else ""))
    return "lax $." + ".".join(parts) + "[*]"


def params_values_sql(column, path, value_type=None):
    """SQL selecting the values ``path`` reaches in the jsonb ``column`` as ``v`` (coerced when typed)."""
    values = SQL("jsonb_path_query(%s, %s::jsonpath)", column, path_jsonpath(path))
    if value_type is None:
        return SQL("SELECT raw AS v FROM %s AS raw WHERE jsonb_typeof(raw) <> 'null'", values)
    function, _cast = _SQL_COERCIONS[value_type]
    return SQL("SELECT %s(raw) AS v FROM %s AS raw", SQL.identifier(function), values)


def condition_sql(condition, column):
    """One normalized condition as an SQL boolean over the jsonb ``column``."""
    operator, path = condition["operator"], condition["path"]
    present = SQL("EXISTS (%s)", params_values_sql(column, path))
    if operator == "exists":
        return present
    if operator == "not exists":
        return SQL("NOT %s", present)
    value_type = condition["type"]
    _function, cast = _SQL_COERCIONS[value_type]
    typed = params_values_sql(column, path, value_type)
    positive = {"!=": "==", "not in": "in"}.get(operator, operator)
    value = condition["value"]
    if positive == "in":
        test = SQL("v = ANY(%s::%s[])", list(value), SQL(cast))
    elif positive == "contains" and value_type == "string":
        test = SQL("strpos(lower(v), lower(%s)) > 0", value)
    elif positive in ("==", "contains"):
        test = SQL("v = %s::%s", value, SQL(cast))
    else:
        collate = SQL(' COLLATE "C"') if value_type == "string" else SQL("")
        test = SQL("v%s %s %s::%s%s", collate, SQL(positive), value, SQL(cast), collate)
    found = SQL("EXISTS (SELECT 1 FROM (%s) AS typed WHERE %s)", typed, test)
    if operator in NEGATIVE_OPERATORS:
        return SQL("(%s AND NOT %s)", present, found)
    return found


def conditions_sql(conditions, column):
    """All conditions (they must all hold) as one SQL boolean; TRUE for none."""
    if not conditions:
        return SQL("TRUE")
    return SQL("(%s)", SQL(" AND ").join(condition_sql(condition, column) for condition in conditions))
