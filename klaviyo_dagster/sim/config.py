"""The simulator's configuration and request log record (plain data, shared by every module)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from klaviyo_dagster.sim.data import TIMEZONE_BY_SEED, resolve_timezone
from klaviyo_dagster.sim.faults import FaultSpec

if TYPE_CHECKING:
    from klaviyo_dagster.sim.data import Account

# A fixed, obviously fake private key (Klaviyo private keys are "pk_" + 34 hex characters).
DEFAULT_API_KEY = "pk_sim_" + "5e1f0c0ffee0ddba11cafe4b1d5eed0a77"


@dataclass(frozen=True)
class SimConfig:
    """Everything that shapes a simulator run; the same config always yields the same responses."""

    profiles: int = 1000
    seed: int = 7
    time_scale: float = 1.0  # rate-limit windows are multiplied by this (0.01 = 100x shorter)
    latency_ms: int = 0  # added to every call
    flows: int = 40
    api_keys: tuple[str, ...] = (DEFAULT_API_KEY,)
    # group (operationId or e.g. "get_profiles[predictive_analytics]") -> {burst|steady|daily: limit}
    rate_limit_overrides: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    faults: Mapping[str, FaultSpec] = field(default_factory=dict)
    # The accounts' IANA zone. None (or "by-seed") lets the seed choose one per account from
    # data.TIMEZONES: west and east of UTC, half-hour and 45-minute offsets, DST both ways.
    timezone: str | None = "America/New_York"
    # The account's "today". None = the current UTC date when the server starts; pass a date for
    # data that is byte-identical across days.
    anchor: date | None = None
    # Builds account ``index``; called as ``factory(seed, index, profiles, flows, anchor, timezone)``.
    # None = the synthetic ``Account``. Tests plug in hand-made stores (a subclass of Account).
    account_factory: Callable[..., Account] | None = None

    def __post_init__(self) -> None:
        if self.profiles < 0 or self.flows < 0:
            raise ValueError("profiles and flows must be >= 0")
        if self.time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        if not self.api_keys:
            raise ValueError("at least one api key is required")

    @property
    def timezone_by_seed(self) -> bool:
        return self.timezone in (None, TIMEZONE_BY_SEED)

    def timezone_for(self, index: int) -> str:
        """The zone of account ``index`` (the explicit ``timezone``, else the seed's choice)."""
        return resolve_timezone(self.timezone, self.seed, index)


@dataclass(frozen=True)
class RecordedRequest:
    """One call as the simulator saw it (never includes the API key)."""

    method: str
    path: str
    query: dict[str, str]
    body: dict[str, Any] | None
    status: int
    operation_id: str | None
    group: str | None
