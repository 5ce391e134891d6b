"""Dagster resources: how assets get a Klaviyo client and the ingest store."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

import dagster as dg
import httpx
from pydantic import Field, PrivateAttr, model_validator

from klaviyo_dagster import environment
from klaviyo_dagster.accounts import AccountDirectory, AccountSettings
from klaviyo_dagster.klaviyo.client import DEFAULT_BASE_URL, DEFAULT_REVISION, KlaviyoClient, RetryPolicy
from klaviyo_dagster.klaviyo.ledger import LedgerBinding, ReportCallLedger
from klaviyo_dagster.readiness import DEFAULT_SETTLING_DELAY, MAX_SETTLING_DELAY, Readiness
from klaviyo_dagster.storage.objects import DEFAULT_BUCKET
from klaviyo_dagster.storage.store import IngestStore, local_store, supabase_store
from klaviyo_dagster.storage.supabase_objects import StorageConfigError
from klaviyo_dagster.storage.tables import IngestTables

KLAVIYO_RESOURCE_KEY = "klaviyo"
LOOKUP_TIMEOUT_SECONDS = 10.0


class KlaviyoResource(dg.ConfigurableResource):
    """Klaviyo's REST API, and where each account's key comes from.

    Keys are private API keys with read scopes: each connected account's is stored encrypted in
    ``account_integrations`` (decrypted with ``integrations_encryption_key``); a deployment without
    integrations syncs ``account_id`` with ``api_key``. Give secrets as ``dg.EnvVar(...)`` so that
    Dagster shows the variable's name, never its value (``klaviyo_resource_from_env`` does).
    ``enabled`` (``KLAVIYO_ENABLE=true``) is the operators' switch that stops all Klaviyo traffic.
    """

    api_key: str | None = Field(
        default=None,
        description="Private API key of account_id (KLAVIYO_API_KEY_PRIVATE or KLAVIYO_API_KEY); use EnvVar.",
    )
    account_id: str | None = Field(
        default=None,
        description="KLAVIYO_ACCOUNT_ID: the account synced with api_key when account_integrations has none.",
    )
    integrations_encryption_key: str | None = Field(
        default=None,
        description="INTEGRATIONS_ENC_KEY, which decrypts account_integrations' keys; use EnvVar.",
    )
    enabled: bool = Field(
        default=False, description="KLAVIYO_ENABLE=true: the switch that lets any Klaviyo call out."
    )
    base_url: str = Field(default=DEFAULT_BASE_URL, description="KLAVIYO_BASE_URL.")
    revision: str = Field(default=DEFAULT_REVISION, description="API revision header (KLAVIYO_API_REVISION).")
    conversion_metric_id: str | None = Field(
        default=None,
        description='SHOPIFY_PLACED_ORDER_METRIC_ID; unset: the account\'s "Placed Order" metric (run config wins).',
    )
    time_scale: float = Field(
        default=1.0,
        gt=0,
        description="Real seconds per Klaviyo second for pacing: 1 against Klaviyo, the simulator's --time-scale against it.",
    )
    max_wait_seconds: float = Field(
        default=600.0,
        gt=0,
        description="Longest single wait for a rate limit before failing (the daily report quota says hours).",
    )
    timeout_seconds: float = Field(
        default=30.0, gt=0, allow_inf_nan=False, description="Per-request timeout."
    )
    max_retries: int = Field(
        default=RetryPolicy.max_retries, ge=0, description="Retries of a call after a 5xx, timeout or reset."
    )
    backoff_base_seconds: float = Field(
        default=RetryPolicy.backoff_base_seconds, gt=0, description="First backoff between retries (doubles)."
    )
    backoff_cap_seconds: float = Field(
        default=RetryPolicy.backoff_cap_seconds, gt=0, description="Longest backoff between retries."
    )

    @model_validator(mode="after")
    def _cap_not_below_base(self) -> KlaviyoResource:
        if self.backoff_cap_seconds < self.backoff_base_seconds:
            raise ValueError(
                f"backoff_cap_seconds ({self.backoff_cap_seconds}) must not be below backoff_base_seconds "
                f"({self.backoff_base_seconds})"
            )
        return self

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_retries=self.max_retries,
            backoff_base_seconds=self.backoff_base_seconds,
            backoff_cap_seconds=self.backoff_cap_seconds,
            max_wait_seconds=self.max_wait_seconds,
        )

    def account_directory(self, tables: IngestTables | None) -> AccountDirectory:
        """The accounts to sync and their keys (``accounts.py``), with this resource's settings."""
        return AccountDirectory(
            tables,
            AccountSettings(self.account_id, self.api_key, self.integrations_encryption_key),
        )

    def get_client(self, api_key: str | None = None, *, ledger: LedgerBinding | None = None) -> KlaviyoClient:
        """A client for this store (or for ``api_key``'s store); close it when done.

        With ``ledger``, report calls are counted in the ingest database across runs and processes
        (``klaviyo/ledger.py``): a full daily report quota is waited out, announced through the
        binding's hooks, instead of failing. A call left in flight by a worker that died stops
        blocking the account after the request timeout times the attempts a call may make.
        """
        retry = self.retry_policy()
        report_ledger = None
        if ledger is not None:
            report_ledger = ReportCallLedger(
                ledger.store,
                ledger.account_id,
                run_id=ledger.run_id,
                time_scale=self.time_scale,
                stale_after_seconds=self.timeout_seconds * (retry.max_retries + 1),
            )
        return KlaviyoClient(
            api_key or self.api_key,
            base_url=self.base_url,
            revision=self.revision,
            enabled=self.enabled,
            time_scale=self.time_scale,
            timeout_seconds=self.timeout_seconds,
            retry=retry,
            ledger=report_ledger,
            on_long_wait=ledger.on_long_wait if ledger else None,
            on_resume=ledger.on_resume if ledger else None,
        )

    def get_lookup_client(self, api_key: str | None = None) -> KlaviyoClient:
        """A client for one quick call inside a sensor's time limit (60 s by default).

        10 s per request, one retry, no long rate-limit wait: a slow Klaviyo fails the lookup, which
        the next evaluation repeats, rather than timing out the whole evaluation.
        """
        return KlaviyoClient(
            api_key or self.api_key,
            base_url=self.base_url,
            revision=self.revision,
            enabled=self.enabled,
            time_scale=self.time_scale,
            timeout_seconds=LOOKUP_TIMEOUT_SECONDS,
            retry=RetryPolicy(max_retries=1, max_throttle_retries=1, max_wait_seconds=LOOKUP_TIMEOUT_SECONDS),
        )


