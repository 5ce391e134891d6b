"""Dagster resources: how assets get a Klaviyo client and the ingest store."""

from __future__ import annotations

import math
import os
from pathlib import Path

import dagster as dg
import httpx
from pydantic import Field, PrivateAttr, model_validator

from klaviyo_dagster.klaviyo.client import API_KEY_ENV_VARS, KlaviyoClient, RetryPolicy
from klaviyo_dagster.klaviyo.ledger import LedgerBinding, ReportCallLedger
from klaviyo_dagster.storage.objects import bucket_from_env
from klaviyo_dagster.storage.store import (
    SUPABASE_DB_URL_VAR,
    SUPABASE_KEY_VAR,
    IngestStore,
    default_data_dir,
    local_store,
    supabase_settings,
    supabase_store,
)
from klaviyo_dagster.storage.supabase_objects import StorageConfigError

KLAVIYO_RESOURCE_KEY = "klaviyo"
LOOKUP_TIMEOUT_SECONDS = 10.0


class KlaviyoResource(dg.ConfigurableResource):
    """Klaviyo's REST API for one store.

    The key is a private API key with read scopes. Give it as ``dg.EnvVar(...)`` so that Dagster
    shows the variable's name, never its value; left unset, the client reads
    ``KLAVIYO_API_KEY_PRIVATE`` or ``KLAVIYO_API_KEY`` when a run starts. Calls also need
    ``KLAVIYO_ENABLE=true``, a switch that lets operators stop all Klaviyo traffic without a deploy.
    """

    api_key: str | None = Field(
        default=None,
        description="Private API key; use EnvVar. Unset: KLAVIYO_API_KEY_PRIVATE, else KLAVIYO_API_KEY.",
    )
    base_url: str | None = Field(
        default=None, description="Unset: KLAVIYO_BASE_URL, else https://a.klaviyo.com."
    )
    revision: str | None = Field(
        default=None, description="API revision header. Unset: KLAVIYO_API_REVISION, else 2026-07-15."
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
            time_scale=self.time_scale,
            timeout_seconds=LOOKUP_TIMEOUT_SECONDS,
            retry=RetryPolicy(max_retries=1, max_throttle_retries=1, max_wait_seconds=LOOKUP_TIMEOUT_SECONDS),
        )


TIME_SCALE_ENV_VAR = "KLAVIYO_TIME_SCALE"


def klaviyo_resource_from_env() -> KlaviyoResource:
    """The resource bound to whichever key variable is set, by name (EnvVar), never by value.

    ``KLAVIYO_TIME_SCALE`` (optional, a positive number) sets ``time_scale``: only for running
    against the simulator started with the same ``--time-scale``; unset means 1 (real Klaviyo).
    """
    key_var = next((name for name in API_KEY_ENV_VARS if os.environ.get(name)), None)
    raw_scale = os.environ.get(TIME_SCALE_ENV_VAR, "").strip() or "1"
    try:
        time_scale = float(raw_scale)
    except ValueError:
        time_scale = math.nan
    if not (math.isfinite(time_scale) and time_scale > 0):
        raise ValueError(f"{TIME_SCALE_ENV_VAR} must be a positive number such as 0.05, got {raw_scale!r}")
    return KlaviyoResource(api_key=dg.EnvVar(key_var) if key_var else None, time_scale=time_scale)


INGEST_STORE_RESOURCE_KEY = "ingest_store"


class IngestStoreResource(dg.ConfigurableResource):
    """Where the partition's files and the dashboard's rows go.

    Supabase when its URL, service key and database URL are given (use EnvVar for the two secrets),
    else the local store under ``data_dir`` (default ``$KLAVIYO_DAGSTER_DATA_DIR`` or ``./.data``).
    """

    supabase_url: str | None = Field(default=None, description="SUPABASE_URL; unset for the local store.")
    service_role_key: str | None = Field(default=None, description="Supabase service role key; use EnvVar.")
    db_url: str | None = Field(default=None, description="Direct Postgres connection string; use EnvVar.")
    bucket: str | None = Field(
        default=None, description="Unset: DATA_INGEST_BUCKET, PREAUTH_BUCKET, preauth-uploads."
    )
    data_dir: str | None = Field(default=None, description="The local store's folder.")
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
        bucket = self.bucket or bucket_from_env()
        if not (self.supabase_url or self.service_role_key or self.db_url):
            return local_store(Path(self.data_dir) if self.data_dir else default_data_dir(), bucket)
        if not (self.supabase_url and self.service_role_key and self.db_url):
            raise StorageConfigError(
                "The Supabase store needs supabase_url, service_role_key and db_url together "
                "(SUPABASE_URL, SUPABASE_SERVICE_ROLE_KEY, SUPABASE_DB_URL)."
            )
        return supabase_store(
            self.supabase_url,
            self.service_role_key,
            self.db_url,
            bucket,
            timeout=httpx.Timeout(
                self.storage_timeout_seconds, connect=min(10.0, self.storage_timeout_seconds)
            ),
            max_attempts=self.storage_max_attempts,
            backoff_base=self.storage_backoff_base_seconds,
            backoff_max=self.storage_backoff_max_seconds,
        )


def ingest_store_resource_from_env() -> IngestStoreResource:
    """Supabase if configured (secrets by EnvVar name, never by value), else the local store."""
    settings = supabase_settings()
    if settings is None:
        return IngestStoreResource()
    return IngestStoreResource(
        supabase_url=settings["url"],
        service_role_key=dg.EnvVar(SUPABASE_KEY_VAR),
        db_url=dg.EnvVar(SUPABASE_DB_URL_VAR),
    )
