"""The snapshot: what the dashboard reads once a partition's three files are stored.

It binds the upload, keeps exactly one ``snapshots`` row per upload (a rerun updates it), and fills
the derived metrics: here, in the same transaction (so the dashboard never sees a snapshot without
them), or by the web app's processor when ``SNAPSHOT_PROCESS_URL`` is set. Its checks are the
runbook's manual checks, done on every run.
"""

import os
from collections.abc import Iterator
from datetime import date
from typing import Any

import dagster as dg
from pydantic import Field

from klaviyo_dagster.defs.assets import CAMPAIGNS_CSV, FLOWS_CSV, SUBSCRIBERS_CSV
from klaviyo_dagster.defs.io_managers import OBJECT_NAMES, StoredCsv
from klaviyo_dagster.defs.partitions import klaviyo_partitions, split_partition_key
from klaviyo_dagster.defs.resources import IngestStoreResource
from klaviyo_dagster.processing.metrics import SnapshotMetrics, compute_metrics, daily_totals
from klaviyo_dagster.processing.remote import RemoteProcessingFailed, request_processing
from klaviyo_dagster.storage.ids import nightly_upload_id
from klaviyo_dagster.storage.store import IngestStore

SNAPSHOT = dg.AssetKey("snapshot")
SNAPSHOT_PROCESSING_RESOURCE_KEY = "snapshot_processing"
HEADLINE_TOTALS = ("totalRevenue", "emailsSent", "totalOrders", "openRate", "clickRate", "conversionRate")

FILES_PRESENT = "upload_folder_has_three_files"
UPLOAD_BOUND = "upload_bound_to_account"
SNAPSHOT_LINKED = "one_snapshot_links_the_upload"
DERIVED_ROWS = "derived_rows_exist"


class SnapshotProcessingResource(dg.ConfigurableResource):
    """Who computes the derived metrics: this project (default) or the web app's processor endpoint."""

    processor_url: str | None = Field(default=None, description="SNAPSHOT_PROCESS_URL; unset = built in.")
    admin_secret: str | None = Field(
        default=None, description="ADMIN_JOB_SECRET for the processor; use EnvVar."
    )


def snapshot_processing_from_env() -> SnapshotProcessingResource:
    url = os.environ.get("SNAPSHOT_PROCESS_URL") or None
    if url is None:
        return SnapshotProcessingResource()
    return SnapshotProcessingResource(processor_url=url, admin_secret=dg.EnvVar("ADMIN_JOB_SECRET"))


