"""How a run executes its steps: in their own processes, or all in the run worker when its Klaviyo
reads are already shared.

A partition's run has four steps. When it reads Klaviyo itself, the three file steps must run side
by side (each waits on its own rate-limit group: the audience scan takes the account's floor while
the flows and campaigns files, and the values reports asked ahead for the rest of a batch, go on
beside it), so each step gets its own process, forked from a server that imported this code location
once (Dagster's multiprocess executor with the ``forkserver`` start method).

A later run of the same UTC day in a backfill or a catch-up reads back what the day's first run
fetched (``producers/shared.py``): its steps take a second or less each, and starting a fork server
and four step processes would cost more than the steps themselves (about 2 s real and 4 CPU s a run,
"Backfill benchmarks" in docs/performance.md). Such a run executes its steps one after another in
the run worker (Dagster's in-process executor). The choice is made when the run starts, from the
Dagster instance alone; guessing wrong costs time, never a different file.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, time
from typing import Any

import dagster as dg
from dagster._core.execution.context.system import PlanOrchestrationContext  # not exported; typing only
from dagster._core.execution.plan.plan import ExecutionPlan  # not exported; typing only
from dagster._core.execution.retries import RetryMode  # not exported; typing only

from klaviyo_dagster.defs.assets import SUBSCRIBERS_CSV
from klaviyo_dagster.defs.run_history import is_dry_run
from klaviyo_dagster.run_names import ACCOUNT_PARTITION_TAG, AUTOMATION_TAGS

RETRIES_ENABLED: dict[str, Any] = {"enabled": {}}
# The three file steps run at once whatever the machine's core count (Dagster's default is the count):
# each waits on its own rate-limit group, not on a core.
STEPS_AT_ONCE = 3
# The account's newest successful runs looked at (one query when a run starts).
EARLIER_RUNS_LOOKED_AT = 20


def shares_reads_of_an_earlier_run(
    instance: dg.DagsterInstance, run: dg.DagsterRun, now: datetime | None = None
) -> bool:
    """Whether ``run`` will read back what an earlier run of its account fetched today (UTC; ``now``
    defaults to the clock): it is a live run launched by a backfill, a schedule or a sensor that does
    not turn sharing off, and one of the account's newest successful runs started since UTC midnight
    (the fetch cache keeps a UTC day, producers/shared.py) and left the day's reads, its audience
    among them: a live run that shared and built subscribers.csv (a dry run or a run without sharing
    leaves nothing). A run's start time is Dagster's epoch figure, so neither the database's time
    zone nor a tag added today to yesterday's run can move it into today."""
    account = run.tags.get(ACCOUNT_PARTITION_TAG)
    launched_by_automation = any(tag in run.tags for tag in AUTOMATION_TAGS)
    if account is None or not launched_by_automation or is_dry_run(run) or _sharing_off(run):
        return False
    midnight = datetime.combine((now or datetime.now(UTC)).astimezone(UTC).date(), time(), tzinfo=UTC)
    records = instance.get_run_records(
        filters=dg.RunsFilter(tags={ACCOUNT_PARTITION_TAG: account}, statuses=[dg.DagsterRunStatus.SUCCESS]),
        limit=EARLIER_RUNS_LOOKED_AT,
    )
    return any(
        record.start_time is not None
        and record.start_time >= midnight.timestamp()
        and _left_the_days_reads(record.dagster_run)
        for record in records
    )


def _left_the_days_reads(run: dg.DagsterRun) -> bool:
    built_audience = run.asset_selection is None or SUBSCRIBERS_CSV in run.asset_selection
    return built_audience and not is_dry_run(run) and not _sharing_off(run)


def _sharing_off(run: dg.DagsterRun) -> bool:
    ops = (run.run_config or {}).get("ops") or {}
    return any(
        isinstance(op, dict) and (op.get("config") or {}).get("share_fetches") is False for op in ops.values()
    )


class SharedReadsAwareExecutor(dg.Executor):
    """Dagster's in-process executor for runs whose reads are shared, its multiprocess executor
    (fork server) for the rest."""

    def __init__(self, in_process: dg.Executor, multiprocess: dg.Executor) -> None:
        self._in_process = in_process
        self._multiprocess = multiprocess

    @property
    def retries(self) -> RetryMode:
        return self._multiprocess.retries

    def execute(
        self, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan
    ) -> Iterator[dg.DagsterEvent]:
        if _expects_shared_reads(plan_context):
            plan_context.log.info(
                "an earlier run of this account fetched today's Klaviyo data, which this run expects to "
                "read back: the steps run one after another in the run worker"
            )
            yield from self._in_process.execute(plan_context, execution_plan)
        else:
            yield from self._multiprocess.execute(plan_context, execution_plan)


def _expects_shared_reads(plan_context: PlanOrchestrationContext) -> bool:
    """The choice; a run whose history cannot be read keeps a process per step, always right."""
    try:
        return shares_reads_of_an_earlier_run(plan_context.instance, plan_context.dagster_run)
    except Exception as exc:  # any run storage failure: the choice only saves time
        plan_context.log.warning(
            f"could not look up the account's earlier runs ({type(exc).__name__}): each step runs in its "
            "own process"
        )
        return False


def run_executor(preload_module: str) -> dg.ExecutorDefinition:
    """The executor of every job and of the asset pages; step processes fork from a server that
    imported ``preload_module`` (the code location) once per run."""

    @dg.executor(
        name="shared_reads_aware_executor",
        requirements=dg.multiple_process_executor_requirements(),
    )
    def shared_reads_aware_executor(init_context: dg.InitExecutorContext) -> dg.Executor:
        def create(definition: dg.ExecutorDefinition, config: dict[str, Any]) -> dg.Executor:
            context = dg.InitExecutorContext(
                job=init_context.job,
                executor_def=definition,
                executor_config=config,
                instance=init_context.instance,
            )
            return definition.executor_creation_fn(context)  # type: ignore[misc]

        in_process = create(dg.in_process_executor, {"retries": RETRIES_ENABLED})
        multiprocess = create(
            dg.multiprocess_executor,
            {
                "retries": RETRIES_ENABLED,
                "max_concurrent": STEPS_AT_ONCE,
                "start_method": {"forkserver": {"preload_modules": [preload_module]}},
            },
        )
        return SharedReadsAwareExecutor(in_process, multiprocess)

    return shared_reads_aware_executor
