"""The names the Dagster layer gives its jobs, assets, partitions and run tags, as plain strings.

The definitions (``defs/``) build on them, and so does the trigger, a client of the Dagster
webserver that launches and reads runs without importing the definitions. A partition key reads
``<account uuid>|YYYY-MM-DD``: Dagster joins a multi-partition key's parts in the order of the
dimensions' names, and ``account`` sorts before ``date``, which keeps one account's dates together
(a ``--from``/``--to`` range of keys stays within one account).
"""

from __future__ import annotations

from datetime import date

INGEST_JOB_NAME = "klaviyo_ingest"
DRY_RUN_JOB_NAME = "klaviyo_dry_run"
FILE_ASSET_NAMES = ("flows_csv", "campaigns_csv", "subscribers_csv")
SNAPSHOT_ASSET_NAME = "snapshot"

ACCOUNTS_PARTITIONS_NAME = "klaviyo_accounts"  # Dagster's dynamic partitions of account uuids
DATE_DIMENSION = "date"
ACCOUNT_DIMENSION = "account"

ACCOUNT_TAG = "klaviyo/account"  # on every run of an account; the run queue allows one per value
PARTITION_TAG = "dagster/partition"  # Dagster's own: the whole key, and one per dimension below
DATE_PARTITION_TAG = f"{PARTITION_TAG}/{DATE_DIMENSION}"
ACCOUNT_PARTITION_TAG = f"{PARTITION_TAG}/{ACCOUNT_DIMENSION}"


def partition_key_text(account_id: str, day: date) -> str:
    """The partition key of an account's date, as Dagster writes it in tags and the UI."""
    return f"{account_id}|{day.isoformat()}"
