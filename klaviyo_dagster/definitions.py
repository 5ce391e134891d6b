"""The code location: everything Dagster loads (``dagster dev -w workspace.yaml``)."""

from __future__ import annotations

import dagster as dg

from klaviyo_dagster.defs.assets import INGEST_ASSETS
from klaviyo_dagster.defs.cleanup import klaviyo_cleanup_job, klaviyo_cleanup_schedule
from klaviyo_dagster.defs.io_managers import INGEST_IO_MANAGER_KEY, IngestStoreIOManager
from klaviyo_dagster.defs.jobs import klaviyo_dry_run_job, klaviyo_ingest_job
from klaviyo_dagster.defs.resources import (
    INGEST_STORE_RESOURCE_KEY,
    KLAVIYO_RESOURCE_KEY,
    ingest_store_resource_from_env,
    klaviyo_resource_from_env,
)
from klaviyo_dagster.defs.schedules import klaviyo_nightly_schedule
from klaviyo_dagster.defs.sensors import (
    klaviyo_accounts_sensor,
    klaviyo_catch_up_sensor,
    klaviyo_run_failed,
    klaviyo_run_succeeded,
)
from klaviyo_dagster.defs.snapshot import (
    SNAPSHOT_PROCESSING_RESOURCE_KEY,
    snapshot,
    snapshot_processing_from_env,
)


@dg.definitions
def defs() -> dg.Definitions:
    store = ingest_store_resource_from_env()
    return dg.Definitions(
        assets=[*INGEST_ASSETS, snapshot],
        jobs=[klaviyo_ingest_job, klaviyo_dry_run_job, klaviyo_cleanup_job],
        schedules=[klaviyo_nightly_schedule, klaviyo_cleanup_schedule],
        sensors=[klaviyo_accounts_sensor, klaviyo_catch_up_sensor, klaviyo_run_succeeded, klaviyo_run_failed],
        resources={
            KLAVIYO_RESOURCE_KEY: klaviyo_resource_from_env(),
            INGEST_STORE_RESOURCE_KEY: store,
            INGEST_IO_MANAGER_KEY: IngestStoreIOManager(store=store),
            SNAPSHOT_PROCESSING_RESOURCE_KEY: snapshot_processing_from_env(),
        },
    )
