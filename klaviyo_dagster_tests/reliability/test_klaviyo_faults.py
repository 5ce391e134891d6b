"""Klaviyo faults during a whole partition run (three files + snapshot, ``dg.materialize``).

Each fault ends in a successful retry (the stored files are byte for byte those of a clean run, and
every materialization's row count is the stored file's) or in a failed asset whose message names the
endpoint and the reason, with no file stored for it, no materialization recorded and no snapshot;
rerunning the partition once the fault is gone repairs it.

Already covered at the client level (not repeated here): ``klaviyo/test_client.py`` (Retry-After,
daily quota, 5xx retried/bounded, 501, timeouts, malformed JSON, bad request),
``klaviyo/test_edge_and_quota.py`` (CDN pages, waits said only in a 429's body) and, at the
asset level, a 400 on campaign-values in ``defs/test_assets.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg
import pytest

from klaviyo_dagster.definitions import store_resources
from klaviyo_dagster.defs.assets import RECONCILES_WITH_KLAVIYO as RECONCILES
from klaviyo_dagster.defs.partitions import ACCOUNTS_PARTITIONS_NAME
from klaviyo_dagster.defs.resources import (
    KLAVIYO_RESOURCE_KEY,
    IngestStoreResource,
    klaviyo_resource_from_env,
)
from klaviyo_dagster.sim import FaultSpec
from klaviyo_dagster_tests.conftest import ACCOUNT_ID, TINY_TIME_SCALE
from klaviyo_dagster_tests.defs.conftest import TINY_UPLOAD_ID
from klaviyo_dagster_tests.producers import test_campaigns, test_flows
from klaviyo_dagster_tests.producers.tiny_store import TinyStore
from klaviyo_dagster_tests.reliability.conftest import (
    FAST_RETRIES,
    FILE_NAMES,
    Rule,
    assert_every_materialization_matches_its_file,
    local_object,
    materialized,
    run_config,
    run_partition,
    step_events,
)

PROFILES = ("GET", "/api/profiles")
FLOWS = ("GET", "/api/flows")
FLOW_SERIES = ("POST", "/api/flow-series-reports")
CAMPAIGN_VALUES = ("POST", "/api/campaign-values-reports")


@pytest.fixture
def fault_resources(resources) -> dict:
    """The test resources with a short request timeout (the simulator's timeouts hang ~forever)."""
    return {
        **resources,
        KLAVIYO_RESOURCE_KEY: klaviyo_resource_from_env(
            time_scale=TINY_TIME_SCALE, timeout_seconds=0.5, **FAST_RETRIES
        ),
    }


_GOLDEN: dict[str, bytes] = {}


@pytest.fixture
def golden_subscribers(tiny_store_env, fault_resources, tmp_path) -> bytes:
    """subscribers.csv of a clean run in a store of its own (flows and campaigns have hand-worked
    goldens already); the tiny store is fixed, so one clean run serves the whole module."""
    if "subscribers.csv" in _GOLDEN:
        return _GOLDEN["subscribers.csv"]
    store = IngestStoreResource(data_dir=str(tmp_path / "golden"))
    clean_resources = {**fault_resources, **store_resources(store)}
    with dg.DagsterInstance.ephemeral() as clean_instance:
        clean_instance.add_dynamic_partitions(ACCOUNTS_PARTITIONS_NAME, [ACCOUNT_ID])
        assert run_partition(clean_instance, clean_resources).success
    tiny_store_env.reset()
    _GOLDEN["subscribers.csv"] = local_object(tmp_path / "golden", "subscribers.csv").read_bytes()
    return _GOLDEN["subscribers.csv"]


def golden(name: str, subscribers: bytes) -> bytes:
    return {
        "flows.csv": test_flows.EXPECTED.encode(),
        "campaigns.csv": test_campaigns.EXPECTED.encode(),
        "subscribers.csv": subscribers,
    }[name]


def assert_complete_partition(result, data_dir, subscribers: bytes) -> None:
    assert result.success
    for name in FILE_NAMES.values():
        assert local_object(data_dir, name).read_bytes() == golden(name, subscribers), name
    assert_every_materialization_matches_its_file(
        result, lambda name: local_object(data_dir, name).read_bytes()
    )
    assert "snapshot" in materialized(result)


# --- faults that a retry absorbs ----------------------------------------------------------------------


@dataclass(frozen=True)
class Recoverable:
    sim: dict[str, FaultSpec] | None = None
    transport: tuple[Rule, ...] = ()


RECOVERABLE = {
    "429 storm with Retry-After": Recoverable(sim={"query_flow_series": FaultSpec(retry_after_storm=4)}),
    "5xx burst mid-scan": Recoverable(sim={"get_profiles": FaultSpec(fail_first_n=3)}),
    "connection reset mid-scan": Recoverable(transport=(Rule(*PROFILES, "reset", first=2, times=2),)),
    "one read timeout": Recoverable(transport=(Rule(*CAMPAIGN_VALUES, "timeout"),)),
    "truncated JSON body once": Recoverable(transport=(Rule(*FLOWS, "truncate"),)),
    "one HTML 403 page from the CDN": Recoverable(sim={"query_flow_series": FaultSpec(html_403_first_n=1)}),
    "HTML gateway pages from the CDN": Recoverable(sim={"get_campaigns": FaultSpec(html_5xx_first_n=2)}),
    "429 whose body, not Retry-After, says the wait": Recoverable(
        sim={"query_campaign_values": FaultSpec(throttle_body_only_first_n=1, throttle_body_seconds=1)}
    ),
}


@pytest.mark.parametrize("case", sorted(RECOVERABLE))
def test_a_transient_fault_is_retried_and_the_partition_lands_complete(
    case, tiny_store_env, instance, fault_resources, data_dir, golden_subscribers, faulty_transport
) -> None:
    fault = RECOVERABLE[case]
    for operation_id, spec in (fault.sim or {}).items():
        tiny_store_env.set_fault(operation_id, spec)
    faulty_transport.rules.extend(fault.transport)

    result = run_partition(instance, fault_resources)

    assert_complete_partition(result, data_dir, golden_subscribers)
    assert fault.transport == () or faulty_transport.applied  # the fault really happened
    retries = sum(
        group.get("retries", 0)
        for metadata in materialized(result).values()
        for group in (metadata.get("klaviyo_calls_by_group") or {}).values()
    )
    assert retries >= 1  # and it was counted where operators look


# --- faults that fail the asset clearly -----------------------------------------------------------------


@dataclass(frozen=True)
class Fatal:
    node: str
    message: tuple[str, ...]  # substrings of the failure's description: the endpoint and the reason
    sim: dict[str, FaultSpec] | None = None
    transport: tuple[Rule, ...] = ()


FATAL = {
    "persistent 5xx": Fatal(
        "subscribers_csv",
        ("AudienceSyncFailed", "GET /api/profiles failed after 6 attempts"),
        sim={"get_profiles": FaultSpec(error_rate=1.0)},
    ),
    "persistent timeouts": Fatal(
        "campaigns_csv",
        ("CampaignSyncFailed", "POST /api/campaign-values-reports failed after 6 attempts", "timed out"),
        sim={"query_campaign_values": FaultSpec(timeout_rate=1.0)},
    ),
    "persistent malformed JSON": Fatal(
        "flows_csv",
        ("FlowSyncFailed", "GET /api/flows failed after 6 attempts", "unreadable body"),
        sim={"get_flows": FaultSpec(malformed_json_rate=1.0)},
    ),
    "HTML 403 from a CDN that persists": Fatal(
        "flows_csv",
        (
            "FlowSyncFailed",
            "POST /api/flow-series-reports failed after 6 attempts",
            "edge (CDN)",
            "text/html",
        ),
        sim={"query_flow_series": FaultSpec(html_403_rate=1.0)},
    ),
    "a day-long quota said only in the 429's body": Fatal(
        "campaigns_csv",
        ("CampaignSyncFailed", "daily quota exhausted for POST /api/campaign-values-reports"),
        sim={"query_campaign_values": FaultSpec(throttle_body_only_first_n=1, throttle_body_seconds=86400)},
    ),
    "connection resets that persist": Fatal(
        "subscribers_csv",
        ("AudienceSyncFailed", "GET /api/profiles failed after 6 attempts", "Connection reset"),
        transport=(Rule(*PROFILES, "reset", first=2, times=99),),
    ),
    "cursor turns invalid mid-scan": Fatal(
        "subscribers_csv",
        ("AudienceSyncFailed", "GET /api/profiles returned 400", "cursor"),
        transport=(Rule(*PROFILES, "bad_cursor", first=1),),
    ),
}


@pytest.mark.parametrize("case", sorted(FATAL))
def test_a_lasting_fault_fails_its_file_by_endpoint_and_reason_and_a_rerun_repairs(
    case, tiny_store_env, instance, fault_resources, data_dir, golden_subscribers, faulty_transport
) -> None:
    fault = FATAL[case]
    for operation_id, spec in (fault.sim or {}).items():
        tiny_store_env.set_fault(operation_id, spec)
    faulty_transport.rules.extend(fault.transport)

    failed = run_partition(instance, fault_resources)

    assert not failed.success
    assert step_events(failed, "STEP_FAILURE") == [fault.node]
    description = failed.failure_data_for_node(fault.node).user_failure_data.description
    for part in fault.message:
        assert part in description, (part, description)
    recorded = materialized(failed)
    assert fault.node not in recorded and "snapshot" not in recorded
    assert "snapshot" not in step_events(failed, "STEP_START")
    assert not local_object(data_dir, FILE_NAMES[fault.node]).exists()  # nothing half-written
    assert not list(local_object(data_dir, "x").parent.glob(".upload-*"))
    # The files that did materialize wait under their staging names for a snapshot that never came.
    assert_every_materialization_matches_its_file(
        failed, lambda name: local_object(data_dir, f".staging/{failed.run_id}/{name}").read_bytes()
    )
    tables = fault_resources["ingest_store"].get_store().tables
    assert tables.snapshot_for_upload(TINY_UPLOAD_ID) is None

    tiny_store_env.clear_faults()
    faulty_transport.rules.clear()
    repaired = run_partition(instance, fault_resources)

    assert_complete_partition(repaired, data_dir, golden_subscribers)
    assert tables.count_snapshots(TINY_UPLOAD_ID) == 1


def test_the_daily_report_quota_exhausted_fails_at_once_and_says_so(
    simulator_factory, tiny_store_env, instance, fault_resources, data_dir, monkeypatch
) -> None:
    sim = simulator_factory(
        account_factory=TinyStore,
        time_scale=TINY_TIME_SCALE,
        rate_limit_overrides={"query_flow_series": {"daily": 1}},
    )
    monkeypatch.setenv("KLAVIYO_BASE_URL", sim.base_url)
    fault_resources[KLAVIYO_RESOURCE_KEY] = klaviyo_resource_from_env(
        time_scale=TINY_TIME_SCALE, timeout_seconds=0.5, max_wait_seconds=2
    )
    assert run_partition(instance, fault_resources).success  # spends the day's one report call
    first_flows = local_object(data_dir, "flows.csv").read_bytes()

    # Read afresh (the day's kept series would answer it otherwise); our ledger allows the call, so
    # the quota Klaviyo says is spent was spent by someone else, and the run says so at once.
    failed = run_partition(instance, fault_resources, run_config(share_fetches=False))

    assert step_events(failed, "STEP_FAILURE") == ["flows_csv"]
    description = failed.failure_data_for_node("flows_csv").user_failure_data.description
    assert "daily quota exhausted for POST /api/flow-series-reports" in description
    assert "flows_csv" not in materialized(failed)
    assert local_object(data_dir, "flows.csv").read_bytes() == first_flows  # the earlier file stands
    # The snapshot row of the first run stays; this run made no new one.
    tables = fault_resources["ingest_store"].get_store().tables
    assert tables.count_snapshots(TINY_UPLOAD_ID) == 1


# --- a file that does not add up to Klaviyo's report -------------------------------------------------


def test_a_file_that_does_not_reconcile_fails_its_blocking_check_and_no_snapshot_is_made(
    tiny_store_env, instance, fault_resources, data_dir, faulty_transport
) -> None:
    # The series report's days arrive one day late: the last day's numbers fall outside the window
    # and would be silently lost from flows.csv.
    faulty_transport.rules.append(Rule(*FLOW_SERIES, "shift_days"))

    result = run_partition(instance, fault_resources)

    assert not result.success
    checks = {
        e.asset_key.path[-1]: e for e in result.get_asset_check_evaluations() if e.check_name == RECONCILES
    }
    assert not checks["flows_csv"].passed
    assert "outside the window: 2026-03-10" in checks["flows_csv"].description
    assert checks["campaigns_csv"].passed and checks["subscribers_csv"].passed
    assert step_events(result, "STEP_FAILURE") == ["flows_csv"]
    assert "snapshot" not in step_events(result, "STEP_START")  # blocked: the dashboard sees nothing new
    tables = fault_resources["ingest_store"].get_store().tables
    assert tables.snapshot_for_upload(TINY_UPLOAD_ID) is None
    assert not local_object(data_dir, "flows.csv").exists()
