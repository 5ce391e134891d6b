"""``python -m klaviyo_dagster dry-run``: the smoke check of the old orchestrator, without Dagster.

Builds the three files for one account and date exactly as a live run would, writes nothing, and
prints the contract's JSON (``mode``, ``rows``, ``previews``, ``ms``). On failure it prints
``{"error": ..., "details": ...}`` and exits 1. It reads ``KLAVIYO_BASE_URL``, so it runs against
the simulator or the real API alike.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from typing import Any, TextIO

from pydantic import ValidationError

from klaviyo_dagster.accounts import AccountDirectory
from klaviyo_dagster.klaviyo.client import KlaviyoClient
from klaviyo_dagster.klaviyo.errors import KlaviyoConfigError
from klaviyo_dagster.producers.options import TIMEFRAME_DAYS, SyncOptions
from klaviyo_dagster.producers.sync import SyncFailed, dry_run
from klaviyo_dagster.storage.store import ingest_store_from_env


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--date", required=True, type=date.fromisoformat, help="partition date, YYYY-MM-DD")
    parser.add_argument("--account", help="account uuid (default: KLAVIYO_ACCOUNT_ID)")
    parser.add_argument("--days", type=int, help="window length in days (1..30)")
    parser.add_argument("--timeframe-key", choices=sorted(TIMEFRAME_DAYS), help="campaign metrics window")
    parser.add_argument("--fast", action="store_true", help="smoke mode: one flow, one message, no audience")
    parser.add_argument("--audience-schema", choices=["required", "extended", "minimal"])
    parser.add_argument("--audience-max-pages", type=int, help="stop the profile scan after N pages")


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        options = SyncOptions(mode="dry-run", fast=args.fast, **_given(args))
        accounts = AccountDirectory(ingest_store_from_env().tables)
        account = args.account or next(iter(accounts.account_ids()), None)
        api_key = accounts.api_key_for(account) if account else None
        with KlaviyoClient(api_key) as client:
            result: dict[str, Any] = dry_run(client, options, args.date)
    except ValidationError as exc:
        return _fail(
            out, "InvalidOptions", [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        )
    except (KlaviyoConfigError, ValueError) as exc:
        return _fail(out, "ConfigError", str(exc))
    except SyncFailed as exc:
        return _fail(out, exc.name, exc.details())
    print(json.dumps(result, ensure_ascii=False), file=out)
    return 0


def _given(args: argparse.Namespace) -> dict[str, Any]:
    names = ("days", "timeframe_key", "audience_schema", "audience_max_pages")
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _fail(out: TextIO, error: str, details: Any) -> int:
    print(json.dumps({"error": error, "details": details}, ensure_ascii=False), file=out)
    return 1
