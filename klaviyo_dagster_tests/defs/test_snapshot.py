"""The snapshot asset on the tiny store and the local store: rows, metrics, reruns, checks, processor."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest

from klaviyo_dagster.defs.assets import INGEST_ASSETS
from klaviyo_dagster.defs.partitions import partition_key
from klaviyo_dagster.defs.snapshot import (
    SNAPSHOT_PROCESSING_RESOURCE_KEY,
    CheckedToday,
    SnapshotProcessingResource,
    snapshot,
)
from klaviyo_dagster.publishing import publish as publish_module
from klaviyo_dagster.storage.ids import nightly_upload_id
from klaviyo_dagster_tests.conftest import ACCOUNT_ID
from klaviyo_dagster_tests.defs.conftest import TINY_PARTITION, TINY_UPLOAD_ID
from klaviyo_dagster_tests.producers.tiny_store import PARTITION_DATE

ALL_ASSETS = [*INGEST_ASSETS, snapshot]
DAYS_3 = {"config": {"days": 3}}
RUN_CONFIG = {"ops": {name: DAYS_3 for name in ("flows_csv", "campaigns_csv", "subscribers_csv")}}


def run(instance, resources, partition=TINY_PARTITION, **tags: str) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        ALL_ASSETS,
        partition_key=partition,
        instance=instance,
        resources=resources,
        run_config=RUN_CONFIG,
        raise_on_error=False,
        tags=tags,
    )


def snapshot_metadata(result: dg.ExecuteInProcessResult) -> dict:
    event = result.asset_materializations_for_node("snapshot")[0]
    return {name: value.value for name, value in event.metadata.items()}


def test_the_nightly_run_lands_a_snapshot_with_the_hand_worked_totals(
    tiny_store_env, instance, resources, store_resource
) -> None:
    result = run(instance, resources)

    assert result.success
    metadata = snapshot_metadata(result)
    assert metadata["upload_id"] == TINY_UPLOAD_ID
    tables = store_resource.get_store().tables
    row = tables.snapshot_for_upload(TINY_UPLOAD_ID)
    assert row.id == metadata["snapshot_id"]
    assert (row.label, row.status, row.last_email_date) == ("Orchestrated Update", "ready", date(2026, 3, 8))
    assert row.metadata["partition_date"] == "2026-03-09"
    assert row.metadata["window"] == {"first_day": "2026-03-07", "last_day": "2026-03-09"}
    assert row.metadata["rows"] == {"flows": 9, "campaigns": 2, "subscribers": 3}
    assert row.metadata["dagster_run_id"] == result.run_id
    # Worked out in klaviyo_dagster_tests/processing from the same golden files.
    totals = tables.totals(row.id)
    assert totals["totalRevenue"] == pytest.approx(1142.44)
    assert totals["emailsSent"] == 1156
    assert totals["totalOrders"] == 13
    assert totals["openRate"] == pytest.approx(462 / 1156 * 100)
    assert {p.day for p in tables.series(row.id)} == {date(2026, 3, 7), date(2026, 3, 8), date(2026, 3, 9)}
    # The metadata a person reads: counts whole, money and percentages to 2 decimals.
    assert metadata["total_emailsSent"] == 1156 and isinstance(metadata["total_emailsSent"], int)
    assert metadata["total_totalRevenue"] == 1142.44
    assert metadata["total_openRate"] == round(462 / 1156 * 100, 2)


def test_every_runbook_check_passes(tiny_store_env, instance, resources) -> None:
    result = run(instance, resources)

    checks = {(e.asset_key.path[-1], e.check_name): e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {
        ("snapshot", "upload_folder_has_three_files"): True,
        ("snapshot", "upload_bound_to_account"): True,
        ("snapshot", "one_snapshot_links_the_upload"): True,
        ("snapshot", "derived_rows_exist"): True,
        ("flows_csv", "reconciles_with_klaviyo"): True,
        ("campaigns_csv", "reconciles_with_klaviyo"): True,
        ("subscribers_csv", "reconciles_with_klaviyo"): True,
    }


def test_a_rerun_keeps_the_upload_and_the_one_snapshot_and_replaces_derived_rows(
    tiny_store_env, instance, resources, store_resource
) -> None:
    first = snapshot_metadata(run(instance, resources))
    second = snapshot_metadata(run(instance, resources))

    tables = store_resource.get_store().tables
    assert (second["upload_id"], second["snapshot_id"]) == (first["upload_id"], first["snapshot_id"])
    assert tables.count_snapshots(TINY_UPLOAD_ID) == 1
    assert len(tables.series(first["snapshot_id"])) == 3 * 17


def test_history_is_carried_from_the_latest_earlier_partition_when_run_out_of_order(
    tiny_store_env, instance, resources, store_resource
) -> None:
    later, earlier = TINY_PARTITION, partition_key(ACCOUNT_ID, date(2026, 3, 8))
    assert run(instance, resources, later).success  # the nightly run of 03-09
    assert run(instance, resources, earlier).success  # a backfill of 03-08 afterwards
    assert run(instance, resources, later).success  # 03-09 again: now it has history

    tables = store_resource.get_store().tables
    later_row = tables.snapshot_for_upload(TINY_UPLOAD_ID)
    earlier_row = tables.snapshot_for_upload(nightly_upload_id(ACCOUNT_ID, date(2026, 3, 8)))
    assert {p.day for p in tables.series(earlier_row.id)} == {
        date(2026, 3, 6),
        date(2026, 3, 7),
        date(2026, 3, 8),
    }
    assert {p.day for p in tables.series(later_row.id)} == {
        date(2026, 3, 6),  # carried forward from the 03-08 snapshot
        date(2026, 3, 7),
        date(2026, 3, 8),
        date(2026, 3, 9),
    }


def test_a_dry_run_leaves_no_snapshot(tiny_store_env, instance, resources, data_dir) -> None:
    config = {"ops": {name: {"config": {"days": 3, "mode": "dry-run"}} for name in RUN_CONFIG["ops"]}}
    result = dg.materialize(
        ALL_ASSETS, partition_key=TINY_PARTITION, instance=instance, resources=resources, run_config=config
    )

    assert result.success
    assert [e.step_key for e in result.all_events if e.event_type_value == "STEP_SKIPPED"] == ["snapshot"]
    assert not (data_dir / "ingest.sqlite3").exists()


class Processor:
    """A stand-in for the web app's /api/snapshots/process endpoint on a local port."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.calls: list[tuple[dict, str | None]] = []
        processor = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                processor.calls.append((body, self.headers.get("x-admin-job-secret")))
                self.send_response(processor.status)
                self.end_headers()
                self.wfile.write(b'{"ok": false}' if processor.status >= 400 else b'{"ok": true}')

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/api/snapshots/process"

    def __enter__(self) -> Processor:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def processor_ok() -> Iterator[Processor]:
    with Processor(200) as processor:
        yield processor


