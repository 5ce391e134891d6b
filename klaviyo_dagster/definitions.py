"""The code location: everything Dagster loads (``dagster dev -w workspace.yaml``)."""

from __future__ import annotations

from typing import Any

import dagster as dg

from klaviyo_dagster.defs.assets import INGEST_ASSETS
from klaviyo_dagster.defs.cleanup import klaviyo_cleanup_job, klaviyo_cleanup_schedule
from klaviyo_dagster.defs.executor import run_executor
from klaviyo_dagster.defs.io_managers import INGEST_IO_MANAGER_KEY, IngestStoreIOManager
from klaviyo_dagster.defs.jobs import klaviyo_dry_run_job, klaviyo_ingest_job
from klaviyo_dagster.defs.resources import (
    INGEST_STORE_RESOURCE_KEY,
    KLAVIYO_RESOURCE_KEY,
    READINESS_RESOURCE_KEY,
    IngestStoreResource,
    KlaviyoResource,
    ReadinessResource,
    ingest_store_resource_from_env,
    klaviyo_resource_from_env,
    readiness_resource_from_env,
)
from klaviyo_dagster.defs.schedules import klaviyo_complete_days_schedule
from klaviyo_dagster.defs.sensors import (
    klaviyo_accounts_sensor,
    klaviyo_catch_up_sensor,
    klaviyo_run_failed,
    klaviyo_run_succeeded,
)
from klaviyo_dagster.defs.snapshot import (
    SNAPSHOT_PROCESSING_RESOURCE_KEY,
    SnapshotProcessingResource,
    snapshot,
    snapshot_processing_from_env,
)


def store_resources(store: IngestStoreResource) -> dict[str, Any]:
    """The ingest store and the IO manager that writes the CSVs through it."""
    return {INGEST_STORE_RESOURCE_KEY: store, INGEST_IO_MANAGER_KEY: IngestStoreIOManager(store=store)}


def pipeline_resources(
    klaviyo: KlaviyoResource,
    store: IngestStoreResource,
    processing: SnapshotProcessingResource | None = None,
    readiness: ReadinessResource | None = None,
) -> dict[str, Any]:
    """Every resource the assets, schedules and sensors need, by key: what tests, benchmarks and
    the code location bind."""
    return {
        KLAVIYO_RESOURCE_KEY: klaviyo,
        **store_resources(store),
        SNAPSHOT_PROCESSING_RESOURCE_KEY: processing or SnapshotProcessingResource(),
        READINESS_RESOURCE_KEY: readiness or ReadinessResource(),
    }


# Each step in its own process (the three CSVs run in parallel), forked from a server that has
# imported this code location once per run; a later run of a batch, whose Klaviyo reads are shared,
# runs its steps in the run worker instead (defs/executor.py). Dagster's docs, "Executors".
RUN_EXECUTOR = run_executor(preload_module=__name__)


def with_store_kinds(store: IngestStoreResource) -> list[dg.AssetsDefinition]:
    """The four assets, tagged with the kinds of the store this location writes to (the UI shows
    Supabase only when the files and rows really go there)."""
    files = dg.map_asset_specs(lambda spec: spec.merge_attributes(kinds=store.files_kinds()), INGEST_ASSETS)
    tables = snapshot.map_asset_specs(lambda spec: spec.merge_attributes(kinds=store.tables_kinds()))
    return [*files, tables]


@dg.definitions
def defs() -> dg.Definitions:
    store = ingest_store_resource_from_env()
    return dg.Definitions(
        assets=with_store_kinds(store),
        jobs=[klaviyo_ingest_job, klaviyo_dry_run_job, klaviyo_cleanup_job],
        schedules=[klaviyo_complete_days_schedule, klaviyo_cleanup_schedule],
        sensors=[klaviyo_accounts_sensor, klaviyo_catch_up_sensor, klaviyo_run_succeeded, klaviyo_run_failed],
        executor=RUN_EXECUTOR,
        resources=pipeline_resources(
            klaviyo_resource_from_env(), store, snapshot_processing_from_env(), readiness_resource_from_env()
        ),
    )
