"""The old endpoint's parameters, from a JSON body (POST) or a query string (GET), onto SyncOptions.

Both forms are flattened to the same names first (``flow.limitFlows``, ``audience.schema``,
``campaign.timeframeKey``, ...; the flat spellings ``limitFlows``, ``audienceSchema``,
``timeframeKey`` are accepted in either form), then parsed by one function, so GET and POST cannot
drift apart. Every bad value raises BadRequest naming the parameter as the caller spelled it.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from pydantic import ValidationError

from klaviyo_dagster.accounts import validate_account_id
from klaviyo_dagster.producers.options import RANGES, SyncOptions, validation_messages

MODES = ("dry-run", "live")
NIGHTLY_KEY = re.compile(r"^nightly-(\d{4}-\d{2}-\d{2})$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_KEY_CHARS = re.compile(r"[A-Za-z0-9._:@/+=-]{1,200}")  # fullmatch: "$" would allow a trailing newline
KEY_PARAMETERS = ("idempotency", "idempotencyKey")

# SyncOptions fields by JSON type: a POST body's values must have it (``true`` is not a number).
INTEGER_FIELDS = frozenset(
    {"days", "limit_flows", "limit_messages", "audience_page_size", "audience_max_pages"}
)
BOOLEAN_FIELDS = frozenset({"fast", "enrich_message_names"})

# The caller's names of each SyncOptions field: the contract's (nested) name first, then flat aliases.
OPTION_PARAMETERS: dict[str, tuple[str, ...]] = {
    "days": ("days",),
    "fast": ("fast",),
    "limit_flows": ("flow.limitFlows", "limitFlows"),
    "limit_messages": ("flow.limitMessages", "limitMessages"),
    "enrich_message_names": ("flow.enrichMessageNames", "enrichMessageNames"),
    "audience_schema": ("audience.schema", "audienceSchema"),
    "audience_page_size": ("audience.pageSize", "audiencePageSize"),
    "audience_max_pages": ("audience.maxPages", "audienceMaxPages"),
    "timeframe_key": ("campaign.timeframeKey", "timeframeKey"),
    "conversion_metric_id": ("conversionMetricId",),
}
NESTED_GROUPS = ("flow", "audience", "campaign")
# Every name a JSON body may hold (flattened): anything else is a 400 naming it (a typo such as
# "dayz" would otherwise be ignored and the default used).
BODY_PARAMETERS = frozenset(
    {"mode", "accountId", "start", "end", *KEY_PARAMETERS}
    | {name for names in OPTION_PARAMETERS.values() for name in names}
)


class BadRequest(Exception):
    """A 400: ``error`` is the message, ``parameter`` the caller's name of the offending value."""

    def __init__(self, error: str, parameter: str | None = None, details: Any = None) -> None:
        super().__init__(error)
        self.error = error
        self.parameter = parameter
        self.details = details

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.error}
        if self.parameter is not None:
            body["parameter"] = self.parameter
        if self.details is not None:
            body["details"] = self.details
        return body


@dataclass(frozen=True)
class TriggerRequest:
    mode: str
    account_id: str | None
    options: SyncOptions
    partition_date: date
    idempotency_key: str
    # The parameter that named the date ("end" or "idempotency"); None: the account's newest complete date.
    date_parameter: str | None = None

    @property
    def is_live(self) -> bool:
        return self.mode == "live"


def flatten_body(body: Any) -> dict[str, Any]:
    """A POST body as flat parameters: ``{"flow": {"limitFlows": 5}}`` → ``{"flow.limitFlows": 5}``.

    BadRequest naming the parameter when a name is given both nested and dotted, or is not one of
    ``BODY_PARAMETERS``.
    """
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object", "body")
    flat: dict[str, Any] = {}
    for name, value in body.items():
        if name in NESTED_GROUPS:
            if value is None:
                continue
            if not isinstance(value, dict):
                raise BadRequest(f"{name} must be an object", name)
            pairs = [(f"{name}.{sub}", sub_value) for sub, sub_value in value.items()]
        else:
            pairs = [(name, value)]
        for flat_name, flat_value in pairs:
            if flat_name in flat:  # {"flow": {"limitFlows": 5}, "flow.limitFlows": 7}: which one?
                group, _, sub = flat_name.partition(".")
                raise BadRequest(
                    f"{flat_name} is given twice (as {group}: {{{sub}: ...}} and as {flat_name})", flat_name
                )
            flat[flat_name] = flat_value
    unknown = sorted(name for name in flat if name not in BODY_PARAMETERS)
    if unknown:
        raise BadRequest(
            f"{unknown[0]} is not a parameter; the accepted ones are {', '.join(sorted(BODY_PARAMETERS))}",
            unknown[0],
            details={"unknown": unknown, "accepted": sorted(BODY_PARAMETERS)},
        )
    return flat


