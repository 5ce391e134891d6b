"""The filter grammar parser: quoting, escapes, datetimes, lists, nesting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from klaviyo_dagster.klaviyo.spec import load_operations
from klaviyo_dagster.sim.filters import Condition, FilterError, parse, validate


def test_parses_nested_and_with_every_value_kind() -> None:
    conditions = parse(
        "and(equals(name,'It\\'s \"fine\", ok'),and(greater-than(created,2026-01-01T00:00:00Z),"
        "less-than(updated,2026-01-02T03:04:05+02:00)),any(id,[\"a\",'b']),equals(archived,false),"
        "equals(external_id,null))"
    )
    assert conditions == [
        Condition("equals", "name", 'It\'s "fine", ok'),
        Condition("greater-than", "created", datetime(2026, 1, 1, tzinfo=UTC)),
        Condition("less-than", "updated", datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))),
        Condition("any", "id", ["a", "b"]),
        Condition("equals", "archived", False),
        Condition("equals", "external_id", None),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "equals(name,'x'",
        "equals(name 'x')",
        "equals(name,'x') trailing",
        "equals(name,'unterminated)",
        "and()",
        "equals(,'x')",
    ],
)
def test_syntax_errors(text: str) -> None:
    with pytest.raises(FilterError):
        parse(text)


def test_validation_uses_the_spec_extract() -> None:
    """Enums in x-klaviyo-filters are enforced (campaign channel must be a known channel)."""
    allowed = load_operations()["get_campaigns"].filters
    validate(parse("equals(messages.channel,'email')"), allowed)
    with pytest.raises(FilterError):
        validate(parse("equals(messages.channel,'fax')"), allowed)