def klaviyo_resource_from_env(env: Mapping[str, str] | None = None, **overrides: object) -> KlaviyoResource:
    """The resource a deployment's environment describes (``environment.py``): the key and the
    encryption key bound by variable name (EnvVar), never by value; the other settings as the values
    in effect, so the UI shows them. ``overrides`` set fields directly (benchmarks, tests).

    Raises ``ValueError`` for a malformed ``KLAVIYO_TIME_SCALE`` or ``KLAVIYO_ACCOUNT_ID``.
    """
    key_var = environment.first_set(environment.KLAVIYO_API_KEY_VARS, env)
    settings = environment.account_settings(env)
    fields: dict[str, object] = {
        "api_key": dg.EnvVar(key_var) if key_var else None,
        "account_id": settings.account_id,
        "integrations_encryption_key": (
            dg.EnvVar(environment.ENCRYPTION_KEY_VAR) if settings.encryption_key else None
        ),
        "enabled": environment.klaviyo_enabled(env),
        "base_url": environment.klaviyo_base_url(env),
        "revision": environment.klaviyo_revision(env),
        "conversion_metric_id": environment.conversion_metric_id(env),
        "time_scale": environment.klaviyo_time_scale(env),
    }
    return KlaviyoResource(**{**fields, **overrides})  # type: ignore[arg-type]


INGEST_STORE_RESOURCE_KEY = "ingest_store"


