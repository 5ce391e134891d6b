"""Klaviyo's filter grammar: parse, validate against ``x-klaviyo-filters``, evaluate.

Grammar (what Klaviyo documents and this project sends)::

    filter  := call
    call    := NAME "(" args ")"                    e.g. equals(status,'live'), and(..., ...)
    value   := "..." | '...' | datetime | number | true | false | null | "[" value ("," value)* "]"

Strings accept backslash escapes; datetimes are bare (``2026-01-01T00:00:00Z`` or with an offset).
Only ``and`` combines conditions (the operations we serve accept nothing else).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?")
_NUMBER = re.compile(r"-?\d+(\.\d+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_FIELD = re.compile(r"[A-Za-z_$][A-Za-z0-9_.\-$]*")


class FilterError(ValueError):
    """An invalid filter; ``str(err)`` is the specific reason shown after "Invalid filter provided"."""


@dataclass(frozen=True)
class Condition:
    operator: str
    field: str
    value: Any


def parse(text: str) -> list[Condition]:
    """The conditions of ``text`` (an ``and`` of conditions, flattened)."""
    parser = _Parser(text)
    conditions = parser.call()
    parser.skip_space()
    if parser.pos != len(text):
        raise FilterError(f"unexpected text at position {parser.pos}: {text[parser.pos : parser.pos + 20]!r}")
    return conditions


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def expect(self, char: str) -> None:
        self.skip_space()
        if not self.text.startswith(char, self.pos):
            raise FilterError(f"expected {char!r} at position {self.pos}")
        self.pos += 1

    def peek(self) -> str:
        self.skip_space()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def match(self, pattern: re.Pattern[str]) -> str | None:
        self.skip_space()
        found = pattern.match(self.text, self.pos)
        if not found:
            return None
        self.pos = found.end()
        return found.group(0)

    def call(self) -> list[Condition]:
        name = self.match(_NAME)
        if name is None:
            raise FilterError(f"expected an operator at position {self.pos}")
        self.expect("(")
        if name == "and":
            conditions = self.call()
            while self.peek() == ",":
                self.pos += 1
                conditions.extend(self.call())
            self.expect(")")
            return conditions
        if name in ("or", "not"):
            raise FilterError(f"'{name}' is not supported; only 'and' can combine conditions")
        field = self.match(_FIELD)
        if field is None:
            raise FilterError(f"expected a field name at position {self.pos}")
        self.expect(",")
        value = self.value()
        self.expect(")")
        return [Condition(name, field, value)]

    def value(self) -> Any:
        char = self.peek()
        if char in ("'", '"'):
            return self.string(char)
        if char == "[":
            self.pos += 1
            items: list[Any] = []
            if self.peek() == "]":
                self.pos += 1
                return items
            items.append(self.value())
            while self.peek() == ",":
                self.pos += 1
                items.append(self.value())
            self.expect("]")
            return items
        for word, result in (("true", True), ("false", False), ("null", None)):
            if self.text.startswith(word, self.pos) and not self.text[self.pos + len(word) :][:1].isalnum():
                self.pos += len(word)
                return result
        moment = self.match(_DATETIME)
        if moment is not None and ("T" in moment or not _NUMBER.fullmatch(moment)):
            return parse_datetime(moment)
        if moment is not None:
            self.pos -= len(moment)
        number = self.match(_NUMBER)
        if number is not None:
            return float(number) if "." in number else int(number)
        raise FilterError(f"unexpected value at position {self.pos}")

    def string(self, quote: str) -> str:
        self.pos += 1
        out = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\" and self.pos + 1 < len(self.text):
                out.append(self.text[self.pos + 1])
                self.pos += 2
                continue
            if char == quote:
                self.pos += 1
                return "".join(out)
            out.append(char)
            self.pos += 1
        raise FilterError("unterminated string")


def parse_datetime(text: str) -> datetime:
    """A filter datetime; naive values are UTC (as Klaviyo reads them)."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as err:
        raise FilterError(f"invalid datetime {text!r}") from err
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _check_value(field: str, value: Any, schema: dict[str, Any]) -> None:
    expected = schema.get("type", "string")
    if expected == "boolean":
        ok = isinstance(value, bool)
    elif schema.get("format") == "date-time":
        ok = isinstance(value, datetime)
    elif expected in ("integer", "number"):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        ok = isinstance(value, str)
    if not ok:
        kind = "a datetime" if schema.get("format") == "date-time" else f"a {expected}"
        raise FilterError(f"'{field}' must be compared with {kind}, got {value!r}")
    if "enum" in schema and value not in schema["enum"]:
        raise FilterError(f"{value!r} is not a valid value for '{field}'")


def validate(conditions: list[Condition], allowed: dict[str, dict[str, Any]]) -> None:
    """Check every condition against an operation's ``x-klaviyo-filters`` (fields, operators, value types)."""
    for cond in conditions:
        spec = allowed.get(cond.field)
        if spec is None:
            raise FilterError(f"'{cond.field}' is not a valid filter field for this endpoint")
        single = spec["operators"].get("single", [])
        listed = spec["operators"].get("list", [])
        is_list = isinstance(cond.value, list)
        if cond.operator not in single and cond.operator not in listed:
            raise FilterError(f"'{cond.operator}' is not a valid operator for '{cond.field}'")
        if is_list and cond.operator not in listed:
            raise FilterError(f"'{cond.operator}' on '{cond.field}' takes a single value, not a list")
        if not is_list and cond.operator not in single:
            raise FilterError(f"'{cond.operator}' on '{cond.field}' takes a list of values")
        for item in cond.value if is_list else [cond.value]:
            _check_value(cond.field, item, spec.get("value", {}))


def _as_comparable(value: Any) -> Any:
    if isinstance(value, str) and len(value) >= 19 and value[4] == "-" and value[10] == "T":
        try:
            return parse_datetime(value)
        except FilterError:
            return value
    return value


def matches(cond: Condition, actual: Any) -> bool:
    """Whether a record's ``actual`` field value satisfies ``cond``."""
    op, wanted = cond.operator, cond.value
    if isinstance(wanted, datetime):
        actual = _as_comparable(actual)
        if not isinstance(actual, datetime):
            return False
    if op == "equals":
        return actual in wanted if isinstance(wanted, list) else actual == wanted
    if op in ("any", "contains-any"):
        if isinstance(actual, list):
            return any(a in wanted for a in actual)
        return actual in wanted
    if op == "contains-all":
        return isinstance(actual, list) and all(w in actual for w in wanted)
    if actual is None:
        return False
    if op == "contains":
        return isinstance(actual, str) and wanted.lower() in actual.lower()
    if op == "starts-with":
        return isinstance(actual, str) and actual.startswith(wanted)
    if op == "ends-with":
        return isinstance(actual, str) and actual.endswith(wanted)
    comparisons = {
        "greater-than": lambda a, b: a > b,
        "greater-or-equal": lambda a, b: a >= b,
        "less-than": lambda a, b: a < b,
        "less-or-equal": lambda a, b: a <= b,
    }
    if op in comparisons:
        return comparisons[op](actual, wanted)
    raise FilterError(f"unsupported operator '{op}'")


def matches_all(conditions: list[Condition], record: dict[str, Any]) -> bool:
    return all(matches(cond, record.get(cond.field)) for cond in conditions)
