"""Jobs: the live ingest and its dry-run twin (config baked in, so a date range can be dry-run as a backfill)."""

from __future__ import annotations

import dagster as dg

from klaviyo_dagster.defs.assets import INGEST_ASSET_KEYS
from klaviyo_dagster.defs.snapshot import SNAPSHOT
from klaviyo_dagster.run_names import DRY_RUN_JOB_NAME, INGEST_JOB_NAME

klaviyo_ingest_job = dg.define_asset_job(
    INGEST_JOB_NAME,
    selection=[*INGEST_ASSET_KEYS, SNAPSHOT],
    description="The nightly sync of an account and date: the three CSVs into the ingest store, then the snapshot.",
)

klaviyo_dry_run_job = dg.define_asset_job(
    DRY_RUN_JOB_NAME,
    selection=[*INGEST_ASSET_KEYS, SNAPSHOT],  # the snapshot is skipped: no file is materialized
    config={"ops": {key.path[-1]: {"config": {"mode": "dry-run"}} for key in INGEST_ASSET_KEYS}},
    description="Builds the three files exactly as live, writes nothing, and logs rows and a preview per file.",
)
