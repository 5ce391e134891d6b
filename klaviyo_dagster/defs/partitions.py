"""Partitions: one per (UTC date, Klaviyo account), keyed ``YYYY-MM-DD|<account uuid>`` (run_names.py
says why the date leads).

The date is the natural idempotency key: a partition always reads the same Klaviyo window and
writes the same files, so reruns and backfills overwrite instead of duplicating.
"""

from __future__ import annotations

import re
from datetime import date

import dagster as dg

from klaviyo_dagster.accounts import validate_account_id
from klaviyo_dagster.environment import first_partition_date
from klaviyo_dagster.run_names import ACCOUNT_DIMENSION, ACCOUNTS_PARTITIONS_NAME, DATE_DIMENSION

_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


# Daily UTC dates, today's included (end_offset=1): east of UTC a day is complete before it ends in
# UTC (Auckland's D from 14:05 UTC on D), so its key must exist by then. Which keys are complete for
# an account is readiness.py's question, asked by the schedule, the catch-up sensor and the trigger.
date_partitions = dg.DailyPartitionsDefinition(
    start_date=first_partition_date().isoformat(), timezone="UTC", end_offset=1
)
account_partitions = dg.DynamicPartitionsDefinition(name=ACCOUNTS_PARTITIONS_NAME)
klaviyo_partitions = dg.MultiPartitionsDefinition(
    {DATE_DIMENSION: date_partitions, ACCOUNT_DIMENSION: account_partitions}
)


def partition_key(account_id: str, day: date) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({DATE_DIMENSION: day.isoformat(), ACCOUNT_DIMENSION: account_id})


def split_partition_key(key: str | dg.MultiPartitionKey) -> tuple[str, date]:
    """(account id, partition date) of a partition key, both validated."""
    keys = key.keys_by_dimension if isinstance(key, dg.MultiPartitionKey) else _parse(key)
    return validate_account_id(keys[ACCOUNT_DIMENSION]), _partition_date(keys[DATE_DIMENSION])


def _partition_date(raw: str) -> date:
    # date.fromisoformat alone also takes "20260309" and ISO weeks ("2026W101"): only YYYY-MM-DD is a key.
    if not _DAY.match(raw):
        raise ValueError(f"Partition date must be YYYY-MM-DD, got {raw!r}")
    return date.fromisoformat(raw)


def _parse(key: str) -> dict[str, str]:
    # A MultiPartitionKey's string form joins the dimension keys in dimension-name order with "|".
    parts = key.split("|")
    if len(parts) != 2:
        raise ValueError(f"Partition key must be 'YYYY-MM-DD|ACCOUNT_UUID', got {key!r}")
    return {DATE_DIMENSION: parts[0], ACCOUNT_DIMENSION: parts[1]}
