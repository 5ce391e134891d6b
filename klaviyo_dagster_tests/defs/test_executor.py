"""Runs outside the test process: each step in its own process, forked from one server per run,
unless the run reads back what an earlier run of its account fetched today."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest

from klaviyo_dagster.definitions import RUN_EXECUTOR, defs
from klaviyo_dagster.defs.assets import FLOWS_CSV, INGEST_ASSET_KEYS, SUBSCRIBERS_CSV
from klaviyo_dagster.defs.executor import _expects_shared_reads, shares_reads_of_an_earlier_run
from klaviyo_dagster.defs.partitions import ACCOUNTS_PARTITIONS_NAME, partition_key
from klaviyo_dagster.defs.snapshot import SNAPSHOT
from klaviyo_dagster.environment import DATA_DIR_VAR as DATA_DIR_ENV_VAR
from klaviyo_dagster.run_names import (
    ACCOUNT_PARTITION_TAG,
    DATE_PARTITION_TAG,
    DRY_RUN_JOB_NAME,
    INGEST_JOB_NAME,
)
from klaviyo_dagster.storage.ids import nightly_upload_id
from klaviyo_dagster_tests.conftest import ACCOUNT_ID, TINY_TIME_SCALE
from klaviyo_dagster_tests.defs.conftest import TINY_PARTITION
from klaviyo_dagster_tests.paths import PROJECT_ROOT
from klaviyo_dagster_tests.producers.tiny_store import PARTITION_DATE

ASSETS = [*INGEST_ASSET_KEYS, SNAPSHOT]
SUCCESS, FAILURE = dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE


def test_every_job_and_the_asset_pages_runs_use_the_run_executor() -> None:
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


def ingest_job() -> dg.JobDefinition:
    """The code location's job, rebuilt in each step process (``dg.reconstructable``)."""
    return defs().resolve_job_def(INGEST_JOB_NAME)


def partition_tags(day: date, **more: str) -> dict[str, str]:
    key = partition_key(ACCOUNT_ID, day)
    return {
        "dagster/partition": str(key),
        DATE_PARTITION_TAG: day.isoformat(),
        ACCOUNT_PARTITION_TAG: ACCOUNT_ID,
        **more,
    }


def step_worker_pids(result: dg.ExecuteJobResult) -> set[int]:
    return {
        int(event.event_specific_data.metadata["pid"].value)  # type: ignore[union-attr]
        for event in result.all_events
        if event.event_type == dg.DagsterEventType.STEP_WORKER_STARTED
    }


def materialized(result: dg.ExecuteJobResult) -> set[dg.AssetKey]:
    return {event.asset_key for event in result.all_events if event.is_step_materialization}  # type: ignore[misc]


@pytest.mark.usefixtures("tiny_store_env", "own_fork_server", "one_utc_day")
def test_a_backfills_later_dates_run_their_steps_in_the_run_worker_and_the_first_in_step_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv(DATA_DIR_ENV_VAR, str(data))
    monkeypatch.setenv("KLAVIYO_TIME_SCALE", str(TINY_TIME_SCALE))
    backfill = {"dagster/backfill": "abcdefgh"}
    later_date = PARTITION_DATE - timedelta(days=1)
    later_upload = data / "objects" / "preauth-uploads" / nightly_upload_id(ACCOUNT_ID, later_date)
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        instance.add_dynamic_partitions(ACCOUNTS_PARTITIONS_NAME, [ACCOUNT_ID])
        job = dg.reconstructable(ingest_job)
        with dg.execute_job(job, instance, tags=partition_tags(PARTITION_DATE, **backfill)) as first:
            first_pids = step_worker_pids(first)
            assert first.success and materialized(first) == set(ASSETS)
        with dg.execute_job(job, instance, tags=partition_tags(later_date, **backfill)) as later:
            later_pids = step_worker_pids(later)
            assert later.success and materialized(later) == set(ASSETS)
            later_logs = [record.user_message for record in instance.all_logs(later.run_id)]
        in_process_files = published_files(later_upload)
        # Launched by hand, a date reads Klaviyo afresh: its steps get their own processes again.
        with dg.execute_job(job, instance, tags=partition_tags(later_date)) as by_hand:
            by_hand_pids = step_worker_pids(by_hand)
            assert by_hand.success
        step_processes_files = published_files(later_upload)

    assert len(first_pids) == len(ASSETS) and len(by_hand_pids) == len(ASSETS)
    assert later_pids == set()
    assert any("the steps run one after another in the run worker" in message for message in later_logs)
    assert in_process_files == step_processes_files  # the same three files, byte for byte
    assert sorted(in_process_files) == ["campaigns.csv", "flows.csv", "subscribers.csv"]


