"""A publish crashed after every Storage call and every database statement, on both stores.

``contracts/supabase.md``, "Publishing is all or nothing, as the dashboard sees it": after each crash
(an exception, or SIGKILL of a process of its own) every ready snapshot of the account, its derived
rows and the three files in its folder come from one run, and a rerun of the partition repairs it to
exactly one ready snapshot over its own files. Stores: the Storage double + PostgreSQL, and the local
folder + SQLite.

The last test crashes a backfill of an older date that refreshes the account's newest snapshot
(``refresh_newest``; ``contracts/supabase.md``, "History"): the newest's derived rows hold the
backfilled history exactly when the backfilled snapshot is ready, never one without the other.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from klaviyo_dagster.publishing.publish import FILE_NAMES, publish
from klaviyo_dagster.storage.store import IngestStore
from klaviyo_dagster_tests.conftest import SERVICE_KEY
from klaviyo_dagster_tests.publishing.runs import (
    BASE_DAY,
    BASE_UPLOAD,
    SHORT,
    UPLOAD,
    Crash,
    CrashPoints,
    Run,
    StoreSpec,
    assert_dashboard_consistent,
    assert_repaired,
    crash_points,
    publish_and_die,
    stage,
    stage_and_publish,
)
from klaviyo_dagster_tests.storage.stores import ACCOUNT

BASE = Run("base", BASE_DAY)
OLD = Run("run-old", days=7)  # the ready snapshot a rerun replaces
NEW = Run("run-new", days=3)  # the rerun that crashes (another window, as in the issue)
REPAIR = Run("run-repair", days=3)  # the next run of the partition
RUNS = {run.run_id: run for run in (BASE, OLD, NEW, REPAIR)}
# The fewest crash points a publish has: 6 Storage calls and the lock, two transactions, the reads.
AT_LEAST = 20


@dataclass
class Backend:
    spec: StoreSpec
    reset: Callable[[int], IngestStore]  # a fresh, empty store for attempt n


@pytest.fixture(params=["postgres", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":

        def reset_sqlite(n: int) -> IngestStore:
            spec = StoreSpec("sqlite", root=str(tmp_path / f"attempt-{n}"))
            backend.spec = spec
            return spec.build()

        backend = Backend(StoreSpec("sqlite", root=str(tmp_path / "attempt-0")), reset_sqlite)
        yield backend
        return
    double = request.getfixturevalue("supabase_double")
    dsn = request.getfixturevalue("clean_postgres")
    spec = StoreSpec("postgres", double_url=double.url, service_key=SERVICE_KEY, dsn=dsn)

    def reset_postgres(n: int) -> IngestStore:
        double.reset()
        with psycopg.connect(dsn) as connection:
            connection.execute(
                "truncate accounts, uploads, snapshots, snapshot_totals, snapshot_series cascade"
            )
        return spec.build()

    yield Backend(spec, reset_postgres)


def prepared(backend: Backend, n: int, tmp: Path) -> IngestStore:
    """The day before published, the partition published by OLD, NEW's files staged."""
    store = backend.reset(n)
    store.tables.ensure_account(ACCOUNT, "Acme")
    stage_and_publish(store, BASE, tmp)
    stage_and_publish(store, OLD, tmp)
    stage(store.objects, NEW, tmp)
    assert_dashboard_consistent(store, RUNS, tmp, "before")
    return store


def count_crash_points(backend: Backend, tmp: Path) -> list[str]:
    points = CrashPoints()
    with crash_points(prepared(backend, 0, tmp), points) as store:
        points.armed = True
        publish(store, NEW.request(), timeouts=SHORT)
    assert len(points.labels) >= AT_LEAST, points.labels
    return points.labels


def repair_and_check(store: IngestStore, tmp: Path) -> None:
    """The next run of the partition publishes its own files; the dead run's staging goes too."""
    stage_and_publish(store, REPAIR, tmp, run_finished=lambda run_id: run_id == NEW.run_id)
    assert_repaired(store, REPAIR, tmp)


def test_an_exception_after_any_call_keeps_the_dashboard_consistent_and_a_rerun_repairs(
    backend: Backend, tmp_path: Path
) -> None:
    labels = count_crash_points(backend, tmp_path)

    for n, label in enumerate(labels, start=1):
        store = prepared(backend, n, tmp_path)
        points = CrashPoints(n)
        with crash_points(store, points) as crashing, pytest.raises(Crash):
            points.armed = True
            publish(crashing, NEW.request(), timeouts=SHORT)
        assert_dashboard_consistent(store, RUNS, tmp_path, f"after #{n} {label}")
        repair_and_check(store, tmp_path)


