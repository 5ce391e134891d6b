"""The publish protocol (publishing/publish.py) on both stores: staging, checks before anything moves,
the snapshot out of ``ready`` while files move, timeouts, two publishes at once, housekeeping, the
remote processor. Crash points are in test_crash_points.py.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from klaviyo_dagster.publishing import publish as publish_module
from klaviyo_dagster.publishing.publish import (
    FILE_NAMES,
    PublishTimedOut,
    StagedFileInvalid,
    StagedFileMissing,
    _raise_first_misfit,
    final_key,
    publish,
    staging_folder,
    staging_key,
)
from klaviyo_dagster.storage.objects import LocalObjectStore
from klaviyo_dagster.storage.store import IngestStore
from klaviyo_dagster.storage.tables import PUBLISH_LOCK_NAMESPACE, PublishLockTimeout, Timeouts
from klaviyo_dagster_tests.publishing.runs import (
    BASE_DAY,
    DAY,
    SHORT,
    UPLOAD,
    Run,
    assert_dashboard_consistent,
    assert_repaired,
    read_object,
    run_files,
    stage,
    stage_and_publish,
)

BASE = Run("base", BASE_DAY)
OLD = Run("run-old", days=7)
NEW = Run("run-new", days=3)
RUNS = {run.run_id: run for run in (BASE, OLD, NEW)}
TINY = Timeouts(lock_seconds=0.2, statement_seconds=2, publish_lock_seconds=0.3)


@pytest.fixture
def published(store: IngestStore, tmp_path: Path) -> IngestStore:
    """The day before, and the partition, published; NEW's files staged for a rerun."""
    stage_and_publish(store, BASE, tmp_path)
    stage_and_publish(store, OLD, tmp_path)
    stage(store.objects, NEW, tmp_path)
    return store


def is_postgres(store: IngestStore) -> bool:
    return store.tables.describe() == "postgres"


def assert_old_still_shown(store: IngestStore, tmp: Path) -> None:
    row = store.tables.snapshot_for_upload(UPLOAD)
    assert row.status == "ready" and row.metadata["dagster_run_id"] == OLD.run_id
    assert_dashboard_consistent(store, RUNS, tmp)


def test_a_rerun_publishes_its_own_files_into_the_same_snapshot(
    published: IngestStore, tmp_path: Path
) -> None:
    before = published.tables.snapshot_for_upload(UPLOAD)

    result = publish(published, NEW.request(), timeouts=SHORT)

    row = published.tables.snapshot_for_upload(UPLOAD)
    assert result.snapshot_id == before.id == row.id  # the id stays across reruns
    assert (row.status, row.label) == ("ready", "Orchestrated Update")
    assert row.metadata["dagster_run_id"] == NEW.run_id
    assert row.metadata["rows"] == {"flows": 3, "campaigns": 1, "subscribers": 2}
    assert row.metadata["window"] == {"first_day": "2026-03-07", "last_day": "2026-03-09"}
    assert published.tables.upload(UPLOAD)["status"] == "bound"
    assert_dashboard_consistent(published, RUNS, tmp_path)
    assert sorted(published.objects.list(UPLOAD)) == sorted(FILE_NAMES)  # its staging is gone


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("campaigns.csv", lambda data: data.replace(b",4,", b",NaN,", 1)),  # a report value not a number
        ("flows.csv", lambda data: data.replace(b"2026-03-08", b"2026-02-30", 1)),  # not a date
        ("flows.csv", lambda data: data.replace(b"2026-03-08", b"2026-03-19", 1)),  # outside the window
        ("subscribers.csv", lambda data: data + b"c@example.com\n"),  # a record narrower than its header
        ("subscribers.csv", lambda data: b"\xff\xfe" + data),  # not UTF-8
        ("flows.csv", lambda data: data + data.split(b"\n")[1] + b"\n"),  # not the rows the run recorded
    ],
)
def test_a_bad_staged_file_fails_before_anything_moves(
    published: IngestStore, tmp_path: Path, name: str, change
) -> None:
    files = run_files(NEW.run_id, days=3)
    files[name] = change(files[name])
    stage(published.objects, NEW, tmp_path, files)

    with pytest.raises(StagedFileInvalid):
        publish(published, NEW.request(), timeouts=SHORT)

    assert_old_still_shown(published, tmp_path)


