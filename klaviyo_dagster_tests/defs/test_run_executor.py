"""Runs outside the test process: each step in its own process, forked from one server per run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from klaviyo_dagster.definitions import RUN_EXECUTOR, defs
from klaviyo_dagster.defs.assets import INGEST_ASSET_KEYS
from klaviyo_dagster.defs.partitions import ACCOUNTS_PARTITIONS_NAME
from klaviyo_dagster.defs.snapshot import SNAPSHOT
from klaviyo_dagster.environment import DATA_DIR_VAR as DATA_DIR_ENV_VAR
from klaviyo_dagster_tests.conftest import ACCOUNT_ID
from klaviyo_dagster_tests.defs.conftest import TINY_PARTITION
from klaviyo_dagster_tests.paths import PROJECT_ROOT

ASSETS = [*INGEST_ASSET_KEYS, SNAPSHOT]


def test_every_job_and_the_asset_pages_runs_use_the_forkserver_executor() -> None:
    definitions = defs()
    jobs = [definitions.resolve_job_def(name) for name in ("klaviyo_ingest", "klaviyo_dry_run")]
    jobs.append(
        definitions.resolve_implicit_global_asset_job_def()
    )  # what the UI's "Materialize" and backfills run

    assert {job.executor_def.name for job in jobs} == {RUN_EXECUTOR.name}


@pytest.mark.usefixtures("tiny_store_env")
def test_a_run_launched_from_the_cli_runs_each_step_in_its_own_process_and_materializes_every_asset(
    tmp_path: Path,
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        instance.add_dynamic_partitions(ACCOUNTS_PARTITIONS_NAME, [ACCOUNT_ID])
    env = {**os.environ, "DAGSTER_HOME": str(home), DATA_DIR_ENV_VAR: str(tmp_path / "data")}

    result = subprocess.run(
        [
            *(sys.executable, "-m", "dagster", "asset", "materialize", "-m", "klaviyo_dagster.definitions"),
            *(
                "--select",
                ",".join(key.to_user_string() for key in ASSETS),
                "--partition",
                str(TINY_PARTITION),
            ),
        ],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_runs()
        events = [record.dagster_event for record in instance.all_logs(run.run_id)]
    step_pids = {
        event.step_key: event.event_specific_data.metadata["pid"].value  # type: ignore[union-attr]
        for event in events
        if event is not None and event.event_type == dg.DagsterEventType.STEP_WORKER_STARTED
    }
    materialized = {
        event.asset_key for event in events if event is not None and event.is_step_materialization
    }
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert set(materialized) == set(ASSETS)
    assert len(set(step_pids.values())) == len(step_pids) == len(ASSETS)  # one process per step
    assert str(os.getpid()) not in step_pids.values()
