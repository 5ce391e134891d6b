"""Every environment variable the project reads, and the only module that reads them.

Domain modules (the Klaviyo client, producers, storage, readiness, accounts) take their settings as
arguments and never look at the environment. The entry points read it here, once, when they start:

- the Dagster code location (``definitions.py``) builds its resources from these readers, secrets as
  ``dg.EnvVar`` (the UI shows the variable's name, never its value) and the rest as the values in
  effect, so the UI's resource page shows what a run will use;
- the command lines (``migrate``, ``dry-run``), the trigger service and the demo.

Each reader takes the environment as a mapping (``os.environ`` when omitted) and raises
``ValueError`` (or ``StorageConfigError``) naming the variable and the values it takes.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from klaviyo_dagster.accounts import AccountSettings, validate_account_id
from klaviyo_dagster.klaviyo.client import DEFAULT_BASE_URL, DEFAULT_REVISION, KlaviyoClient
from klaviyo_dagster.readiness import (
    DEFAULT_PARTITIONS_START,
    DEFAULT_SETTLING_DELAY,
    MAX_SETTLING_DELAY,
    Readiness,
)
from klaviyo_dagster.storage.objects import DEFAULT_BUCKET
from klaviyo_dagster.storage.store import IngestStore, local_store, supabase_store
from klaviyo_dagster.storage.supabase_objects import StorageConfigError

# --- Klaviyo (contracts/klaviyo-api.md) --------------------------------------------------------------
KLAVIYO_API_KEY_VARS = ("KLAVIYO_API_KEY_PRIVATE", "KLAVIYO_API_KEY")
KLAVIYO_ENABLE_VAR = "KLAVIYO_ENABLE"  # the operators' switch: only "true" lets calls out
KLAVIYO_BASE_URL_VAR = "KLAVIYO_BASE_URL"
KLAVIYO_REVISION_VAR = "KLAVIYO_API_REVISION"
KLAVIYO_TIME_SCALE_VAR = "KLAVIYO_TIME_SCALE"  # only against the simulator started with the same scale
CONVERSION_METRIC_VAR = "SHOPIFY_PLACED_ORDER_METRIC_ID"
# --- accounts (contracts/supabase.md, "Per-account key decryption") ----------------------------------
ACCOUNT_ID_VAR = "KLAVIYO_ACCOUNT_ID"  # the account synced with the environment's key, without integrations
ENCRYPTION_KEY_VAR = "INTEGRATIONS_ENC_KEY"
# --- the ingest store (contracts/supabase.md) ---------------------------------------------------------
SUPABASE_URL_VARS = ("SUPABASE_URL", "NEXT_PUBLIC_SUPABASE_URL")
SUPABASE_KEY_VAR = "SUPABASE_SERVICE_ROLE_KEY"
SUPABASE_DB_URL_VAR = "SUPABASE_DB_URL"
BUCKET_VARS = ("DATA_INGEST_BUCKET", "PREAUTH_BUCKET")
DATA_DIR_VAR = "KLAVIYO_DAGSTER_DATA_DIR"
# --- automation and partitions (design.md, "Automation") ---------------------------------------------
SETTLING_DELAY_VAR = "KLAVIYO_SETTLING_DELAY_MINUTES"
PARTITIONS_START_VAR = "KLAVIYO_PARTITIONS_START_DATE"
AUTOMATION_VAR = "KLAVIYO_DAGSTER_AUTOMATION"
AUTOMATION_VALUES = ("on", "off")
# --- the trigger service (docs: the trigger) -----------------------------------------------------------
TRIGGER_HOST_VAR = "TRIGGER_HOST"
TRIGGER_PORT_VAR = "TRIGGER_PORT"
# --- snapshot processing by the web app (contracts/supabase.md, "Snapshot processing") ---------------
SNAPSHOT_PROCESS_URL_VAR = "SNAPSHOT_PROCESS_URL"
ADMIN_SECRET_VAR = "ADMIN_JOB_SECRET"  # noqa: S105 - a variable name, not a secret  # nosec B105

_POSTGRES_URL = re.compile(r"^postgres(ql)?://.")
# ASCII only: str.isdigit() also takes superscripts, full-width and Arabic-Indic digits.
_ASCII_MINUTES = re.compile(r"[0-9]{1,4}")


def _environ(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def _value(env: Mapping[str, str] | None, name: str) -> str:
    """The variable stripped, ``""`` when unset."""
    return (_environ(env).get(name) or "").strip()


def first_set(names: tuple[str, ...], env: Mapping[str, str] | None = None) -> str | None:
    """The name of the first of ``names`` set to a non-blank value, None when none is."""
    return next((name for name in names if _value(env, name)), None)


# --- Klaviyo ------------------------------------------------------------------------------------------


def klaviyo_api_key(env: Mapping[str, str] | None = None) -> str | None:
    """``KLAVIYO_API_KEY_PRIVATE``, else ``KLAVIYO_API_KEY``; None when neither is set."""
    name = first_set(KLAVIYO_API_KEY_VARS, env)
    return _value(env, name) if name else None


def klaviyo_enabled(env: Mapping[str, str] | None = None) -> bool:
    """``KLAVIYO_ENABLE=true`` (any case); anything else keeps all Klaviyo traffic off."""
    return _value(env, KLAVIYO_ENABLE_VAR).lower() == "true"


def klaviyo_base_url(env: Mapping[str, str] | None = None) -> str:
    """``KLAVIYO_BASE_URL``, else https://a.klaviyo.com (the simulator's URL in the demo and tests)."""
    return _value(env, KLAVIYO_BASE_URL_VAR) or DEFAULT_BASE_URL


