"""Dagster's re-execution from failure (the daemon's retry of a crashed run, or "Re-execute from
failure" in the UI) reruns only the failed steps: the snapshot must still publish all three files."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from klaviyo_dagster.definitions import defs
from klaviyo_dagster.defs.partitions import ACCOUNTS_PARTITIONS_NAME
from klaviyo_dagster.run_names import INGEST_JOB_NAME
from klaviyo_dagster.sim import FaultSpec, SimulatorServer
from klaviyo_dagster.storage.store import local_store
from klaviyo_dagster_tests.conftest import ACCOUNT_ID, TINY_TIME_SCALE
from klaviyo_dagster_tests.defs.conftest import TINY_PARTITION, TINY_UPLOAD_ID

RUN_CONFIG = {
    "ops": {name: {"config": {"days": 3}} for name in ("flows_csv", "campaigns_csv", "subscribers_csv")}
}


def ingest_job() -> dg.JobDefinition:
    """The code location's job, rebuilt in each step process (``dg.reconstructable``)."""
    return defs().resolve_job_def(INGEST_JOB_NAME)


@pytest.mark.usefixtures("own_fork_server")
def test_a_reexecution_from_failure_publishes_the_files_of_both_runs(
    tiny_store_env: SimulatorServer, tmp_path: Path, monkeypatch
) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv("KLAVIYO_DAGSTER_DATA_DIR", str(data))
    monkeypatch.setenv("KLAVIYO_TIME_SCALE", str(TINY_TIME_SCALE))
    tiny_store_env.set_fault("query_campaign_values", FaultSpec(status=400))
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        instance.add_dynamic_partitions(ACCOUNTS_PARTITIONS_NAME, [ACCOUNT_ID])
        job = dg.reconstructable(ingest_job)
        tags = {"dagster/partition": str(TINY_PARTITION)}
        with dg.execute_job(job, instance, run_config=RUN_CONFIG, tags=tags) as first:
            assert not first.success
            assert {e.step_key for e in first.all_events if e.is_step_failure} == {"campaigns_csv"}
        tiny_store_env.set_fault("query_campaign_values", FaultSpec())

        options = dg.ReexecutionOptions.from_failure(first.run_id, instance)
        # The daemon's retry and the UI keep the parent's tags (the partition among them).
        with dg.execute_job(job, instance, reexecution_options=options, tags=tags) as retry:
            assert retry.success, [
                e.event_specific_data.error.message[:400] for e in retry.all_events if e.is_step_failure
            ]
            reexecuted = {e.step_key for e in retry.all_events if e.is_step_success}

    assert "flows_csv" not in reexecuted and {"campaigns_csv", "snapshot"} <= reexecuted
    tables = local_store(data, "preauth-uploads").tables
    row = tables.snapshot_for_upload(TINY_UPLOAD_ID)
    assert row is not None and row.status == "ready"
    assert row.metadata["rows"] == {"flows": 9, "campaigns": 2, "subscribers": 3}
    published = data / "objects" / "preauth-uploads" / TINY_UPLOAD_ID
    assert sorted(p.name for p in published.glob("*.csv")) == [
        "campaigns.csv",
        "flows.csv",
        "subscribers.csv",
    ]
