"""The snapshot: what the dashboard reads once a partition's three files are staged.

Thin Dagster wiring around :func:`klaviyo_dagster.publishing.publish.publish`, which checks the run's
staged files, computes the derived metrics (or, with ``SNAPSHOT_PROCESS_URL``, has the web app's
processor compute them), moves the files into place and makes the partition's one snapshot ready, in
the all-or-nothing order of ``contracts/supabase.md``. Its checks are the runbook's manual checks,
done on every run.
"""

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import dagster as dg
from pydantic import Field

from klaviyo_dagster import environment
from klaviyo_dagster.defs.assets import (
    CAMPAIGNS_CSV,
    FLOWS_CSV,
    INGEST_OWNERS,
    SUBSCRIBERS_CSV,
    readable_number,
)
from klaviyo_dagster.defs.batch import pending_dates
from klaviyo_dagster.defs.io_managers import OBJECT_NAMES, StoredCsv, staging_run_id
from klaviyo_dagster.defs.partitions import klaviyo_partitions, split_partition_key
from klaviyo_dagster.defs.resources import IngestStoreResource
from klaviyo_dagster.derived_rows import SnapshotMetrics
from klaviyo_dagster.processing.remote import RemoteProcessingFailed, request_processing
from klaviyo_dagster.producers.shared import ResponseStore, source_digest
from klaviyo_dagster.publishing import publish as publish_module
from klaviyo_dagster.publishing.publish import Processor, PublishError, PublishRequest, publish
from klaviyo_dagster.storage.fetch_cache import open_fetch_cache
from klaviyo_dagster.storage.ids import nightly_upload_id
from klaviyo_dagster.storage.store import IngestStore
from klaviyo_dagster.storage.tables import PublishLockTimeout, PublishSuperseded

SNAPSHOT = dg.AssetKey("snapshot")
SNAPSHOT_PROCESSING_RESOURCE_KEY = "snapshot_processing"
HEADLINE_TOTALS = ("totalRevenue", "emailsSent", "totalOrders", "openRate", "clickRate", "conversionRate")
FILE_KEYS = (FLOWS_CSV, CAMPAIGNS_CSV, SUBSCRIBERS_CSV)

FILES_PRESENT = "upload_folder_has_three_files"
UPLOAD_BOUND = "upload_bound_to_account"
SNAPSHOT_LINKED = "one_snapshot_links_the_upload"
DERIVED_ROWS = "derived_rows_exist"
# The code of the staged-file check: a file it passed is recognized only by the same code.
STAGED_FILE_CHECK = source_digest(publish_module)


class SnapshotProcessingResource(dg.ConfigurableResource):
    """Who computes the derived metrics: this project (default) or the web app's processor endpoint."""

    processor_url: str | None = Field(default=None, description="SNAPSHOT_PROCESS_URL; unset = built in.")
    admin_secret: str | None = Field(
        default=None, description="ADMIN_JOB_SECRET for the processor; use EnvVar."
    )


def snapshot_processing_from_env(env: Mapping[str, str] | None = None) -> SnapshotProcessingResource:
    """The web app's processor when ``SNAPSHOT_PROCESS_URL`` is set (its secret by EnvVar name),
    else the built-in computation."""
    url = environment.snapshot_process_url(env)
    if url is None:
        return SnapshotProcessingResource()
    return SnapshotProcessingResource(processor_url=url, admin_secret=dg.EnvVar(environment.ADMIN_SECRET_VAR))


