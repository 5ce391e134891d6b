"""What became of a partition's runs, and whether the schedule or the catch-up may ask again.

A partition's runs are found by its tags (``dagster/partition/klaviyo_account`` and ``dagster/partition/date``),
whatever the job: ``klaviyo_ingest``, and the implicit asset job (``__ASSET_JOB…``) of runs launched
from an asset's page or an asset backfill in the UI. Runs of ``klaviyo_dry_run`` are left out (a dry
run writes nothing). Newest run first:
- no run at all: request it;
- queued or in progress, succeeded, or canceled (by a person): leave it;
- failed in a step (Klaviyo refused the key, a bucket is missing, a file did not reconcile, bad
  run config, ...): leave it for a person; rerunning fails the same way (README, "Errors");
- failed before any step did, i.e. it never started (the launch failed, e.g. "user code server
  request timed out", or it did not start in time) or its worker crashed or was stopped (SIGTERM: its
  step fails with ``DagsterExecutionInterruptedError``, the run with ``UNEXPECTED_TERMINATION``):
  request it again, unless Dagster's own run retries are about to (tag ``dagster/will_retry``, trusted
  for ``RETRY_GRACE_SECONDS`` after the run ended: Dagster sets it, then declines to retry a run of a
  backfill it already marked complete, as a command-line backfill is at once), and at most
  ``max_retries`` times after such failures in a row.

Dagster tags a failed run with why (``dagster/failure_reason``); the run's step failures are only read
when that tag does not tell, at most ``RunHistory.max_event_reads`` runs per evaluation.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

import dagster as dg

from klaviyo_dagster.run_names import ACCOUNT_PARTITION_TAG, DATE_PARTITION_TAG, DRY_RUN_JOB_NAME


def is_dry_run(run: dg.DagsterRun) -> bool:
    """A run that writes nothing: of the dry-run job, or with ``mode: dry-run`` in its run config
    (README, "Dry-run a date range"). It neither counts as a partition's sync nor says anything of
    the account's sync (``last_run_at``, ``last_error``)."""
    if run.job_name == DRY_RUN_JOB_NAME:
        return True
    ops = (run.run_config or {}).get("ops") or {}
    return any(
        isinstance(op, dict) and (op.get("config") or {}).get("mode") == "dry-run" for op in ops.values()
    )


# Dagster's own run tags (dagster._core.storage.tags), read here, never written.
FAILURE_REASON_TAG = "dagster/failure_reason"
WILL_RETRY_TAG = "dagster/will_retry"
# Dagster's retry daemon launches a retry within seconds of the failure; a "will retry" run that
# ended longer ago than this and is still the partition's newest was not retried.
RETRY_GRACE_SECONDS = 600.0
# Failure reasons (dagster RunFailureReason) that mean the job's own code failed: a person must look.
FAILED_IN_CODE = frozenset({"STEP_FAILURE", "JOB_INITIALIZATION_FAILURE"})
# Failure reasons that mean the run never started, or its worker crashed or was stopped: retryable,
# whatever step failures the interruption left behind.
NEVER_STARTED_OR_CRASHED = frozenset({"UNEXPECTED_TERMINATION", "START_TIMEOUT", "RUN_WORKER_RESTART"})
# The error a step fails with when its worker is stopped (SIGTERM): not the step's own failure.
INTERRUPTED_ERRORS = frozenset({"DagsterExecutionInterruptedError", "KeyboardInterrupt"})
# Step-failure reads per evaluation, for failed runs whose failure reason does not tell.
MAX_EVENT_READS = 20
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
NOT_EXAMINED = "not examined this evaluation (step-failure reads used up)"


@dataclass(frozen=True)
class Verdict:
    """Whether to request the partition, and why (a few words for the sensor's log)."""

    request: bool
    reason: str
    retry_of: str | None = None  # the failed run a new request replaces
    tries: int = 0  # failures in a row before any step, the newest included


def partition_run_tags(account: str, day: date) -> dict[str, str]:
    """The tags Dagster puts on every run of the (account, date) partition."""
    return {ACCOUNT_PARTITION_TAG: account, DATE_PARTITION_TAG: day.isoformat()}


class _OutOfReads(Exception):
    pass


