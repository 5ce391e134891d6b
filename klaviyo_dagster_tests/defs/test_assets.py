"""The ingest assets materialized with dg.materialize on the tiny store: files, metadata, failures."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from klaviyo_dagster.definitions import defs
from klaviyo_dagster.defs.assets import (
    CAMPAIGNS_CSV,
    FLOWS_CSV,
    INGEST_ASSETS,
    SUBSCRIBERS_CSV,
    preview_table,
)
from klaviyo_dagster.defs.jobs import DRY_RUN_JOB_NAME
from klaviyo_dagster.producers.csvfile import PREVIEW_ROWS
from klaviyo_dagster.producers.flows import FLOWS_HEADER
from klaviyo_dagster.sim import FaultSpec
from klaviyo_dagster_tests.conftest import ACCOUNT_ID
from klaviyo_dagster_tests.defs.conftest import TINY_PARTITION, TINY_UPLOAD_ID, reloaded, stored_object
from klaviyo_dagster_tests.producers import test_campaigns, test_flows
from klaviyo_dagster_tests.producers.test_account import StoreWithoutOrders

TINY_RUN_CONFIG = {
    "ops": {key.path[-1]: {"config": {"days": 3}} for key in (FLOWS_CSV, CAMPAIGNS_CSV, SUBSCRIBERS_CSV)}
}


def materialize(
    instance, resources, run_config=TINY_RUN_CONFIG, assets=INGEST_ASSETS
) -> dg.ExecuteInProcessResult:
    names = {a.key.path[-1] for a in assets}
    ops = {name: config for name, config in run_config["ops"].items() if name in names}
    return dg.materialize(
        list(assets),
        partition_key=TINY_PARTITION,
        instance=instance,
        resources=resources,
        run_config={"ops": ops},
        raise_on_error=False,
    )


def with_mode(mode: str, **extra: object) -> dict:
    return {"ops": {name: {"config": {"days": 3, "mode": mode, **extra}} for name in TINY_RUN_CONFIG["ops"]}}


def test_the_three_files_land_byte_for_byte(tiny_store_env, instance, resources, data_dir) -> None:
    result = materialize(instance, resources)

    assert result.success
    # Staged beside their final names: the snapshot step moves all three into place together.
    assert (
        stored_object(data_dir, "flows.csv", staged=True).read_text(encoding="utf-8") == test_flows.EXPECTED
    )
    assert (
        stored_object(data_dir, "campaigns.csv", staged=True).read_text(encoding="utf-8")
        == test_campaigns.EXPECTED
    )
    assert stored_object(data_dir, "subscribers.csv", staged=True).read_text(encoding="utf-8").endswith("\n")
    assert not stored_object(data_dir, "flows.csv").exists()
    assert not list(data_dir.rglob("*.partial"))


def test_materializations_say_what_is_in_the_file_and_what_it_cost(
    tiny_store_env, instance, resources
) -> None:
    result = materialize(instance, resources)

    flows = result.asset_materializations_for_node("flows_csv")[0].metadata
    assert flows["dagster/row_count"].value == 9
    assert flows["preview"].value == preview_table(test_flows.EXPECTED.split("\n")[: PREVIEW_ROWS + 1])
    assert [column.name for column in flows["dagster/column_schema"].value.columns] == list(FLOWS_HEADER)
    assert flows["klaviyo_window"].value == "2026-03-07..2026-03-09 (America/New_York)"
    assert flows["klaviyo_429s"].value == 0
    by_group = flows["klaviyo_calls_by_group"].value
    assert by_group["query_flow_series"]["calls"] == 1
    assert flows["klaviyo_calls"].value == sum(group["calls"] for group in by_group.values())
    assert all(value for counters in by_group.values() for value in counters.values())  # only what happened
    assert "klaviyo_wait_seconds" in flows
    subscribers = result.asset_materializations_for_node("subscribers_csv")[0].metadata
    assert subscribers["dagster/row_count"].value == 3  # P0, P2 and P5 of the tiny store


def test_a_rerun_overwrites_the_partitions_files(tiny_store_env, instance, resources, data_dir) -> None:
    assert materialize(instance, resources).success
    assert materialize(instance, resources).success

    folders = [p for p in (data_dir / "objects" / "preauth-uploads").iterdir()]
    assert [p.name for p in folders] == [TINY_UPLOAD_ID]
    # Each run stages its files under its own name until a snapshot publishes them.
    runs = sorted((folders[0] / ".staging").iterdir())
    assert [p.name for p in folders[0].iterdir()] == [".staging"] and len(runs) == 2
    for run in runs:
        assert sorted(p.name for p in run.iterdir()) == ["campaigns.csv", "flows.csv", "subscribers.csv"]


@dg.asset(ins={"flows_csv": dg.AssetIn(FLOWS_CSV)}, partitions_def=INGEST_ASSETS[0].partitions_def)
def downstream_of_flows(flows_csv: Path) -> None:
    """Stands in for the snapshot: must not run on a dry run's files."""


