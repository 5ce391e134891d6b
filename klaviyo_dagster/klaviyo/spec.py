"""The parts of Klaviyo's official OpenAPI spec that this project runs on.

Klaviyo publishes its REST API as an OpenAPI document (revision 2026-07-15, ~3 MB, kept in
``../shared/klaviyo-openapi/``). The client needs each operation's rate limits and the simulator
needs its parameters, filters and request bodies, but neither should ship or parse 3 MB at run
time. So ``operations.json`` beside this module is an extract of exactly the operations we call,
generated from the spec by::

    python -m klaviyo_dagster.klaviyo.spec ../shared/klaviyo-openapi/stable-2026-07-15.json

and a test regenerates it and compares, so it can never drift from the spec.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

OPERATIONS_FILE = Path(__file__).with_name("operations.json")

# (method, path) of every operation the project calls; the extract keeps these and nothing else.
USED_OPERATIONS: tuple[tuple[str, str], ...] = (
    ("GET", "/api/accounts"),
    ("GET", "/api/metrics"),
    ("GET", "/api/flows"),
    ("GET", "/api/flows/{id}"),
    ("GET", "/api/flows/{id}/flow-actions"),
    ("GET", "/api/flow-actions/{id}/flow-messages"),
    ("GET", "/api/flow-messages/{id}"),
    ("GET", "/api/campaigns"),
    ("GET", "/api/campaigns/{id}/campaign-messages"),
    ("GET", "/api/campaigns/{id}/tags"),
    ("GET", "/api/lists/{id}"),
    ("GET", "/api/segments/{id}"),
    ("GET", "/api/profiles"),
    ("POST", "/api/flow-series-reports"),
    ("POST", "/api/flow-values-reports"),
    ("POST", "/api/campaign-values-reports"),
)

_WINDOW_SECONDS = {"s": 1, "m": 60, "d": 86_400}


@dataclass(frozen=True)
class Window:
    """At most ``limit`` calls in any fixed window of ``seconds`` (Klaviyo's seconds)."""

    name: str  # burst | steady | daily
    limit: int
    seconds: int


@dataclass(frozen=True)
class RateLimit:
    windows: tuple[Window, ...]

    @classmethod
    def parse(cls, raw: dict[str, str]) -> RateLimit:
        """``{"burst": "3/s", "steady": "60/m", "daily": "225/d"}`` → windows."""
        windows = []
        for name in ("burst", "steady", "daily"):
            if name in raw:
                count, unit = raw[name].split("/")
                windows.append(Window(name, int(count), _WINDOW_SECONDS[unit]))
        return cls(tuple(windows))

    def window(self, name: str) -> Window | None:
        return next((w for w in self.windows if w.name == name), None)


@dataclass(frozen=True)
class Operation:
    operation_id: str
    method: str
    path: str
    rate_limit: RateLimit
    # Query parameter name → {"required": bool, "schema": {...}} as in the spec.
    parameters: dict[str, dict[str, Any]]
    # Field → {"operators": {"single"|"list": [...]}, "value": {...}} (x-klaviyo-filters).
    filters: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Dereferenced JSON schema of the request body (POST operations only).
    request_body: dict[str, Any] | None = None
    # A parameter value that moves the call to a slower limit, e.g.
    # {"additional-fields[profile]=predictive_analytics": RateLimit(...)} on GET /api/profiles.
    variant_rate_limits: dict[str, RateLimit] = field(default_factory=dict)

    @property
    def path_pattern(self) -> re.Pattern[str]:
        return _path_pattern(self.path)

    def rate_limit_for(self, params: dict[str, str]) -> tuple[str, RateLimit]:
        """The rate-limit group (the operation, or its variant) a call with ``params`` counts against."""
        for variant, limit in self.variant_rate_limits.items():
            name, value = variant.split("=", 1)
            if value in params.get(name, "").split(","):
                return f"{self.operation_id}[{value}]", limit
        return self.operation_id, self.rate_limit


@cache
def _path_pattern(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(template)) + "/?$")


@cache
def load_operations() -> dict[str, Operation]:
    """Every used operation by operationId, read from the committed extract."""
    raw = json.loads(OPERATIONS_FILE.read_text())
    return {
        op["operation_id"]: Operation(
            operation_id=op["operation_id"],
            method=op["method"],
            path=op["path"],
            rate_limit=RateLimit.parse(op["rate_limit"]),
            parameters=op["parameters"],
            filters=op["filters"],
            request_body=op["request_body"],
            variant_rate_limits={k: RateLimit.parse(v) for k, v in op["variant_rate_limits"].items()},
        )
        for op in raw["operations"]
    }


def match_operation(method: str, path: str) -> Operation | None:
    """The operation serving ``method path`` (``/api/flows/XyZ`` → get_flow), or None."""
    method = method.upper()
    for op in load_operations().values():
        if op.method == method and op.path_pattern.match(path):
            return op
    return None


def revision() -> str:
    """The API revision the extract was taken from."""
    return json.loads(OPERATIONS_FILE.read_text())["revision"]


# --- generating the extract from the full spec -------------------------------------------------

_VARIANT_LIMIT = re.compile(
    r"when using the `(?P<param>[^`=]+)=(?P<value>[^`]+)` parameter.*?"
    r"Burst: `(?P<burst>\d+/[smd])`.*?Steady: `(?P<steady>\d+/[smd])`",
    re.DOTALL,
)


def _deref(node: Any, schemas: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            return _deref(schemas[node["$ref"].rsplit("/", 1)[-1]], schemas)
        return {key: _deref(value, schemas) for key, value in node.items()}
    if isinstance(node, list):
        return [_deref(item, schemas) for item in node]
    return node


def build_extract(spec: dict[str, Any]) -> dict[str, Any]:
    """The extract of ``spec`` (the parsed official OpenAPI document) for USED_OPERATIONS."""
    schemas = spec["components"]["schemas"]
    operations = []
    for method, path in USED_OPERATIONS:
        op = spec["paths"][path][method.lower()]
        parameters = {
            p["name"]: {"required": p.get("required", False), "schema": _deref(p["schema"], schemas)}
            for p in (_deref(p, spec.get("components", {}).get("parameters", {})) for p in op["parameters"])
            if p["in"] == "query"
        }
        body = op.get("requestBody")
        variants = {
            f"{m['param']}={m['value']}": {"burst": m["burst"], "steady": m["steady"]}
            for m in _VARIANT_LIMIT.finditer(op.get("description", ""))
        }
        operations.append(
            {
                "operation_id": op["operationId"],
                "method": method,
                "path": path,
                "rate_limit": op["x-klaviyo-ratelimit"],
                "variant_rate_limits": variants,
                "parameters": parameters,
                "filters": op.get("x-klaviyo-filters", {}),
                "request_body": _deref(body["content"]["application/vnd.api+json"]["schema"], schemas)
                if body
                else None,
            }
        )
    return {"revision": spec["info"]["version"], "operations": operations}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m klaviyo_dagster.klaviyo.spec PATH/TO/stable-2026-07-15.json", file=sys.stderr)
        return 2
    extract = build_extract(json.loads(Path(argv[0]).read_text()))
    OPERATIONS_FILE.write_text(json.dumps(extract, indent=1, sort_keys=True) + "\n")
    print(
        f"wrote {OPERATIONS_FILE} ({len(extract['operations'])} operations, revision {extract['revision']})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
