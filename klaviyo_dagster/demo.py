"""``make demo``: the nightly ingest end to end on the embedded defaults, no credentials needed.

Starts the Klaviyo simulator, points the project at it for a fixed demo account, registers that
account's partition, runs the ``klaviyo_ingest`` job for yesterday (the newest partition) through
Dagster on the local store, and prints what it produced: each file (rows, a preview, what it cost in
Klaviyo calls), the uploadId, the snapshot and its headline totals. A second run reuses them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TextIO

import dagster as dg

from klaviyo_dagster.accounts import ACCOUNT_ID_ENV_VAR, DEMO_ACCOUNT_ID
from klaviyo_dagster.definitions import defs
from klaviyo_dagster.defs.jobs import INGEST_JOB_NAME
from klaviyo_dagster.defs.partitions import ACCOUNTS_PARTITIONS_NAME, partition_key
from klaviyo_dagster.sim import DEFAULT_API_KEY, SimConfig, SimulatorServer
from klaviyo_dagster.storage.store import DATA_DIR_ENV_VAR, default_data_dir

DEMO_PROFILES = 2_000
DEMO_SEED = 42


def run_demo(
    out: TextIO = sys.stdout,
    profiles: int = DEMO_PROFILES,
    instance: dg.DagsterInstance | None = None,
) -> dict[str, int]:
    """Runs the ingest job for the demo account and yesterday; returns rows per asset."""
    day = (datetime.now(UTC) - timedelta(days=1)).date()
    with (
        SimulatorServer(SimConfig(profiles=profiles, seed=DEMO_SEED)) as sim,
        demo_environment(sim.base_url),
        _instance(instance) as dagster_instance,
    ):
        print(f"Klaviyo simulator at {sim.base_url}: {profiles:,} profiles (seed {DEMO_SEED})", file=out)
        print(f"Running {INGEST_JOB_NAME} for account {DEMO_ACCOUNT_ID}, date {day} ...", file=out)
        dagster_instance.add_dynamic_partitions(ACCOUNTS_PARTITIONS_NAME, [DEMO_ACCOUNT_ID])
        job = defs().resolve_job_def(INGEST_JOB_NAME)
        result = job.execute_in_process(
            partition_key=partition_key(DEMO_ACCOUNT_ID, day), instance=dagster_instance
        )
        rows = _print_materializations(result, out)
    print(f"\nRun {result.run_id}: {'success' if result.success else 'FAILED'}", file=out)
    return rows


def embedded_defaults(base_url: str) -> dict[str, str]:
    """The environment of the embedded defaults: the simulator's store as the one configured account."""
    return {
        "KLAVIYO_BASE_URL": base_url,
        "KLAVIYO_API_KEY": DEFAULT_API_KEY,
        "KLAVIYO_ENABLE": "true",
        ACCOUNT_ID_ENV_VAR: DEMO_ACCOUNT_ID,
        DATA_DIR_ENV_VAR: str(default_data_dir()),
    }


@contextmanager
def demo_environment(base_url: str) -> Iterator[None]:
    settings = embedded_defaults(base_url)
    saved = {name: os.environ.get(name) for name in (*settings, "KLAVIYO_API_KEY_PRIVATE")}
    os.environ.pop("KLAVIYO_API_KEY_PRIVATE", None)
    os.environ.update(settings)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def _instance(given: dg.DagsterInstance | None) -> Iterator[dg.DagsterInstance]:
    if given is not None:
        yield given
    elif os.environ.get("DAGSTER_HOME"):
        with dg.DagsterInstance.get() as instance:  # runs then show up in `make dev`
            yield instance
    else:
        with dg.DagsterInstance.ephemeral() as instance:
            yield instance


def _print_materializations(result: dg.ExecuteInProcessResult, out: TextIO) -> dict[str, int]:
    rows = {}
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        metadata = {name: value.value for name, value in materialization.metadata.items()}
        name = materialization.asset_key.to_user_string()
        if "dagster/row_count" in metadata:
            rows[name] = metadata["dagster/row_count"]
            _print_file(name, metadata, out)
        else:
            _print_snapshot(metadata, out)
    return rows


def _print_file(name: str, metadata: dict, out: TextIO) -> None:
    print(f"\n{name}: {metadata['dagster/row_count']:,} rows -> {metadata['object']}", file=out)
    print(
        f"  Klaviyo window {metadata['klaviyo_window']}; {metadata['klaviyo_calls']} calls, "
        f"{metadata['klaviyo_429s']} 429s, {metadata['klaviyo_wait_seconds']:.1f} s waited",
        file=out,
    )
    for line in metadata["preview"].strip("`\n").split("\n")[:3]:
        print(f"  | {line[:140]}", file=out)


def _print_snapshot(metadata: dict, out: TextIO) -> None:
    print(
        f"\nsnapshot {metadata['snapshot_id']} of upload {metadata['upload_id']} ({metadata['store']})",
        file=out,
    )
    headline = ", ".join(
        f"{key.removeprefix('total_')} {value:,.2f}"
        for key, value in metadata.items()
        if key.startswith("total_")
    )
    print(f"  totals: {headline}", file=out)
    print(
        f"  last email date {metadata.get('last_email_date') or '-'}, {metadata.get('series_days', 0)} days of series",
        file=out,
    )