def test_a_dry_run_writes_nothing_records_no_materialization_and_skips_downstream(
    tiny_store_env, instance, resources, data_dir
) -> None:
    run_config = with_mode("dry-run")
    run_config["ops"]["downstream_of_flows"] = {}
    result = materialize(instance, resources, run_config, assets=[*INGEST_ASSETS, downstream_of_flows])

    assert result.success
    assert result.get_asset_materialization_events() == []
    assert not data_dir.exists() or not any(data_dir.rglob("*.csv"))
    observations = {
        e.asset_key: e.asset_observation_data.asset_observation for e in result.get_asset_observation_events()
    }
    assert observations[FLOWS_CSV].metadata["rows"].value == 9
    assert observations[CAMPAIGNS_CSV].metadata["rows"].value == 2
    expected_preview = preview_table(test_campaigns.EXPECTED.split("\n")[: PREVIEW_ROWS + 1])
    assert observations[CAMPAIGNS_CSV].metadata["preview"].value == expected_preview
    skipped = [e.step_key for e in result.all_events if e.event_type_value == "STEP_SKIPPED"]
    assert skipped == ["downstream_of_flows"]


@pytest.mark.parametrize(
    "run_config",
    [None, {}, with_mode("live")],
    ids=["its own config", "empty config (Dagster's GraphQL client)", "live mode asked for"],
)
def test_the_dry_run_job_writes_nothing_whatever_its_run_config(
    tiny_store_env, instance, data_dir, monkeypatch, run_config
) -> None:
    monkeypatch.setenv("KLAVIYO_DAGSTER_DATA_DIR", str(data_dir))
    job = defs().resolve_job_def(DRY_RUN_JOB_NAME)

    result = job.execute_in_process(partition_key=TINY_PARTITION, instance=instance, run_config=run_config)

    assert result.success
    assert result.get_asset_materialization_events() == []
    assert len(result.get_asset_observation_events()) == 3
    assert not data_dir.exists(), sorted(str(p) for p in data_dir.rglob("*"))


def test_fast_mode_is_the_smoke_check(tiny_store_env, instance, resources) -> None:
    result = materialize(instance, resources, with_mode("live", fast=True))

    assert result.success
    flows = result.asset_materializations_for_node("flows_csv")[0].metadata
    subscribers = result.asset_materializations_for_node("subscribers_csv")[0].metadata
    assert flows["dagster/row_count"].value == 3  # one message of one flow, three days
    assert subscribers["dagster/row_count"].value == 0
    assert "get_profiles" not in [r.operation_id for r in tiny_store_env.requests]


def failure_of(result: dg.ExecuteInProcessResult, node: str) -> dg.Failure | dg.StepFailureData:
    assert not result.success
    return result.failure_data_for_node(node)


def test_out_of_range_config_fails_naming_the_field_and_range(tiny_store_env, instance, resources) -> None:
    result = materialize(
        instance, resources, {"ops": {"flows_csv": {"config": {"days": 40}}}}, [INGEST_ASSETS[0]]
    )

    assert "days must be between 1 and 30, got 40" in str(failure_of(result, "flows_csv").error)
    assert tiny_store_env.requests == []


def test_a_missing_key_fails_before_any_call(tiny_store_env, instance, resources, monkeypatch) -> None:
    monkeypatch.delenv("KLAVIYO_API_KEY")
    result = materialize(instance, reloaded(resources), assets=[INGEST_ASSETS[0]])

    assert "KLAVIYO_API_KEY_PRIVATE" in failure_of(result, "flows_csv").user_failure_data.description
    assert tiny_store_env.requests == []


def test_a_disabled_source_fails_before_any_call(tiny_store_env, instance, resources, monkeypatch) -> None:
    monkeypatch.setenv("KLAVIYO_ENABLE", "false")
    result = materialize(instance, reloaded(resources), assets=[INGEST_ASSETS[2]])

    failure = failure_of(result, "subscribers_csv").user_failure_data
    assert failure.description == "Klaviyo source disabled: set KLAVIYO_ENABLE=true"
    assert tiny_store_env.requests == []


