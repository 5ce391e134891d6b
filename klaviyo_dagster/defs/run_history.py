"""What became of a partition's ``klaviyo_ingest`` runs, and whether the catch-up may ask again.

From Dagster's run records, newest run first:
- no run at all: request it;
- queued or in progress, succeeded, or canceled (by a person): leave it;
- failed in a step (Klaviyo refused the key, a bucket is missing, a file did not reconcile, bad
  run config, ...): leave it for a person; rerunning fails the same way (README, "Errors");
- failed before any step did, i.e. it never started (the launch failed, e.g. "user code server
  request timed out", or it did not start in time) or its worker crashed: request it again, unless
  Dagster's own run retries are about to (tag ``dagster/will_retry``), and at most ``max_retries``
  times after such failures in a row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import dagster as dg

from klaviyo_dagster.defs.jobs import INGEST_JOB_NAME
from klaviyo_dagster.defs.partitions import ACCOUNT_DIMENSION, DATE_DIMENSION

# Dagster's own run tags (dagster._core.storage.tags), read here, never written.
FAILURE_REASON_TAG = "dagster/failure_reason"
WILL_RETRY_TAG = "dagster/will_retry"
# Failure reasons that mean the job's own code failed: a person must look.
FAILED_IN_CODE = frozenset({"STEP_FAILURE", "JOB_INITIALIZATION_FAILURE"})
UNFINISHED = frozenset(
    {
        dg.DagsterRunStatus.QUEUED,
        dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED,
        dg.DagsterRunStatus.CANCELING,
        dg.DagsterRunStatus.MANAGED,
    }
)


@dataclass(frozen=True)
class Verdict:
    """Whether to request the partition, and why (a few words for the sensor's log)."""

    request: bool
    reason: str
    retry_of: str | None = None  # the failed run a new request replaces
    tries: int = 0  # failures in a row before any step, the newest included


def partition_run_tags(account: str, day: date) -> dict[str, str]:
    """The tags Dagster puts on every run of the (account, date) partition."""
    return {
        f"dagster/partition/{ACCOUNT_DIMENSION}": account,
        f"dagster/partition/{DATE_DIMENSION}": day.isoformat(),
    }


def verdict_for(instance: dg.DagsterInstance, account: str, day: date, max_retries: int) -> Verdict:
    """What to do about a partition without a snapshot, from its newest ingest runs."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(job_name=INGEST_JOB_NAME, tags=partition_run_tags(account, day)),
        limit=max_retries + 2,  # enough to see more than max_retries failures in a row
    )
    if not records:
        return Verdict(True, "never run")
    newest = records[0].dagster_run
    if newest.status in UNFINISHED:
        return Verdict(False, "queued or running")
    if newest.status != dg.DagsterRunStatus.FAILURE:
        return Verdict(False, f"last run {newest.status.value.lower()}")
    if _failed_in_a_step(instance, newest):
        return Verdict(False, "failed in a step: needs a person")
    if newest.tags.get(WILL_RETRY_TAG) == "true":
        return Verdict(False, "Dagster's run retries will retry it")
    tries = _failures_before_any_step(instance, [record.dagster_run for record in records])
    if tries > max_retries:
        return Verdict(False, f"failed {tries} times in a row before any step: needs a person", tries=tries)
    started = records[0].start_time is not None
    reason = "worker crashed" if started else "never started"
    return Verdict(True, reason, retry_of=newest.run_id, tries=tries)


def _failures_before_any_step(instance: dg.DagsterInstance, runs: list[dg.DagsterRun]) -> int:
    """How many of the newest runs, in a row, failed before any of their steps did."""
    count = 0
    for run in runs:
        if run.status != dg.DagsterRunStatus.FAILURE or _failed_in_a_step(instance, run):
            break
        count += 1
    return count


def _failed_in_a_step(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    if run.tags.get(FAILURE_REASON_TAG) in FAILED_IN_CODE:
        return True
    failures = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE, limit=1)
    return bool(failures.records)
