"""The code location: everything Dagster loads (``dagster dev -w workspace.yaml``)."""

from __future__ import annotations

import dagster as dg

from klaviyo_dagster.defs.assets import INGEST_ASSETS
from klaviyo_dagster.defs.io_managers import INGEST_IO_MANAGER_KEY, LocalCsvIOManager, default_data_dir
from klaviyo_dagster.defs.jobs import klaviyo_dry_run_job, klaviyo_ingest_job
from klaviyo_dagster.defs.resources import KLAVIYO_RESOURCE_KEY, klaviyo_resource_from_env
from klaviyo_dagster.defs.sensors import klaviyo_accounts_sensor


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(
        assets=list(INGEST_ASSETS),
        jobs=[klaviyo_ingest_job, klaviyo_dry_run_job],
        sensors=[klaviyo_accounts_sensor],
        resources={
            KLAVIYO_RESOURCE_KEY: klaviyo_resource_from_env(),
            INGEST_IO_MANAGER_KEY: LocalCsvIOManager(base_dir=default_data_dir()),
        },
    )
