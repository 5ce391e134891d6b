"""The trigger's settings, from the environment.

``KLAVIYO_ENABLE`` and ``ADMIN_JOB_SECRET`` are read on every request (like the Klaviyo client
reads its switch on every call); the rest once, when the app is created.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from klaviyo_dagster.klaviyo.client import is_enabled
from klaviyo_dagster.readiness import Readiness, utc_now

SECRET_ENV_VAR = "ADMIN_JOB_SECRET"  # noqa: S105 - a variable name, not a secret  # nosec B105
ENABLE_ENV_VAR = "KLAVIYO_ENABLE"
DAGSTER_URL_ENV_VAR = "TRIGGER_DAGSTER_URL"
DAGSTER_LOCATION_ENV_VAR = "TRIGGER_DAGSTER_LOCATION"
MAX_BODY_ENV_VAR = "TRIGGER_MAX_BODY_BYTES"
DRY_RUN_TIMEOUT_ENV_VAR = "TRIGGER_DRY_RUN_TIMEOUT_SECONDS"

DEFAULT_DAGSTER_URL = "http://127.0.0.1:3000"
# The code location as `workspace.yaml` names it; on Kubernetes, the user-code deployment's name.
DEFAULT_DAGSTER_LOCATION = "klaviyo_dagster.definitions"
DEFAULT_MAX_BODY_BYTES = 64 * 1024
DEFAULT_DRY_RUN_TIMEOUT_SECONDS = 300.0
BODY_READ_TIMEOUT_SECONDS = 10.0


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a positive number, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be a positive number, got {raw!r}")
    return value


@dataclass
class TriggerSettings:
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)
    dagster_url: str = DEFAULT_DAGSTER_URL
    dagster_location: str = DEFAULT_DAGSTER_LOCATION
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    dry_run_timeout_seconds: float = DEFAULT_DRY_RUN_TIMEOUT_SECONDS
    body_read_timeout_seconds: float = BODY_READ_TIMEOUT_SECONDS
    # Which partition dates are complete (KLAVIYO_SETTLING_DELAY_MINUTES), and the time it is now.
    readiness: Readiness = field(default_factory=Readiness)
    clock: Callable[[], datetime] = utc_now

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TriggerSettings:
        env = os.environ if env is None else env
        return cls(
            env=env,
            dagster_url=(env.get(DAGSTER_URL_ENV_VAR) or DEFAULT_DAGSTER_URL).rstrip("/"),
            dagster_location=env.get(DAGSTER_LOCATION_ENV_VAR) or DEFAULT_DAGSTER_LOCATION,
            max_body_bytes=int(_positive(env, MAX_BODY_ENV_VAR, DEFAULT_MAX_BODY_BYTES)),
            dry_run_timeout_seconds=_positive(env, DRY_RUN_TIMEOUT_ENV_VAR, DEFAULT_DRY_RUN_TIMEOUT_SECONDS),
            readiness=Readiness.from_env(env),
        )

    @property
    def klaviyo_enabled(self) -> bool:
        return is_enabled(env=self.env)

    @property
    def secret(self) -> str | None:
        """The shared secret; None (refuse everything) when unset or blank."""
        return self.env.get(SECRET_ENV_VAR) or None