def klaviyo_revision(env: Mapping[str, str] | None = None) -> str:
    """``KLAVIYO_API_REVISION``, else the spec's revision (2026-07-15)."""
    return _value(env, KLAVIYO_REVISION_VAR) or DEFAULT_REVISION


def positive_number(name: str, default: float, env: Mapping[str, str] | None = None) -> float:
    """The variable ``name`` as a positive finite number, ``default`` when unset or blank.

    Raises ``ValueError`` naming the variable and quoting what it holds.
    """
    raw = _value(env, name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {raw!r}")
    return value


def klaviyo_time_scale(env: Mapping[str, str] | None = None) -> float:
    """``KLAVIYO_TIME_SCALE``, a positive number; 1 (real Klaviyo) when unset."""
    return positive_number(KLAVIYO_TIME_SCALE_VAR, 1.0, env)


def conversion_metric_id(env: Mapping[str, str] | None = None) -> str | None:
    """``SHOPIFY_PLACED_ORDER_METRIC_ID``; None lets the sync look up the "Placed Order" metric."""
    return _value(env, CONVERSION_METRIC_VAR) or None


def klaviyo_client(api_key: str | None, env: Mapping[str, str] | None = None) -> KlaviyoClient:
    """A client with the environment's switch, address and revision, for the command lines and the
    trigger (the Dagster layer builds its clients from ``KlaviyoResource``). Close it when done.

    Raises ``KlaviyoDisabledError`` unless ``KLAVIYO_ENABLE=true``, ``KlaviyoConfigError`` without a key.
    """
    return KlaviyoClient(
        api_key,
        base_url=klaviyo_base_url(env),
        revision=klaviyo_revision(env),
        enabled=klaviyo_enabled(env),
    )


# --- accounts -----------------------------------------------------------------------------------------


def account_settings(env: Mapping[str, str] | None = None) -> AccountSettings:
    """Where account keys come from: ``INTEGRATIONS_ENC_KEY`` for the dashboard's encrypted keys,
    and ``KLAVIYO_ACCOUNT_ID`` with the environment's Klaviyo key when there are no integrations.

    Raises ``ValueError`` when ``KLAVIYO_ACCOUNT_ID`` is not a uuid.
    """
    raw_account = _value(env, ACCOUNT_ID_VAR)
    try:
        account_id = validate_account_id(raw_account) if raw_account else None
    except ValueError as exc:
        raise ValueError(f"{ACCOUNT_ID_VAR}: {exc}") from None
    return AccountSettings(
        account_id=account_id,
        api_key=klaviyo_api_key(env),
        encryption_key=_value(env, ENCRYPTION_KEY_VAR) or None,
    )


# --- the ingest store ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SupabaseSettings:
    url: str
    service_role_key: str
    db_url: str

    def __repr__(self) -> str:  # never the key or the database password
        return f"SupabaseSettings(url={self.url!r})"


def supabase_settings(env: Mapping[str, str] | None = None) -> SupabaseSettings | None:
    """The Supabase URL, service key and database URL; None when none is set.

    Raises ``StorageConfigError`` naming what is missing when only some are set.
    """
    url_var = first_set(SUPABASE_URL_VARS, env)
    url = _value(env, url_var) if url_var else ""
    key, db_url = _value(env, SUPABASE_KEY_VAR), _value(env, SUPABASE_DB_URL_VAR)
    if not (url or key or db_url):
        return None
    missing = [
        name
        for name, value in (
            (f"{SUPABASE_URL_VARS[0]} (or {SUPABASE_URL_VARS[1]})", url),
            (SUPABASE_KEY_VAR, key),
            (SUPABASE_DB_URL_VAR, db_url),
        )
        if not value
    ]
    if missing:
        raise StorageConfigError(
            f"Supabase is partly configured: set {', '.join(missing)} too, or unset all Supabase "
            "variables to use the local store."
        )
    if not _POSTGRES_URL.match(db_url):
        # Not quoted: a malformed URL still holds the password, and no redaction can find it there.
        raise StorageConfigError(
            f"{SUPABASE_DB_URL_VAR} must be a URL like postgresql://postgres:PASSWORD@HOST:5432/postgres "
            "(Project Settings → Database → Connection string); the value given is not shown"
        )
    return SupabaseSettings(url, key, db_url)


def bucket(env: Mapping[str, str] | None = None) -> str:
    """``DATA_INGEST_BUCKET``, else ``PREAUTH_BUCKET``, else ``preauth-uploads``."""
    name = first_set(BUCKET_VARS, env)
    return _value(env, name) if name else DEFAULT_BUCKET


def data_dir(env: Mapping[str, str] | None = None) -> Path:
    """The local store's folder: ``KLAVIYO_DAGSTER_DATA_DIR``, else ``.data`` in the working directory
    (absolute, so every process of a deployment agrees)."""
    return Path(_value(env, DATA_DIR_VAR) or ".data").absolute()


def ingest_store(env: Mapping[str, str] | None = None) -> IngestStore:
    """The store the environment names, for the command lines and the trigger: Supabase when
    configured, else the local store. Close it when done."""
    settings = supabase_settings(env)
    if settings is None:
        return local_store(data_dir(env), bucket(env))
    return supabase_store(settings.url, settings.service_role_key, settings.db_url, bucket(env))


# --- automation and partitions ------------------------------------------------------------------------


def settling_delay(env: Mapping[str, str] | None = None) -> timedelta:
    """``KLAVIYO_SETTLING_DELAY_MINUTES`` (whole minutes, 0..1440), else 3 h 05 min."""
    raw = _value(env, SETTLING_DELAY_VAR)
    if not raw:
        return DEFAULT_SETTLING_DELAY
    limit = int(MAX_SETTLING_DELAY.total_seconds() // 60)
    if not _ASCII_MINUTES.fullmatch(raw) or int(raw) > limit:
        raise ValueError(
            f"{SETTLING_DELAY_VAR} must be whole minutes between 0 and {limit} "
            f"(ASCII digits 0-9 only), got {raw!r}"
        )
    return timedelta(minutes=int(raw))


def readiness(env: Mapping[str, str] | None = None) -> Readiness:
    """When a partition date is complete, with the settling delay in effect."""
    return Readiness(settling_delay(env))


def first_partition_date(env: Mapping[str, str] | None = None) -> date:
    """The partitions' first date: ``KLAVIYO_PARTITIONS_START_DATE``, else 2024-01-01."""
    raw = _value(env, PARTITIONS_START_VAR)
    if not raw:
        return DEFAULT_PARTITIONS_START
    try:
        # Only YYYY-MM-DD: date.fromisoformat also takes "20240101" and ISO weeks, which no key uses.
        if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", raw):
            return date.fromisoformat(raw)
    except ValueError:
        pass
    raise ValueError(f"{PARTITIONS_START_VAR} must be a date like 2024-01-01, got {raw!r}")


def automation_on(env: Mapping[str, str] | None = None) -> bool:
    """``KLAVIYO_DAGSTER_AUTOMATION``: ``on`` (the default; blank counts as unset) or ``off``, any case.

    Raises ``ValueError`` naming the variable and the values it takes.
    """
    value = _value(env, AUTOMATION_VAR).lower() or "on"
    if value not in AUTOMATION_VALUES:
        raise ValueError(f"{AUTOMATION_VAR} must be 'on' or 'off', not {value!r}")
    return value == "on"


def check(env: Mapping[str, str] | None = None) -> None:
    """Reads every setting once, so an entry point can refuse a malformed one before it starts
    anything. Raises the first reader's ``ValueError`` or ``StorageConfigError``, naming the variable.
    """
    klaviyo_time_scale(env)
    account_settings(env)
    supabase_settings(env)
    settling_delay(env)
    first_partition_date(env)
    automation_on(env)


def snapshot_process_url(env: Mapping[str, str] | None = None) -> str | None:
    """``SNAPSHOT_PROCESS_URL``: the web app's processor; None computes the metrics here."""
    return _value(env, SNAPSHOT_PROCESS_URL_VAR) or None


def trigger_host(env: Mapping[str, str] | None = None) -> str:
    """``TRIGGER_HOST``, else 127.0.0.1 (the trigger's default ``--host``)."""
    return _value(env, TRIGGER_HOST_VAR) or "127.0.0.1"


def trigger_port(env: Mapping[str, str] | None = None) -> int:
    """``TRIGGER_PORT``, else 8080 (the trigger's default ``--port``); ValueError unless 1..65535."""
    raw = _value(env, TRIGGER_PORT_VAR) or "8080"
    if not raw.isascii() or not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"{TRIGGER_PORT_VAR} must be a port number 1-65535, got {raw!r}")
    return int(raw)
