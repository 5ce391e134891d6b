"""``make demo``: the nightly ingest end to end on the embedded defaults, no credentials needed.

Starts the Klaviyo simulator, points the project at it for a fixed demo account, registers that
account's partition, runs the ``klaviyo_ingest`` job for yesterday (the newest partition) through
Dagster on the local store, and prints what it produced: each file (rows, a preview, what it cost in
Klaviyo calls), the uploadId, the snapshot and its headline totals. A second run reuses them.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

import dagster as dg

from klaviyo_dagster import environment
from klaviyo_dagster.accounts import DEMO_ACCOUNT_ID
from klaviyo_dagster.run_names import ACCOUNTS_PARTITIONS_NAME, INGEST_JOB_NAME, partition_key_text
from klaviyo_dagster.sim import DEFAULT_API_KEY, SimConfig, SimulatorServer
from klaviyo_dagster.storage.ids import nightly_upload_id
from klaviyo_dagster.storage.store import IngestStore

DEMO_PROFILES = 2_000
SUPABASE_VARS = (
    *environment.SUPABASE_URL_VARS,
    environment.SUPABASE_KEY_VAR,
    environment.SUPABASE_DB_URL_VAR,
)
DEMO_SEED = 42


# Dagster's console logger quiet: the summary below says what happened, failures included.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def run_demo(
    out: TextIO | None = None,
    profiles: int = DEMO_PROFILES,
    instance: dg.DagsterInstance | None = None,
    use_environment: bool = False,
) -> dict[str, int]:
    """Runs the ingest job for the demo account and yesterday; returns rows per asset.

    The store is the local one under ``.data`` unless ``use_environment`` (``--use-environment``):
    Supabase settings exported in the shell are ignored, so a demo never writes to a real project.
    """
    out = out or sys.stdout
    day = (datetime.now(UTC) - timedelta(days=1)).date()
    upload_id = nightly_upload_id(DEMO_ACCOUNT_ID, day)
    with (
        SimulatorServer(SimConfig(profiles=profiles, seed=DEMO_SEED)) as sim,
        demo_environment(sim.base_url, use_environment),
        _instance(instance) as dagster_instance,
    ):
        environment.check()  # a malformed setting in the shell: one line, before anything runs
        store = environment.ingest_store()
        print(f"Klaviyo simulator at {sim.base_url}: {profiles:,} profiles (seed {DEMO_SEED})", file=out)
        print(f"Store: {store.describe()}", file=out)
        print(f"Running {INGEST_JOB_NAME} for account {DEMO_ACCOUNT_ID}, date {day} ...", file=out)
        synced_before = _has_snapshot(store, upload_id)
        dagster_instance.add_dynamic_partitions(ACCOUNTS_PARTITIONS_NAME, [DEMO_ACCOUNT_ID])
        # Here, not at import: the code location reads its settings when it loads, and `make dev`
        # (which imports this module for its defaults) leaves loading it to `dagster dev`.
        from klaviyo_dagster.definitions import defs

        job = defs().resolve_job_def(INGEST_JOB_NAME)
        result = job.execute_in_process(
            run_config=QUIET_RUN_CONFIG,
            partition_key=partition_key_text(DEMO_ACCOUNT_ID, day),
            instance=dagster_instance,
            raise_on_error=False,
        )
        rows = _print_materializations(result, out)
    if synced_before and result.success:
        print(
            f"\nReused upload {upload_id} and its snapshot: this date was synced before, and an account's "
            "date always has the same uploadId (contracts/supabase.md), so its files and snapshot were "
            "replaced, not added.",
            file=out,
        )
    print(f"\nRun {result.run_id}: {'success' if result.success else 'FAILED'}", file=out)
    if not result.success:
        _print_failure(result, out)
        raise DemoFailed(f"run {result.run_id} failed")
    return rows


class DemoFailed(RuntimeError):
    """The demo's run failed; what failed is already printed."""


def _has_snapshot(store: IngestStore, upload_id: str) -> bool:
    try:
        return store.tables.count_snapshots(upload_id) > 0
    except Exception:  # a store not migrated yet has none; the run says what is wrong, if anything
        return False


def _print_failure(result: dg.ExecuteInProcessResult, out: TextIO) -> None:
    """Each failed step's error, one line each, instead of Dagster's traceback."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error is not None:
            error = event.step_failure_data.error
            while error.cause is not None:  # Dagster wraps the step's own error
                error = error.cause
            print(f"  {event.step_key}: {error.message.strip().splitlines()[-1]}", file=out)


def embedded_defaults(base_url: str) -> dict[str, str]:
    """The environment of the embedded defaults: the simulator's store as the one configured account."""
    return {
        environment.KLAVIYO_BASE_URL_VAR: base_url,
        environment.KLAVIYO_API_KEY_VARS[1]: DEFAULT_API_KEY,
        environment.KLAVIYO_ENABLE_VAR: "true",
        environment.ACCOUNT_ID_VAR: DEMO_ACCOUNT_ID,
        environment.DATA_DIR_VAR: str(environment.data_dir()),
        # The simulator is on this machine: a proxy set in the shell must not carry its calls away.
        **{name: _without_proxy_for_localhost(name) for name in ("NO_PROXY", "no_proxy")},
    }


def _without_proxy_for_localhost(name: str) -> str:
    return ",".join(filter(None, [os.environ.get(name, "").strip(", "), "127.0.0.1", "localhost"]))


@contextmanager
def demo_environment(base_url: str, use_environment: bool = False) -> Iterator[None]:
    """The embedded defaults in ``os.environ`` for the block, restored afterwards; without
    ``use_environment``, Supabase settings are hidden too (the store is the local one)."""
    settings = embedded_defaults(base_url)
    hidden = [environment.KLAVIYO_API_KEY_VARS[0], *([] if use_environment else SUPABASE_VARS)]
    saved = {name: os.environ.get(name) for name in (*settings, *hidden)}
    for name in hidden:
        os.environ.pop(name, None)
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
        from klaviyo_dagster.dev import write_dev_instance  # dev.py imports this module

        # The same instance settings as `make dev` (and no telemetry banner above the summary).
        write_dev_instance(Path(os.environ["DAGSTER_HOME"]), io.StringIO())
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
    table = [line for line in metadata["preview"].split("\n") if not line.startswith("|---")]
    for line in table[:3]:
        print(f"  {line[:140]}", file=out)


def _print_snapshot(metadata: dict, out: TextIO) -> None:
    print(
        f"\nsnapshot {metadata['snapshot_id']} of upload {metadata['upload_id']} ({metadata['store']})",
        file=out,
    )
    headline = ", ".join(
        f"{key.removeprefix('total_')} {value:,}"
        if isinstance(value, int)
        else f"{key.removeprefix('total_')} {value:,.2f}"
        for key, value in metadata.items()
        if key.startswith("total_")
    )
    print(f"  totals: {headline}", file=out)
    print(
        f"  last email date {metadata.get('last_email_date') or '-'}, {metadata.get('series_days', 0)} days of series",
        file=out,
    )