@dg.asset(
    key=SNAPSHOT,
    group_name="klaviyo_ingest",
    owners=INGEST_OWNERS,
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
)
def snapshot(
    context: dg.AssetExecutionContext,
    ingest_store: IngestStoreResource,
    snapshot_processing: SnapshotProcessingResource,
    flows_csv: StoredCsv,
    campaigns_csv: StoredCsv,
    subscribers_csv: StoredCsv,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Publishes the partition: the run's staged files into place, one ready snapshot, derived metrics."""
    account_id, day = split_partition_key(context.partition_key)
    upload_id = nightly_upload_id(account_id, day)
    store = ingest_store.get_store()
    files_run, upstream = _source_files(context)
    window = (
        date.fromisoformat(upstream[FLOWS_CSV]["window_first_day"]),
        date.fromisoformat(upstream[FLOWS_CSV]["window_last_day"]),
    )
    metadata: dict[str, Any] = {"source": "klaviyo-dagster"}  # publish adds the partition date and window
    if files_run != context.run.run_id:
        metadata["published_by_dagster_run_id"] = context.run.run_id
    if store.owns_accounts:
        store.tables.ensure_account(account_id, name=f"Klaviyo account {account_id}")
    request = PublishRequest(
        upload_id=upload_id,
        account_id=account_id,
        partition_date=day,
        window=window,
        run_id=files_run,
        metadata=metadata,
        expected_rows={OBJECT_NAMES[key.path[-1]]: upstream[key]["dagster/row_count"] for key in FILE_KEYS},
        # The last date of a backfill or catch-up (nothing of the account still to come) brings the
        # account's newest snapshot up to date with the history published before it (defs/batch.py).
        refresh_newest=not pending_dates(context.instance, context.run, account_id, SNAPSHOT),
    )
    try:
        published = publish(
            store,
            request,
            processor=_processor(snapshot_processing),
            run_finished=lambda run_id: _run_finished(context.instance, run_id),
            checked_before=CheckedToday(open_fetch_cache(store.tables.dialect, account_id, prune=False)),
        )
    except (PublishError, PublishLockTimeout, PublishSuperseded) as exc:
        raise dg.Failure(
            description=f"{type(exc).__name__}: {exc}", metadata={"upload_id": upload_id}
        ) from None
    except RemoteProcessingFailed as exc:
        raise dg.Failure(
            description=str(exc), metadata={"upload_id": upload_id, "snapshot_status": "error"}
        ) from None
    result = _result_metadata(store, upload_id, published.snapshot_id, published.metrics)
    result["files_from_run"] = files_run
    if published.recognized:
        result["files_checked_before"] = ", ".join(published.recognized)
    if published.refreshed:
        result["refreshed_newest_snapshot"] = published.refreshed
        context.log.info(
            f"the account's newest snapshot {published.refreshed} now carries this date's history"
        )
    yield dg.MaterializeResult(metadata=result)
    yield from _checks(store, account_id, upload_id, published.snapshot_id)


@dataclass(frozen=True)
class CheckedToday:
    """The files the account's publishes made ready today (UTC), kept in the fetch cache by name and
    SHA-256 (those of 1 MiB or more, ``publish.RECOGNIZED_FROM_BYTES``): a backfill's later dates
    publish the day's subscribers.csv again, and its strict parse (about 0.4 s for 250,000 profiles)
    need not run again on the same bytes. A failing database makes every file parsed: the cache
    only saves time (``TolerantFetchCache``)."""

    responses: ResponseStore

    def rows(self, name: str, sha256: str) -> int | None:
        rows = (self.responses.get(self._key(name, sha256)) or {}).get("rows")
        return rows if isinstance(rows, int) else None  # anything else: parse the file

    def remember(self, name: str, sha256: str, rows: int) -> None:
        self.responses.put(self._key(name, sha256), {"rows": rows})

    @staticmethod
    def _key(name: str, sha256: str) -> str:
        return f"checked-file:{STAGED_FILE_CHECK}:{name}:{sha256}"


def _run_finished(instance: dg.DagsterInstance, run_id: str) -> bool:
    """A run Dagster knows to be over (its staging is left over, not in use)."""
    run = instance.get_run_by_id(run_id)
    return run is not None and run.is_finished


def _processor(processing: SnapshotProcessingResource) -> Processor | None:
    """The web app's processor as a callable, or None to compute the metrics here."""
    if processing.processor_url is None:
        return None
    url, secret = processing.processor_url, processing.admin_secret or ""
    return lambda snapshot_id: request_processing(url, secret, snapshot_id)


def _source_files(context: dg.AssetExecutionContext) -> tuple[str, dict[dg.AssetKey, dict[str, Any]]]:
    """The staging run id whose files this snapshot publishes, and each file's materialization metadata.

    This run's own files when it wrote them, with those of the runs it re-executes (a retry from
    failure wrote only what failed; ``io_managers.staging_run_id``): concurrent runs of the
    partition never mix. Otherwise (the snapshot alone) the latest materialization of each file,
    which must all come from one run group.
    """
    own = _lineage_materializations(context)
    if len(own) == len(FILE_KEYS):
        return staging_run_id(context.run), own
    if own:
        raise dg.Failure(
            description="this run stored only some of the partition's files; rerun the whole partition "
            "so that the snapshot publishes three files of one run"
        )
    latest: dict[dg.AssetKey, tuple[str, dict[str, Any]]] = {}
    for key in FILE_KEYS:
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[context.partition_key]), limit=1
        ).records
        if not records:
            raise dg.Failure(description=f"{key.to_user_string()} was never materialized for this partition")
        entry = records[0].event_log_entry
        metadata = entry.asset_materialization.metadata if entry.asset_materialization else {}
        latest[key] = (entry.run_id, {name: value.value for name, value in metadata.items()})
    runs = {_staging_run_id_of(context.instance, run_id) for run_id, _ in latest.values()}
    if len(runs) != 1:
        raise dg.Failure(
            description="the partition's latest files come from different runs "
            f"({', '.join(sorted(runs))}); rerun the whole partition"
        )
    return runs.pop(), {key: metadata for key, (_, metadata) in latest.items()}


def _staging_run_id_of(instance: dg.DagsterInstance, run_id: str) -> str:
    run = instance.get_run_by_id(run_id)
    return staging_run_id(run) if run is not None else run_id


def _lineage_materializations(context: dg.AssetExecutionContext) -> dict[dg.AssetKey, dict[str, Any]]:
    """The files' materializations of this run, then of each run it re-executes (nearest first)."""
    found: dict[dg.AssetKey, dict[str, Any]] = {}
    run: dg.DagsterRun | None = context.run
    while run is not None and len(found) < len(FILE_KEYS):
        for key, metadata in _own_materializations(context, run.run_id).items():
            found.setdefault(key, metadata)
        run = context.instance.get_run_by_id(run.parent_run_id) if run.parent_run_id else None
    return found


def _own_materializations(
    context: dg.AssetExecutionContext, run_id: str
) -> dict[dg.AssetKey, dict[str, Any]]:
    records = context.instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    ).records
    found: dict[dg.AssetKey, dict[str, Any]] = {}
    for record in records:
        materialization = record.event_log_entry.asset_materialization
        if (
            materialization is not None
            and materialization.asset_key in FILE_KEYS
            and str(materialization.partition) == str(context.partition_key)
        ):
            found[materialization.asset_key] = {k: v.value for k, v in materialization.metadata.items()}
    return found


def _result_metadata(
    store: IngestStore, upload_id: str, snapshot_id: str, metrics: SnapshotMetrics | None
) -> dict[str, Any]:
    result: dict[str, Any] = {"upload_id": upload_id, "snapshot_id": snapshot_id, "store": store.describe()}
    if metrics is not None:
        result.update(
            {f"total_{key}": readable_number(metrics.totals.get(key, 0)) for key in HEADLINE_TOTALS}
        )
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
