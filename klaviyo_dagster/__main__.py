"""``python -m klaviyo_dagster <command>``: the project's command line."""

from __future__ import annotations

import argparse
import re
import sys
from datetime import date

from klaviyo_dagster.cli_dry_run import add_arguments as add_dry_run_arguments
from klaviyo_dagster.cli_dry_run import run as run_dry_run
from klaviyo_dagster.run_names import partition_keys
from klaviyo_dagster.storage.ids import validate_account_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m klaviyo_dagster", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the demo against the Klaviyo simulator")
    demo.add_argument("--profiles", type=int, default=None, help="simulated audience size")
    demo.add_argument(
        "--use-environment",
        action="store_true",
        help="write to the store the SUPABASE_* variables name (default: the local store under .data)",
    )
    dry = commands.add_parser("dry-run", help="build the three files for a date, write nothing, print JSON")
    add_dry_run_arguments(dry)
    commands.add_parser("migrate", help="create the dashboard's tables where missing (Postgres or SQLite)")
    dev = commands.add_parser("dev", help="start the Dagster UI on the embedded defaults")
    dev.add_argument("--port", type=_port, default=3000, help="the UI's port, 1..65535")
    dev.add_argument(
        "--use-environment",
        action="store_true",
        help="write to the store the SUPABASE_* variables name (default: the local store under .data)",
    )
    partitions = commands.add_parser(
        "partitions",
        help="print one account's partition keys for a date range, for `dagster job backfill --partitions`",
    )
    partitions.add_argument("--account", required=True, type=_account, help="the dashboard account uuid")
    partitions.add_argument("--from", dest="first", required=True, type=_date, help="first date, YYYY-MM-DD")
    partitions.add_argument("--to", dest="last", required=True, type=_date, help="last date (included)")
    args = parser.parse_args(argv)

    if args.command == "demo":
        from klaviyo_dagster.demo import DEMO_PROFILES, DemoFailed, run_demo
        from klaviyo_dagster.storage.supabase_objects import StorageConfigError

        try:
            run_demo(profiles=args.profiles or DEMO_PROFILES, use_environment=args.use_environment)
        except (DemoFailed, StorageConfigError, ValueError) as exc:
            print(f"demo: {exc}", file=sys.stderr)
            return 1
    elif args.command == "dry-run":
        return run_dry_run(args)
    elif args.command == "migrate":
        from klaviyo_dagster.cli_migrate import run as run_migrate

        return run_migrate()
    elif args.command == "partitions":
        try:
            print(",".join(partition_keys(args.account, args.first, args.last)))
        except ValueError as exc:
            print(f"partitions: {exc}", file=sys.stderr)
            return 2
    elif args.command == "dev":
        from klaviyo_dagster.dev import run_dev

        return run_dev(port=args.port, use_environment=args.use_environment)
    return 0


def _port(raw: str) -> int:
    """A TCP port number for argparse: its error says what is wrong."""
    try:
        port = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a port is a number from 1 to 65535, got {raw!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a number from 1 to 65535, got {port}")
    return port


def _account(raw: str) -> str:
    """An account uuid for argparse (canonical form)."""
    try:
        return validate_account_id(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _date(raw: str) -> date:
    """A YYYY-MM-DD date for argparse (not the other forms ``date.fromisoformat`` takes)."""
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
            return date.fromisoformat(raw)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"must be a date YYYY-MM-DD, got {raw!r}")


if __name__ == "__main__":
    sys.exit(main())
