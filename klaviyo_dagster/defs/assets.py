"""The ingest assets: flows.csv, campaigns.csv and subscribers.csv for one account and date.

Each materialization is one CSV the dashboard reads. Its metadata says what is in it (row count,
a preview) and what it cost (the Klaviyo window asked for, calls and 429s per rate-limit group,
seconds waited). In dry-run mode the file is built exactly as live, then thrown away: the asset
logs an observation with ``rows`` and ``preview`` instead of materializing, and everything
downstream of it is skipped.
"""

import csv
import io
from collections.abc import Iterator, Sequence
from typing import Any

import dagster as dg

from klaviyo_dagster.defs.batch import pending_dates
from klaviyo_dagster.defs.config import SyncConfig
from klaviyo_dagster.defs.io_managers import INGEST_IO_MANAGER_KEY, object_key
from klaviyo_dagster.defs.partitions import klaviyo_partitions, split_partition_key
from klaviyo_dagster.defs.report_quota import run_ledger
from klaviyo_dagster.defs.resources import IngestStoreResource, KlaviyoResource
from klaviyo_dagster.klaviyo.errors import KlaviyoConfigError
from klaviyo_dagster.klaviyo.stats import ClientStats
from klaviyo_dagster.producers.account import AccountTimezone
from klaviyo_dagster.producers.csvfile import CsvSummary
from klaviyo_dagster.producers.options import SyncOptions
from klaviyo_dagster.producers.reconcile import Verdict
from klaviyo_dagster.producers.shared import SharedFetches
from klaviyo_dagster.producers.sync import CAMPAIGNS, FLOWS, SUBSCRIBERS, CsvFile, SyncFailed, SyncSession
from klaviyo_dagster.run_names import AUTOMATION_TAGS, DRY_RUN_JOB_NAME
from klaviyo_dagster.storage.fetch_cache import FetchCacheNotMigrated, open_fetch_cache
from klaviyo_dagster.storage.store import IngestStore
from klaviyo_dagster.storage.tables import TIMEZONE_FROM_RUN, IngestTables

INGEST_GROUP = "klaviyo_ingest"
# Who answers for the ingest assets in the UI (Dagster owners: an email or "team:<name>").
INGEST_OWNERS = ["team:klaviyo-dagster"]
# Tags Dagster puts on the runs it launches by itself: a schedule's, a sensor's, a backfill's.
FLOWS_CSV = dg.AssetKey("flows_csv")
CAMPAIGNS_CSV = dg.AssetKey("campaigns_csv")
SUBSCRIBERS_CSV = dg.AssetKey("subscribers_csv")
INGEST_ASSET_KEYS = (FLOWS_CSV, CAMPAIGNS_CSV, SUBSCRIBERS_CSV)
PREVIEW_CELL_CHARS = 60  # per preview cell: a huge custom property must not bloat the event log
# One blocking check per file: the file read back against what Klaviyo returned (contracts/csv.md,
# "Reconciliation"). Blocking, so a file that does not reconcile never reaches the snapshot.
RECONCILES_WITH_KLAVIYO = "reconciles_with_klaviyo"


