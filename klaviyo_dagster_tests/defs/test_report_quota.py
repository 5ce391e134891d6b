"""A run that waits for Klaviyo's daily report quota says so in its log and tags, and is not killed.

contracts/klaviyo-api.md, "Rate limits": 225 report calls a day per account and endpoint. With the
report call ledger a run whose account used them all waits (``klaviyo/ledger.py``); the run's
``klaviyo/waiting_for`` tag tells the UI why, and ``dagster/max_runtime`` grows by the wait so run
monitoring (deploy/dagster.yaml, 4 h) does not take the wait for a hung worker.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from contextlib import closing
from datetime import UTC, datetime
from types import SimpleNamespace

import dagster as dg

from klaviyo_dagster.definitions import pipeline_resources
from klaviyo_dagster.defs.assets import flows_csv
from klaviyo_dagster.defs.report_quota import (
    MAX_RUNTIME_TAG,
    RUNTIME_ALLOWANCE_SECONDS,
    WAITING_FOR_TAG,
    RunQuotaWait,
)
from klaviyo_dagster.defs.resources import klaviyo_resource_from_env
from klaviyo_dagster.storage.call_ledger import SqlCallLedgerStore
from klaviyo_dagster.storage.tables import IngestTables
from klaviyo_dagster_tests.conftest import ACCOUNT_ID, TINY_TIME_SCALE
from klaviyo_dagster_tests.defs.conftest import TINY_PARTITION

GROUP = "query_flow_series"


class RecordingLog:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def warning(self, message: str) -> None:
        self.lines.append(("warning", message))

    def info(self, message: str) -> None:
        self.lines.append(("info", message))


def a_finished_run(instance: dg.DagsterInstance) -> str:
    @dg.op
    def nothing() -> None:
        return None

    @dg.job
    def tiny() -> None:
        nothing()

    return tiny.execute_in_process(instance=instance).run_id


def test_the_hooks_tag_the_run_while_it_waits_and_clear_the_tag_after(instance) -> None:
    run_id = a_finished_run(instance)
    started = instance.get_run_record_by_id(run_id).start_time
    log = RecordingLog()
    context = SimpleNamespace(instance=instance, run=SimpleNamespace(run_id=run_id), log=log)
    waits = RunQuotaWait(context, clock=lambda: started + 100)  # type: ignore[arg-type]

    waits.on_long_wait("query_campaign_values", 7200, 225, 225)

    until = datetime.fromtimestamp(started + 7300, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    tags = instance.get_run_by_id(run_id).tags
    assert tags[WAITING_FOR_TAG] == f"daily report quota (POST /api/campaign-values-reports) until {until}"
    assert tags[MAX_RUNTIME_TAG] == str(math.ceil(100 + 7200 + RUNTIME_ALLOWANCE_SECONDS))
    assert log.lines == [
        (
            "warning",
            "daily report quota for POST /api/campaign-values-reports: 225 of 225 used in the last 24 h "
            f"by this account; waiting until {until} for it to free up",
        )
    ]

    waits.on_long_wait("query_campaign_values", 60, 225, 225)  # a shorter wait never lowers the limit
    assert instance.get_run_by_id(run_id).tags[MAX_RUNTIME_TAG] == str(
        math.ceil(7300 + RUNTIME_ALLOWANCE_SECONDS)
    )

    waits.on_resume("query_campaign_values")
    assert instance.get_run_by_id(run_id).tags[WAITING_FOR_TAG] == ""


def test_a_failure_to_tag_the_run_is_a_warning_and_not_a_failure() -> None:
    class BrokenInstance:
        def get_run_record_by_id(self, run_id: str) -> None:
            raise RuntimeError("instance unavailable")

    log = RecordingLog()
    context = SimpleNamespace(instance=BrokenInstance(), run=SimpleNamespace(run_id="r"), log=log)
    RunQuotaWait(context).on_long_wait(GROUP, 3600, 225, 225)  # type: ignore[arg-type]

    assert [level for level, _ in log.lines] == ["warning", "warning"]
    assert "could not update the run's tags (RuntimeError)" in log.lines[1][1]


def test_a_run_whose_account_used_the_days_reports_waits_and_then_succeeds(
    tiny_store_env, instance, store_resource, data_dir
) -> None:
    """The account's 225 flow-series calls of the (scaled) last day free up ~3 s from now: over
    the resource's 0.2 s cap, so the run announces the wait, waits, and completes."""
    path = data_dir / "ingest.sqlite3"
    SqlCallLedgerStore.for_tables(IngestTables.sqlite(path)).recorded(ACCOUNT_ID, GROUP)  # the schema
    held = (86_400 + 1) * TINY_TIME_SCALE  # a daily slot lasts a day (and a 1 s margin) after release
    stamp = datetime.fromtimestamp(time.time() - held + 3, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    with closing(sqlite3.connect(path)) as connection, connection:
        connection.executemany(
            "insert into klaviyo_report_calls (account_id, rate_limit_group, sent_at, released_at, run_id) "
            "values (?, ?, ?, ?, 'an-earlier-run')",
            [(ACCOUNT_ID, GROUP, stamp, stamp)] * 225,
        )
    klaviyo = klaviyo_resource_from_env(time_scale=TINY_TIME_SCALE, max_wait_seconds=0.2)

    result = dg.materialize(
        [flows_csv],
        partition_key=TINY_PARTITION,
        instance=instance,
        resources=pipeline_resources(klaviyo, store_resource),
        run_config={"ops": {"flows_csv": {"config": {"days": 3}}}},
    )

    assert result.success
    warnings = [
        e.message
        for e in instance.all_logs(result.run_id)
        if e.level == logging.WARNING and "daily report quota" in (e.message or "")
    ]
    assert len(warnings) == 1
    assert (
        "daily report quota for POST /api/flow-series-reports: 225 of 225 used in the last 24 h by this account"
        in warnings[0]
    )
    tags = instance.get_run_by_id(result.run_id).tags
    assert tags[WAITING_FOR_TAG] == ""  # set while it waited, cleared once it resumed
    assert int(tags[MAX_RUNTIME_TAG]) >= RUNTIME_ALLOWANCE_SECONDS
    assert result.asset_materializations_for_node("flows_csv")[0].metadata["klaviyo_429s"].value == 0
