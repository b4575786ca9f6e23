"""Filters on event parameters: ``total > 100 and category == "shoes"``.

A filter is a conjunction of comparisons ``path operator value``: the path is
dotted (``customer.city``; ``items[].sku`` looks into every item of a list),
the value a JSON literal (``100``, ``"shoes"``, ``true``, ``null``). Filters
are parsed once, checked against the learned structure of their event type
(so ``total > "a"`` is refused when ``total`` is a number) and evaluated in
Python on the params of each event.
"""

import json
import re

FILTER_OPERATORS = ("==", "!=", ">=", "<=", ">", "<", "contains")
_CLAUSE = re.compile(
    r"^\s*([A-Za-z0-9_\-]+(?:\[\])?(?:\.[A-Za-z0-9_\-]+(?:\[\])?)*)\s*(==|!=|>=|<=|>|<|contains)\s*([^<>=!\s].*?)\s*$"
)
_SPLIT_AND = re.compile(r"\s+and\s+")
_NUMBER_TYPES = ("integer", "number")


class ParamsFilterError(ValueError):
    """The filter text cannot be parsed or does not fit the event type's structure."""


def _literal(text, clause):
    if text.startswith("'") and text.endswith("'") and len(text) >= 2:
        return text[1:-1]
    try:
        return json.loads(text)
    except ValueError as error:
        raise ParamsFilterError(
            f"{clause!r}: the value {text} is not a number, a quoted string, true, false or null"
        ) from error


def parse_params_filter(text):
    """Parse ``text`` into a list of (path, operator, value); raise ParamsFilterError."""
    text = (text or "").strip()
    if not text:
        return []
    clauses = []
    for clause in _SPLIT_AND.split(text):
        match = _CLAUSE.match(clause)
        if not match:
            raise ParamsFilterError(
                f"{clause.strip()!r}: write 'parameter operator value' with one of {', '.join(FILTER_OPERATORS)}"
            )
        path, operator, value_text = match.groups()
        value = _literal(value_text, clause.strip())
        if operator in (">", ">=", "<", "<=") and (isinstance(value, bool) or not isinstance(value, (int, float, str))):
            raise ParamsFilterError(f"{clause.strip()!r}: {operator} compares with a number or a string")
        clauses.append((path, operator, value))
    return clauses


def _json_kind(value):
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    return "other"


def check_params_filter(clauses, structure):
    """Check the clauses against a learned structure ``{path: json type}``; raise ParamsFilterError."""
    if not structure:
        return
    for path, operator, value in clauses:
        json_type = structure.get(path)
        if json_type is None:
            known = ", ".join(sorted(structure)[:20])
            raise ParamsFilterError(f"{path}: no such parameter in the events of this type (known: {known})")
        if value is None or operator == "contains":
            continue
        expected = "number" if json_type in _NUMBER_TYPES else json_type
        if expected in ("number", "string", "boolean") and _json_kind(value) != expected:
            raise ParamsFilterError(f"{path}: is a {json_type}, it cannot be compared with {json.dumps(value)}")


def _values_at(params, path):
    """Every value found at ``path`` (several when the path crosses a list)."""
    values = [params]
    for part in path.split("."):
        is_list = part.endswith("[]")
        name = part[:-2] if is_list else part
        found = []
        for value in values:
            if isinstance(value, dict) and name in value:
                item = value[name]
                if is_list:
                    if isinstance(item, list):
                        found.extend(item)
                else:
                    found.append(item)
            elif isinstance(value, list) and not is_list:
                found.extend(entry[name] for entry in value if isinstance(entry, dict) and name in entry)
        values = found
    return values


def _compare(actual, operator, expected):
    if operator == "contains":
        if isinstance(actual, str):
            return str(expected) in actual
        if isinstance(actual, list):
            return expected in actual
        return False
    if operator == "==":
        return actual == expected and isinstance(actual, bool) == isinstance(expected, bool)
    if operator == "!=":
        return not _compare(actual, "==", expected)
    numeric = (int, float)
    both_numbers = all(isinstance(v, numeric) and not isinstance(v, bool) for v in (actual, expected))
    both_strings = isinstance(actual, str) and isinstance(expected, str)
    if not (both_numbers or both_strings):
        return False
    return {">": actual > expected, ">=": actual >= expected, "<": actual < expected, "<=": actual <= expected}[
        operator
    ]


def params_match(clauses, params):
    """Whether ``params`` satisfy every clause (a path that is absent never matches, except with !=)."""
    params = params if isinstance(params, dict) else {}
    for path, operator, expected in clauses:
        values = _values_at(params, path)
        if operator == "!=":
            if any(_compare(value, "==", expected) for value in values):
                return False
            continue
        if not any(_compare(value, operator, expected) for value in values):
            return False
    return True
