"""The names the Dagster layer gives its jobs, assets, partitions and run tags, as plain strings.

The definitions (``defs/``) build on them, and so does the trigger, a client of the Dagster
webserver that launches and reads runs without importing the definitions. A partition key reads
``YYYY-MM-DD|<account uuid>``: Dagster joins a multi-partition key's parts in the order of the
dimensions' names, and ``date`` sorts before ``klaviyo_account``, so the date leads wherever the UI
cuts a long key short (the runs table, the backfill page). Dagster orders such keys date first, so
a ``--from``/``--to`` range of keys would take in every account's partitions between its ends: the
command line backfills one account's dates with ``--partitions`` and the keys ``partition_keys``
lists (``python -m klaviyo_dagster partitions``).
"""

from __future__ import annotations

from datetime import date, timedelta

INGEST_JOB_NAME = "klaviyo_ingest"
DRY_RUN_JOB_NAME = "klaviyo_dry_run"
FILE_ASSET_NAMES = ("flows_csv", "campaigns_csv", "subscribers_csv")
SNAPSHOT_ASSET_NAME = "snapshot"

ACCOUNTS_PARTITIONS_NAME = "klaviyo_accounts"  # Dagster's dynamic partitions of account uuids
DATE_DIMENSION = "date"
ACCOUNT_DIMENSION = "klaviyo_account"

ACCOUNT_TAG = "klaviyo/account"  # on every run of an account; the run queue allows one per value
PARTITION_TAG = "dagster/partition"  # Dagster's own: the whole key, and one per dimension below
DATE_PARTITION_TAG = f"{PARTITION_TAG}/{DATE_DIMENSION}"
ACCOUNT_PARTITION_TAG = f"{PARTITION_TAG}/{ACCOUNT_DIMENSION}"
# Dagster's tags on runs its automation or a backfill launched: such runs share the day's Klaviyo
# reads of their account; a run launched by hand for one date reads afresh (producers/shared.py).
AUTOMATION_TAGS = ("dagster/schedule_name", "dagster/sensor_name", "dagster/backfill")


# Dates in one list: about 48 KB of keys, within what one shell argument may hold (128 KB on Linux).
MAX_LISTED_DATES = 1000


def partition_key_text(account_id: str, day: date) -> str:
    """The partition key of an account's date, as Dagster writes it in tags and the UI."""
    return f"{day.isoformat()}|{account_id}"


def partition_keys(account_id: str, first: date, last: date) -> list[str]:
    """The partition keys of one account's dates from ``first`` to ``last``, both included.

    Raises ``ValueError`` when ``last`` is before ``first`` or the range holds more than
    ``MAX_LISTED_DATES`` dates.
    """
    days = (last - first).days + 1
    if days < 1:
        raise ValueError(f"--to ({last}) is before --from ({first})")
    if days > MAX_LISTED_DATES:
        raise ValueError(
            f"{days} dates from {first} to {last}: at most {MAX_LISTED_DATES} in one list; split the range"
        )
    return [partition_key_text(account_id, first + timedelta(days=offset)) for offset in range(days)]
