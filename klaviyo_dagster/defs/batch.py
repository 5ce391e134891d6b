"""The batch a run belongs to: the account's other partitions requested with it and not yet built.

A backfill or a catch-up asks for many dates of one account; Dagster runs them one at a time (the
instance's queue allows one run per account). What one run fetches can serve the rest
(``producers/shared.py``), and the last one refreshes the account's newest snapshot
(``publishing/publish.py``), so a run needs to know which dates are still to come. They are the dates
of the account's runs that are queued or going, and, for a run of a backfill, the backfill's
partitions of the account it has not launched yet. Both are read from the Dagster instance.
"""

from __future__ import annotations

from datetime import date

import dagster as dg
from dagster._core.execution.backfill import BulkActionStatus  # not exported; read only

from klaviyo_dagster.defs.partitions import split_partition_key
from klaviyo_dagster.defs.run_history import is_dry_run
from klaviyo_dagster.run_names import ACCOUNT_PARTITION_TAG, DATE_PARTITION_TAG

BACKFILL_TAG = "dagster/backfill"
WAITING_OR_GOING = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def pending_dates(
    instance: dg.DagsterInstance, run: dg.DagsterRun, account_id: str, asset_key: dg.AssetKey
) -> frozenset[date]:
    """Dates of ``account_id`` still to be built by other runs (this run's own date excluded);
    ``asset_key`` is the asset asking (its backfill partitions are the ones looked at)."""
    left = _dates_left_in_backfill(instance, run, account_id, asset_key)
    dates = _dates_of_other_runs(instance, run, account_id) | left
    own = run.tags.get(DATE_PARTITION_TAG)
    return frozenset(d for d in dates if own is None or d.isoformat() != own)


def _dates_of_other_runs(instance: dg.DagsterInstance, run: dg.DagsterRun, account_id: str) -> set[date]:
    runs = instance.get_runs(
        filters=dg.RunsFilter(statuses=WAITING_OR_GOING, tags={ACCOUNT_PARTITION_TAG: account_id})
    )
    dates = set()
    for other in runs:
        if other.run_id != run.run_id and DATE_PARTITION_TAG in other.tags and not is_dry_run(other):
            dates.add(date.fromisoformat(other.tags[DATE_PARTITION_TAG]))
    return dates


def _dates_left_in_backfill(
    instance: dg.DagsterInstance, run: dg.DagsterRun, account_id: str, asset_key: dg.AssetKey
) -> set[date]:
    """The backfill's partitions of the account that it has not launched a run for yet."""
    backfill_id = run.tags.get(BACKFILL_TAG)
    backfill = instance.get_backfill(backfill_id) if backfill_id else None
    data = backfill.asset_backfill_data if backfill is not None else None
    if data is None or backfill is None or backfill.status != BulkActionStatus.REQUESTED:
        return set()
    if asset_key not in data.target_subset.asset_keys:
        return set()
    requested: set[str] = set()
    if asset_key in data.requested_subset.asset_keys:
        requested = set(data.requested_subset.get_partitions_subset(asset_key).get_partition_keys())
    dates = set()
    for key in data.target_subset.get_partitions_subset(asset_key).get_partition_keys():
        if key in requested:
            continue
        account, day = split_partition_key(key)
        if account == account_id:
            dates.add(day)
    return dates
