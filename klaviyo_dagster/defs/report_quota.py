"""What a run shows while it waits for Klaviyo's daily report quota (``klaviyo/ledger.py``).

``../shared/contracts/klaviyo-api.md``, "Rate limits": 225 report calls per day per account and
endpoint. The report call ledger makes a run whose account has used them all wait until a call's slot
frees instead of failing. A run that waits by design must say so, and must not be killed for it:

- a warning in the run's log: "daily report quota for <endpoint>: <used> of <limit> used in the last
  24 h by this account; waiting until <UTC time> for it to free up";
- the run tag ``klaviyo/waiting_for`` = "daily report quota (<endpoint>) until <UTC time>", shown in
  the UI, set back to "" once the run resumes;
- the run tag ``dagster/max_runtime`` raised to the time already run + the wait + 4 h, so that run
  monitoring (``deploy/dagster.yaml``, ``max_runtime_seconds: 14400``) keeps its 4 h allowance for
  the work after the wait. It is never lowered.

A failure to write the tags is a warning: the wait goes on regardless.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime

import dagster as dg

from klaviyo_dagster.klaviyo.ledger import LedgerBinding, describe_group
from klaviyo_dagster.storage.call_ledger import SqlCallLedgerStore
from klaviyo_dagster.storage.tables import IngestTables, SqliteDialect

WAITING_FOR_TAG = "klaviyo/waiting_for"
MAX_RUNTIME_TAG = "dagster/max_runtime"
# deploy/dagster.yaml's run_monitoring.max_runtime_seconds: what a run may take besides its waits.
RUNTIME_ALLOWANCE_SECONDS = 4 * 3600
RunContext = dg.AssetExecutionContext | dg.OpExecutionContext


class RunQuotaWait:
    """The ledger's hooks for one Dagster run: a log line and run tags while it waits."""

    def __init__(self, context: RunContext, clock: Callable[[], float] = time.time) -> None:
        self._context = context
        self._clock = clock

    def on_long_wait(self, group: str, wait_seconds: float, used: int, limit: int) -> None:
        now = self._clock()
        endpoint = describe_group(group)
        until = datetime.fromtimestamp(now + wait_seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        self._context.log.warning(
            f"daily report quota for {endpoint}: {used} of {limit} used in the last 24 h by this "
            f"account; waiting until {until} for it to free up"
        )
        tags = {WAITING_FOR_TAG: f"daily report quota ({endpoint}) until {until}"}
        self._add_tags(tags, max_runtime_after=wait_seconds, now=now)

    def on_resume(self, group: str) -> None:
        self._context.log.info(f"daily report quota for {describe_group(group)}: no longer waiting for it")
        self._add_tags({WAITING_FOR_TAG: ""})

    def _add_tags(
        self, tags: dict[str, str], *, max_runtime_after: float | None = None, now: float = 0.0
    ) -> None:
        instance, run_id = self._context.instance, self._context.run.run_id
        try:
            if max_runtime_after is not None:
                record = instance.get_run_record_by_id(run_id)
                started = record.start_time if record and record.start_time else now
                wanted = math.ceil(now - started + max_runtime_after + RUNTIME_ALLOWANCE_SECONDS)
                current = _seconds(record.dagster_run.tags.get(MAX_RUNTIME_TAG) if record else None)
                if current is None or wanted > current:
                    tags[MAX_RUNTIME_TAG] = str(wanted)
            instance.add_run_tags(run_id, tags)
        except Exception as exc:  # the run's tags are a courtesy: the wait goes on without them
            self._context.log.warning(
                f"could not update the run's tags ({type(exc).__name__}): {sorted(tags)}"
            )


def run_ledger(
    context: RunContext, tables: IngestTables | None, account_id: str, *, dry_run: bool = False
) -> LedgerBinding | None:
    """The report call ledger of ``account_id`` in the ingest database, with this run's hooks.

    A dry run's report calls count too (they spend the same quota), but a dry run leaves nothing on
    disk: with a local store that does not exist yet, it paces in-process only.
    """
    if tables is None:
        return None
    dialect = tables.dialect
    if dry_run and isinstance(dialect, SqliteDialect) and not dialect.path.exists():
        return None
    waits = RunQuotaWait(context)
    return LedgerBinding(
        SqlCallLedgerStore.for_tables(tables),
        account_id,
        run_id=context.run.run_id,
        on_long_wait=waits.on_long_wait,
        on_resume=waits.on_resume,
    )


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None
