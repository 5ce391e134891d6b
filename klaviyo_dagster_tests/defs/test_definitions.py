"""The code location loads, and assets get a working Klaviyo client from the resource."""

from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg
import pytest

from klaviyo_dagster.definitions import defs
from klaviyo_dagster.defs.resources import (
    KLAVIYO_RESOURCE_KEY,
    IngestStoreResource,
    KlaviyoResource,
    klaviyo_resource_from_env,
)
from klaviyo_dagster.sim import DEFAULT_API_KEY, SimConfig, SimulatorServer
from klaviyo_dagster_tests.paths import PROJECT_ROOT


def test_definitions_load() -> None:
    dg.Definitions.validate_loadable(defs())


def test_the_workspace_validates_with_the_dagster_cli() -> None:
    env = {name: value for name, value in os.environ.items() if name != "DAGSTER_HOME"}
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("variable", ["KLAVIYO_API_KEY_PRIVATE", "KLAVIYO_API_KEY"])
def test_the_resource_names_the_key_variable_never_its_value(variable, monkeypatch) -> None:
    for name in ("KLAVIYO_API_KEY_PRIVATE", "KLAVIYO_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, "pk_SENTINEL_resource")

    resource = klaviyo_resource_from_env()

    assert resource.api_key == dg.EnvVar(variable)
    assert "pk_SENTINEL_resource" not in repr(resource)


@dg.asset
def klaviyo_account_timezone(klaviyo: KlaviyoResource) -> dg.MaterializeResult:
    """A throwaway asset: what any real asset does with the resource, in four lines."""
    with klaviyo.get_client() as client:
        account = client.get("/api/accounts").data[0]
        return dg.MaterializeResult(
            metadata={"timezone": account["attributes"]["timezone"], "calls": client.stats.totals().calls}
        )


def test_an_asset_materializes_through_the_resource_without_revealing_the_key(monkeypatch) -> None:
    with SimulatorServer(SimConfig(profiles=5, seed=1)) as sim:
        monkeypatch.setenv("KLAVIYO_ENABLE", "true")
        monkeypatch.setenv("KLAVIYO_BASE_URL", sim.base_url)
        monkeypatch.delenv("KLAVIYO_API_KEY", raising=False)
        monkeypatch.setenv("KLAVIYO_API_KEY_PRIVATE", DEFAULT_API_KEY)

        result = dg.materialize(
            [klaviyo_account_timezone], resources={KLAVIYO_RESOURCE_KEY: klaviyo_resource_from_env()}
        )

    assert result.success
    metadata = result.asset_materializations_for_node("klaviyo_account_timezone")[0].metadata
    assert metadata["calls"].value == 1
    assert metadata["timezone"].value
    everything = repr(result.all_events) + repr(result.dagster_run)
    assert DEFAULT_API_KEY not in everything


def test_a_disabled_source_fails_the_asset_with_the_fix(monkeypatch) -> None:
    monkeypatch.setenv("KLAVIYO_ENABLE", "false")
    monkeypatch.setenv("KLAVIYO_API_KEY", DEFAULT_API_KEY)
    result = dg.materialize(
        [klaviyo_account_timezone],
        resources={KLAVIYO_RESOURCE_KEY: klaviyo_resource_from_env()},
        raise_on_error=False,
    )
    assert not result.success
    failure = result.failure_data_for_node("klaviyo_account_timezone")
    assert "Klaviyo source disabled: set KLAVIYO_ENABLE=true" in failure.error.cause.message


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: KlaviyoResource(backoff_base_seconds=5, backoff_cap_seconds=1), "backoff_cap_seconds"),
        (lambda: KlaviyoResource(timeout_seconds=float("inf")), "timeout_seconds"),
        (lambda: KlaviyoResource(max_retries=-1), "max_retries"),
        (
            lambda: IngestStoreResource(storage_backoff_base_seconds=5, storage_backoff_max_seconds=1),
            "storage_backoff_max_seconds",
        ),
        (lambda: IngestStoreResource(storage_max_attempts=0), "storage_max_attempts"),
    ],
)
def test_nonsensical_retry_settings_are_refused_naming_the_field(make, field) -> None:
    with pytest.raises(ValueError, match=field):
        make()
