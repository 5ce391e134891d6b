"""Publishes and cleanup racing each other (regressions): a publish whose lock session is lost, a
cleanup while a partition is republished, a cleanup whose removal a backfill waits for, and the
marks each leaves for the other. No test measures time: pauses are events, waits are observed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from klaviyo_dagster.publishing.publish import FILE_NAMES, PublishInterrupted, final_key, publish
from klaviyo_dagster.storage.cleanup import CLEANUP_MARK, cleanup_mark, run_cleanup
from klaviyo_dagster.storage.objects import ObjectStore
from klaviyo_dagster.storage.store import IngestStore
from klaviyo_dagster.storage.tables import (
    NEEDS_REPUBLISH,
    PublishSuperseded,
    Timeouts,
)
from klaviyo_dagster_tests.conftest import SERVICE_KEY
from klaviyo_dagster_tests.publishing.runs import (
    DAY,
    SHORT,
    UPLOAD,
    Run,
    assert_dashboard_consistent,
    assert_repaired,
    read_object,
    stage,
    stage_and_publish,
)
from klaviyo_dagster_tests.storage.stores import ACCOUNT, postgres_store

FIRST = Run("run-first")
SECOND = Run("run-second", days=5)
THIRD = Run("run-third", days=4)
NEWER = Run("run-newer", DAY + timedelta(days=1))
LATER = datetime.now(UTC) + timedelta(days=60)  # every upload is past the 30-day retention
PATIENT = Timeouts(lock_seconds=5, statement_seconds=30, publish_lock_seconds=60)


@pytest.fixture
def postgres(request: pytest.FixtureRequest) -> IngestStore:
    double = request.getfixturevalue("supabase_double")
    built = postgres_store(double.url, SERVICE_KEY, request.getfixturevalue("clean_postgres"))
    built.tables.ensure_account(ACCOUNT, "Acme")
    return built


class Pausing:
    """The store's objects; ``hook(method, key)`` runs before (or after) the chosen calls."""

    def __init__(self, inner: ObjectStore, before: Callable[[str, Any], None] | None = None) -> None:
        self.inner = inner
        self.bucket = inner.bucket
        self.before = before or (lambda method, arg: None)
        self.after: Callable[[str, Any], None] = lambda method, arg: None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def upload(self, key: str, source: Path, content_type: str = "text/csv") -> None:
        self.before("upload", key)
        self.inner.upload(key, source, content_type)
        self.after("upload", key)

    def remove(self, keys: Any) -> None:
        self.before("remove", keys)
        self.inner.remove(keys)


class Background:
    def __init__(self, target: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.result = target()
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self) -> None:
        self.thread.join(120)
        assert not self.thread.is_alive()


def wait_for(condition: Callable[[], bool]) -> None:
    """Polls ``condition`` until true (fails after a generous bound; nothing asserts the time)."""
    deadline = time.monotonic() + 60
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition never held")
        time.sleep(0.01)


