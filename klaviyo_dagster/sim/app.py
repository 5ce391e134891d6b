"""The simulator's HTTP surface: a Starlette app that routes through the spec extract.

Every request goes through one pipeline, in the order Klaviyo appears to apply it:
route (404) → auth (401) → revision (400/410) → latency + faults → rate limit (429) →
query validation (400) → handler → headers. Handlers return JSON:API documents built from the
synthetic ``Account``; all query-parameter, filter and rate-limit knowledge comes from
``klaviyo_dagster.klaviyo.spec`` so the client and the simulator cannot disagree about it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
import uuid
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from klaviyo_dagster.klaviyo.spec import Operation, match_operation
from klaviyo_dagster.sim import filters, paging, reports
from klaviyo_dagster.sim import resources as res
from klaviyo_dagster.sim.config import RecordedRequest, SimConfig
from klaviyo_dagster.sim.data import Account
from klaviyo_dagster.sim.faults import FaultInjector, FaultSpec
from klaviyo_dagster.sim.ratelimit import RateLimiter

SERVED_REVISION = "2026-07-15"
KNOWN_REVISIONS = frozenset(
    {"2025-01-15", "2025-04-15", "2025-07-15", "2025-10-15", "2026-01-15", "2026-04-15", "2026-07-15"}
)
_REVISION = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(\.[a-z]+)?$")
JSON_API = "application/vnd.api+json"
TIMEOUT_SECONDS = 30.0
PROFILE_SCAN_LIMIT = 200_000  # rows examined per profiles page before returning a short page
_TITLES = {
    400: "Invalid input.",
    401: "Not authenticated.",
    403: "You do not have permission to perform this action.",
    404: "Not found.",
    410: "Gone.",
    429: "Request was throttled.",
    501: "Not implemented.",
}
HTML_403 = (
    "<html>\r\n<head><title>403 Forbidden</title></head>\r\n<body>\r\n<center><h1>403 Forbidden</h1></center>\r\n"
    "<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n"
)


class ApiError(Exception):
    """An error response: status, Klaviyo error code, detail and source."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        parameter: str | None = None,
        pointer: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.parameter, self.pointer = parameter, pointer
        self.headers = headers or {}

    def document(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.status}:{self.code}:{self.detail}")),
            "status": self.status,
            "code": self.code,
            "title": _TITLES.get(self.status, "A server error occurred."),
            "detail": self.detail,
        }
        if self.parameter:
            error["source"] = {"parameter": self.parameter}
        elif self.pointer:
            error["source"] = {"pointer": self.pointer}
        return {"errors": [error]}


def invalid(detail: str, parameter: str | None = None, pointer: str | None = None) -> ApiError:
    return ApiError(400, "invalid", detail, parameter=parameter, pointer=pointer)


@dataclass
class Call:
    """One request being served: what handlers need to know."""

    operation: Operation
    account: Account
    base: str  # scheme://host:port
    path: str
    query: dict[str, str]
    order: list[str]  # query parameter names in arrival order (for links.next)
    body: Any = None
    path_id: str | None = None

    def values(self, name: str) -> list[str] | None:
        raw = self.query.get(name)
        return None if raw is None else [v for v in raw.split(",") if v]

    @property
    def fingerprint(self) -> str:
        rest = sorted((k, v) for k, v in self.query.items() if k not in ("page[cursor]", "page_cursor"))
        return json.dumps([self.account.id, self.path.rstrip("/"), rest])

    @property
    def secret(self) -> bytes:
        return hashlib.sha256(f"{self.account.seed}:{self.account.index}:cursor".encode()).digest()

    def self_link(self) -> str:
        return self._url(self.query)

    def _url(self, query: dict[str, str]) -> str:
        names = [n for n in self.order if n in query] + [n for n in query if n not in self.order]
        encoded = urlencode([(n, query[n]) for n in names], quote_via=quote)
        return f"{self.base}{self.path}" + (f"?{encoded}" if encoded else "")

    def next_link(self, offset: int, cursor_param: str = "page[cursor]") -> str:
        token = paging.encode(self.secret, offset, self.fingerprint)
        return self._url({**self.query, cursor_param: token})

    def offset(self, cursor_param: str = "page[cursor]") -> int:
        token = self.query.get(cursor_param)
        if token is None:
            return 0
        try:
            return paging.decode(self.secret, token, self.fingerprint)
        except paging.CursorError as err:
            raise invalid(
                "The page cursor is invalid or does not belong to this query.", cursor_param
            ) from err