@dataclass
class RunHistory:
    """The runs of a set of partitions, from one query; verdicts read step failures sparingly."""

    instance: dg.DagsterInstance
    runs: dict[tuple[str, date], list[dg.RunRecord]]
    max_event_reads: int = MAX_EVENT_READS
    event_reads: int = 0
    _in_a_step: dict[str, bool] = field(default_factory=dict)

    @classmethod
    def load(
        cls,
        instance: dg.DagsterInstance,
        pairs: Iterable[tuple[str, date]],
        max_event_reads: int = MAX_EVENT_READS,
    ) -> RunHistory:
        """One ``get_run_records`` query: the runs tagged with any of the pairs' accounts and dates."""
        wanted = set(pairs)
        runs: dict[tuple[str, date], list[dg.RunRecord]] = {pair: [] for pair in wanted}
        if wanted:
            accounts = sorted({account for account, _ in wanted})
            days = sorted({day.isoformat() for _, day in wanted})
            records = instance.get_run_records(
                filters=dg.RunsFilter(tags={ACCOUNT_PARTITION_TAG: accounts, DATE_PARTITION_TAG: days})
            )
            for record in records:  # newest first
                run = record.dagster_run
                if is_dry_run(run):
                    continue
                try:
                    pair = (run.tags[ACCOUNT_PARTITION_TAG], date.fromisoformat(run.tags[DATE_PARTITION_TAG]))
                except (KeyError, ValueError):
                    continue
                if pair in runs:
                    runs[pair].append(record)
        return cls(instance, runs, max_event_reads)

    def verdict(self, account: str, day: date, max_retries: int) -> Verdict:
        """What to do about the partition, from its newest runs."""
        try:
            return self._verdict(self.runs.get((account, day), []), max_retries)
        except _OutOfReads:
            return Verdict(False, NOT_EXAMINED)

    def _verdict(self, records: list[dg.RunRecord], max_retries: int) -> Verdict:
        if not records:
            return Verdict(True, "never run")
        newest = records[0].dagster_run
        if newest.status in UNFINISHED:
            return Verdict(False, "queued or running")
        if newest.status != dg.DagsterRunStatus.FAILURE:
            return Verdict(False, f"last run {newest.status.value.lower()}")
        if self._failed_in_a_step(newest):
            return Verdict(False, "failed in a step: needs a person")
        if newest.tags.get(WILL_RETRY_TAG) == "true" and not _retry_overdue(records[0]):
            return Verdict(False, "Dagster's run retries will retry it")
        tries = 0
        for record in records[: max_retries + 1]:  # enough to see more than max_retries in a row
            run = record.dagster_run
            if run.status != dg.DagsterRunStatus.FAILURE or self._failed_in_a_step(run):
                break
            tries += 1
        if tries > max_retries:
            return Verdict(
                False, f"failed {tries} times in a row before any step: needs a person", tries=tries
            )
        reason = "worker crashed or stopped" if records[0].start_time is not None else "never started"
        return Verdict(True, reason, retry_of=newest.run_id, tries=tries)

    def _failed_in_a_step(self, run: dg.DagsterRun) -> bool:
        reason = run.tags.get(FAILURE_REASON_TAG)
        if reason in FAILED_IN_CODE:
            return True
        if reason in NEVER_STARTED_OR_CRASHED:
            return False
        if run.run_id not in self._in_a_step:
            if self.event_reads >= self.max_event_reads:
                raise _OutOfReads
            self.event_reads += 1
            failures = self.instance.get_records_for_run(
                run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE, limit=10
            ).records
            self._in_a_step[run.run_id] = any(not _interrupted(record) for record in failures)
        return self._in_a_step[run.run_id]


def _interrupted(record: dg.EventLogRecord) -> bool:
    """A step failure left by stopping the worker, not by the step's own code."""
    event = record.event_log_entry.dagster_event
    data = event.step_failure_data if event is not None else None
    error = data.error if data is not None else None
    return error is not None and error.cls_name in INTERRUPTED_ERRORS


def verdict_for(instance: dg.DagsterInstance, account: str, day: date, max_retries: int) -> Verdict:
    """What to do about one partition (one run query)."""
    return RunHistory.load(instance, [(account, day)]).verdict(account, day, max_retries)


def _retry_overdue(record: dg.RunRecord) -> bool:
    """Whether a run Dagster said it would retry ended over ``RETRY_GRACE_SECONDS`` ago."""
    ended = record.end_time if record.end_time is not None else record.update_timestamp.timestamp()
    return _now() - ended > RETRY_GRACE_SECONDS


def _now() -> float:
    return time.time()