def advisory(dsn: str, granted: bool) -> list[int]:
    """Pids holding (or waiting for) an advisory lock in this test's database only: other pytest
    workers run the same tests at once in their own databases."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        rows = connection.execute(
            "select l.pid from pg_locks l join pg_database d on d.oid = l.database"
            " where l.locktype = 'advisory' and l.granted = %s and d.datname = current_database()",
            (granted,),
        ).fetchall()
    return [row[0] for row in rows]


# --- 1. a lost publish lock ---------------------------------------------------------------------------


def test_a_publish_that_lost_its_lock_session_never_leaves_mixed_files_under_ready(
    postgres: IngestStore, tmp_path: Path
) -> None:
    """A uploads flows.csv; its lock session is terminated; B publishes all; A resumes. A must not
    upload another file, and the snapshot must not be ready over B's and A's files."""
    store = postgres
    dsn = store.tables.dialect._dsn  # type: ignore[attr-defined]
    stage_and_publish(store, FIRST, tmp_path)
    stage(store.objects, SECOND, tmp_path)
    stage(store.objects, THIRD, tmp_path)
    paused, go = threading.Event(), threading.Event()
    objects = Pausing(store.objects)
    uploaded: list[str] = []

    def after(method: str, key: str) -> None:
        uploaded.append(key)
        if key == final_key(UPLOAD, "flows.csv"):
            paused.set()
            go.wait()

    objects.after = after
    a = Background(
        lambda: publish(IngestStore(objects, store.tables, False), SECOND.request(), timeouts=SHORT)
    )  # type: ignore[arg-type]
    try:
        assert paused.wait(60)
        holders = advisory(dsn, granted=True)
        assert len(holders) == 1
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute("select pg_terminate_backend(%s)", (holders[0],))
        wait_for(lambda: not advisory(dsn, granted=True))
        publish(store, THIRD.request(), timeouts=SHORT)  # B: the lock is free, B publishes everything
    finally:
        go.set()  # never leave A paused on its lock: later tests would wait for it
    a.join()

    assert isinstance(a.error, PublishInterrupted) and "needs a republish" in str(a.error)
    assert uploaded == [final_key(UPLOAD, "flows.csv")]  # A stopped before its second file
    row = store.tables.snapshot_for_upload(UPLOAD)
    assert row is not None and row.status == "error"
    assert row.metadata[NEEDS_REPUBLISH]["by_run"] == SECOND.run_id
    assert_dashboard_consistent(store, {r.run_id: r for r in (FIRST, SECOND, THIRD)}, tmp_path)

    stage_and_publish(store, FIRST, tmp_path)  # the next run repairs (A's staging waits to go stale)
    repaired = store.tables.snapshot_for_upload(UPLOAD)
    assert repaired is not None and repaired.status == "ready"
    assert repaired.metadata["dagster_run_id"] == FIRST.run_id
    assert_dashboard_consistent(store, {FIRST.run_id: FIRST}, tmp_path)
    assert NEEDS_REPUBLISH not in store.tables.snapshot_for_upload(UPLOAD).metadata  # type: ignore[union-attr]


def test_a_lock_lost_before_the_first_upload_changes_no_file(postgres: IngestStore, tmp_path: Path) -> None:
    store = postgres
    dsn = store.tables.dialect._dsn  # type: ignore[attr-defined]
    stage_and_publish(store, FIRST, tmp_path)
    stage(store.objects, SECOND, tmp_path)
    terminated = threading.Event()

    def before(method: str, key: str) -> None:
        if key == final_key(UPLOAD, "flows.csv") and not terminated.is_set():
            with psycopg.connect(dsn, autocommit=True) as connection:
                for pid in advisory(dsn, granted=True):
                    connection.execute("select pg_terminate_backend(%s)", (pid,))
            terminated.set()
            wait_for(lambda: not advisory(dsn, granted=True))

    # The check runs before each upload: terminate the lock session just before that check would see it.
    objects = Pausing(store.objects)
    original = store.tables.begin_publish

    def begin_then_lose(**kwargs: Any) -> str:
        snapshot_id = original(**kwargs)
        before("upload", final_key(UPLOAD, "flows.csv"))
        return snapshot_id

    store.tables.begin_publish = begin_then_lose  # type: ignore[method-assign]
    with pytest.raises(PublishInterrupted, match="before changing a final file"):
        publish(IngestStore(objects, store.tables, False), SECOND.request(), timeouts=SHORT)  # type: ignore[arg-type]
    for name in FILE_NAMES:
        assert read_object(store.objects, final_key(UPLOAD, name), tmp_path) == FIRST.files[name]


def test_the_lock_session_turns_server_idle_timeouts_off(postgres: IngestStore) -> None:
    """A database-wide idle_session_timeout must not end the lock's session while files upload."""
    dsn = postgres.tables.dialect._dsn  # type: ignore[attr-defined]
    with psycopg.connect(dsn, autocommit=True) as connection:
        database = connection.execute("select current_database()").fetchone()[0]  # type: ignore[index]
        connection.execute(f'alter database "{database}" set idle_session_timeout = 1500')
        connection.execute(f'alter database "{database}" set idle_in_transaction_session_timeout = 1500')
    try:
        with postgres.tables.publish_lock(UPLOAD, SHORT) as lock:
            session = lock._connection  # type: ignore[attr-defined]
            assert session.execute("show idle_session_timeout").fetchone()[0] == "0"
            assert session.execute("show idle_in_transaction_session_timeout").fetchone()[0] == "0"
            lock.ensure_held()
        with postgres.tables.try_publish_lock(UPLOAD) as lock:
            assert lock is not None
            assert lock._connection.execute("show idle_session_timeout").fetchone()[0] == "0"  # type: ignore[attr-defined]
    finally:
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(f'alter database "{database}" reset idle_session_timeout')
            connection.execute(f'alter database "{database}" reset idle_in_transaction_session_timeout')