def published_files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.glob("*.csv")}


def a_run(
    instance: dg.DagsterInstance, status: dg.DagsterRunStatus, started_at: datetime | None = None, **tags: str
) -> dg.DagsterRun:
    run = dg.DagsterRun(job_name=INGEST_JOB_NAME, run_id=str(uuid.uuid4()), tags=tags)
    return finished(instance, run, status, started_at)


def finished(
    instance: dg.DagsterInstance,
    run: dg.DagsterRun,
    status: dg.DagsterRunStatus,
    started_at: datetime | None = None,
) -> dg.DagsterRun:
    """``run``, stored as it started (at ``started_at``, by default now) and ended with ``status``."""
    instance.add_run(run)
    end = {SUCCESS: dg.DagsterEventType.RUN_SUCCESS, FAILURE: dg.DagsterEventType.RUN_FAILURE}[status]
    for event_type, timestamp in ((dg.DagsterEventType.RUN_START, started_at), (end, None)):
        event = dg.DagsterEvent(event_type_value=event_type.value, job_name=run.job_name)
        instance.report_dagster_event(event, run.run_id, timestamp=timestamp and timestamp.timestamp())
    return run


BACKFILL = {"dagster/backfill": "abcdefgh"}
OF_THE_ACCOUNT = {ACCOUNT_PARTITION_TAG: ACCOUNT_ID}


@pytest.mark.parametrize(
    ("earlier_status", "earlier_tags", "run_tags", "run_config", "shares"),
    [
        pytest.param(SUCCESS, OF_THE_ACCOUNT, {**OF_THE_ACCOUNT, **BACKFILL}, {}, True, id="backfill"),
        pytest.param(
            SUCCESS, OF_THE_ACCOUNT, {**OF_THE_ACCOUNT, "dagster/sensor_name": "c"}, {}, True, id="catch-up"
        ),
        pytest.param(SUCCESS, OF_THE_ACCOUNT, OF_THE_ACCOUNT, {}, False, id="launched by hand"),
        pytest.param(
            SUCCESS,
            OF_THE_ACCOUNT,
            {**OF_THE_ACCOUNT, **BACKFILL},
            {"ops": {"subscribers_csv": {"config": {"share_fetches": False}}}},
            False,
            id="sharing turned off",
        ),
        pytest.param(
            FAILURE, OF_THE_ACCOUNT, {**OF_THE_ACCOUNT, **BACKFILL}, {}, False, id="earlier run failed"
        ),
        pytest.param(
            SUCCESS,
            {ACCOUNT_PARTITION_TAG: "another"},
            {**OF_THE_ACCOUNT, **BACKFILL},
            {},
            False,
            id="another account's run",
        ),
        pytest.param(SUCCESS, OF_THE_ACCOUNT, BACKFILL, {}, False, id="a run of no account"),
    ],
)
def test_a_run_shares_reads_when_launched_by_automation_after_a_run_of_its_account_succeeded_today(
    instance: dg.DagsterInstance,
    earlier_status: dg.DagsterRunStatus,
    earlier_tags: dict[str, str],
    run_tags: dict[str, str],
    run_config: dict,
    shares: bool,
) -> None:
    a_run(instance, earlier_status, **earlier_tags)
    run = dg.DagsterRun(
        job_name=INGEST_JOB_NAME, run_id=str(uuid.uuid4()), tags=run_tags, run_config=run_config
    )

    assert shares_reads_of_an_earlier_run(instance, run) is shares


