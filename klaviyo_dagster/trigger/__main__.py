"""``python -m klaviyo_dagster.trigger --port N``: serve the old trigger endpoint (settings from env)."""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from klaviyo_dagster import environment
from klaviyo_dagster.storage.supabase_objects import StorageConfigError
from klaviyo_dagster.trigger.app import create_app, log
from klaviyo_dagster.trigger.server import server_config
from klaviyo_dagster.trigger.settings import SECRET_ENV_VAR, TriggerSettings


def main(argv: list[str] | None = None) -> int:
    """Serves the trigger until interrupted (uvicorn, guarded: server.py)."""
    try:
        host, port = environment.trigger_host(), environment.trigger_port()
        settings = TriggerSettings.from_env()
    except (ValueError, StorageConfigError) as exc:  # a malformed setting: one line, nothing served
        print(f"trigger: {exc}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog="python -m klaviyo_dagster.trigger", description=__doc__)
    parser.add_argument("--host", default=host)
    parser.add_argument("--port", type=int, default=port)
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Klaviyo call in a dry run
    if settings.secret is None:
        log.warning("%s is not set: every request will be refused with 401", SECRET_ENV_VAR)
    log.info(
        "launching runs through Dagster at %s (location %s)", settings.dagster_url, settings.dagster_location
    )
    # No access log (it prints the query string, token included); a header deadline and a
    # connection limit, so half-sent requests cannot hold the service.
    uvicorn.Server(server_config(create_app(settings), settings, host=args.host, port=args.port)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