@dg.asset(
    key=SNAPSHOT,
    group_name="klaviyo_ingest",
    partitions_def=klaviyo_partitions,
    ins={
        "flows_csv": dg.AssetIn(FLOWS_CSV),
        "campaigns_csv": dg.AssetIn(CAMPAIGNS_CSV),
        "subscribers_csv": dg.AssetIn(SUBSCRIBERS_CSV),
    },
    check_specs=[
        dg.AssetCheckSpec(
            FILES_PRESENT, asset=SNAPSHOT, description="The upload folder holds the three CSVs."
        ),
        dg.AssetCheckSpec(
            UPLOAD_BOUND, asset=SNAPSHOT, description="The upload row is bound to the account."
        ),
        dg.AssetCheckSpec(
            SNAPSHOT_LINKED, asset=SNAPSHOT, description="Exactly one snapshot links to the upload."
        ),
        dg.AssetCheckSpec(
            DERIVED_ROWS, asset=SNAPSHOT, description="The snapshot has totals and series rows."
        ),
    ],
    kinds={"postgres", "supabase"},
)
def snapshot(
    context: dg.AssetExecutionContext,
    ingest_store: IngestStoreResource,
    snapshot_processing: SnapshotProcessingResource,
    flows_csv: StoredCsv,
    campaigns_csv: StoredCsv,
    subscribers_csv: StoredCsv,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """The dashboard's snapshot of the partition: upload bound, one snapshot row, derived metrics."""
    account_id, day = split_partition_key(context.partition_key)
    upload_id = nightly_upload_id(account_id, day)
    store = ingest_store.get_store()
    upstream = {key: _upstream_metadata(context, key) for key in (FLOWS_CSV, CAMPAIGNS_CSV, SUBSCRIBERS_CSV)}
    window = (
        date.fromisoformat(upstream[FLOWS_CSV]["window_first_day"]),
        date.fromisoformat(upstream[FLOWS_CSV]["window_last_day"]),
    )
    metadata = {
        "partition_date": day.isoformat(),
        "window": {"first_day": window[0].isoformat(), "last_day": window[1].isoformat()},
        "rows": {OBJECT_NAMES[key.path[-1]].removesuffix(".csv"): upstream[key]["rows"] for key in upstream},
        "dagster_run_id": context.run.run_id,
        "source": "klaviyo-dagster",
    }
    if store.owns_accounts:
        store.tables.ensure_account(account_id, name=f"Klaviyo account {account_id}")
    for stored in (flows_csv, campaigns_csv, subscribers_csv):  # all three exist: move them into place
        stored.promote()
    metrics = None
    if snapshot_processing.processor_url is None:
        metrics = _compute(store, account_id, day, window, flows_csv, campaigns_csv)
    snapshot_id = store.tables.write_snapshot(
        upload_id=upload_id, account_id=account_id, metadata=metadata, metrics=metrics
    )
    if snapshot_processing.processor_url is not None:
        _process_remotely(snapshot_processing, snapshot_id)
    yield dg.MaterializeResult(metadata=_result_metadata(store, upload_id, snapshot_id, metrics))
    yield from _checks(store, account_id, upload_id, snapshot_id)


def _compute(
    store: IngestStore,
    account_id: str,
    day: date,
    window: tuple[date, date],
    flows_csv: StoredCsv,
    campaigns_csv: StoredCsv,
) -> SnapshotMetrics:
    with (
        flows_csv.local_path() as flows,
        campaigns_csv.local_path() as campaigns,
        flows.open(encoding="utf-8", newline="") as flows_text,
        campaigns.open(encoding="utf-8", newline="") as campaigns_text,
    ):
        current = daily_totals(flows_text, campaigns_text)
    previous = store.tables.previous_snapshot(account_id, before=day)
    return compute_metrics(
        current,
        window,
        previous=store.tables.series(previous.id) if previous else (),
        previous_last_email_date=previous.last_email_date if previous else None,
    )


def _process_remotely(processing: SnapshotProcessingResource, snapshot_id: str) -> None:
    try:
        request_processing(processing.processor_url or "", processing.admin_secret or "", snapshot_id)
    except RemoteProcessingFailed as exc:
        raise dg.Failure(description=str(exc), metadata={"snapshot_id": snapshot_id}) from None


def _upstream_metadata(context: dg.AssetExecutionContext, key: dg.AssetKey) -> dict[str, Any]:
    """What the file's latest materialization for this partition recorded (rows, window)."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[context.partition_key]), limit=1
    ).records
    metadata = records[0].asset_materialization.metadata if records else {}
    return {name: value.value for name, value in metadata.items()}


def _result_metadata(
    store: IngestStore, upload_id: str, snapshot_id: str, metrics: SnapshotMetrics | None
) -> dict[str, Any]:
    result: dict[str, Any] = {"upload_id": upload_id, "snapshot_id": snapshot_id, "store": store.describe()}
    if metrics is not None:
        result.update({f"total_{key}": metrics.totals.get(key, 0) for key in HEADLINE_TOTALS})
        result["last_email_date"] = metrics.last_email_date.isoformat() if metrics.last_email_date else ""
        result["series_days"] = len({point.day for point in metrics.series})
    return result


def _checks(
    store: IngestStore, account_id: str, upload_id: str, snapshot_id: str
) -> Iterator[dg.AssetCheckResult]:
    names = store.objects.list(upload_id)
    yield dg.AssetCheckResult(
        check_name=FILES_PRESENT,
        passed=set(OBJECT_NAMES.values()) <= set(names),
        metadata={"objects": ", ".join(names)},
    )
    upload = store.tables.upload(upload_id) or {}
    yield dg.AssetCheckResult(
        check_name=UPLOAD_BOUND,
        passed=upload.get("status") == "bound" and upload.get("account_id") == account_id,
        metadata={"status": str(upload.get("status")), "account_id": str(upload.get("account_id"))},
    )
    linked = store.tables.snapshot_for_upload(upload_id)
    count = store.tables.count_snapshots(upload_id)
    yield dg.AssetCheckResult(
        check_name=SNAPSHOT_LINKED,
        passed=count == 1 and linked is not None and linked.id == snapshot_id and linked.status == "ready",
        metadata={"snapshots_for_upload": count},
    )
    totals, series = store.tables.totals(snapshot_id), store.tables.series(snapshot_id)
    yield dg.AssetCheckResult(
        check_name=DERIVED_ROWS,
        passed=bool(totals) and bool(series),
        metadata={"totals": len(totals), "series": len(series)},
    )