class IngestStoreResource(dg.ConfigurableResource):
    """Where the partition's files and the dashboard's rows go.

    Supabase when its URL, service key and database URL are given (use EnvVar for the two secrets),
    else the local store under ``data_dir``.
    """

    supabase_url: str | None = Field(default=None, description="SUPABASE_URL; unset for the local store.")
    service_role_key: str | None = Field(default=None, description="Supabase service role key; use EnvVar.")
    db_url: str | None = Field(default=None, description="Direct Postgres connection string; use EnvVar.")
    bucket: str = Field(default=DEFAULT_BUCKET, description="DATA_INGEST_BUCKET (or PREAUTH_BUCKET).")
    data_dir: str = Field(
        default=".data",
        description="The local store's folder (KLAVIYO_DAGSTER_DATA_DIR); unused with Supabase.",
    )
    storage_timeout_seconds: float = Field(
        default=60.0, gt=0, description="Per-request timeout of Storage calls."
    )
    storage_max_attempts: int = Field(
        default=4, ge=1, description="Tries of a Storage call (5xx, 429, timeouts)."
    )
    storage_backoff_base_seconds: float = Field(
        default=0.5, gt=0, description="First backoff between Storage tries (doubles, with jitter)."
    )
    storage_backoff_max_seconds: float = Field(
        default=10.0, gt=0, description="Longest backoff between tries."
    )
    _store: IngestStore | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _storage_cap_not_below_base(self) -> IngestStoreResource:
        if self.storage_backoff_max_seconds < self.storage_backoff_base_seconds:
            raise ValueError(
                f"storage_backoff_max_seconds ({self.storage_backoff_max_seconds}) must not be below "
                f"storage_backoff_base_seconds ({self.storage_backoff_base_seconds})"
            )
        return self

    def files_kinds(self) -> set[str]:
        """Dagster kinds of where the CSVs go: Supabase Storage, or none (a local folder)."""
        return {"supabase"} if self.supabase_url else set()

    def tables_kinds(self) -> set[str]:
        """Dagster kinds of where the snapshot's rows go: Supabase's Postgres, or local SQLite."""
        return {"supabase", "postgres"} if self.supabase_url else {"sqlite"}

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """A run step starts with no store open; the first ``get_store`` opens the one it keeps."""
        self._store = None

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Closes the step's store (its Storage HTTP client) when the step ends."""
        if self._store is not None:
            self._store.close()
            self._store = None

    def get_store(self) -> IngestStore:
        """The store, opened once per step (or per sensor or schedule evaluation) and closed at its end.

        Raises ``StorageConfigError`` when only part of the Supabase settings is given.
        """
        if self._store is None:
            self._store = self._open_store()
        return self._store

    def _open_store(self) -> IngestStore:
        if not (self.supabase_url or self.service_role_key or self.db_url):
            return local_store(Path(self.data_dir), self.bucket)
        if not (self.supabase_url and self.service_role_key and self.db_url):
            raise StorageConfigError(
                "The Supabase store needs supabase_url, service_role_key and db_url together "
                "(SUPABASE_URL, SUPABASE_SERVICE_ROLE_KEY, SUPABASE_DB_URL)."
            )
        return supabase_store(
            self.supabase_url,
            self.service_role_key,
            self.db_url,
            self.bucket,
            timeout=httpx.Timeout(
                self.storage_timeout_seconds, connect=min(10.0, self.storage_timeout_seconds)
            ),
            max_attempts=self.storage_max_attempts,
            backoff_base=self.storage_backoff_base_seconds,
            backoff_max=self.storage_backoff_max_seconds,
        )


def ingest_store_resource_from_env(
    env: Mapping[str, str] | None = None, **overrides: object
) -> IngestStoreResource:
    """Supabase if configured (secrets by EnvVar name, never by value), else the local store; the
    bucket and folder as the values in effect. ``overrides`` set fields directly.

    Raises ``StorageConfigError`` when only part of the Supabase settings is set.
    """
    settings = environment.supabase_settings(env)
    fields: dict[str, object] = {"bucket": environment.bucket(env)}
    if settings is None:
        fields["data_dir"] = str(environment.data_dir(env))
    else:
        fields.update(
            supabase_url=settings.url,
            service_role_key=dg.EnvVar(environment.SUPABASE_KEY_VAR),
            db_url=dg.EnvVar(environment.SUPABASE_DB_URL_VAR),
        )
    return IngestStoreResource(**{**fields, **overrides})  # type: ignore[arg-type]


READINESS_RESOURCE_KEY = "readiness"


class ReadinessResource(dg.ConfigurableResource):
    """When a partition date is complete for an account: its day is over where the account is, plus
    the settling delay for Klaviyo's reports to catch up (``readiness.py``; design.md, "Automation").
    The complete-days schedule and the catch-up sensor ask it."""

    settling_delay_minutes: int = Field(
        default=int(DEFAULT_SETTLING_DELAY.total_seconds() // 60),
        ge=0,
        le=int(MAX_SETTLING_DELAY.total_seconds() // 60),
        description="KLAVIYO_SETTLING_DELAY_MINUTES: minutes after an account's local midnight.",
    )

    def get_readiness(self) -> Readiness:
        return Readiness(timedelta(minutes=self.settling_delay_minutes))


def readiness_resource_from_env(env: Mapping[str, str] | None = None) -> ReadinessResource:
    """``KLAVIYO_SETTLING_DELAY_MINUTES`` as the value in effect; ``ValueError`` when malformed."""
    return ReadinessResource(
        settling_delay_minutes=int(environment.settling_delay(env).total_seconds() // 60)
    )
