"""Fault injection per operationId: what a flaky Klaviyo (or its CDN) does to a client.

A ``FaultSpec`` is attached to an operationId (or ``"*"`` for every operation). Probabilistic
faults draw from an RNG seeded by (seed, operationId), so a given sequence of calls meets the same
faults on every run. Counted faults (``retry_after_storm``, ``fail_first_n``, ``html_403_first_n``,
``html_5xx_first_n``, ``throttle_body_only_first_n``) make retry tests exact.

The kinds mirror what ``../shared/contracts/klaviyo-api.md`` says Klaviyo does: JSON:API errors,
429 ``throttled`` (with ``Retry-After``, or only the body's "Expected available in N seconds"), and
non-JSON HTML pages from the CDN in front of the API (403 blocks, 502/503/504 gateway pages).
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, fields
from http import HTTPStatus
from typing import Any

SERVER_ERRORS = (500, 502, 503, 504)
GATEWAY_ERRORS = (502, 503, 504)  # the statuses a CDN answers with when the origin is unwell


@dataclass(frozen=True)
class FaultSpec:
    error_rate: float = 0.0  # 5xx, status drawn from SERVER_ERRORS
    status: int | None = None  # force this status on every call (e.g. 501, 400)
    latency_ms: int = 0  # extra latency per call
    html_403_rate: float = 0.0  # a CDN-style HTML 403 page
    malformed_json_rate: float = 0.0  # 200 with a truncated JSON body
    retry_after_storm: int = 0  # the next n calls get 429 + Retry-After regardless of real limits
    timeout_rate: float = 0.0  # hang longer than any client timeout
    fail_first_n: int = 0  # the first n calls get a 503, then calls succeed
    html_5xx_rate: float = 0.0  # a CDN-style HTML gateway page, status drawn from GATEWAY_ERRORS
    html_403_first_n: int = 0  # the first n calls get the CDN's HTML 403 page, then calls succeed
    html_5xx_first_n: int = 0  # the first n calls get the CDN's HTML 502 page, then calls succeed
    throttle_body_only_first_n: int = 0  # the first n calls get 429 with no Retry-After header ...
    throttle_body_seconds: float = 1.0  # ... whose body says "Expected available in <this> seconds"

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        """``"error_rate=0.5,latency_ms=100"`` → FaultSpec (the CLI's ``--fault OP:...`` syntax)."""
        types = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, raw = part.partition("=")
            if name not in types:
                raise ValueError(f"unknown fault field {name!r}; known: {', '.join(types)}")
            values[name] = float(raw) if "float" in str(types[name]) else int(raw)
        return cls(**values)


def cdn_html_page(status: int) -> str:
    """The HTML error page a CDN (Cloudflare-style) serves instead of Klaviyo's JSON:API body."""
    title = f"{status} {HTTPStatus(status).phrase}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n"
        "<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n"
    )


def throttled_detail(seconds: float) -> str:
    """Klaviyo's ``throttled`` detail: "Request was throttled. Expected available in 37 seconds."."""
    amount = f"{seconds:g}"
    unit = "second" if seconds == 1 else "seconds"
    return f"Request was throttled. Expected available in {amount} {unit}."


@dataclass(frozen=True)
class Outcome:
    """What to do with one call: an early response kind (or None to serve it), extra latency, etc."""

    kind: str | None = None  # storm | throttle_body | status | timeout | error | html
    status: int = 0
    latency_ms: int = 0
    malformed: bool = False
    wait_seconds: float = 0.0  # throttle_body: the wait the 429's body states

    def html_page(self) -> str:
        """The CDN page of an ``html`` outcome."""
        return cdn_html_page(self.status)

    def throttled_detail(self) -> str:
        """The error detail of a ``throttle_body`` outcome."""
        return throttled_detail(self.wait_seconds)


_COUNTED = ("storm", "fail_first", "html_403_first", "html_5xx_first", "throttle_body_first")


class FaultInjector:
    def __init__(self, seed: int, faults: dict[str, FaultSpec] | None = None):
        self.seed = seed
        self._lock = threading.Lock()
        self._faults: dict[str, FaultSpec] = {}
        self._rngs: dict[str, random.Random] = {}
        self._edge_rngs: dict[str, random.Random] = {}
        self._used: dict[str, dict[str, int]] = {}
        for operation_id, spec in (faults or {}).items():
            self.set(operation_id, spec)

    def set(self, operation_id: str, spec: FaultSpec) -> None:
        with self._lock:
            self._faults[operation_id] = spec
            # Two streams: the CDN gateway pages draw from their own, so adding them left the
            # sequences of the older kinds (and any seeded benchmark) exactly as they were.
            self._rngs[operation_id] = random.Random(
                f"{self.seed}:fault:{operation_id}"
            )  # jitter or simulated data, not security  # nosec B311
            self._edge_rngs[operation_id] = random.Random(
                f"{self.seed}:fault:{operation_id}:edge"
            )  # jitter or simulated data, not security  # nosec B311
            self._used[operation_id] = dict.fromkeys(_COUNTED, 0)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self._rngs.clear()
            self._edge_rngs.clear()
            self._used.clear()

    def decide(self, operation_id: str) -> Outcome:
        """Counted faults first (in field order), then a forced status, then the probabilities."""
        with self._lock:
            key = operation_id if operation_id in self._faults else "*"
            spec = self._faults.get(key)
            if spec is None:
                return Outcome()
            rng, edge_rng = self._rngs[key], self._edge_rngs[key]
            # Draw every probability on every call so one fault's rate does not shift another's sequence.
            rolls = {name: rng.random() for name in ("timeout", "error", "html", "malformed")}
            status_pick = rng.choice(SERVER_ERRORS)
            rolls["html_5xx"] = edge_rng.random()
            gateway_pick = edge_rng.choice(GATEWAY_ERRORS)
            latency = spec.latency_ms
            counted = self._counted(spec, self._used[key], latency)
            if counted is not None:
                return counted
            if spec.status is not None:
                return Outcome("status", spec.status, latency)
            if rolls["timeout"] < spec.timeout_rate:
                return Outcome("timeout", 0, latency)
            if rolls["error"] < spec.error_rate:
                return Outcome("error", status_pick, latency)
            if rolls["html"] < spec.html_403_rate:
                return Outcome("html", 403, latency)
            if rolls["html_5xx"] < spec.html_5xx_rate:
                return Outcome("html", gateway_pick, latency)
            return Outcome(None, 0, latency, malformed=rolls["malformed"] < spec.malformed_json_rate)

    @staticmethod
    def _counted(spec: FaultSpec, used: dict[str, int], latency: int) -> Outcome | None:
        """The next counted fault still owed, spending one of it; None once all are spent."""
        owed = (
            ("storm", spec.retry_after_storm, Outcome("storm", 429, latency)),
            ("fail_first", spec.fail_first_n, Outcome("error", 503, latency)),
            ("html_403_first", spec.html_403_first_n, Outcome("html", 403, latency)),
            ("html_5xx_first", spec.html_5xx_first_n, Outcome("html", 502, latency)),
            (
                "throttle_body_first",
                spec.throttle_body_only_first_n,
                Outcome("throttle_body", 429, latency, wait_seconds=spec.throttle_body_seconds),
            ),
        )
        for name, limit, outcome in owed:
            if used[name] < limit:
                used[name] += 1
                return outcome
        return None