def load_json(raw: bytes, max_depth: int) -> Any:
    """A POST body parsed as JSON: BadRequest when it is not UTF-8 JSON, nests deeper than
    ``max_depth``, repeats a name in an object, or uses NaN/Infinity.

    The body is decoded as UTF-8 (a UTF-8 BOM allowed) before anything else, so the depth scan and
    the parser read the same characters: ``json.loads`` would guess UTF-16 or UTF-32 from bytes,
    which a scan of bytes misreads (in UTF-16, U+2200 is the bytes of a NUL and a quote).
    """
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequest("The body must be JSON encoded in UTF-8", "body") from None
    if "\x00" in text:  # UTF-16 or UTF-32 text of ASCII characters decodes as UTF-8 with NULs
        raise BadRequest("The body must be JSON encoded in UTF-8", "body")
    if not text.strip():
        return {}
    if _depth(text) > max_depth:
        raise BadRequest(f"The body is nested too deeply: at most {max_depth} levels", "body")
    try:
        return json.loads(text, object_pairs_hook=_unique_names, parse_constant=_no_constant)
    except BadRequest:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadRequest("The body is not valid JSON", "body") from None


def _depth(text: str) -> int:
    """The deepest nesting of arrays and objects in ``text`` (brackets inside strings not counted)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _unique_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    names = [name for name, _ in pairs]
    for name in names:
        if names.count(name) > 1:
            raise BadRequest(f"{name} is given twice in one object", name)
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise BadRequest(f"The body is not valid JSON: {name} is not a JSON number", "body")


def flatten_query(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """A GET query string as flat parameters (``token`` is the secret, never a parameter)."""
    params: dict[str, Any] = {}
    for name, value in pairs:
        if name == "token":
            continue
        if name in params:
            raise BadRequest(f"{name} is given twice", name)
        params[name] = value
    return params


def parse(
    params: Mapping[str, Any],
    *,
    default_mode: str,
    idempotency_header: str | None,
    default_date: Callable[[str | None], date],
    strict_types: bool = False,
) -> TriggerRequest:
    """The request's mode, account, options, partition date and idempotency key; BadRequest on any error.

    Without ``end`` or a ``nightly-YYYY-MM-DD`` key, the date is ``default_date(account_id)``: the
    account's newest complete date (the caller knows where the account's timezone is kept).
    ``strict_types`` (a JSON body): numbers must be JSON integers and switches JSON booleans; a
    query string's values are text, converted as before.
    """
    mode = params.get("mode") or default_mode
    if mode not in MODES:
        raise BadRequest(f"mode must be one of {', '.join(MODES)}, got {mode!r}", "mode")

    account_id = params.get("accountId") or None
    if mode == "live" and account_id is None:
        raise BadRequest("Missing accountId: a live run needs the dashboard account uuid", "accountId")
    if account_id is not None:
        try:
            account_id = validate_account_id(account_id if isinstance(account_id, str) else repr(account_id))
        except ValueError as exc:
            raise BadRequest(f"accountId: {exc}", "accountId") from None

    key = idempotency_key(idempotency_header, params)
    end = _date(params, "end")
    start = _date(params, "start")
    key_date = _nightly_date(key)
    date_parameter = "end" if end else "idempotency" if key_date else None
    partition_date = end or key_date or default_date(account_id)

    given = _given_options(params, strict_types)
    if start is not None:
        if start > partition_date:
            raise BadRequest(f"start ({start}) is after the window's end ({partition_date})", "start")
        span = (partition_date - start).days + 1
        _, high = RANGES["days"]
        if high is not None and span > high:
            raise BadRequest(
                f"start..end ({start}..{partition_date}) spans {span} days; at most {high}", "start"
            )
        if "days" in given and str(given["days"][1]) != str(span):
            raise BadRequest(
                f"days ({given['days'][1]}) contradicts start..end ({start}..{partition_date}, {span} days)",
                "days",
            )
        given["days"] = ("start", span)
    options = _options(mode, given)
    return TriggerRequest(
        mode=mode,
        account_id=account_id,
        options=options,
        partition_date=partition_date,
        idempotency_key=key or f"nightly-{partition_date.isoformat()}",
        date_parameter=date_parameter,
    )


def idempotency_key(header: str | None, params: Mapping[str, Any]) -> str | None:
    """The request's key, normalised (surrounding whitespace and newlines stripped); None when absent.

    BadRequest when a key has control characters or other characters than letters, digits and
    ``._:@/+=-``, or when the header and the parameters give different keys.
    """
    given = [("idempotency", header)] + [(name, params.get(name)) for name in KEY_PARAMETERS]
    keys = {name: normalise_key(name, value) for name, value in given if value is not None}
    distinct = {key for key in keys.values() if key is not None}
    if len(distinct) > 1:
        raise BadRequest(
            "idempotency: the idempotency key is given twice with different values", "idempotency"
        )
    return distinct.pop() if distinct else None


def normalise_key(parameter: str, raw: Any) -> str | None:
    """One spelling of the key, stripped of surrounding whitespace; None when blank."""
    if not isinstance(raw, str):
        raise BadRequest(f"{parameter} (the idempotency key) must be a string", parameter)
    key = raw.strip()
    if not key:
        return None
    if any(unicodedata.category(char) in ("Cc", "Cf") for char in key):
        raise BadRequest(f"{parameter} (the idempotency key) must not contain control characters", parameter)
    if not _KEY_CHARS.fullmatch(key):
        raise BadRequest(
            f"{parameter} (the idempotency key) must be 1..200 characters of letters, digits and ._:@/+=-",
            parameter,
        )
    return key


def _date(params: Mapping[str, Any], name: str) -> date | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or not _ISO_DATE.match(raw):
        raise BadRequest(f"{name} must be a date YYYY-MM-DD, got {raw!r}", name)
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a date YYYY-MM-DD, got {raw!r}", name) from None


def _nightly_date(key: str | None) -> date | None:
    match = NIGHTLY_KEY.match(key or "")
    if not match:
        return None
    try:
        return date.fromisoformat(match.group(1))
    except ValueError:
        raise BadRequest(f"idempotency key {key!r} has no valid date", "idempotency") from None


def _given_options(params: Mapping[str, Any], strict_types: bool = False) -> dict[str, tuple[str, Any]]:
    """SyncOptions field → (the caller's parameter name, value), for the options present."""
    given: dict[str, tuple[str, Any]] = {}
    for field, names in OPTION_PARAMETERS.items():
        present = [name for name in names if params.get(name) is not None]
        if len(present) > 1:
            raise BadRequest(f"{present[0]} is given twice (also as {present[1]})", present[1])
        if present:
            if strict_types:
                _check_json_type(field, present[0], params[present[0]])
            given[field] = (present[0], params[present[0]])
    return given


def _check_json_type(field: str, parameter: str, value: Any) -> None:
    """BadRequest unless ``value`` has the field's JSON type (bool is not an integer, 7.0 is not one)."""
    if field in INTEGER_FIELDS:
        if type(value) is not int:
            raise BadRequest(f"{parameter} must be an integer, got {json.dumps(value)}", parameter)
    elif field in BOOLEAN_FIELDS:
        if type(value) is not bool:
            raise BadRequest(f"{parameter} must be true or false, got {json.dumps(value)}", parameter)
    elif not isinstance(value, str):
        raise BadRequest(f"{parameter} must be a string, got {json.dumps(value)}", parameter)


def _options(mode: str, given: dict[str, tuple[str, Any]]) -> SyncOptions:
    try:
        return SyncOptions(mode=mode, **{field: value for field, (_, value) in given.items()})
    except ValidationError as exc:
        field, message = validation_messages(exc)[0]
        parameter = given.get(field, (field, None))[0]
        # The options' own range messages start with the field's name: put the caller's name there.
        named = message.startswith(field)
        message = parameter + message[len(field) :] if named else f"{parameter}: {message}"
        raise BadRequest(message, parameter) from None