@dataclass
class SimulatorState:
    """Everything the app shares across requests; thread-safe for the test thread to inspect."""

    config: SimConfig
    accounts: dict[str, Account]
    limiter: RateLimiter
    faults: FaultInjector
    requests: list[RecordedRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    shutdown: asyncio.Event | None = None

    @classmethod
    def build(cls, config: SimConfig) -> SimulatorState:
        anchor = config.anchor or datetime.now(UTC).date()
        factory = config.account_factory or Account
        accounts = {
            key: factory(config.seed, i, config.profiles, config.flows, anchor, config.timezone_for(i))
            for i, key in enumerate(config.api_keys)
        }
        return cls(
            config,
            accounts,
            RateLimiter(config.time_scale, config.rate_limit_overrides),
            FaultInjector(config.seed, dict(config.faults)),
        )

    def record(self, entry: RecordedRequest) -> None:
        with self.lock:
            self.requests.append(entry)

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
        self.limiter.reset()
        self.faults.clear()
        for operation_id, spec in self.config.faults.items():
            self.faults.set(operation_id, spec)

    def set_fault(self, operation_id: str, spec: FaultSpec) -> None:
        self.faults.set(operation_id, spec)


# --- query validation ------------------------------------------------------------------------------


def validate_query(call: Call) -> list[filters.Condition]:
    """Check every parameter against the operation's spec; the parsed filter conditions."""
    params = call.operation.parameters
    for name, raw in call.query.items():
        spec = params.get(name)
        if spec is None:
            raise invalid(f"'{name}' is not a valid query parameter for this endpoint.", name)
        schema = spec["schema"]
        if schema.get("type") == "array":
            allowed = schema["items"].get("enum")
            for value in raw.split(","):
                if allowed is not None and value not in allowed:
                    raise invalid(f"'{value}' is not a valid choice for '{name}'.", name)
        elif "enum" in schema and raw not in schema["enum"]:
            raise invalid(f"'{raw}' is not a valid choice for '{name}'.", name)
        elif schema.get("type") == "integer":
            if not re.fullmatch(r"-?\d+", raw):
                raise invalid(f"'{name}' must be an integer.", name)
            low, high = schema.get("minimum"), schema.get("maximum")
            if (low is not None and int(raw) < low) or (high is not None and int(raw) > high):
                raise invalid(f"'{name}' must be between {low} and {high}, got {raw}.", name)
    for name, spec in params.items():
        if spec["required"] and name not in call.query:
            raise invalid(f"'{name}' is a required parameter.", name)
    text = call.query.get("filter")
    if text is None:
        return []
    try:
        conditions = filters.parse(text)
        filters.validate(conditions, call.operation.filters)
    except filters.FilterError as err:
        raise invalid(f"Invalid filter provided. {err}", "filter") from err
    return conditions


# --- generic collections ------------------------------------------------------------------------------


def _sort_key(field_name: str) -> Callable[[tuple[dict[str, Any], Any]], Any]:
    return lambda item: (item[0].get(field_name) is None, str(item[0].get(field_name) or ""), item[0]["id"])


def paginate(
    call: Call,
    items: list[tuple[dict[str, Any], Any]],
    conditions: list[filters.Condition],
    serialize: Callable[[Any], dict[str, Any]],
    default_size: int | None = None,
) -> dict[str, Any]:
    """Filter, sort and page a small in-memory collection into a JSON:API collection document."""
    rows = [item for item in items if filters.matches_all(conditions, item[0])]
    sort = call.query.get("sort")
    if sort:
        rows.sort(key=_sort_key(sort.lstrip("-")), reverse=sort.startswith("-"))
    size_spec = call.operation.parameters.get("page[size]")
    size = (
        int(call.query.get("page[size]", size_spec["schema"]["default"]))
        if size_spec
        else (default_size or 200)
    )
    offset = call.offset() if "page[cursor]" in call.operation.parameters else 0
    page = rows[offset : offset + size]
    links: dict[str, Any] = {"self": call.self_link(), "next": None, "prev": None}
    if offset + size < len(rows):
        links["next"] = call.next_link(offset + size)
    return {"data": [serialize(obj) for _, obj in page], "links": links}


def _included(call: Call) -> set[str]:
    return set(call.values("include") or [])


def _dedupe(
    resources: list[dict[str, Any]], fields_for: Callable[[str], list[str] | None]
) -> list[dict[str, Any]]:
    seen, out = set(), []
    for resource in resources:
        key = (resource["type"], resource["id"])
        if key not in seen:
            seen.add(key)
            resource["attributes"] = res.sparse(resource["attributes"], fields_for(resource["type"]))
            out.append(resource)
    return out


def _finish(call: Call, doc: dict[str, Any], included: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Apply sparse fieldsets to primary data and attach ``included`` when anything was asked for."""
    primary = doc["data"] if isinstance(doc["data"], list) else [doc["data"]]
    for resource in primary:
        fields = call.values(f"fields[{resource['type']}]")
        if resource["type"] != "profile":
            resource["attributes"] = res.sparse(resource["attributes"], fields)
    if included is not None:
        doc["included"] = _dedupe(included, lambda kind: call.values(f"fields[{kind}]"))
    return doc


def _not_found(kind: str, rid: str | None) -> ApiError:
    return ApiError(404, "not_found", f"A {kind} with id {rid} does not exist.")


# --- handlers -------------------------------------------------------------------------------------------


def get_accounts(call: Call) -> dict[str, Any]:
    return _finish(
        call,
        {
            "data": [res.account_resource(call.base, call.account)],
            "links": {"self": call.self_link(), "next": None, "prev": None},
        },
        None,
    )


def get_metrics(call: Call) -> dict[str, Any]:
    conditions = validate_query(call)
    items = [(res.metric_record(m), m) for m in call.account.metrics]
    doc = paginate(call, items, conditions, lambda m: res.metric_resource(call.base, m), default_size=200)
    return _finish(call, doc, [] if _included(call) else None)


def get_flows(call: Call) -> dict[str, Any]:
    conditions = validate_query(call)
    account, include = call.account, _included(call)
    items = [(res.flow_record(f), f) for f in account.flows]
    doc = paginate(
        call, items, conditions, lambda f: res.flow_resource(call.base, f, account, include, False)
    )
    return _finish(
        call, doc, _flow_includes(call, [account.flows_by_id[d["id"]] for d in doc["data"]], include)
    )


def _flow_includes(call: Call, flows: list[Any], include: set[str]) -> list[dict[str, Any]] | None:
    if not include:
        return None
    out = []
    for flow in flows:
        if "flow-actions" in include:
            out += [res.action_resource(call.base, a, call.account.timezone) for a in flow.actions]
        if "tags" in include:
            out += [res.tag_resource(call.base, call.account.tags_by_id[t]) for t in flow.tag_ids]
    return out


def get_flow(call: Call) -> dict[str, Any]:
    validate_query(call)
    flow = call.account.flows_by_id.get(call.path_id or "")
    if flow is None:
        raise _not_found("flow", call.path_id)
    include = _included(call)
    definition = "definition" in (call.values("additional-fields[flow]") or [])
    doc = {
        "data": res.flow_resource(call.base, flow, call.account, include, definition),
        "links": {"self": call.self_link()},
    }
    return _finish(call, doc, _flow_includes(call, [flow], include))


def get_actions_for_flow(call: Call) -> dict[str, Any]:
    conditions = validate_query(call)
    flow = call.account.flows_by_id.get(call.path_id or "")
    if flow is None:
        raise _not_found("flow", call.path_id)
    items = [(res.action_record(a), a) for a in flow.actions]
    return _finish(
        call,
        paginate(call, items, conditions, lambda a: res.action_resource(call.base, a, call.account.timezone)),
        None,
    )


def get_flow_action_messages(call: Call) -> dict[str, Any]:
    conditions = validate_query(call)
    action = call.account.actions_by_id.get(call.path_id or "")
    if action is None:
        raise _not_found("flow action", call.path_id)
    items = [(res.message_record(m), m) for m in action.messages]  # experiments: main + variations
    return _finish(
        call, paginate(call, items, conditions, lambda m: res.message_resource(call.base, m, False)), None
    )


def get_flow_message(call: Call) -> dict[str, Any]:
    validate_query(call)
    message = call.account.messages_by_id.get(call.path_id or "")
    if message is None:
        raise _not_found("flow message", call.path_id)
    include = _included(call)
    doc = {
        "data": res.message_resource(call.base, message, "flow-action" in include),
        "links": {"self": call.self_link()},
    }
    included = None
    if include:
        action = call.account.actions_by_id[message.action_id]
        included = (
            [res.action_resource(call.base, action, call.account.timezone)]
            if "flow-action" in include
            else []
        )
    return _finish(call, doc, included)


def get_campaigns(call: Call) -> dict[str, Any]:
    conditions = validate_query(call)
    if not any(c.field == "messages.channel" and c.operator == "equals" for c in conditions):
        raise invalid(
            "A channel filter is required. Use equals(messages.channel,'email'), "
            "equals(messages.channel,'sms') or equals(messages.channel,'mobile_push').",
            "filter",
        )
    account, include = call.account, _included(call)
    items = [(res.campaign_record(c), c) for c in account.campaigns]
    doc = paginate(call, items, conditions, lambda c: res.campaign_resource(call.base, c, include))
    included = None
    if include:
        included = []
        for data in doc["data"]:
            campaign = account.campaigns_by_id[data["id"]]
            if "campaign-messages" in include:
                included.append(res.campaign_message_resource(call.base, campaign, False))
            if "tags" in include:
                included += [res.tag_resource(call.base, account.tags_by_id[t]) for t in campaign.tag_ids]
    return _finish(call, doc, included)


def _campaign(call: Call) -> Any:
    campaign = call.account.campaigns_by_id.get(call.path_id or "")
    if campaign is None:
        raise _not_found("campaign", call.path_id)
    return campaign


def get_messages_for_campaign(call: Call) -> dict[str, Any]:
    validate_query(call)
    campaign, include = _campaign(call), _included(call)
    doc = {
        "data": [res.campaign_message_resource(call.base, campaign, "campaign" in include)],
        "links": {"self": call.self_link(), "next": None, "prev": None},
    }
    included = None
    if include:
        included = [res.campaign_resource(call.base, campaign, set())] if "campaign" in include else []
    return _finish(call, doc, included)


def get_tags_for_campaign(call: Call) -> dict[str, Any]:
    validate_query(call)
    campaign = _campaign(call)
    doc = {
        "data": [res.tag_resource(call.base, call.account.tags_by_id[t]) for t in campaign.tag_ids],
        "links": {"self": call.self_link(), "next": None, "prev": None},
    }
    return _finish(call, doc, None)


def _group(call: Call, kind: str) -> dict[str, Any]:
    validate_query(call)
    group = call.account.groups_by_id.get(call.path_id or "")
    if group is None or group.kind != kind:
        raise _not_found(kind, call.path_id)
    count = "profile_count" in (call.values(f"additional-fields[{kind}]") or [])
    doc = {"data": res.group_resource(call.base, group, count), "links": {"self": call.self_link()}}
    return _finish(call, doc, [] if _included(call) else None)


def get_list(call: Call) -> dict[str, Any]:
    return _group(call, "list")


def get_segment(call: Call) -> dict[str, Any]:
    return _group(call, "segment")


def get_profiles(call: Call) -> dict[str, Any]:
    """Profiles are never materialised: a page reads only the profiles it returns.

    Filters become index sets and sorts a per-account cached order (``_profile_sequence``), so any
    sort and filter the spec allows costs about what a page in the default order costs.
    """
    conditions = validate_query(call)
    account = call.account
    sequence = _profile_sequence(account, conditions, call.query.get("sort", "id"))
    checked = [c for c in conditions if c.field != "created"]  # created bounds are exact
    size = int(call.query.get("page[size]", 20))
    position = call.offset()
    additional = set(call.values("additional-fields[profile]") or [])
    fields = call.values("fields[profile]")
    data: list[dict[str, Any]] = []
    scanned = 0
    while position < len(sequence) and len(data) < size and scanned < PROFILE_SCAN_LIMIT:
        index = sequence[position]
        position += 1
        scanned += 1
        attrs = account.profile(index)
        pid = account.profile_id(index)
        if checked and not filters.matches_all(checked, res.profile_record(pid, attrs)):
            continue
        data.append(res.profile_resource(call.base, pid, attrs, additional, fields))
    links: dict[str, Any] = {"self": call.self_link(), "next": None, "prev": None}
    if position < len(sequence):
        links["next"] = call.next_link(position)
    doc: dict[str, Any] = {"data": data, "links": links}
    if _included(call):
        doc["included"] = []
    return doc


# The get_profiles filter fields (x-klaviyo-filters) whose matches can be read off a value (an id,
# the generator's email/phone/external id formats) or off a sort column (date-time comparisons).
_PROFILE_VALUE_FIELDS = ("id", "email", "phone_number", "external_id")
_SUPPRESSION = "subscriptions.email.marketing.suppression."
_LIST_SUPPRESSION = "subscriptions.email.marketing.list_suppressions."
SMALL_CANDIDATE_SET = 10_000  # sorted by computing each one's key rather than through the column


class _Reversed(Sequence[int]):
    """A reversed view of an index sequence (a descending sort) without copying it."""

    def __init__(self, items: Sequence[int]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: Any) -> Any:
        if isinstance(position, slice):
            raise TypeError("_Reversed supports integer positions only")
        return self.items[len(self.items) - 1 - position]


def _profile_sequence(account: Account, conditions: list[filters.Condition], sort: str) -> Sequence[int]:
    """The profile indices a query returns, in its order (a cursor's offset is a position in it).

    ``created`` bounds are an index range (binary search); the other filters and a sort other than
    id/created are computed once per (account, query) and cached (``Account.remember_profile_query``).
    """
    field_name = sort.lstrip("-")
    lo, hi = 0, account.profile_count
    for cond in conditions:
        if cond.field == "created" and cond.operator == "greater-than":
            lo = max(lo, account.first_profile_created_after(cond.value, strict=True))
        elif cond.field == "created":
            hi = min(hi, account.first_profile_created_after(cond.value, strict=False))
    narrowing = [c for c in conditions if c.field != "created"]
    ordered: Sequence[int]
    if not narrowing and field_name in ("id", "created"):
        ordered = range(lo, max(lo, hi))
    else:
        key = (field_name, lo, hi, tuple(_condition_key(c) for c in narrowing))
        ordered = account.remember_profile_query(
            key, lambda: _ordered_indices(account, narrowing, field_name, lo, hi)
        )
    if not sort.startswith("-"):
        return ordered
    return ordered[::-1] if isinstance(ordered, range) else _Reversed(ordered)


def _condition_key(cond: filters.Condition) -> tuple[Any, ...]:
    value = tuple(cond.value) if isinstance(cond.value, list) else cond.value
    return (cond.operator, cond.field, value)


def _ordered_indices(
    account: Account, narrowing: list[filters.Condition], field_name: str, lo: int, hi: int
) -> Sequence[int]:
    """Indices in [lo, hi) that may match ``narrowing``, ordered by ``field_name`` (then index)."""
    candidates: set[int] | None = None
    for cond in narrowing:
        found = _matching_indices(account, cond)
        if found is not None:
            inside = {i for i in found if lo <= i < hi}
            candidates = inside if candidates is None else candidates & inside
    if field_name in ("id", "created"):
        return range(lo, max(lo, hi)) if candidates is None else array("I", sorted(candidates))
    if candidates is not None and len(candidates) <= SMALL_CANDIDATE_SET:
        return array("I", sorted(candidates, key=lambda i: account.profile_order_key(i, field_name)))
    order = account.profile_column(field_name).order
    if candidates is None:
        if lo == 0 and hi >= account.profile_count:
            return order
        return array("I", (i for i in order if lo <= i < hi))
    return array("I", (i for i in order if i in candidates))


def _matching_indices(account: Account, cond: filters.Condition) -> list[int] | None:
    """A superset of the indices matching ``cond`` (each is checked again), or None: any index may."""
    if cond.field in _PROFILE_VALUE_FIELDS:
        found: list[int] = []
        for value in cond.value if isinstance(cond.value, list) else [cond.value]:
            indices = account.profile_indices_with(cond.field, value)
            if indices is None:
                return None
            found += indices
        return found
    if cond.field in ("updated", _SUPPRESSION + "timestamp", _LIST_SUPPRESSION + "timestamp"):
        return account.profile_column(cond.field).where(cond.operator, cond.value)
    if cond.field == _SUPPRESSION + "reason":
        return list(account.profile_suppression_reasons().get(cond.value, []))
    if cond.field.startswith(_LIST_SUPPRESSION):
        # Only a profile with a list suppression has a reason or list id: those have a timestamp.
        column = account.profile_column(_LIST_SUPPRESSION + "timestamp")
        return sorted(column.order[column.missing :])
    if cond.field == "_kx":
        return []  # the simulator's profiles carry no _kx tracking value
    return None


def report(call: Call) -> dict[str, Any]:
    validate_query(call)
    request = reports.parse_request(call.operation, call.body, call.account)
    results, date_times = reports.compute(call.account, request)
    secret = call.secret
    fingerprint = request.fingerprint() + call.fingerprint
    offset = 0
    if "page_cursor" in call.query:
        try:
            offset = paging.decode(secret, call.query["page_cursor"], fingerprint)
        except paging.CursorError as err:
            raise invalid(
                "The page cursor is invalid or does not belong to this report.", "page_cursor"
            ) from err
    page = results[offset : offset + reports.PAGE_SIZE]
    attributes: dict[str, Any] = {"results": page}
    if request.series:
        attributes["date_times"] = date_times
    links: dict[str, Any] = {"self": call.self_link(), "next": None, "prev": None}
    if offset + reports.PAGE_SIZE < len(results):
        token = paging.encode(secret, offset + reports.PAGE_SIZE, fingerprint)
        links["next"] = call._url({**call.query, "page_cursor": token})
    kind = call.operation.request_body["properties"]["data"]["properties"]["type"]["enum"][0]  # type: ignore[index]
    fields = call.values(f"fields[{kind}]")
    if fields is not None:
        attributes = {k: v for k, v in attributes.items() if k in fields}
    return {
        "data": {
            "type": kind,
            "id": hashlib.sha256(fingerprint.encode()).hexdigest()[:26],
            "attributes": attributes,
        },
        "links": links,
    }


HANDLERS: dict[str, Callable[[Call], dict[str, Any]]] = {
    "get_accounts": get_accounts,
    "get_metrics": get_metrics,
    "get_flows": get_flows,
    "get_flow": get_flow,
    "get_actions_for_flow": get_actions_for_flow,
    "get_flow_action_messages": get_flow_action_messages,
    "get_flow_message": get_flow_message,
    "get_campaigns": get_campaigns,
    "get_messages_for_campaign": get_messages_for_campaign,
    "get_tags_for_campaign": get_tags_for_campaign,
    "get_list": get_list,
    "get_segment": get_segment,
    "get_profiles": get_profiles,
    "query_flow_series": report,
    "query_flow_values": report,
    "query_campaign_values": report,
}


# --- pipeline -------------------------------------------------------------------------------------------


def _json_response(status: int, doc: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    """A JSON:API response; always valid UTF-8, even for text holding half an emoji.

    A lone UTF-16 surrogate (e.g. "\\ud83d") has no UTF-8 form; ``backslashreplace`` writes it as
    the six characters ``\\ud83d``, which inside a JSON string is exactly the JSON escape Klaviyo
    sends. Lone surrogates only occur inside strings, so nothing else is touched.
    """
    body = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "backslashreplace")
    return Response(body, status_code=status, headers=headers, media_type=JSON_API)


def _check_revision(value: str | None) -> None:
    if not value:
        raise invalid("The 'revision' header is required.", "revision")
    match = _REVISION.match(value)
    if not match:
        raise invalid(f"'{value}' is not a valid revision (format YYYY-MM-DD[.suffix]).", "revision")
    day = value.split(".")[0]
    if day < "2025-01-01":
        raise ApiError(
            410,
            "gone",
            f"Revision {value} has been retired. Use a newer revision such as {SERVED_REVISION}.",
            parameter="revision",
        )
    if day not in KNOWN_REVISIONS:
        raise invalid(f"'{value}' is not a valid revision.", "revision")


def _path_id(operation: Operation, path: str) -> str | None:
    template = operation.path.split("/")
    parts = path.rstrip("/").split("/")
    for tpl, part in zip(template, parts, strict=False):
        if tpl.startswith("{"):
            return part
    return None


class Simulator:
    """The ASGI app around a SimulatorState."""

    def __init__(self, state: SimulatorState):
        self.state = state
        self.app = Starlette(
            routes=[Route("/{path:path}", self.dispatch, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])]
        )

    async def dispatch(self, request: Request) -> Response:
        path = request.url.path
        query = dict(request.query_params.items())
        raw = await request.body() if request.method == "POST" else b""
        operation = match_operation(request.method, path)
        group = operation.rate_limit_for(query)[0] if operation else None
        try:
            parsed_body = json.loads(raw) if raw else None
        except ValueError:
            parsed_body = None
        response = await self._serve(request, operation, query, raw, parsed_body)
        self.state.record(
            RecordedRequest(
                request.method,
                path,
                query,
                parsed_body if isinstance(parsed_body, dict) else None,
                response.status_code,
                operation.operation_id if operation else None,
                group,
            )
        )
        return response

    async def _serve(
        self, request: Request, operation: Operation | None, query: dict[str, str], raw: bytes, body: Any
    ) -> Response:
        state = self.state
        try:
            if operation is None:
                raise ApiError(404, "not_found", f"The path {request.url.path} was not found.")
            auth = request.headers.get("authorization", "")
            scheme, _, key = auth.partition(" ")
            account = state.accounts.get(key.strip()) if scheme == "Klaviyo-API-Key" else None
            if account is None:
                raise ApiError(401, "not_authenticated", "Missing or invalid private key.")
            _check_revision(request.headers.get("revision"))
            outcome = state.faults.decide(operation.operation_id)
            delay = (state.config.latency_ms + outcome.latency_ms) / 1000
            if delay:
                await asyncio.sleep(delay)
            early = await self._fault_response(outcome)
            if early is not None:
                return early
            group, limit = operation.rate_limit_for(query)
            decision = state.limiter.acquire(account.id, group, limit)
            if not decision.allowed:
                raise ApiError(
                    429,
                    "throttled",
                    f"Request was throttled. Expected available in {decision.retry_after} seconds.",
                    headers={"Retry-After": str(decision.retry_after)},
                )
            if operation.method == "POST" and (raw and body is None):
                raise invalid("The request body is not valid JSON.", pointer="/")
            call = Call(
                operation,
                account,
                f"{request.url.scheme}://{request.url.netloc}",
                request.url.path,
                query,
                list(dict.fromkeys(k for k, _ in request.query_params.multi_items())),
                body,
                _path_id(operation, request.url.path),
            )
            doc = HANDLERS[operation.operation_id](call)
            headers = {
                "RateLimit-Limit": str(decision.limit),
                "RateLimit-Remaining": str(decision.remaining),
                "RateLimit-Reset": str(decision.reset),
            }
            response = _json_response(200, doc, headers)
            if outcome.malformed:
                response = Response(response.body[: max(1, len(response.body) // 2)], 200, headers, JSON_API)
            return response
        except ApiError as err:
            return _json_response(err.status, err.document(), err.headers)
        except reports.ReportError as err:
            return _json_response(400, invalid(err.detail, pointer=err.pointer).document())

    async def _fault_response(self, outcome: Any) -> Response | None:
        if outcome.kind is None:
            return None
        if outcome.kind == "storm":
            err = ApiError(
                429,
                "throttled",
                "Request was throttled. Expected available in 1 seconds.",
                headers={"Retry-After": "1"},
            )
            return _json_response(429, err.document(), err.headers)
        if outcome.kind == "throttle_body":  # Klaviyo's throttled body alone: no Retry-After header
            return _json_response(429, ApiError(429, "throttled", outcome.throttled_detail()).document())
        if outcome.kind == "timeout":
            shutdown = self.state.shutdown
            try:
                if shutdown is not None:
                    await asyncio.wait_for(shutdown.wait(), TIMEOUT_SECONDS)
                else:
                    await asyncio.sleep(TIMEOUT_SECONDS)
            except TimeoutError:
                pass
            return _json_response(504, ApiError(504, "error", "Gateway timeout.").document())
        if outcome.kind == "html":  # the CDN's own page (403 block, 502/503/504 gateway), not JSON:API
            return Response(outcome.html_page(), outcome.status, media_type="text/html")
        code = (
            "permission_denied"
            if outcome.status == 403
            else ("invalid" if 400 <= outcome.status < 500 else "error")
        )
        detail = "An injected fault." if outcome.status >= 500 else "An injected client error."
        return _json_response(outcome.status, ApiError(outcome.status, code, detail).document())


def build_app(state: SimulatorState) -> Starlette:
    return Simulator(state).app