def test_with_a_processor_url_the_web_app_is_asked_to_process_the_snapshot(
    tiny_store_env, instance, resources, processor_ok
) -> None:
    resources[SNAPSHOT_PROCESSING_RESOURCE_KEY] = SnapshotProcessingResource(
        processor_url=processor_ok.url, admin_secret="s3cret-admin"
    )
    result = run(instance, resources)

    assert result.success
    snapshot_id = snapshot_metadata(result)["snapshot_id"]
    assert processor_ok.calls == [({"snapshotId": snapshot_id}, "s3cret-admin")]


def test_a_processor_error_fails_the_asset(tiny_store_env, instance, resources) -> None:
    with Processor(500) as processor:
        resources[SNAPSHOT_PROCESSING_RESOURCE_KEY] = SnapshotProcessingResource(
            processor_url=processor.url, admin_secret="s3cret-admin"
        )
        result = run(instance, resources)

    assert not result.success
    failure = result.failure_data_for_node("snapshot").user_failure_data
    assert "answered 500" in failure.description
    assert "s3cret-admin" not in failure.description


def test_a_processor_error_leaves_the_snapshot_out_of_ready(
    tiny_store_env, instance, resources, store_resource
) -> None:
    with Processor(500) as processor:
        resources[SNAPSHOT_PROCESSING_RESOURCE_KEY] = SnapshotProcessingResource(
            processor_url=processor.url, admin_secret="s3cret-admin"
        )
        result = run(instance, resources)

    row = store_resource.get_store().tables.snapshot_for_upload(TINY_UPLOAD_ID)
    assert row.status == "error"  # the dashboard never shows it without its metrics
    assert row.metadata["publishing"]["dagster_run_id"] == result.run_id