def test_sigkill_after_any_call_keeps_the_dashboard_consistent_and_a_rerun_repairs(
    backend: Backend, tmp_path: Path
) -> None:
    labels = count_crash_points(backend, tmp_path)
    # A forkserver forks each child from a clean, single-threaded process with the modules loaded.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["klaviyo_dagster_tests.publishing.runs"])

    for n, label in enumerate(labels, start=1):
        store = prepared(backend, n, tmp_path)
        child = context.Process(target=publish_and_die, args=(backend.spec, NEW, n))
        child.start()
        child.join(timeout=120)
        assert child.exitcode == -signal.SIGKILL, (n, label, child.exitcode)
        assert_dashboard_consistent(store, RUNS, tmp_path, f"after SIGKILL at #{n} {label}")
        repair_and_check(store, tmp_path)


# --- a backfill that refreshes the newest snapshot ------------------------------------------------------

NEWEST = Run("run-newest", days=3)  # the partition published first (the nightly run)
BACKFILL = Run("run-backfill", BASE_DAY, days=3)  # the older date, published after it, that crashes
BACKFILL_REPAIR = Run("run-backfill-repair", BASE_DAY, days=2)
BACKFILL_RUNS = {run.run_id: run for run in (NEWEST, BACKFILL, BACKFILL_REPAIR)}


def prepared_backfill(backend: Backend, n: int, tmp: Path) -> IngestStore:
    """The newest partition published alone (no history yet), the older date's files staged."""
    store = backend.reset(n)
    store.tables.ensure_account(ACCOUNT, "Acme")
    stage_and_publish(store, NEWEST, tmp)
    stage(store.objects, BACKFILL, tmp)
    assert_dashboard_consistent(store, BACKFILL_RUNS, tmp, "before")
    return store


def test_a_crashed_backfill_refreshes_the_newest_with_its_own_snapshot_or_not_at_all(
    backend: Backend, tmp_path: Path
) -> None:
    points = CrashPoints()
    with crash_points(prepared_backfill(backend, 0, tmp_path), points) as store:
        points.armed = True
        assert publish(store, BACKFILL.request(refresh_newest=True), timeouts=SHORT).refreshed
    labels = points.labels
    assert len(labels) >= AT_LEAST, labels
    # The refresh adds statements at the end of the finishing transaction, after the snapshot is made
    # ready: crash there, from that update to the commit (the steps before are the ones the tests
    # above crash in, whatever the publish).
    start = next(i for i, label in enumerate(labels) if label.startswith("sql update snapshots set status"))
    end = next(i for i in range(start, len(labels)) if labels[i].startswith("storage")) - 1
    assert labels[end] == "sql commit", labels[start:]
    assert sum("snapshot_series" in label for label in labels[start:end]) >= 2, labels[start:end]

    for n, label in list(enumerate(labels, start=1))[start : end + 1]:
        store = prepared_backfill(backend, n, tmp_path)
        newest_id = store.tables.snapshot_for_upload(UPLOAD).id
        points = CrashPoints(n)
        with crash_points(store, points) as crashing, pytest.raises(Crash):
            points.armed = True
            publish(crashing, BACKFILL.request(refresh_newest=True), timeouts=SHORT)
        # The newest's rows carry the backfilled history if and only if that snapshot is ready.
        assert_dashboard_consistent(store, BACKFILL_RUNS, tmp_path, f"after #{n} {label}")

        published = stage_and_publish(
            store,
            BACKFILL_REPAIR,
            tmp_path,
            refresh_newest=True,
            run_finished=lambda run_id: run_id == BACKFILL.run_id,
        )
        assert published.refreshed == newest_id
        base = store.tables.snapshot_for_upload(BASE_UPLOAD)
        assert base.status == "ready" and base.metadata["dagster_run_id"] == BACKFILL_REPAIR.run_id
        assert_dashboard_consistent(store, BACKFILL_RUNS, tmp_path, f"repaired after #{n} {label}")
        assert sorted(store.objects.list(BASE_UPLOAD)) == sorted(FILE_NAMES)
