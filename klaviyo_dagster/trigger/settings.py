"""The trigger's settings, from the environment (the variables the whole project shares are read
through ``environment.py``).

The service's limits and Dagster's address are read once, when the app is created. What a request
reads (``KLAVIYO_ENABLE``, ``ADMIN_JOB_SECRET``, the store, the accounts and their keys, the first
partition date, the conversion metric) is read from ``env`` on every request, as the old endpoint
did: an operator can stop the service's Klaviyo traffic, rotate its secret or connect the store
without a restart.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime

from klaviyo_dagster import environment
from klaviyo_dagster.accounts import AccountSettings
from klaviyo_dagster.klaviyo.client import KlaviyoClient
from klaviyo_dagster.readiness import Readiness, utc_now
from klaviyo_dagster.storage.store import IngestStore

SECRET_ENV_VAR = environment.ADMIN_SECRET_VAR
ENABLE_ENV_VAR = environment.KLAVIYO_ENABLE_VAR
DAGSTER_URL_ENV_VAR = "TRIGGER_DAGSTER_URL"
DAGSTER_LOCATION_ENV_VAR = "TRIGGER_DAGSTER_LOCATION"
MAX_BODY_ENV_VAR = "TRIGGER_MAX_BODY_BYTES"
DRY_RUN_TIMEOUT_ENV_VAR = "TRIGGER_DRY_RUN_TIMEOUT_SECONDS"
HEADER_TIMEOUT_ENV_VAR = "TRIGGER_HEADER_TIMEOUT_SECONDS"
MAX_CONNECTIONS_ENV_VAR = "TRIGGER_MAX_CONNECTIONS"
MAX_HEADER_BYTES_ENV_VAR = "TRIGGER_MAX_HEADER_BYTES"

DEFAULT_DAGSTER_URL = "http://127.0.0.1:3000"
# The code location as `workspace.yaml` names it; on Kubernetes, the user-code deployment's name.
DEFAULT_DAGSTER_LOCATION = "klaviyo_dagster.definitions"
DEFAULT_MAX_BODY_BYTES = 64 * 1024
DEFAULT_DRY_RUN_TIMEOUT_SECONDS = 300.0
BODY_READ_TIMEOUT_SECONDS = 10.0
# A connection must send a request's headers within this long (of connecting, or of its previous
# response); slower ones get 408 and are closed, so half-sent requests cannot pile up.
DEFAULT_HEADER_TIMEOUT_SECONDS = 10.0
DEFAULT_MAX_CONNECTIONS = 64  # open connections; more are answered 503 and closed at once
DEFAULT_MAX_HEADER_BYTES = 16 * 1024  # request line and headers; larger ones get 400
KEEP_ALIVE_SECONDS = 5.0
# A request whose idempotency key another request is launching waits this long for its run id.
CLAIM_WAIT_SECONDS = 30.0
# A launch claim older than this with no run id was abandoned (its process died): it may be taken over.
CLAIM_STALE_SECONDS = 300.0
MAX_JSON_DEPTH = 16  # nesting levels of a POST body; the contract needs 2


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    """The variable ``name`` as a whole number of at least 1; ValueError naming it otherwise."""
    value = environment.positive_number(name, default, env)
    if value != int(value):
        raise ValueError(f"{name} must be a whole number of at least 1, got {env.get(name)!r}")
    return int(value)


@dataclass
class TriggerSettings:
    """What the service needs: the environment it reads per request, Dagster's address, the limits."""

    env: Mapping[str, str] = field(default_factory=lambda: os.environ)
    dagster_url: str = DEFAULT_DAGSTER_URL
    dagster_location: str = DEFAULT_DAGSTER_LOCATION
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    dry_run_timeout_seconds: float = DEFAULT_DRY_RUN_TIMEOUT_SECONDS
    body_read_timeout_seconds: float = BODY_READ_TIMEOUT_SECONDS
    header_timeout_seconds: float = DEFAULT_HEADER_TIMEOUT_SECONDS
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    keep_alive_seconds: float = KEEP_ALIVE_SECONDS
    claim_wait_seconds: float = CLAIM_WAIT_SECONDS
    claim_stale_seconds: float = CLAIM_STALE_SECONDS
    max_json_depth: int = MAX_JSON_DEPTH
    # Which partition dates are complete (KLAVIYO_SETTLING_DELAY_MINUTES), and the time it is now.
    readiness: Readiness = field(default_factory=Readiness)
    clock: Callable[[], datetime] = utc_now

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TriggerSettings:
        """Raises ``ValueError`` or ``StorageConfigError`` naming the first malformed variable, so the
        service refuses to start rather than answer every request with 500."""
        env = os.environ if env is None else env
        environment.check(env)
        return cls(
            env=env,
            dagster_url=(env.get(DAGSTER_URL_ENV_VAR) or DEFAULT_DAGSTER_URL).rstrip("/"),
            dagster_location=env.get(DAGSTER_LOCATION_ENV_VAR) or DEFAULT_DAGSTER_LOCATION,
            max_body_bytes=_count(env, MAX_BODY_ENV_VAR, DEFAULT_MAX_BODY_BYTES),
            dry_run_timeout_seconds=environment.positive_number(
                DRY_RUN_TIMEOUT_ENV_VAR, DEFAULT_DRY_RUN_TIMEOUT_SECONDS, env
            ),
            header_timeout_seconds=environment.positive_number(
                HEADER_TIMEOUT_ENV_VAR, DEFAULT_HEADER_TIMEOUT_SECONDS, env
            ),
            max_connections=_count(env, MAX_CONNECTIONS_ENV_VAR, DEFAULT_MAX_CONNECTIONS),
            max_header_bytes=_count(env, MAX_HEADER_BYTES_ENV_VAR, DEFAULT_MAX_HEADER_BYTES),
            readiness=environment.readiness(env),
        )

    @property
    def klaviyo_enabled(self) -> bool:
        return environment.klaviyo_enabled(self.env)

    @property
    def first_partition_date(self) -> date:
        return environment.first_partition_date(self.env)

    @property
    def accounts(self) -> AccountSettings:
        return environment.account_settings(self.env)

    @property
    def conversion_metric_id(self) -> str | None:
        return environment.conversion_metric_id(self.env)

    def store(self) -> IngestStore:
        """The ingest store the environment names (a request's reads; closed by the caller)."""
        return environment.ingest_store(self.env)

    def klaviyo_client(self, api_key: str | None) -> KlaviyoClient:
        """A dry run's client: the environment's address and revision (``KlaviyoConfigError`` without a key)."""
        return environment.klaviyo_client(api_key, self.env)

    @property
    def secret(self) -> str | None:
        """The shared secret; None (refuse everything) when unset or blank."""
        return self.env.get(SECRET_ENV_VAR) or None