def test_the_snapshot_alone_publishes_the_files_of_the_run_that_staged_them(
    tiny_store_env, instance, resources, store_resource, data_dir
) -> None:
    files = dg.materialize(
        INGEST_ASSETS,
        partition_key=TINY_PARTITION,
        instance=instance,
        resources=resources,
        run_config=RUN_CONFIG,
    )
    alone = dg.materialize(
        ALL_ASSETS,
        partition_key=TINY_PARTITION,
        instance=instance,
        resources=resources,
        selection=[snapshot.key],
    )

    assert alone.success
    row = store_resource.get_store().tables.snapshot_for_upload(TINY_UPLOAD_ID)
    assert row.status == "ready"
    assert row.metadata["dagster_run_id"] == files.run_id
    assert row.metadata["published_by_dagster_run_id"] == alone.run_id
    assert snapshot_metadata(alone)["files_from_run"] == files.run_id
    folder = data_dir / "objects" / "preauth-uploads" / TINY_UPLOAD_ID
    assert sorted(p.name for p in folder.iterdir()) == ["campaigns.csv", "flows.csv", "subscribers.csv"]


def test_a_later_date_of_a_backfill_recognizes_the_days_audience_that_the_first_date_published(
    tiny_store_env, instance, resources, store_resource, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every date of a backfill publishes the same subscribers.csv (the audience as of the run)."""
    monkeypatch.setattr(publish_module, "RECOGNIZED_FROM_BYTES", 0)  # the tiny store's is ~500 bytes
    later_date = PARTITION_DATE - timedelta(days=1)

    backfill = {"dagster/backfill": "abcdefgh"}

    first = run(instance, resources, TINY_PARTITION, **backfill)
    later = run(instance, resources, partition_key(ACCOUNT_ID, later_date), **backfill)

    assert first.success and later.success
    assert "files_checked_before" not in snapshot_metadata(first)
    assert snapshot_metadata(later)["files_checked_before"] == "subscribers.csv"
    tables = store_resource.get_store().tables
    assert (
        tables.snapshot_for_upload(nightly_upload_id(ACCOUNT_ID, later_date)).metadata["rows"]["subscribers"]
        == 3
    )


class Responses(dict):
    """A fetch cache in memory (``producers.shared.ResponseStore``)."""

    def put(self, key: str, value: dict) -> None:
        self[key] = dict(value)

    def keys(self, prefix: str) -> list[str]:
        return [key for key in self if key.startswith(prefix)]


def test_a_checked_file_record_of_another_shape_makes_the_file_parsed_again() -> None:
    responses = Responses()
    checked = CheckedToday(responses)
    checked.remember("subscribers.csv", "ab" * 32, 3)
    assert checked.rows("subscribers.csv", "ab" * 32) == 3
    for key in responses:
        responses[key] = {"records": 3}  # as a later release might write it

    assert checked.rows("subscribers.csv", "ab" * 32) is None
    assert checked.rows("flows.csv", "ab" * 32) is None