def test_a_staged_record_of_another_width_is_named_by_its_line(
    published: IngestStore, tmp_path: Path
) -> None:
    files = run_files(NEW.run_id, days=3)
    header, rest = files["subscribers.csv"].split(b"\n", 1)
    files["subscribers.csv"] = header + b"\nc@example.com\n" + rest  # line 2, one field
    stage(published.objects, NEW, tmp_path, files)
    width = len(header.split(b","))

    with pytest.raises(
        StagedFileInvalid, match=rf"staged subscribers\.csv line 2 has 1 fields, its header {width}"
    ):
        publish(published, NEW.request(), timeouts=SHORT)

    assert_old_still_shown(published, tmp_path)


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        pytest.param(lambda b: b"\xef\xbb\xbf" + b, "starts with a byte-order mark", id="BOM"),
        pytest.param(lambda b: b.replace(b"a@example.com", b"a@exa\x00mple.com"), "NUL byte", id="NUL"),
        pytest.param(
            lambda b: b + b'c@example.com,"cut off', "not a readable UTF-8 CSV", id="quote left open"
        ),
        pytest.param(
            lambda b: b.replace(b"a@example.com", b'"a@example.com"xx'),
            "not a readable UTF-8 CSV",
            id="after quote",
        ),
    ],
)
def test_a_staged_file_that_breaks_the_csv_rules_is_refused(
    published: IngestStore, tmp_path: Path, spoil: Callable[[bytes], bytes], message: str
) -> None:
    files = run_files(NEW.run_id, days=3)
    files["subscribers.csv"] = spoil(files["subscribers.csv"])
    stage(published.objects, NEW, tmp_path, files)

    with pytest.raises(StagedFileInvalid, match=rf"staged subscribers\.csv .*{message}"):
        publish(published, NEW.request(), timeouts=SHORT)

    assert_old_still_shown(published, tmp_path)


def test_a_staged_file_that_changes_between_its_two_readings_still_fails(tmp_path: Path) -> None:
    """The first reading counted a misfit; the second, looking for its line, finds every record fits."""
    staged = tmp_path / "subscribers.csv"
    staged.write_text("email,first_name\na@example.com,Ann\n", encoding="utf-8")

    with pytest.raises(StagedFileInvalid, match=r"staged subscribers\.csv has records that are not 2 fields"):
        _raise_first_misfit(staged, "subscribers.csv", 2)


def test_a_missing_staged_file_fails_by_name(published: IngestStore, tmp_path: Path) -> None:
    published.objects.remove([staging_key(UPLOAD, NEW.run_id, "subscribers.csv")])

    with pytest.raises(StagedFileMissing, match=r"subscribers\.csv"):
        publish(published, NEW.request(), timeouts=SHORT)

    assert_old_still_shown(published, tmp_path)


def test_a_session_holding_the_upload_row_times_the_publish_out_before_any_file_moves(
    published: IngestStore, tmp_path: Path
) -> None:
    if not is_postgres(published):
        pytest.skip("row locks are Postgres'; SQLite's whole-file lock is the next test")
    with psycopg.connect(published.tables.dialect._dsn) as other:
        other.execute("select id from uploads where id = %s for update", (UPLOAD,))
        with pytest.raises(PublishTimedOut, match="timed out"):
            publish(published, NEW.request(), timeouts=TINY)
    assert_old_still_shown(published, tmp_path)
    publish(published, NEW.request(), timeouts=SHORT)  # the lock is gone: the rerun goes through
    assert published.tables.snapshot_for_upload(UPLOAD).metadata["dagster_run_id"] == NEW.run_id


def test_a_locked_sqlite_database_times_the_publish_out_before_any_file_moves(
    published: IngestStore, tmp_path: Path
) -> None:
    if is_postgres(published):
        pytest.skip("SQLite only")
    other = published.tables.dialect.connect()
    other.execute("begin exclusive")
    try:
        with pytest.raises(PublishTimedOut):
            publish(published, NEW.request(), timeouts=TINY)
    finally:
        other.rollback()
        other.close()
    assert_old_still_shown(published, tmp_path)


def test_another_publish_holding_the_partition_makes_the_next_wait_then_time_out(
    published: IngestStore, tmp_path: Path
) -> None:
    with _publish_lock_held_elsewhere(published), pytest.raises(PublishLockTimeout, match=UPLOAD):
        publish(published, NEW.request(), timeouts=TINY)
    assert_old_still_shown(published, tmp_path)


