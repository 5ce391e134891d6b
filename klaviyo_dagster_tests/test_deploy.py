"""The production instance (deploy/dagster.yaml) and the command lines docs/operations.md gives.

The instance is checked by the installed Dagster itself: its schema, then an instance opened on a
throwaway PostgreSQL database that already holds the dashboard's tables (as Supabase would), then
the documented backfill commands run for real against it, queueing runs the daemon would start.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import yaml
from dagster._core.definitions.run_request import InstigatorType
from dagster._core.instance.config import dagster_instance_config
from dagster._core.scheduler.instigation import TickStatus
from dagster._core.workspace.load import location_origins_from_yaml_paths
from dagster._utils.tags import TagConcurrencyLimitsCounter
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from klaviyo_dagster.definitions import defs
from klaviyo_dagster.storage.tables import IngestTables
from klaviyo_dagster_tests.conftest import ADMIN_DSN
from klaviyo_dagster_tests.paths import PROJECT_ROOT

DAGSTER_YAML = PROJECT_ROOT / "deploy" / "dagster.yaml"
WORKSPACE_YAML = PROJECT_ROOT / "workspace.yaml"
OPERATIONS_DOC = PROJECT_ROOT / "docs" / "operations.md"
ACCOUNT_TAG = "klaviyo/account"
PARTITION_ACCOUNT_TAG = "dagster/partition/klaviyo_account"
OTHER_ACCOUNT = "0f0f0f0f-1111-4222-8333-444455556666"


# --- the database and the instance ----------------------------------------------------------------


@pytest.fixture(scope="module")
def supabase_like_db() -> Iterator[str]:
    """A throwaway database with the dashboard's tables in ``public`` and an empty ``dagster`` schema."""
    name = f"klaviyo_deploy_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'create database "{name}"')
    try:
        IngestTables.postgres(f"postgresql://postgres@127.0.0.1:5432/{name}").migrate()
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{name}", autocommit=True) as db:
            db.execute("create schema dagster")  # docs/deploying.md, "1. The database (once)"
        yield name
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture
def instance_env(supabase_like_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of a deployment: DAGSTER_HOME holding deploy/dagster.yaml, DAGSTER_PG_* set."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DAGSTER_YAML, home / "dagster.yaml")
    env = {
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": "5432",
        "DAGSTER_PG_USER": "postgres",
        "DAGSTER_PG_PASSWORD": "",
        "DAGSTER_PG_DB": supabase_like_db,
        "KLAVIYO_DAGSTER_DATA_DIR": str(tmp_path / "data"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("SUPABASE_URL", "NEXT_PUBLIC_SUPABASE_URL", "KLAVIYO_PARTITIONS_START_DATE"):
        monkeypatch.delenv(name, raising=False)
    return env


@pytest.fixture
def instance(instance_env: dict[str, str]) -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.from_config(instance_env["DAGSTER_HOME"]) as opened:
        yield opened


def test_the_yaml_passes_dagsters_instance_schema(instance_env: dict[str, str]) -> None:
    config, custom_class = dagster_instance_config(instance_env["DAGSTER_HOME"])  # raises when invalid
    assert custom_class is None
    assert set(config["storage"]) == {"postgres"}
    postgres = config["storage"]["postgres"]["postgres_db"]
    assert postgres["scheme"] == "postgresql+psycopg2"  # SQLAlchemy 2.1 would pick psycopg 3 otherwise
    assert postgres["params"] == {"options": "-c search_path=dagster"}
    raw = yaml.safe_load(DAGSTER_YAML.read_text())
    assert all(
        raw["storage"]["postgres"]["postgres_db"][field] == {"env": f"DAGSTER_PG_{suffix}"}
        for field, suffix in [
            ("hostname", "HOST"),
            ("port", "PORT"),
            ("username", "USER"),
            ("password", "PASSWORD"),
            ("db_name", "DB"),
        ]
    ), "connection settings come from the environment, never from the file"


def test_the_instance_on_postgres_has_the_queue_retries_and_retention(instance: dg.DagsterInstance) -> None:
    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
    assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
    assert isinstance(instance.run_launcher, dg.DefaultRunLauncher)

    queue = instance.get_concurrency_config().run_queue_config
    assert queue is not None
    per_account = {"value": {"applyLimitPerUniqueValue": True}, "limit": 1}
    assert {"key": ACCOUNT_TAG, **per_account} in queue.tag_concurrency_limits
    assert {"key": PARTITION_ACCOUNT_TAG, **per_account} in queue.tag_concurrency_limits
    assert queue.max_concurrent_runs > 1  # different accounts run in parallel

    assert instance.run_retries_enabled
    assert instance.run_retries_max_retries >= 1
    assert not instance.run_retries_retry_on_asset_or_op_failure  # only crashed workers
    assert instance.run_monitoring_enabled
    assert instance.run_monitoring_max_runtime_seconds > 0

    for instigator in (InstigatorType.SCHEDULE, InstigatorType.SENSOR):
        retention = instance.get_tick_retention_settings(instigator)
        assert all(days > 0 for days in retention.values()), (instigator, retention)
    assert instance.get_tick_retention_settings(InstigatorType.SENSOR)[TickStatus.SKIPPED] <= 7
    assert not instance.telemetry_enabled


def test_dagsters_tables_stay_out_of_the_dashboards_schema(
    instance: dg.DagsterInstance, supabase_like_db: str
) -> None:
    instance.add_dynamic_partitions("klaviyo_accounts", [OTHER_ACCOUNT])  # a write through the instance
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{supabase_like_db}") as db:
        where = {
            table: schema
            for schema, table in db.execute(
                "select table_schema, table_name from information_schema.tables "
                "where table_schema in ('public', 'dagster')"
            ).fetchall()
            if table in ("runs", "event_logs", "dynamic_partitions")
        }
        dashboard_snapshots = {
            column
            for (column,) in db.execute(
                "select column_name from information_schema.columns "
                "where table_schema = 'public' and table_name = 'snapshots'"
            ).fetchall()
        }
    assert where == {"runs": "dagster", "event_logs": "dagster", "dynamic_partitions": "dagster"}
    assert {"account_id", "upload_id", "label", "status"} <= dashboard_snapshots  # still the dashboard's


def test_the_queue_starts_one_run_per_account_and_accounts_in_parallel(instance: dg.DagsterInstance) -> None:
    """The daemon's own counter, fed the instance's limits: what it would dequeue next."""
    limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
    account, other = "5b0c7a3e-2f4d-4c1a-9e8b-1d2c3b4a5f60", OTHER_ACCOUNT

    def run(tags: dict[str, str]) -> dg.DagsterRun:
        return dg.DagsterRun(job_name="klaviyo_ingest", run_id=uuid.uuid4().hex, tags=tags)

    in_progress = run({ACCOUNT_TAG: account, PARTITION_ACCOUNT_TAG: account})
    counter = TagConcurrencyLimitsCounter(limits, [in_progress])
    assert counter.is_blocked(run({ACCOUNT_TAG: account, PARTITION_ACCOUNT_TAG: account}))
    assert counter.is_blocked(run({PARTITION_ACCOUNT_TAG: account}))  # launched without klaviyo/account
    assert not counter.is_blocked(run({ACCOUNT_TAG: other, PARTITION_ACCOUNT_TAG: other}))
    assert not counter.is_blocked(run({}))  # e.g. klaviyo_cleanup


# --- the command lines of docs/operations.md ------------------------------------------------------


def _operations_page() -> str:
    return OPERATIONS_DOC.read_text()


def _bash_blocks(section: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)


# A command that first sets a variable from another one, as in ``KEYS=$(...) && dagster ...``.
_ASSIGNED_FIRST = re.compile(r"^[A-Z_]+=\$\(.*?\) && ")


def _command_lines(section: str, program: str) -> list[str]:
    """Each ``program`` command of the section's bash blocks as one line (with what sets its
    variables first, if anything), with the variables set so far substituted (the blocks read as
    one shell session: ``ACCOUNT=`` is set once)."""
    lines = []
    variables: dict[str, str] = {}
    for block in _bash_blocks(section):
        joined = block.replace("\\\n", " ").replace("&&\n", "&& ")
        variables.update(re.findall(r"^([A-Z_]+)=([^$\s]\S*)", joined, flags=re.MULTILINE))
        for line in joined.splitlines():
            if _ASSIGNED_FIRST.sub("", line).startswith(program):
                for name, value in variables.items():
                    line = line.replace(f"${name}", value)
                lines.append(line)
    return lines


def _commands(section: str, program: str) -> list[list[str]]:
    """Each ``program`` command of the section's bash blocks as argv (see ``_command_lines``)."""
    return [
        shlex.split(_ASSIGNED_FIRST.sub("", line), comments=True) for line in _command_lines(section, program)
    ]


def _option(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_the_location_name_is_the_one_dagster_derives_from_the_workspace() -> None:
    names = [origin.location_name for origin in location_origins_from_yaml_paths([str(WORKSPACE_YAML)])]
    assert names == ["klaviyo_dagster.definitions"]


@pytest.fixture(scope="module")
def job_names() -> set[str]:
    return {job.name for job in defs().resolve_all_job_defs()}


def test_every_documented_command_targets_the_workspace_location_and_a_real_job(job_names: set[str]) -> None:
    (location,) = [origin.location_name for origin in location_origins_from_yaml_paths([str(WORKSPACE_YAML)])]
    commands = _commands(_operations_page(), ".venv/bin/dagster job")
    backfills = [argv for argv in commands if argv[2] == "backfill"]
    assert len(backfills) >= 3, commands  # a range, chosen dates, a dry-run range
    assert {_option(argv, "-j") for argv in backfills} == {"klaviyo_ingest", "klaviyo_dry_run"}
    for argv in commands:
        assert _option(argv, "-w") == "workspace.yaml", argv
        assert _option(argv, "-l") == location, argv
        assert _option(argv, "-j") in job_names, argv
    (cleanup,) = [argv for argv in commands if argv[2] == "launch"]
    job = defs().get_job_def(_option(cleanup, "-j"))
    assert dg.validate_run_config(job, json.loads(_option(cleanup, "--config-json")))


def test_the_documented_backfills_queue_one_account_and_the_dates_asked(
    instance: dg.DagsterInstance, instance_env: dict[str, str]
) -> None:
    """The documented range backfills, run as written by bash: the runs wait in the queue, tagged
    per account, for exactly the dates asked."""
    ranges = [
        line
        for line in _command_lines(_operations_page(), ".venv/bin/dagster job backfill")
        if "klaviyo_dagster partitions" in line
    ]
    assert {_option(shlex.split(line), "-j") for line in ranges} == {"klaviyo_ingest", "klaviyo_dry_run"}
    account = re.search(r"--account \"?([0-9a-f-]{36})", ranges[0]).group(1)  # type: ignore[union-attr]
    # Another account registered first: a range must not spill into its partitions.
    instance.add_dynamic_partitions("klaviyo_accounts", [OTHER_ACCOUNT, account])
    # A typo in a date makes no key list, and then no backfill (not `--partitions ""`: every partition).
    reversed_dates = ranges[0].replace(
        "--from 2026-11-01 --to 2026-11-07", "--from 2026-11-07 --to 2026-11-01"
    )
    assert reversed_dates != ranges[0]
    refused = _bash(reversed_dates, instance_env)
    assert refused.returncode == 2 and "is before --from" in refused.stderr
    assert instance.get_runs() == []
    for line in ranges:
        result = _bash(line, instance_env)
        assert result.returncode == 0, result.stdout + result.stderr

        runs = instance.get_runs(filters=dg.RunsFilter(job_name=_option(shlex.split(line), "-j")))
        first, last = re.search(r"--from (\S+) --to ([0-9-]+)", line).groups()  # type: ignore[union-attr]
        dates = sorted(run.tags["dagster/partition/date"] for run in runs)
        assert dates[0] == first and dates[-1] == last and len(dates) == len(set(dates)) == 7
        for run in runs:
            assert run.status == dg.DagsterRunStatus.QUEUED
            assert run.tags[ACCOUNT_TAG] == run.tags[PARTITION_ACCOUNT_TAG] == account
            assert run.tags["dagster/code_location"] == "klaviyo_dagster.definitions"


def _bash(line: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``line`` run by bash in the project root, as a user would paste it."""
    return subprocess.run(
        ["bash", "-c", line],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