def produce(
    context: dg.AssetExecutionContext,
    config: SyncConfig,
    klaviyo: KlaviyoResource,
    ingest_store: IngestStoreResource,
    file: CsvFile,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """Builds ``file`` for the run's partition and yields it (live) or observes it (dry run), then
    its reconciliation check (read back from the file before the IO manager takes it)."""
    account_id, partition_date = split_partition_key(context.partition_key)
    options = config.options(klaviyo.conversion_metric_id)
    if context.run.job_name == DRY_RUN_JOB_NAME:  # whatever config it was launched with
        options = options.model_copy(update={"mode": "dry-run"})
    store = ingest_store.get_store()
    accounts = klaviyo.account_directory(store.tables)
    try:
        ledger = run_ledger(context, accounts.tables, account_id, dry_run=options.is_dry_run)
        client = klaviyo.get_client(api_key=accounts.api_key_for(account_id), ledger=ledger)
    except KlaviyoConfigError as exc:
        raise dg.Failure(description=str(exc), metadata={"error": file.failure}) from None
    with client:
        shared = (
            None if options.is_dry_run or not config.share_fetches else _shared(context, store, account_id)
        )
        session = SyncSession(client, options, partition_date, shared)
        try:
            path, summary = session.write_to_temp(file)
        except SyncFailed as exc:
            raise dg.Failure(
                description=str(exc),
                metadata={"error": exc.name, "details": dg.MetadataValue.json(exc.details())},
            ) from None
        metadata = _metadata(summary, session, file, client.stats)
    if file is not SUBSCRIBERS and not options.is_dry_run:  # the window files read the zone anyway
        _record_timezone(context, accounts.tables, account_id, session.timezone)
    verdict = session.reconcile(file, path, summary)
    for note in _notes(session, file, verdict):
        context.log.warning(f"{file.filename}: {note}")
    check = _reconciliation_check(verdict, options.is_dry_run)
    if options.is_dry_run:
        path.unlink()
        context.log_event(
            dg.AssetObservation(
                asset_key=context.asset_key, partition=context.partition_key, metadata=metadata
            )
        )
        context.log.info(f"dry run: {file.filename} would have {summary.rows} rows; nothing written")
    else:
        yield dg.Output(path, metadata=metadata)
    yield check


def _shared(context: dg.AssetExecutionContext, store: IngestStore, account_id: str) -> SharedFetches | None:
    """What this run may share with the account's other runs of the day (``producers/shared.py``),
    and the dates still to come in its batch.

    Sharing only saves calls: when the cache cannot be used (not migrated, no privilege on its
    schema) the run fetches everything itself, with a warning naming the error's type only (a
    database error can quote its connection string).
    """
    batch = pending_dates(context.instance, context.run, account_id, context.asset_key)
    audience = object_key(context.partition_key, SUBSCRIBERS_CSV.path[-1])
    # A run someone launched by hand (the UI, the trigger) reads everything afresh, even while other
    # runs of the account wait: a rerun is usually asked for to pick up what changed in Klaviyo. Runs
    # of a backfill, the schedule or a sensor share; every run leaves its reads for them.
    reuse = any(tag in context.run.tags for tag in AUTOMATION_TAGS)
    try:
        responses = open_fetch_cache(store.tables.dialect, account_id, reuse=reuse)
        return SharedFetches(responses, store.objects, audience, batch)
    except FetchCacheNotMigrated as exc:
        context.log.warning(f"{exc}; this run fetches everything itself")
    except Exception as exc:  # any database failure: see the docstring
        context.log.warning(
            f"the fetch cache is not usable ({type(exc).__name__}); this run fetches everything itself"
        )
    return None


def _record_timezone(
    context: dg.AssetExecutionContext, tables: IngestTables | None, account_id: str, timezone: AccountTimezone
) -> None:
    """Keeps the schedule's copy of the account's timezone current (``account_zones.py``).

    The file does not depend on it, so a failure to write it is a warning, not a failed file; only
    the exception's type is logged, as a database error can quote its connection string.
    """
    if tables is None:
        return
    try:
        tables.record_account_timezone(account_id, timezone.name, timezone.fallback_reason, TIMEZONE_FROM_RUN)
    except Exception as exc:  # any storage failure: see the docstring
        context.log.warning(
            f"could not record the account's timezone ({type(exc).__name__}); scheduling keeps the "
            "previous one. Run `python -m klaviyo_dagster migrate` if the table is missing."
        )


def _notes(session: SyncSession, file: CsvFile, verdict: Verdict) -> list[str]:
    """What a person should know although the file is right: doubtful rows, a UTC fallback."""
    notes = list(verdict.notes)
    if file is not SUBSCRIBERS and session.timezone.fallback_reason:
        notes.append(f"the window was read in {session.timezone.describe()}")
    return notes


def _reconciliation_check(verdict: Verdict, dry_run: bool) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=RECONCILES_WITH_KLAVIYO,
        passed=verdict.passed,
        description=verdict.describe(),
        metadata={**verdict.figures, "dry_run": dry_run},
    )