class _publish_lock_held_elsewhere:
    """The upload's publish lock taken by another session (Postgres) or process-like file handle."""

    def __init__(self, store: IngestStore) -> None:
        self.store = store

    def __enter__(self) -> None:
        if is_postgres(self.store):
            self.connection = psycopg.connect(self.store.tables.dialect._dsn, autocommit=True)
            self.connection.execute(
                "select pg_advisory_lock(hashtextextended(%s, 0))", (PUBLISH_LOCK_NAMESPACE + UPLOAD,)
            )
        else:
            path = self.store.tables.dialect.path.parent / "locks" / f"{UPLOAD}.lock"
            path.parent.mkdir(parents=True, exist_ok=True)
            self.handle = path.open("a+b")
            fcntl.flock(self.handle.fileno(), fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        if is_postgres(self.store):
            self.connection.close()
        else:
            self.handle.close()


def test_two_publishes_of_one_partition_at_once_end_consistent(
    published: IngestStore, tmp_path: Path
) -> None:
    other = Run("run-other", days=5)
    stage(published.objects, other, tmp_path)
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(which: Run) -> None:
        try:
            start.wait()
            publish(published, which.request(), timeouts=SHORT)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(which,)) for which in (NEW, other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    row = published.tables.snapshot_for_upload(UPLOAD)
    assert published.tables.count_snapshots(UPLOAD) == 1 and row.status == "ready"
    assert row.metadata["dagster_run_id"] in (NEW.run_id, other.run_id)
    assert_dashboard_consistent(published, {**RUNS, other.run_id: other}, tmp_path)
    assert sorted(published.objects.list(UPLOAD)) == sorted(FILE_NAMES)


def test_staging_of_other_runs_goes_once_finished_or_old_and_young_staging_of_live_runs_stays(
    published: IngestStore, tmp_path: Path
) -> None:
    dead, live = Run("run-dead"), Run("run-live")
    stage(published.objects, dead, tmp_path)
    stage(published.objects, live, tmp_path)

    publish(published, NEW.request(), timeouts=SHORT, run_finished=lambda run_id: run_id == dead.run_id)
    assert published.objects.list(staging_folder(UPLOAD)) == [live.run_id]

    later = datetime.now(UTC) + timedelta(hours=7)  # the live run's files are now over 6 hours old
    stage(published.objects, NEW, tmp_path)
    publish(published, NEW.request(), timeouts=SHORT, now=lambda: later)
    assert sorted(published.objects.list(UPLOAD)) == sorted(FILE_NAMES)


def test_temp_files_of_interrupted_local_writes_are_swept_once_old(
    store: IngestStore, tmp_path: Path
) -> None:
    if not isinstance(store.objects, LocalObjectStore):
        pytest.skip("Supabase Storage leaves no temp files")
    folder = store.objects.bucket_dir / UPLOAD
    folder.mkdir(parents=True)
    leftover = folder / ".upload-abc123.tmp"
    leftover.write_bytes(b"half a file")
    old = time.time() - 7 * 3600
    os.utime(leftover, (old, old))
    young = folder / ".upload-def456.tmp"
    young.write_bytes(b"being written")

    stage_and_publish(store, NEW, tmp_path)

    assert not leftover.exists() and young.exists()


def test_with_a_processor_the_snapshot_is_ready_only_after_its_2xx(
    published: IngestStore, tmp_path: Path
) -> None:
    seen: list[tuple[str, str | None, bytes | None]] = []

    def processor(snapshot_id: str) -> None:
        row = published.tables.snapshot_for_upload(UPLOAD)
        seen.append(
            (
                row.status,
                row.metadata.get("dagster_run_id"),
                read_object(published.objects, final_key(UPLOAD, "flows.csv"), tmp_path),
            )
        )

    result = publish(published, NEW.request(), timeouts=SHORT, processor=processor)

    # Asked while the snapshot was not ready, its metadata and all three files already the new run's.
    assert seen == [("error", NEW.run_id, NEW.files["flows.csv"])]
    assert result.metrics is None
    assert published.tables.snapshot_for_upload(UPLOAD).status == "ready"


def test_a_processor_failure_leaves_the_snapshot_out_of_ready(published: IngestStore, tmp_path: Path) -> None:
    def processor(snapshot_id: str) -> None:
        raise RuntimeError("processor answered 500")

    with pytest.raises(RuntimeError, match="answered 500"):
        publish(published, NEW.request(), timeouts=SHORT, processor=processor)

    row = published.tables.snapshot_for_upload(UPLOAD)
    assert row.status == "error" and row.metadata["publishing"]["dagster_run_id"] == NEW.run_id
    assert_dashboard_consistent(published, RUNS, tmp_path)
    stage(published.objects, NEW, tmp_path)
    publish(published, NEW.request(), timeouts=SHORT)
    assert_repaired(published, NEW, tmp_path)


def test_the_first_publish_of_a_partition_inserts_the_snapshot(store: IngestStore, tmp_path: Path) -> None:
    result = stage_and_publish(store, NEW, tmp_path)

    row = store.tables.snapshot_for_upload(UPLOAD)
    assert row.id == result.snapshot_id and row.status == "ready"
    assert_repaired(store, NEW, tmp_path)


def test_a_local_remove_skips_folders_like_supabase(tmp_path: Path) -> None:
    objects = LocalObjectStore(tmp_path / "objects")
    source = tmp_path / "f.csv"
    source.write_text("a\n")
    objects.upload("u/.staging/r/flows.csv", source)

    objects.remove(["u/.staging", "u/.staging/r"])  # folders, not objects: nothing happens

    assert objects.list("u/.staging/r") == ["flows.csv"]
    assert (
        set(objects.list_modified("u/.staging")) == {"r"} and objects.list_modified("u/.staging")["r"] is None
    )


class Remembered(dict[tuple[str, str], int]):
    """A ``CheckedBefore`` in memory: (name, SHA-256) → data records."""

    def rows(self, name: str, sha256: str) -> int | None:
        return self.get((name, sha256))

    def remember(self, name: str, sha256: str, rows: int) -> None:
        self[(name, sha256)] = rows


LATER = Run("run-later", DAY + timedelta(days=1), days=3)


@pytest.fixture
def recognizes_tiny_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests' files are a few hundred bytes; the publish looks up files of 1 MiB or more."""
    monkeypatch.setattr(publish_module, "RECOGNIZED_FROM_BYTES", 0)


@pytest.fixture
def remembered(published: IngestStore, recognizes_tiny_files: None) -> Remembered:
    """NEW published, its files remembered as checked."""
    checked = Remembered()
    publish(published, NEW.request(), timeouts=SHORT, checked_before=checked)
    return checked


def staged_with_news_audience(store: IngestStore, tmp: Path, spoil: Callable[[bytes], bytes] = bytes) -> None:
    """LATER's files staged, its subscribers.csv the one NEW staged (as a backfill's later date has it)."""
    files = LATER.files
    files["subscribers.csv"] = spoil(NEW.files["subscribers.csv"])
    stage(store.objects, LATER, tmp, files)


def test_a_file_that_passed_the_check_before_is_recognized_by_its_bytes_and_not_parsed_again(
    published: IngestStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, remembered: Remembered
) -> None:
    remembered_first = sorted(name for name, _ in remembered)
    staged_with_news_audience(published, tmp_path)
    parsed: list[str] = []
    checked_rows = publish_module._checked_rows
    monkeypatch.setattr(
        publish_module, "_checked_rows", lambda path, name: parsed.append(name) or checked_rows(path, name)
    )

    later = publish(published, LATER.request(), timeouts=SHORT, checked_before=remembered)

    assert remembered_first == sorted(FILE_NAMES)
    assert later.recognized == ("subscribers.csv",) and later.rows["subscribers.csv"] == 2
    assert sorted(parsed) == ["campaigns.csv", "flows.csv"]
    assert (
        read_object(published.objects, final_key(LATER.upload_id, "subscribers.csv"), tmp_path)
        == (NEW.files["subscribers.csv"])
    )


def test_a_file_one_byte_off_one_checked_before_is_parsed_and_refused_and_nothing_is_remembered(
    published: IngestStore, tmp_path: Path, remembered: Remembered
) -> None:
    before = dict(remembered)
    staged_with_news_audience(published, tmp_path, spoil=lambda data: data + b'c@example.com,"cut off')

    with pytest.raises(StagedFileInvalid, match="not a readable UTF-8 CSV"):
        publish(published, LATER.request(), timeouts=SHORT, checked_before=remembered)

    assert remembered == before
    assert published.tables.snapshot_for_upload(LATER.upload_id) is None


def test_a_file_checked_before_still_has_to_hold_the_rows_the_run_recorded(
    published: IngestStore, tmp_path: Path, remembered: Remembered
) -> None:
    staged_with_news_audience(published, tmp_path)
    request = LATER.request()
    request = replace(request, expected_rows={**(request.expected_rows or {}), "subscribers.csv": 3})

    with pytest.raises(
        StagedFileInvalid, match=r"subscribers\.csv of run run-later has 2 data rows, the run recorded 3"
    ):
        publish(published, request, timeouts=SHORT, checked_before=remembered)


@pytest.mark.usefixtures("recognizes_tiny_files")
def test_files_of_a_publish_that_fails_after_their_own_checks_are_not_remembered(
    published: IngestStore, tmp_path: Path
) -> None:
    files = LATER.files
    files["flows.csv"] = files["flows.csv"].replace(
        str(LATER.day).encode(), str(LATER.day + timedelta(days=1)).encode()
    )
    stage(published.objects, LATER, tmp_path, files)
    remembered = Remembered()

    with pytest.raises(StagedFileInvalid, match="outside the window"):
        publish(published, LATER.request(), timeouts=SHORT, checked_before=remembered)

    assert remembered == {}


def test_files_under_a_mebibyte_are_parsed_without_asking_what_was_checked_before(
    published: IngestStore, tmp_path: Path
) -> None:
    asked: list[str] = []

    class Recording(Remembered):
        def rows(self, name: str, sha256: str) -> int | None:
            asked.append(name)
            return super().rows(name, sha256)

    remembered = Recording()
    publish(published, NEW.request(), timeouts=SHORT, checked_before=remembered)

    assert asked == [] and remembered == {}
