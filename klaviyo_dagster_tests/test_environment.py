"""environment.py: every variable the project reads, read in one place, with errors naming it."""

from __future__ import annotations

import ast
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest

from klaviyo_dagster import environment
from klaviyo_dagster.defs.resources import (
    ingest_store_resource_from_env,
    klaviyo_resource_from_env,
    readiness_resource_from_env,
)
from klaviyo_dagster.klaviyo.errors import KlaviyoConfigError
from klaviyo_dagster.readiness import DEFAULT_SETTLING_DELAY
from klaviyo_dagster.storage.supabase_objects import StorageConfigError

PACKAGE = Path(environment.__file__).parent
SERVICE_KEY = "sb_secret_" + "S3ntAokBx7qZ" * 3
DB_URL = "postgresql://postgres:Pa55wordXyz@127.0.0.1:5432/postgres"
# The entry points that set the environment of what they start (the demo's job, `make dev`'s
# processes), and the trigger service's own settings; everything else asks environment.py.
MAY_TOUCH_OS_ENVIRON = {"environment.py", "demo.py", "dev.py", "trigger/settings.py"}


def reads_os_environ(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv"):
            return True
    return False


def test_only_environment_py_and_the_entry_points_read_the_environment() -> None:
    readers = {str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py") if reads_os_environ(path)}
    assert readers <= MAY_TOUCH_OS_ENVIRON


def test_the_klaviyo_key_prefers_the_private_variable() -> None:
    env = {"KLAVIYO_API_KEY_PRIVATE": " pk_private ", "KLAVIYO_API_KEY": "pk_plain"}
    assert environment.klaviyo_api_key(env) == "pk_private"
    assert (
        environment.klaviyo_api_key({"KLAVIYO_API_KEY_PRIVATE": "  ", "KLAVIYO_API_KEY": "pk_plain"})
        == "pk_plain"
    )
    assert environment.klaviyo_api_key({}) is None


def test_klaviyo_is_off_unless_enable_is_true() -> None:
    assert environment.klaviyo_enabled({"KLAVIYO_ENABLE": " TRUE "})
    for value in ("", "false", "1", "yes"):
        assert not environment.klaviyo_enabled({"KLAVIYO_ENABLE": value})


def test_a_client_from_the_environment_checks_its_settings_before_any_call() -> None:
    with pytest.raises(KlaviyoConfigError, match=r"KLAVIYO_API_KEY_PRIVATE .*KLAVIYO_API_KEY"):
        environment.klaviyo_client(None, {"KLAVIYO_ENABLE": "true"})
    with pytest.raises(KlaviyoConfigError, match=r"^Klaviyo source disabled: set KLAVIYO_ENABLE=true$"):
        environment.klaviyo_client("pk_test", {"KLAVIYO_ENABLE": "false"})
    with environment.klaviyo_client(
        "pk_test",
        {
            "KLAVIYO_ENABLE": "true",
            "KLAVIYO_BASE_URL": "http://127.0.0.1:9",
            "KLAVIYO_API_REVISION": "2025-01-15",
        },
    ) as client:
        assert (client.base_url, client.revision) == ("http://127.0.0.1:9", "2025-01-15")


def test_bucket_prefers_data_ingest_bucket() -> None:
    assert environment.bucket({}) == "preauth-uploads"
    assert environment.bucket({"PREAUTH_BUCKET": "pre"}) == "pre"
    assert environment.bucket({"PREAUTH_BUCKET": "pre", "DATA_INGEST_BUCKET": "ingest"}) == "ingest"
    assert environment.bucket({"DATA_INGEST_BUCKET": " ", "PREAUTH_BUCKET": "pre"}) == "pre"


def test_partial_supabase_settings_name_what_is_missing_and_never_the_key() -> None:
    with pytest.raises(StorageConfigError) as caught:
        environment.supabase_settings({"SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY})
    assert "SUPABASE_URL" in str(caught.value) and "SUPABASE_DB_URL" in str(caught.value)
    assert SERVICE_KEY not in str(caught.value)
    settings = environment.supabase_settings(
        {
            "NEXT_PUBLIC_SUPABASE_URL": "https://x.supabase.co",
            "SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY,
            "SUPABASE_DB_URL": DB_URL,
        }
    )
    assert settings is not None and settings.url == "https://x.supabase.co"
    assert SERVICE_KEY not in repr(settings) and "Pa55word" not in repr(settings)
    assert environment.supabase_settings({}) is None


def test_the_local_store_folder_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert environment.data_dir({}) == tmp_path / ".data"
    assert environment.data_dir({"KLAVIYO_DAGSTER_DATA_DIR": "rel"}) == tmp_path / "rel"


def test_the_settling_delay_is_a_setting_in_whole_minutes() -> None:
    assert environment.settling_delay({}) == DEFAULT_SETTLING_DELAY == timedelta(hours=3, minutes=5)
    assert environment.settling_delay({"KLAVIYO_SETTLING_DELAY_MINUTES": "0"}) == timedelta(0)
    assert environment.settling_delay({"KLAVIYO_SETTLING_DELAY_MINUTES": " 0360 "}) == timedelta(hours=6)


@pytest.mark.parametrize(
    "raw", ["\u00b2", "\uff11\uff18\uff15", "\u0663\u0660", "-5", "1e3", "12.5", "1441", "soon"]
)
def test_the_settling_delay_takes_ascii_minutes_only(raw: str) -> None:
    with pytest.raises(
        ValueError, match=r"KLAVIYO_SETTLING_DELAY_MINUTES must be whole minutes between 0 and 1440"
    ):
        environment.settling_delay({"KLAVIYO_SETTLING_DELAY_MINUTES": raw})


def test_partitions_start_and_automation_name_their_variable_when_wrong() -> None:
    assert environment.first_partition_date({}) == date(2024, 1, 1)
    assert environment.first_partition_date({"KLAVIYO_PARTITIONS_START_DATE": "2026-11-01"}) == date(
        2026, 11, 1
    )
    for bad in ("yesterday", "20240101", "2024-W01-1", "2024-02-30"):
        with pytest.raises(ValueError, match="KLAVIYO_PARTITIONS_START_DATE must be a date"):
            environment.first_partition_date({"KLAVIYO_PARTITIONS_START_DATE": bad})
    assert environment.automation_on({}) and environment.automation_on({"KLAVIYO_DAGSTER_AUTOMATION": " "})
    assert not environment.automation_on({"KLAVIYO_DAGSTER_AUTOMATION": "OFF"})
    with pytest.raises(ValueError, match="KLAVIYO_DAGSTER_AUTOMATION must be 'on' or 'off'"):
        environment.automation_on({"KLAVIYO_DAGSTER_AUTOMATION": "yes"})


def test_a_malformed_account_id_is_refused_when_read() -> None:
    with pytest.raises(ValueError, match="account uuid"):
        environment.account_settings({"KLAVIYO_ACCOUNT_ID": "../etc"})


# --- what the UI shows: the settings in effect, secrets by name ----------------------------------------


def test_the_klaviyo_resource_shows_the_settings_in_effect_and_secrets_by_name() -> None:
    env = {
        "KLAVIYO_API_KEY_PRIVATE": "pk_" + "S3cr3t" * 5,
        "KLAVIYO_ENABLE": "true",
        "KLAVIYO_BASE_URL": "http://127.0.0.1:9",
        "KLAVIYO_ACCOUNT_ID": "00000000-0000-4000-8000-00000000d3e0",
        "INTEGRATIONS_ENC_KEY": "enc-" + "S3cr3t" * 5,
        "SHOPIFY_PLACED_ORDER_METRIC_ID": "AbC123",
    }
    resource = klaviyo_resource_from_env(env)
    assert resource.api_key == dg.EnvVar("KLAVIYO_API_KEY_PRIVATE")
    assert resource.integrations_encryption_key == dg.EnvVar("INTEGRATIONS_ENC_KEY")
    assert (resource.enabled, resource.base_url, resource.revision) == (
        True,
        "http://127.0.0.1:9",
        "2026-07-15",
    )
    assert (resource.account_id, resource.conversion_metric_id) == (env["KLAVIYO_ACCOUNT_ID"], "AbC123")
    assert "S3cr3t" not in repr(resource)


def test_the_store_resource_shows_the_folder_and_bucket_in_effect(tmp_path: Path) -> None:
    local = ingest_store_resource_from_env(
        {"KLAVIYO_DAGSTER_DATA_DIR": str(tmp_path), "PREAUTH_BUCKET": "pre"}
    )
    assert (local.data_dir, local.bucket, local.supabase_url) == (str(tmp_path), "pre", None)
    remote = ingest_store_resource_from_env(
        {
            "SUPABASE_URL": "https://x.supabase.co",
            "SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY,
            "SUPABASE_DB_URL": DB_URL,
        }
    )
    assert remote.service_role_key == dg.EnvVar("SUPABASE_SERVICE_ROLE_KEY")
    assert remote.db_url == dg.EnvVar("SUPABASE_DB_URL")
    assert SERVICE_KEY not in repr(remote) and "Pa55word" not in repr(remote)


def test_the_readiness_resource_carries_the_settling_delay() -> None:
    resource = readiness_resource_from_env({"KLAVIYO_SETTLING_DELAY_MINUTES": "60"})
    assert resource.settling_delay_minutes == 60
    assert (
        resource.get_readiness().ready_at(date(2026, 3, 9), "UTC").isoformat() == "2026-03-10T01:00:00+00:00"
    )


def test_the_deployments_conversion_metric_applies_unless_the_run_config_names_one() -> None:
    from klaviyo_dagster.defs.config import SyncConfig

    assert SyncConfig().options("FROM_ENV").conversion_metric_id == "FROM_ENV"
    assert SyncConfig(conversion_metric_id="RUN").options("FROM_ENV").conversion_metric_id == "RUN"
    assert SyncConfig().options(None).conversion_metric_id is None


@pytest.mark.parametrize(
    "db_url",
    [
        "postgresql//postgres:PW123secret@127.0.0.1:5432/db",
        "postgresql:/postgres:PW123secret@127.0.0.1/db",
        "postgres:PW123secret@127.0.0.1/db",
        "host=127.0.0.1 password=PW123secret",
    ],
)
def test_a_malformed_database_url_is_refused_without_quoting_it(db_url: str) -> None:
    env = {
        "SUPABASE_URL": "https://x.supabase.co",
        "SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY,
        "SUPABASE_DB_URL": db_url,
    }
    with pytest.raises(
        StorageConfigError, match="SUPABASE_DB_URL must be a URL like postgresql://"
    ) as caught:
        environment.supabase_settings(env)
    assert "PW123secret" not in str(caught.value)
