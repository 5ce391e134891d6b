"""``python -m klaviyo_dagster dry-run``: the smoke check of the old orchestrator, without Dagster.

Builds the three files for one account and date exactly as a live run would, writes nothing, and
prints the contract's JSON (``mode``, ``rows``, ``previews``, ``ms``). On any failure, a malformed
value included, it prints ``{"error": ..., "details": ...}`` and exits 1. It reads
``KLAVIYO_BASE_URL``, so it runs against the simulator or the real API alike.

The date defaults to the account's newest complete date, and a date whose day is not over yet for
the account (plus the settling delay) is refused (``readiness.py``; contracts/csv.md, "Partition
window"): it would build files of a day that has not happened. So is a date before the partitions'
first date (``KLAVIYO_PARTITIONS_START_DATE``). The account's timezone is the one recorded in the
ingest database, else Klaviyo's (one call, not recorded: a dry run writes nothing); a recorded value
that is not a timezone is warned about and Klaviyo's used instead.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import date, datetime
from typing import Any, TextIO

from pydantic import ValidationError

from klaviyo_dagster import environment
from klaviyo_dagster.accounts import AccountDirectory
from klaviyo_dagster.klaviyo.client import KlaviyoClient
from klaviyo_dagster.klaviyo.errors import KlaviyoConfigError, KlaviyoError
from klaviyo_dagster.producers.account import account_timezone
from klaviyo_dagster.producers.options import TIMEFRAME_DAYS, SyncOptions, validation_messages
from klaviyo_dagster.producers.sync import FLOWS, SyncFailed, dry_run
from klaviyo_dagster.readiness import (
    AccountZone,
    DateNotComplete,
    is_zone,
    utc_now,
)
from klaviyo_dagster.storage.tables import IngestTables, MissingTable

DATE_NOT_COMPLETE = "DateNotComplete"
INVALID_OPTIONS = "InvalidOptions"
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class InvalidDate(ValueError):
    """``--date`` is not a calendar date written YYYY-MM-DD."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Values are checked by run() (SyncOptions), not argparse: a bad one gets the JSON error, exit 1.
    parser.add_argument("--date", help="partition date, YYYY-MM-DD (default: the newest complete date)")
    parser.add_argument("--account", help="account uuid (default: KLAVIYO_ACCOUNT_ID)")
    parser.add_argument("--days", help="window length in days (1..30)")
    parser.add_argument(
        "--timeframe-key", help=f"campaign metrics window: {', '.join(sorted(TIMEFRAME_DAYS))}"
    )
    parser.add_argument("--fast", action="store_true", help="smoke mode: one flow, one message, no audience")
    parser.add_argument("--audience-schema", help="required, extended or minimal")
    parser.add_argument("--audience-max-pages", help="stop the profile scan after N pages")


def run(args: argparse.Namespace, out: TextIO | None = None, now: datetime | None = None) -> int:
    """Prints the dry run's JSON (0) or the error's (1); ``now`` decides which dates are complete."""
    out = out or sys.stdout
    try:
        requested = _date_option(args.date)
        options = SyncOptions(mode="dry-run", fast=args.fast, **_given(args))
        if options.conversion_metric_id is None:
            options = options.model_copy(update={"conversion_metric_id": environment.conversion_metric_id()})
        tables = environment.ingest_store().tables
        accounts = AccountDirectory(tables, environment.account_settings())
        account = args.account or next(iter(accounts.account_ids()), None)
        api_key = accounts.api_key_for(account) if account else None
        with environment.klaviyo_client(api_key) as client:
            day = _partition_date(requested, account, tables, client, now or utc_now())
            result: dict[str, Any] = dry_run(client, options, day)
    except InvalidDate as exc:
        return _fail(out, INVALID_OPTIONS, [str(exc)])
    except ValidationError as exc:
        problems = validation_messages(exc)
        # The options' own messages start with the field's name; pydantic's do not.
        return _fail(out, INVALID_OPTIONS, [m if m.startswith(f) else f"{f}: {m}" for f, m in problems])
    except DateNotComplete as exc:
        return _fail(out, DATE_NOT_COMPLETE, str(exc))
    except OverflowError as exc:  # a date at the end of the calendar; refused above, kept as a guard
        return _fail(out, INVALID_OPTIONS, [f"date: out of range ({exc})"])
    except (KlaviyoConfigError, MissingTable, ValueError) as exc:
        return _fail(out, "ConfigError", str(exc))
    except SyncFailed as exc:
        return _fail(out, exc.name, exc.details())
    print(json.dumps(result, ensure_ascii=False), file=out)
    return 0


def _date_option(raw: str | None) -> date | None:
    if raw is None:
        return None
    try:
        if _ISO_DATE.match(raw):  # fromisoformat alone also takes "20260309" and ISO weeks
            return date.fromisoformat(raw)
    except ValueError:
        pass
    raise InvalidDate(f"date: must be a date YYYY-MM-DD, got {raw!r}")


def _partition_date(
    requested: date | None, account: str | None, tables: IngestTables, client: KlaviyoClient, now: datetime
) -> date:
    """The date asked for once it is complete for the account (else DateNotComplete), or by default
    the account's newest complete date. The zone is only looked up when the answer depends on it."""
    readiness = environment.readiness()
    first = environment.first_partition_date()
    if requested is not None and requested < first:
        raise InvalidDate(
            f"date: must be a partition date from {first.isoformat()}, got {requested.isoformat()}"
        )
    if requested is not None and readiness.complete_everywhere(requested, now):
        return requested
    zone = _zone(account, tables, client)
    if requested is None:
        day = readiness.newest_complete(now, zone.name)
        print(f"dry run of {day.isoformat()}, the newest complete date in {zone.describe()}", file=sys.stderr)
        return day
    readiness.check(requested, now, zone, f"account {account}" if account else "the key's account")
    return requested


def _zone(account: str | None, tables: IngestTables, client: KlaviyoClient) -> AccountZone:
    recorded = tables.account_timezones() if account else {}
    if account in recorded:
        zone = recorded[account].timezone
        if is_zone(zone):
            return AccountZone(zone)
        print(  # treated as not recorded: Klaviyo's zone below
            f"warning: the recorded timezone of account {account}, {zone!r}, is not a valid timezone: "
            "reading it from Klaviyo",
            file=sys.stderr,
        )
    try:
        return AccountZone(account_timezone(client).name)
    except KlaviyoConfigError:
        raise
    except KlaviyoError as exc:  # flows.csv needs the zone: the dry run itself would fail so
        raise SyncFailed(FLOWS, exc) from exc


def _given(args: argparse.Namespace) -> dict[str, Any]:
    names = ("days", "timeframe_key", "audience_schema", "audience_max_pages")
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _fail(out: TextIO, error: str, details: Any) -> int:
    print(json.dumps({"error": error, "details": details}, ensure_ascii=False), file=out)
    return 1