def _metadata(summary: CsvSummary, session: SyncSession, file: CsvFile, stats: ClientStats) -> dict[str, Any]:
    totals = stats.totals()
    if file is SUBSCRIBERS:
        window: dict[str, Any] = {
            "klaviyo_window": "whole audience, as of the run"
            + (" (the day's first run of the account)" if session.audience_reused else "")
        }
    else:
        window = {
            "klaviyo_window": session.window.describe(),
            "window_first_day": session.window.first_day.isoformat(),
            "window_last_day": session.window.last_day.isoformat(),
            "account_timezone": session.timezone.describe(),
        }
    return {
        **window,
        "dagster/row_count": summary.rows,
        "rows": summary.rows,
        "preview": dg.MetadataValue.md(preview_table(summary.preview)),
        "dagster/column_schema": column_schema(file.header(session.options)),
        "klaviyo_calls": totals.calls,
        "klaviyo_429s": totals.throttled,
        "klaviyo_wait_seconds": round(
            totals.paced_seconds + totals.retry_after_seconds + totals.backoff_seconds, 3
        ),
        "klaviyo_calls_by_group": dg.MetadataValue.json(stats.as_dict()),
        "klaviyo_answers_reused": session.client.answers_reused,
        "reconciliation": dg.MetadataValue.json(
            {name: readable_number(value) for name, value in summary.reconciliation.items()}
        ),
    }


def preview_table(preview: Sequence[str]) -> str:
    """The file's header and first records (``CsvSummary.preview``) as a markdown table; each cell
    on one line and at most ``PREVIEW_CELL_CHARS`` long, so a huge custom property cannot bloat the
    event log and an email address with a ``|`` cannot break the table."""
    records = list(csv.reader(io.StringIO("\n".join(preview))))
    if not records:
        return "(empty file)"
    lines = [_table_row(records[0]), "|" + "---|" * len(records[0])]
    lines += [_table_row(record) for record in records[1:]]
    return "\n".join(lines)


def _table_row(cells: Sequence[str]) -> str:
    shown = [" ".join(cell.split()) for cell in cells]
    shown = [
        cell if len(cell) <= PREVIEW_CELL_CHARS else cell[: PREVIEW_CELL_CHARS - 1] + "…" for cell in shown
    ]
    return "| " + " | ".join(cell.replace("\\", "\\\\").replace("|", "\\|") for cell in shown) + " |"


def column_schema(header: Sequence[str]) -> dg.TableSchema:
    """The file's columns in order (contracts/csv.md gives each one's derivation); all are text in
    the CSV, so no type is claimed."""
    return dg.TableSchema(columns=[dg.TableColumn(name) for name in header])


def _ingest_asset(key: dg.AssetKey, file: CsvFile, description: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=key,
        group_name=INGEST_GROUP,
        partitions_def=klaviyo_partitions,
        io_manager_key=INGEST_IO_MANAGER_KEY,
        output_required=False,  # a dry run builds the file but records no materialization
        kinds={"klaviyo", "csv"},
        owners=INGEST_OWNERS,
        description=description,
        # The columns with the default run config; each materialization records its own.
        metadata={"dagster/column_schema": column_schema(file.header(SyncOptions()))},
        check_specs=[
            dg.AssetCheckSpec(
                RECONCILES_WITH_KLAVIYO,
                asset=key,
                blocking=True,
                description=(
                    f"{file.filename} read back agrees with what Klaviyo returned: report totals equal "
                    "the file's totals, and nothing was left out for a reason the contract does not allow."
                ),
            )
        ],
    )
    def _asset(
        context: dg.AssetExecutionContext,
        config: SyncConfig,
        klaviyo: KlaviyoResource,
        ingest_store: IngestStoreResource,
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        yield from produce(context, config, klaviyo, ingest_store, file)

    return _asset


flows_csv = _ingest_asset(
    FLOWS_CSV,
    FLOWS,
    "flows.csv: per day and live flow email message, Klaviyo's delivery, engagement and revenue "
    "numbers over the partition window (one flow-series report call).",
)
campaigns_csv = _ingest_asset(
    CAMPAIGNS_CSV,
    CAMPAIGNS,
    "campaigns.csv: every email campaign sent in the partition window, with its metrics over the "
    "campaign metrics window (timeframe_key) ending on the partition date.",
)
subscribers_csv = _ingest_asset(
    SUBSCRIBERS_CSV,
    SUBSCRIBERS,
    "subscribers.csv: every profile that can receive email marketing, streamed page by page.",
)
INGEST_ASSETS = (flows_csv, campaigns_csv, subscribers_csv)


def readable_number(value: object) -> object:
    """A figure as a person reads it in metadata: counts whole, money and rates to 2 decimals (the
    files, the rows and the checks keep the exact values). Anything but a number is left as it is."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    rounded = round(float(value), 2)
    return int(rounded) if rounded.is_integer() else rounded
