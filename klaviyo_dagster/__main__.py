"""``python -m klaviyo_dagster <command>``: the project's command line."""

from __future__ import annotations

import argparse
import sys

from klaviyo_dagster.cli_dry_run import add_arguments as add_dry_run_arguments
from klaviyo_dagster.cli_dry_run import run as run_dry_run


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
    args = parser.parse_args(argv)

    if args.command == "demo":
        from klaviyo_dagster.demo import DEMO_PROFILES, DemoFailed, run_demo
        from klaviyo_dagster.storage.supabase_objects import StorageConfigError

        try:
            run_demo(profiles=args.profiles or DEMO_PROFILES, use_environment=args.use_environment)
        except (DemoFailed, StorageConfigError) as exc:
            print(f"demo: {exc}", file=sys.stderr)
            return 1
    elif args.command == "dry-run":
        return run_dry_run(args)
    elif args.command == "migrate":
        from klaviyo_dagster.cli_migrate import run as run_migrate

        return run_migrate()
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


if __name__ == "__main__":
    sys.exit(main())
