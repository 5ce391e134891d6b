"""The klaviyo_cleanup job on the local store: dry run lists, a real run removes, the schedule is 02:00."""

from __future__ import annotations

from datetime import date

import dagster as dg

from klaviyo_dagster.definitions import defs
from klaviyo_dagster.defs.cleanup import CLEANUP_JOB_NAME, klaviyo_cleanup_job, klaviyo_cleanup_schedule
from klaviyo_dagster.defs.resources import IngestStoreResource
from klaviyo_dagster.storage.ids import nightly_upload_id

ACCOUNT = "5b0c7a3e-2f4d-4c1a-9e8b-1d2c3b4a5f60"
OLD, NEW = date(2025, 1, 1), date(2026, 3, 9)


def seed(store_resource: IngestStoreResource, tmp_path) -> None:
    """Two nightly uploads of one account: an old one (created long ago) and the newest."""
    store = store_resource.get_store()
    store.tables.ensure_account(ACCOUNT, "Acme")
    source = tmp_path / "flows.csv"
    source.write_text("Day\n")
    for day in (OLD, NEW):
        upload_id = nightly_upload_id(ACCOUNT, day)
        store.tables.write_snapshot(
            upload_id=upload_id,
            account_id=ACCOUNT,
            metadata={"partition_date": day.isoformat()},
            metrics=None,
        )
        store.objects.upload(f"{upload_id}/flows.csv", source)
    with store.tables._transaction() as tx:
        tx.execute(
            "update uploads set created_at = ? where id = ?",
            ("2025-01-02T00:00:00+00:00", nightly_upload_id(ACCOUNT, OLD)),
        )


def run(store_resource: IngestStoreResource, dry_run: bool) -> dg.ExecuteInProcessResult:
    return klaviyo_cleanup_job.execute_in_process(
        run_config={"ops": {"remove_expired_uploads": {"config": {"dry_run": dry_run}}}},
        resources={"ingest_store": store_resource},
    )


def test_a_dry_run_lists_and_a_real_run_removes_the_old_upload(tmp_path) -> None:
    store_resource = IngestStoreResource(data_dir=str(tmp_path / "data"))
    seed(store_resource, tmp_path)
    tables = store_resource.get_store().tables

    listed = run(store_resource, dry_run=True).output_for_node("remove_expired_uploads")
    assert listed["totals"]["uploads"] == 1
    assert tables.count_snapshots(nightly_upload_id(ACCOUNT, OLD)) == 1  # nothing removed yet

    removed = run(store_resource, dry_run=False).output_for_node("remove_expired_uploads")
    assert removed["totals"] == listed["totals"]
    assert tables.upload(nightly_upload_id(ACCOUNT, OLD)) is None
    assert store_resource.get_store().objects.list(nightly_upload_id(ACCOUNT, OLD)) == []
    assert tables.count_snapshots(nightly_upload_id(ACCOUNT, NEW)) == 1


def test_the_cleanup_runs_at_two_utc_and_is_in_the_code_location() -> None:
    assert (klaviyo_cleanup_schedule.cron_schedule, klaviyo_cleanup_schedule.execution_timezone) == (
        "0 2 * * *",
        "UTC",
    )
    assert defs().resolve_job_def(CLEANUP_JOB_NAME).name == CLEANUP_JOB_NAME


def test_an_upload_whose_folder_lists_nothing_is_kept_and_reported(tmp_path) -> None:
    store_resource = IngestStoreResource(data_dir=str(tmp_path / "data"))
    seed(store_resource, tmp_path)
    old = nightly_upload_id(ACCOUNT, OLD)
    store_resource.get_store().objects.remove([f"{old}/flows.csv"])

    result = run(store_resource, dry_run=False)
    output = result.output_for_node("remove_expired_uploads")
    assert output["totals"]["uploads"] == 0 and output["totals"]["suspicious"] == 1
    assert list(output["accounts"][0]["suspicious"]) == [old]
    assert store_resource.get_store().tables.count_snapshots(old) == 1


def test_a_failed_storage_check_fails_the_job_and_deletes_nothing(tmp_path, monkeypatch) -> None:
    """Storage that lists and removes with 200 [] (a wrong bucket, a limited key) is caught first."""
    store_resource = IngestStoreResource(data_dir=str(tmp_path / "data"))
    seed(store_resource, tmp_path)
    objects = store_resource.get_store().objects
    monkeypatch.setattr(type(objects), "list", lambda self, prefix: [])
    monkeypatch.setattr(type(objects), "list_modified", lambda self, prefix: {}, raising=False)

    result = klaviyo_cleanup_job.execute_in_process(
        run_config={"ops": {"remove_expired_uploads": {"config": {"dry_run": False}}}},
        resources={"ingest_store": store_resource},
        raise_on_error=False,
    )
    assert not result.success
    assert "storage check failed" in str(result.failure_data_for_node("remove_expired_uploads").error)
    assert store_resource.get_store().tables.count_snapshots(nightly_upload_id(ACCOUNT, OLD)) == 1