def test_a_success_before_utc_midnight_is_not_shared(instance: dg.DagsterInstance) -> None:
    a_run(instance, SUCCESS, **OF_THE_ACCOUNT)
    run = dg.DagsterRun(
        job_name=INGEST_JOB_NAME, run_id=str(uuid.uuid4()), tags={**OF_THE_ACCOUNT, **BACKFILL}
    )
    tomorrow = datetime.now(UTC) + timedelta(days=1)

    assert shares_reads_of_an_earlier_run(instance, run, now=tomorrow) is False
    assert shares_reads_of_an_earlier_run(instance, run) is True


def test_a_run_that_started_before_utc_midnight_and_succeeded_after_it_is_not_shared(
    instance: dg.DagsterInstance,
) -> None:
    """Its reads were cached under yesterday's date; a tag added to it today changes nothing."""
    now = datetime.now(UTC)
    yesterday_evening = datetime.combine(now.date(), time(), tzinfo=UTC) - timedelta(minutes=5)
    earlier = a_run(instance, SUCCESS, started_at=yesterday_evening, **OF_THE_ACCOUNT)
    instance.add_run_tags(earlier.run_id, {"note": "looked at today"})
    run = dg.DagsterRun(
        job_name=INGEST_JOB_NAME, run_id=str(uuid.uuid4()), tags={**OF_THE_ACCOUNT, **BACKFILL}
    )

    assert shares_reads_of_an_earlier_run(instance, run, now=now) is False


class _UnreadableRuns:
    def get_run_records(self, **_: object) -> list[dg.RunRecord]:
        raise OSError("run storage is down")


def test_a_run_whose_account_history_cannot_be_read_keeps_a_process_per_step() -> None:
    warnings: list[str] = []
    run = dg.DagsterRun(
        job_name=INGEST_JOB_NAME, run_id=str(uuid.uuid4()), tags={**OF_THE_ACCOUNT, **BACKFILL}
    )
    plan_context = SimpleNamespace(
        instance=_UnreadableRuns(), dagster_run=run, log=SimpleNamespace(warning=warnings.append)
    )

    assert _expects_shared_reads(plan_context) is False  # type: ignore[arg-type]
    assert warnings == [
        "could not look up the account's earlier runs (OSError): each step runs in its own process"
    ]


def test_a_dry_run_never_counts_as_sharing_reads(instance: dg.DagsterInstance) -> None:
    """A dry run writes nothing and reads no cache: its three file steps go on side by side."""
    a_run(instance, SUCCESS, **OF_THE_ACCOUNT)
    dry_run = dg.DagsterRun(
        job_name=DRY_RUN_JOB_NAME, run_id=str(uuid.uuid4()), tags={**OF_THE_ACCOUNT, **BACKFILL}
    )

    assert shares_reads_of_an_earlier_run(instance, dry_run) is False


NO_SHARING = {"ops": {"subscribers_csv": {"config": {"share_fetches": False}}}}


@pytest.mark.parametrize(
    ("job_name", "run_config", "asset_selection", "shares"),
    [
        pytest.param(INGEST_JOB_NAME, {}, None, True, id="the whole job"),
        pytest.param(INGEST_JOB_NAME, {}, {SUBSCRIBERS_CSV}, True, id="subscribers.csv among its assets"),
        pytest.param(INGEST_JOB_NAME, {}, {FLOWS_CSV}, False, id="without subscribers.csv"),
        pytest.param(DRY_RUN_JOB_NAME, {}, None, False, id="a dry run"),
        pytest.param(INGEST_JOB_NAME, NO_SHARING, None, False, id="an earlier run without sharing"),
    ],
)
def test_only_an_earlier_run_that_left_the_days_audience_counts(
    instance: dg.DagsterInstance,
    job_name: str,
    run_config: dict,
    asset_selection: set[dg.AssetKey] | None,
    shares: bool,
) -> None:
    earlier = dg.DagsterRun(
        job_name=job_name,
        run_id=str(uuid.uuid4()),
        tags=OF_THE_ACCOUNT,
        run_config=run_config,
        asset_selection=frozenset(asset_selection) if asset_selection is not None else None,
    )
    finished(instance, earlier, SUCCESS)
    run = dg.DagsterRun(
        job_name=INGEST_JOB_NAME, run_id=str(uuid.uuid4()), tags={**OF_THE_ACCOUNT, **BACKFILL}
    )

    assert shares_reads_of_an_earlier_run(instance, run) is shares