def test_a_run_that_abandoned_the_snapshot_keeps_the_run_in_flight_from_making_it_ready(
    store: IngestStore,
) -> None:
    """A stale run's note (its files may be in the folder) outlives the publish that began before it."""
    tables = store.tables
    snapshot_id = tables.begin_publish(upload_id=UPLOAD, account_id=ACCOUNT, run_id="B", timeouts=SHORT)
    tables.abandon_publish(snapshot_id=snapshot_id, run_id="A", reason="lost its lock", timeouts=SHORT)
    with pytest.raises(PublishSuperseded, match="needs a republish"):
        tables.finish_publish(
            snapshot_id=snapshot_id, run_id="B", metadata={}, metrics=None, ready=True, timeouts=SHORT
        )
    assert tables.snapshot_for_upload(UPLOAD).status == "error"  # type: ignore[union-attr]
    tables.begin_publish(upload_id=UPLOAD, account_id=ACCOUNT, run_id="C", timeouts=SHORT)
    tables.finish_publish(
        snapshot_id=snapshot_id, run_id="C", metadata={"x": 1}, metrics=None, ready=True, timeouts=SHORT
    )
    row = tables.snapshot_for_upload(UPLOAD)
    assert row is not None and row.status == "ready" and NEEDS_REPUBLISH not in row.metadata


# --- 2. cleanup never removes a snapshot being published ---------------------------------------------------


def test_cleanup_keeps_the_accounts_only_snapshot_while_it_is_republished(
    store: IngestStore, tmp_path: Path
) -> None:
    stage_and_publish(store, FIRST, tmp_path)
    stage(store.objects, SECOND, tmp_path)
    paused, go = threading.Event(), threading.Event()

    def before(method: str, key: str) -> None:
        if key == final_key(UPLOAD, "flows.csv"):
            paused.set()
            go.wait()

    objects = Pausing(store.objects, before)
    rerun = Background(
        lambda: publish(IngestStore(objects, store.tables, False), SECOND.request(), timeouts=PATIENT)
    )  # type: ignore[arg-type]
    assert paused.wait(60)
    assert store.tables.snapshot_for_upload(UPLOAD).status == "error"  # type: ignore[union-attr]
    report = run_cleanup(store, now=LATER)
    go.set()
    rerun.join()

    account = report.account(ACCOUNT)
    assert account is not None and account.uploads == [] and account.kept_newest == UPLOAD
    assert rerun.error is None
    assert_repaired(store, SECOND, tmp_path)