def test_an_unknown_account_fails_with_how_to_configure_it(
    tiny_store_env, instance, resources, monkeypatch
) -> None:
    monkeypatch.setenv("KLAVIYO_ACCOUNT_ID", "0f0f0f0f-0000-4000-8000-000000000000")
    result = materialize(instance, reloaded(resources), assets=[INGEST_ASSETS[0]])

    assert (
        "No Klaviyo key for account " + ACCOUNT_ID
        in failure_of(result, "flows_csv").user_failure_data.description
    )


def test_a_missing_conversion_metric_fails_before_the_first_data_call(
    simulator_factory, tiny_store_env, instance, resources, monkeypatch
) -> None:
    sim = simulator_factory(account_factory=StoreWithoutOrders, profiles=0)
    monkeypatch.setenv("KLAVIYO_BASE_URL", sim.base_url)
    result = materialize(instance, reloaded(resources), assets=[INGEST_ASSETS[0]])

    failure = failure_of(result, "flows_csv").user_failure_data
    assert failure.description.startswith('FlowSyncFailed: No "Placed Order" metric')
    assert "SHOPIFY_PLACED_ORDER_METRIC_ID" in failure.description
    assert [r.operation_id for r in sim.requests] == ["get_accounts", "get_metrics"]


def test_a_klaviyo_error_fails_the_asset_with_klaviyos_details_and_no_file(
    tiny_store_env, instance, resources, data_dir
) -> None:
    tiny_store_env.set_fault("query_campaign_values", FaultSpec(status=400))
    result = materialize(instance, resources, assets=[INGEST_ASSETS[1]])

    failure = failure_of(result, "campaigns_csv").user_failure_data
    assert failure.description.startswith(
        "CampaignSyncFailed: Klaviyo POST /api/campaign-values-reports returned 400"
    )
    assert failure.metadata["error"].value == "CampaignSyncFailed"
    details = failure.metadata["details"].value
    assert details["status"] == 400 and details["errors"][0]["status"] == 400
    assert not stored_object(data_dir, "campaigns.csv").exists()
    assert not stored_object(data_dir, "campaigns.csv", staged=True).exists()


@pytest.mark.parametrize("node", ["flows_csv", "campaigns_csv", "subscribers_csv"])
def test_each_asset_is_partitioned_by_date_and_account(node: str) -> None:
    asset = next(a for a in INGEST_ASSETS if a.key.path[-1] == node)
    assert set(asset.partitions_def.partition_dimension_names) == {"date", "klaviyo_account"}


def test_the_preview_is_a_table_whose_cells_cannot_break_it() -> None:
    preview = ("Email,Note", 'a@b.test,"x|y"', 'c@d.test,"two\nlines ' + "w" * 100 + '"')

    table = preview_table(preview).split("\n")

    assert table[:2] == ["| Email | Note |", "|---|---|"]
    assert table[2] == "| a@b.test | x\\|y |"
    assert table[3].startswith("| c@d.test | two lines www") and table[3].endswith("… |")
    assert len(table) == 4


def test_every_asset_names_its_owner_columns_and_the_kinds_of_its_store(monkeypatch) -> None:
    for name in ("SUPABASE_URL", "NEXT_PUBLIC_SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_DB_URL"):
        monkeypatch.delenv(name, raising=False)
    local = {node.key: node for node in defs().resolve_asset_graph().asset_nodes}
    monkeypatch.setenv("SUPABASE_URL", "https://project.supabase.test")
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", "sb-test-key")
    monkeypatch.setenv("SUPABASE_DB_URL", "postgresql://nobody@127.0.0.1:1/none")
    supabase = {node.key: node for node in defs().resolve_asset_graph().asset_nodes}

    assert {owner for node in local.values() for owner in node.owners} == {"team:klaviyo-dagster"}
    schema = local[FLOWS_CSV].metadata["dagster/column_schema"]
    assert [column.name for column in schema.columns] == list(FLOWS_HEADER)
    assert local[dg.AssetKey("snapshot")].kinds == {"sqlite"}
    assert local[FLOWS_CSV].kinds == {"klaviyo", "csv"}
    assert supabase[dg.AssetKey("snapshot")].kinds == {"supabase", "postgres"}
    assert supabase[FLOWS_CSV].kinds == {"klaviyo", "csv", "supabase"}
