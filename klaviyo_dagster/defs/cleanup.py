"""The cleanup job: remove ingest uploads past the retention, every night at 02:00 UTC.

Deletes each account's old uploads (objects, snapshots with their derived rows, upload rows), never
the upload of an account's newest snapshot, removes orphaned staging objects and expires stale
``preauth`` uploads. It first checks that the bucket exists and the key may write, list, read and
remove there (Storage answers ``200 []`` otherwise: ``contracts/supabase.md``); when not, it deletes
nothing and fails. An old upload whose folder lists no object is reported as suspicious and kept.
``dry_run`` lists what it would delete and deletes nothing.
"""

from datetime import timedelta

import dagster as dg
from pydantic import Field

from klaviyo_dagster.defs.automation import launching_schedule_status
from klaviyo_dagster.defs.resources import IngestStoreResource
from klaviyo_dagster.storage.cleanup import CleanupError, CleanupReport, run_cleanup

CLEANUP_JOB_NAME = "klaviyo_cleanup"
CLEANUP_SCHEDULE_NAME = "klaviyo_cleanup_schedule"


class CleanupConfig(dg.Config):
    dry_run: bool = Field(default=False, description="List what would be deleted; delete nothing.")
    retention_days: int = Field(default=30, ge=1, description="Keep uploads of the last N days (>= 1).")
    staging_max_age_hours: int = Field(
        default=24,
        ge=1,
        description="Remove staging objects of kept uploads last written more than N hours ago.",
    )


@dg.op(name="remove_expired_uploads")
def remove_expired_uploads(
    context: dg.OpExecutionContext, config: CleanupConfig, ingest_store: IngestStoreResource
) -> dg.Output[dict]:
    """Applies the retention policy to every account and reports what it removed per account."""
    try:
        report = run_cleanup(
            ingest_store.get_store(),
            retention_days=config.retention_days,
            dry_run=config.dry_run,
            staging_max_age=timedelta(hours=config.staging_max_age_hours),
        )
    except CleanupError as exc:  # some account's storage failed: say what did happen, then fail
        _log_report(context, exc.report)
        raise
    _log_report(context, report)
    summary = report.as_dict()
    return dg.Output(
        summary,
        metadata={
            "dry_run": config.dry_run,
            "retention_days": config.retention_days,
            "accounts": len(report.accounts),
            "suspicious_uploads": report.total_suspicious,
            "staging_objects": report.total_staging,
            "report": dg.MetadataValue.json(summary),
        },
    )


def _log_report(context: dg.OpExecutionContext, report: CleanupReport) -> None:
    verb = "would remove" if report.dry_run else "removed"
    if report.storage_error:
        context.log.error(f"Storage check failed, nothing removed or deleted: {report.storage_error}")
    for account in report.accounts:
        context.log.info(
            f"{account.account_id}: {verb} {len(account.uploads)} upload(s), {len(account.objects)} object(s), "
            f"{account.snapshots} snapshot(s), {len(account.staging)} orphaned staging object(s); "
            f"expired {len(account.expired_preauth)} preauth upload(s)"
            + (f"; FAILED: {account.error}" if account.error else "")
        )
        for upload_id, why in account.suspicious.items():
            context.log.warning(f"{account.account_id}: kept the rows of upload {upload_id}: {why}")


@dg.job(name=CLEANUP_JOB_NAME, description=__doc__)
def klaviyo_cleanup_job() -> None:
    remove_expired_uploads()


klaviyo_cleanup_schedule = dg.ScheduleDefinition(
    name=CLEANUP_SCHEDULE_NAME,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    job=klaviyo_cleanup_job,
    default_status=launching_schedule_status(),
    description="Daily at 02:00 UTC: the cleanup job (uploads past the retention, stale staging objects).",
)