def test_cleanup_skips_an_old_upload_being_published_or_left_mid_publish(
    store: IngestStore, tmp_path: Path
) -> None:
    """Not the newest: still never removed while its lock is held, nor while its metadata says a
    publish began (a publish that died: the next run finishes or undoes it)."""
    stage_and_publish(store, FIRST, tmp_path)
    stage_and_publish(store, NEWER, tmp_path)
    with store.tables.publish_lock(UPLOAD, SHORT):
        report = run_cleanup(store, now=LATER)
    assert report.account(ACCOUNT).skipped == [UPLOAD]  # type: ignore[union-attr]
    assert store.tables.snapshot_for_upload(UPLOAD) is not None
    assert {name for name in store.objects.list(UPLOAD) if not name.startswith(".")} == set(FILE_NAMES)

    store.tables.begin_publish(upload_id=UPLOAD, account_id=ACCOUNT, run_id="dead", timeouts=SHORT)
    report = run_cleanup(store, now=LATER)
    assert report.account(ACCOUNT).uploads == []  # type: ignore[union-attr]
    for name in FILE_NAMES:
        assert read_object(store.objects, final_key(UPLOAD, name), tmp_path) == FIRST.files[name]


# --- 3. cleanup takes the publish lock; a republish clears its mark -----------------------------------------


def test_a_backfill_racing_cleanup_waits_for_it_and_ends_ready_with_its_files(
    store: IngestStore, tmp_path: Path
) -> None:
    stage_and_publish(store, FIRST, tmp_path)
    stage_and_publish(store, NEWER, tmp_path)
    removing, go = threading.Event(), threading.Event()

    def before(method: str, keys: Any) -> None:
        if method == "remove" and any(str(k).startswith(f"{UPLOAD}/") for k in keys):
            removing.set()
            go.wait()

    cleanup = Background(
        lambda: run_cleanup(IngestStore(Pausing(store.objects, before), store.tables, False), now=LATER)
    )  # type: ignore[arg-type]
    assert removing.wait(60)  # cleanup marked the upload and is about to remove its objects
    stage(store.objects, SECOND, tmp_path)  # after cleanup listed the folder it is clearing
    backfill = Background(lambda: publish(store, SECOND.request(), timeouts=PATIENT))
    if store.tables.describe() == "postgres":
        dsn = store.tables.dialect._dsn  # type: ignore[attr-defined]
        wait_for(lambda: bool(advisory(dsn, granted=False)))  # the backfill waits for cleanup's lock
        assert store.tables.snapshot_for_upload(UPLOAD).status == "ready"  # type: ignore[union-attr]
    go.set()
    cleanup.join()
    backfill.join()

    assert backfill.error is None and cleanup.error is None
    row = store.tables.snapshot_for_upload(UPLOAD)
    assert row is not None and row.status == "ready" and row.metadata["dagster_run_id"] == SECOND.run_id
    for name in FILE_NAMES:
        assert read_object(store.objects, final_key(UPLOAD, name), tmp_path) == SECOND.files[name]
    upload = store.tables._all("select error from uploads where id = ?", (UPLOAD,))
    assert upload == [(None,)]
    assert_dashboard_consistent(store, {r.run_id: r for r in (FIRST, SECOND, NEWER)}, tmp_path)


def test_a_republish_clears_cleanups_mark(store: IngestStore, tmp_path: Path) -> None:
    stage_and_publish(store, FIRST, tmp_path)
    mark = cleanup_mark(store.objects)
    with store.tables._transaction() as tx:
        tx.execute("update uploads set error = ? where id = ?", (mark, UPLOAD))
    assert mark.startswith(CLEANUP_MARK)
    stage_and_publish(store, SECOND, tmp_path)
    assert store.tables._all("select error from uploads where id = ?", (UPLOAD,)) == [(None,)]
    # Another error of the row (not cleanup's) is left alone.
    with store.tables._transaction() as tx:
        tx.execute("update uploads set error = ? where id = ?", ("the dashboard's own error", UPLOAD))
    stage_and_publish(store, THIRD, tmp_path)
    assert store.tables._all("select error from uploads where id = ?", (UPLOAD,)) == [
        ("the dashboard's own error",)
    ]
