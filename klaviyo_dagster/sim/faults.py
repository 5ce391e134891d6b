"""Fault injection per operationId: what a flaky Klaviyo (or its CDN) does to a client.

A ``FaultSpec`` is attached to an operationId (or ``"*"`` for every operation). Probabilistic
faults draw from an RNG seeded by (seed, operationId), so a given sequence of calls meets the same
faults on every run. Counted faults (``retry_after_storm``, ``fail_first_n``) make retry tests exact.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, fields
from typing import Any

SERVER_ERRORS = (500, 502, 503, 504)


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


@dataclass(frozen=True)
class Outcome:
    """What to do with one call: an early response kind (or None to serve it), extra latency, etc."""

    kind: str | None = None  # storm | status | timeout | error | html_403
    status: int = 0
    latency_ms: int = 0
    malformed: bool = False


class FaultInjector:
    def __init__(self, seed: int, faults: dict[str, FaultSpec] | None = None):
        self.seed = seed
        self._lock = threading.Lock()
        self._faults: dict[str, FaultSpec] = {}
        self._rngs: dict[str, random.Random] = {}
        self._used: dict[str, dict[str, int]] = {}
        for operation_id, spec in (faults or {}).items():
            self.set(operation_id, spec)

    def set(self, operation_id: str, spec: FaultSpec) -> None:
        with self._lock:
            self._faults[operation_id] = spec
            self._rngs[operation_id] = random.Random(
                f"{self.seed}:fault:{operation_id}"
            )  # jitter or simulated data, not security  # nosec B311
            self._used[operation_id] = {"storm": 0, "fail_first": 0}

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self._rngs.clear()
            self._used.clear()

    def decide(self, operation_id: str) -> Outcome:
        with self._lock:
            key = operation_id if operation_id in self._faults else "*"
            spec = self._faults.get(key)
            if spec is None:
                return Outcome()
            rng, used = self._rngs[key], self._used[key]
            # Draw every probability on every call so one fault's rate does not shift another's sequence.
            rolls = {name: rng.random() for name in ("timeout", "error", "html", "malformed")}
            status_pick = rng.choice(SERVER_ERRORS)
            latency = spec.latency_ms
            if used["storm"] < spec.retry_after_storm:
                used["storm"] += 1
                return Outcome("storm", 429, latency)
            if used["fail_first"] < spec.fail_first_n:
                used["fail_first"] += 1
                return Outcome("error", 503, latency)
            if spec.status is not None:
                return Outcome("status", spec.status, latency)
            if rolls["timeout"] < spec.timeout_rate:
                return Outcome("timeout", 0, latency)
            if rolls["error"] < spec.error_rate:
                return Outcome("error", status_pick, latency)
            if rolls["html"] < spec.html_403_rate:
                return Outcome("html_403", 403, latency)
            return Outcome(None, 0, latency, malformed=rolls["malformed"] < spec.malformed_json_rate)
