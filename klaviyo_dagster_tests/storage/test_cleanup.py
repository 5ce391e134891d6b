"""The retention cleanup against (a) real PostgreSQL + the Supabase Storage double through
SupabaseObjectStore and (b) SQLite + the local folder store: it deletes exactly what the policy says.

The world (now = 2026-06-30 02:00 UTC, retention 30 days, cutoff 2026-05-31 02:00 UTC), two accounts
with interleaved dates:

A  old1  partition 04-01, created 04-02             → deleted
A  old2  partition 04-10, created cutoff - 1 s      → deleted (just past the cutoff)
A  edge  partition 05-31, created cutoff + 1 s      → kept (not older than the retention)
A  new   partition 06-28, created 06-29             → kept (recent; also the newest snapshot)
A  manual upload (the dashboard's, snapshot "Manual upload"), created 04-01 → kept (not ingest)
B  old   partition 04-05, created 04-06             → deleted
B  newest partition 04-20, created 04-21            → kept: the newest partition date, though old
B  backfill partition 04-15, created 06-20          → kept (created recently), and not "newest"
   although created last: newest is by partition date
preauth: A expired → 'expired'; A not yet expired, A expired but referenced by a snapshot → untouched;
B expired → 'expired'; one of no account (account_id null) → 'expired'.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from klaviyo_dagster.derived_rows import SeriesPoint, SnapshotMetrics
from klaviyo_dagster.storage.cleanup import (
    CLEANUP_MARK,
    PROBE_FOLDER,
    CleanupError,
    CleanupReport,
    cleanup_mark,
    plan_cleanup,
    run_cleanup,
)
from klaviyo_dagster.storage.ids import nightly_upload_id, upload_id
from klaviyo_dagster.storage.objects import LocalObjectStore, ObjectStore, StorageError
from klaviyo_dagster.storage.store import IngestStore
from klaviyo_dagster.storage.supabase_objects import SupabaseObjectStore
from klaviyo_dagster.storage.tables import IngestTables
from klaviyo_dagster_tests.conftest import BUCKET
from klaviyo_dagster_tests.storage.supabase_double import DEFAULT_ANON_KEY, SupabaseStorageDouble

A = "5b0c7a3e-2f4d-4c1a-9e8b-1d2c3b4a5f60"
B = "6c1d8b4f-3a5e-4d2b-8f9c-2e3d4c5b6a71"
NOW = datetime(2026, 6, 30, 2, 0, tzinfo=UTC)
CUTOFF = NOW - timedelta(days=30)
NAMES = ("campaigns.csv", "flows.csv", "subscribers.csv")
TABLES = ("uploads", "snapshots", "snapshot_totals", "snapshot_series")


def day(text: str) -> date:
    return date.fromisoformat(f"2026-{text}")


def at(text: str) -> datetime:
    return datetime.fromisoformat(f"2026-{text}T03:05:00+00:00")


# --- backends ----------------------------------------------------------------------------------------


@dataclass
class Backend:
    name: str
    tables: IngestTables
    objects: ObjectStore
    put: Callable[..., None]  # seed an object: put(key, written=None)
    keys: Callable[[], set[str]]  # every object key in the bucket
    outage: Callable[[Sequence[str]], None]  # a remove() that fails as this backend's storage would

    def store(self, objects: ObjectStore | None = None) -> IngestStore:
        return IngestStore(objects=objects or self.objects, tables=self.tables, owns_accounts=True)

    def sql(self, statement: str, params: Sequence[Any] = ()) -> None:
        with self.tables._transaction() as tx:
            tx.execute(statement, params)

    def rows(self, statement: str, params: Sequence[Any] = ()) -> builtins.list[tuple[str, ...]]:
        return [tuple(str(v) for v in row) for row in self.tables._all(statement, params)]

    def state(self) -> dict[str, Any]:
        """Every row of the ingest tables and every object key: what 'nothing changed' compares."""
        tables = {t: sorted(self.rows(f"select * from {t}")) for t in TABLES}  # noqa: S608
        return {**tables, "objects": sorted(self.keys())}


@pytest.fixture(params=["postgres+supabase", "sqlite+local"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "postgres+supabase":
        double = request.getfixturevalue("supabase_double")
        supabase_store = request.getfixturevalue("supabase_store")

        def outage(keys: Sequence[str]) -> None:
            double.fail_next(supabase_store.max_attempts, 503)  # every attempt of this remove fails
            supabase_store.remove(keys)

        return Backend(
            request.param,
            IngestTables.postgres(request.getfixturevalue("clean_postgres")),
            supabase_store,
            put=lambda key, written=None: double.put_object(key, b"csv\n", written=written),
            keys=lambda: set(double.bucket_objects(BUCKET)),
            outage=outage,
        )
    tables = IngestTables.sqlite(tmp_path / "ingest.sqlite3")
    tables.migrate()
    local = LocalObjectStore(tmp_path / "objects", BUCKET)

    def put(key: str, written: datetime | None = None) -> None:
        path = local.bucket_dir / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"csv\n")
        if written is not None:
            os.utime(path, (written.timestamp(), written.timestamp()))

    def local_outage(keys: Sequence[str]) -> None:
        raise StorageError("the disk is gone (simulated)", code="simulated")

    return Backend(
        request.param,
        tables,
        local,
        put=put,
        keys=lambda: {
            str(p.relative_to(local.bucket_dir)) for p in local.bucket_dir.rglob("*") if p.is_file()
        },
        outage=local_outage,
    )


class HookedObjects:
    """The backend's object store, with ``on_remove(call_number, keys, inner)`` in place of remove."""

    def __init__(self, inner: ObjectStore, on_remove: Callable[[int, Sequence[str], ObjectStore], None]):
        self.inner = inner
        self.bucket = inner.bucket
        self.on_remove = on_remove
        self.removes = 0

    def upload(self, key: str, source: Path, content_type: str = "text/csv") -> None:
        self.inner.upload(key, source, content_type)

    def download(self, key: str, destination: Path) -> None:
        self.inner.download(key, destination)

    def list(self, prefix: str) -> builtins.list[str]:
        return self.inner.list(prefix)

    def remove(self, keys: Sequence[str]) -> None:
        if all(key.startswith(f"{PROBE_FOLDER}/") for key in keys):  # the storage probe: not counted
            self.inner.remove(keys)
            return
        self.removes += 1
        self.on_remove(self.removes, keys, self.inner)

    def describe(self) -> str:
        return self.inner.describe()


# --- the world -----------------------------------------------------------------------------------------


def nightly(backend: Backend, account: str, partition: date, created: datetime) -> tuple[str, str]:
    """An ingest upload as the pipeline writes it (three objects, snapshot, derived rows), back-dated."""
    uid = nightly_upload_id(account, partition)
    for name in NAMES:
        backend.put(f"{uid}/{name}")
    metrics = SnapshotMetrics(
        series=[SeriesPoint("totalRevenue", partition, 5.0), SeriesPoint("emailsSent", partition, 10.0)],
        totals={"totalRevenue": 5.0, "emailsSent": 10.0},
        last_email_date=partition,
    )
    snapshot_id = backend.tables.write_snapshot(
        upload_id=uid,
        account_id=account,
        metadata={"partition_date": partition.isoformat(), "rows": {"flows": 1}},
        metrics=metrics,
    )
    backend.sql("update uploads set created_at = ? where id = ?", (created.isoformat(), uid))
    backend.sql("update snapshots set created_at = ? where id = ?", (created.isoformat(), snapshot_id))
    return uid, snapshot_id


def preauth(backend: Backend, account: str | None, key: str, expires: datetime) -> str:
    uid = upload_id(account or "anonymous", key)
    backend.sql(
        "insert into uploads (id, account_id, status, created_at, expires_at) values (?, ?, 'preauth', ?, ?)",
        (uid, account, (expires - timedelta(days=1)).isoformat(), expires.isoformat()),
    )
    return uid


def dashboard_snapshot(backend: Backend, account: str, uid: str, created: datetime) -> str:
    snapshot_id = upload_id(account, f"manual-snapshot-{uid}")
    backend.sql(
        "insert into snapshots (id, account_id, upload_id, label, status, created_at) "
        "values (?, ?, ?, 'Manual upload', 'ready', ?)",
        (snapshot_id, account, uid, created.isoformat()),
    )
    return snapshot_id


@dataclass
class World:
    a_old1: str
    a_old2: str
    a_edge: str
    a_new: str
    a_manual: str
    b_old: str
    b_newest: str
    b_backfill: str
    a_preauth_expired: str
    a_preauth_future: str
    a_preauth_referenced: str
    b_preauth_expired: str
    unowned_preauth: str
    snapshots: dict[str, str]  # upload id -> snapshot id


@pytest.fixture
def world(backend: Backend) -> World:
    tables = backend.tables
    tables.ensure_account(A, "Acme")
    tables.ensure_account(B, "Other")
    snapshots: dict[str, str] = {}

    def add(account: str, partition: str, created: datetime) -> str:
        uid, snapshot_id = nightly(backend, account, day(partition), created)
        snapshots[uid] = snapshot_id
        return uid

    # Interleaved in time across the two accounts.
    a_old1 = add(A, "04-01", at("04-02"))
    b_old = add(B, "04-05", at("04-06"))
    a_old2 = add(A, "04-10", CUTOFF - timedelta(seconds=1))
    b_newest = add(B, "04-20", at("04-21"))
    b_backfill = add(B, "04-15", at("06-20"))
    a_edge = add(A, "05-31", CUTOFF + timedelta(seconds=1))
    a_new = add(A, "06-28", at("06-29"))

    a_manual = upload_id(A, "manual-upload")
    backend.sql(
        "insert into uploads (id, account_id, status, created_at) values (?, ?, 'processed', ?)",
        (a_manual, A, at("04-01").isoformat()),
    )
    for name in NAMES:
        backend.put(f"{a_manual}/{name}")
    snapshots[a_manual] = dashboard_snapshot(backend, A, a_manual, at("04-01"))

    a_preauth_referenced = preauth(backend, A, "referenced", at("06-01"))
    dashboard_snapshot(backend, A, a_preauth_referenced, at("03-01"))
    return World(
        a_old1=a_old1,
        a_old2=a_old2,
        a_edge=a_edge,
        a_new=a_new,
        a_manual=a_manual,
        b_old=b_old,
        b_newest=b_newest,
        b_backfill=b_backfill,
        a_preauth_expired=preauth(backend, A, "expired", NOW - timedelta(minutes=1)),
        a_preauth_future=preauth(backend, A, "future", NOW + timedelta(minutes=1)),
        a_preauth_referenced=a_preauth_referenced,
        b_preauth_expired=preauth(backend, B, "expired", at("05-01")),
        unowned_preauth=preauth(backend, None, "anonymous", at("06-15")),
        snapshots=snapshots,
    )


def objects_of(*uploads: str) -> builtins.list[str]:
    return [f"{uid}/{name}" for uid in uploads for name in NAMES]


def upload_ids(backend: Backend) -> set[str]:
    return {row[0] for row in backend.rows("select id from uploads")}


def status(backend: Backend, uid: str) -> str:
    return backend.rows("select status from uploads where id = ?", (uid,))[0][0]


def derived_counts(backend: Backend, snapshot_id: str) -> tuple[int, int]:
    totals = backend.rows("select count(*) from snapshot_totals where snapshot_id = ?", (snapshot_id,))
    series = backend.rows("select count(*) from snapshot_series where snapshot_id = ?", (snapshot_id,))
    return int(totals[0][0]), int(series[0][0])


def summary(report: CleanupReport) -> builtins.list[tuple[Any, ...]]:
    return [
        (a.account_id, a.uploads, a.objects, a.snapshots, a.expired_preauth, a.kept_newest, a.error)
        for a in report.accounts
    ] + [("unowned", report.unowned_expired_preauth)]


# --- tests -----------------------------------------------------------------------------------------------


def test_deletes_exactly_the_old_ingest_uploads_and_expires_stale_preauth(
    backend: Backend, world: World
) -> None:
    w = world
    before = backend.state()
    report = run_cleanup(backend.store(), now=NOW)

    deleted = [w.a_old1, w.a_old2, w.b_old]
    # Objects, snapshots, derived rows and upload rows of the old ingest uploads: gone.
    assert backend.keys() == set(before["objects"]) - set(objects_of(*deleted))
    assert upload_ids(backend) == {row[0] for row in before["uploads"]} - set(deleted)
    remaining_snapshots = {row[0] for row in backend.rows("select id from snapshots")}
    for uid in deleted:
        assert w.snapshots[uid] not in remaining_snapshots
        assert derived_counts(backend, w.snapshots[uid]) == (0, 0)
    # Everything else: untouched, derived rows included.
    for uid in (w.a_edge, w.a_new, w.b_newest, w.b_backfill):
        assert w.snapshots[uid] in remaining_snapshots
        assert derived_counts(backend, w.snapshots[uid]) == (2, 2)
        assert set(objects_of(uid)) <= backend.keys()
    assert w.snapshots[w.a_manual] in remaining_snapshots  # the dashboard's own upload is not ingest
    assert set(objects_of(w.a_manual)) <= backend.keys()
    # Preauth: expired, not deleted; the referenced and the unexpired ones untouched.
    assert status(backend, w.a_preauth_expired) == "expired"
    assert status(backend, w.b_preauth_expired) == "expired"
    assert status(backend, w.unowned_preauth) == "expired"
    assert status(backend, w.a_preauth_future) == "preauth"
    assert status(backend, w.a_preauth_referenced) == "preauth"

    # The report, per account.
    assert [a.account_id for a in report.accounts] == [A, B]
    a, b = report.accounts
    assert (a.uploads, a.objects, a.snapshots, a.expired_preauth, a.kept_newest) == (
        [w.a_old1, w.a_old2],
        objects_of(w.a_old1, w.a_old2),
        2,
        [w.a_preauth_expired],
        w.a_new,
    )
    assert (b.uploads, b.objects, b.snapshots, b.expired_preauth, b.kept_newest) == (
        [w.b_old],
        objects_of(w.b_old),
        1,
        [w.b_preauth_expired],
        w.b_newest,
    )
    assert report.unowned_expired_preauth == [w.unowned_preauth]
    assert (report.dry_run, report.retention_days, report.cutoff) == (False, 30, CUTOFF)
    assert report.as_dict()["totals"] == {
        "accounts": 2,
        "uploads": 3,
        "objects": 9,
        "snapshots": 3,
        "expired_preauth": 3,
        "errors": 0,
        "suspicious": 0,
        "staging": 0,
    }

    # A second night finds nothing more to do.
    again = run_cleanup(backend.store(), now=NOW)
    assert (again.total_uploads, again.total_objects, again.total_expired_preauth) == (0, 0, 0)


def test_the_newest_snapshots_upload_is_kept_however_old(backend: Backend, world: World) -> None:
    # A year later, only each account's newest snapshot (by partition date) survives among ingest uploads.
    report = run_cleanup(backend.store(), now=NOW + timedelta(days=365))

    assert report.account(A).kept_newest == world.a_new
    assert report.account(B).kept_newest == world.b_newest  # not b_backfill, which was created later
    ingest_left = {
        row[0]
        for row in backend.rows("select upload_id from snapshots where label = ?", ("Orchestrated Update",))
    }
    assert ingest_left == {world.a_new, world.b_newest}
    assert set(objects_of(world.a_new, world.b_newest)) <= backend.keys()


def test_dry_run_changes_nothing_and_reports_what_the_run_then_does(backend: Backend, world: World) -> None:
    before = backend.state()
    planned = plan_cleanup(backend.store(), now=NOW)
    also_planned = run_cleanup(backend.store(), now=NOW, dry_run=True)

    assert backend.state() == before
    assert planned.dry_run and also_planned.dry_run
    assert summary(also_planned) == summary(planned)

    done = run_cleanup(backend.store(), now=NOW)
    assert summary(done) == summary(planned)
    assert (planned.total_uploads, planned.total_objects, planned.total_snapshots) == (3, 9, 3)


def test_retention_is_configurable(backend: Backend, world: World) -> None:
    assert plan_cleanup(backend.store(), now=NOW, retention_days=365).total_uploads == 0
    # With one day, everything but each account's newest and the uploads of the last day goes.
    report = plan_cleanup(backend.store(), now=NOW, retention_days=1)
    assert report.account(A).uploads == [world.a_old1, world.a_old2, world.a_edge]
    assert report.account(B).uploads == [world.b_old, world.b_backfill]


def test_only_the_named_accounts_are_touched(backend: Backend, world: World) -> None:
    before = backend.state()
    report = run_cleanup(backend.store(), now=NOW, account_ids=[B.upper()])

    assert [a.account_id for a in report.accounts] == [B]
    assert report.unowned_expired_preauth == []  # only a run over every account expires those
    assert upload_ids(backend) == {row[0] for row in before["uploads"]} - {world.b_old}
    assert set(objects_of(world.a_old1, world.a_old2)) <= backend.keys()
    assert status(backend, world.a_preauth_expired) == "preauth"
    assert status(backend, world.unowned_preauth) == "preauth"
    assert status(backend, world.b_preauth_expired) == "expired"


def test_an_upload_another_accounts_snapshot_references_is_kept(backend: Backend, world: World) -> None:
    """Deleting it would null B's snapshot's upload_id: B's data. (Inconsistent, but possible.)"""
    foreign = dashboard_snapshot(backend, B, world.a_old1, at("03-01"))

    report = run_cleanup(backend.store(), now=NOW)

    assert report.account(A).uploads == [world.a_old2]
    assert world.a_old1 in upload_ids(backend)
    assert set(objects_of(world.a_old1)) <= backend.keys()
    assert backend.rows("select upload_id from snapshots where id = ?", (foreign,)) == [(world.a_old1,)]


@pytest.mark.parametrize("failing_remove", [1, 2])
def test_a_storage_failure_keeps_the_rows_and_the_next_night_finishes(
    backend: Backend, world: World, failing_remove: int
) -> None:
    w = world

    def on_remove(call: int, keys: Sequence[str], inner: ObjectStore) -> None:
        if call == failing_remove:  # A's old1 (1) or old2 (2): A is cleaned first
            backend.outage(keys)
        inner.remove(keys)

    before = backend.state()
    with pytest.raises(CleanupError, match=f"upload {(w.a_old1, w.a_old2)[failing_remove - 1]}") as caught:
        run_cleanup(backend.store(HookedObjects(backend.objects, on_remove)), now=NOW)

    report = caught.value.report
    a, b = report.accounts
    cleared = [w.a_old1] if failing_remove == 2 else []
    assert a.error and a.uploads == cleared and a.snapshots == len(cleared)
    assert a.expired_preauth == [w.a_preauth_expired]  # independent of storage
    assert b.error is None and b.uploads == [w.b_old]  # the other account is still cleaned
    assert report.errors == {A: a.error}
    # The failing upload (and A's later ones) keep their rows and objects; only cleared uploads went.
    assert upload_ids(backend) == {row[0] for row in before["uploads"]} - {*cleared, w.b_old}
    assert set(objects_of(w.a_old2)) <= backend.keys()
    assert derived_counts(backend, w.snapshots[w.a_old2]) == (2, 2)

    retry = run_cleanup(backend.store(), now=NOW)
    assert retry.account(A).uploads == [u for u in (w.a_old1, w.a_old2) if u not in cleared]
    assert not {w.a_old1, w.a_old2} & upload_ids(backend)
    assert not set(objects_of(w.a_old1, w.a_old2)) & backend.keys()


def test_an_upload_rewritten_during_cleanup_keeps_its_rows(backend: Backend, world: World) -> None:
    """A backfill of the partition lands between the object removal and the row deletion."""
    w = world

    def on_remove(call: int, keys: Sequence[str], inner: ObjectStore) -> None:
        inner.remove(keys)
        if call == 1:  # A's old1: the rerun writes its files again, then its rows
            nightly(backend, A, day("04-01"), at("04-02"))

    report = run_cleanup(backend.store(HookedObjects(backend.objects, on_remove)), now=NOW)

    a = report.account(A)
    assert (a.uploads, a.skipped, a.snapshots) == ([w.a_old2], [w.a_old1], 1)
    assert w.a_old1 in upload_ids(backend)
    assert set(objects_of(w.a_old1)) <= backend.keys()  # no rows-less objects left behind
    assert derived_counts(backend, w.snapshots[w.a_old1]) == (2, 2)


def test_accounts_without_old_uploads_and_an_empty_store(backend: Backend) -> None:
    assert run_cleanup(backend.store(), now=NOW).accounts == []
    backend.tables.ensure_account(A, "Acme")
    nightly(backend, A, day("06-28"), at("06-29"))
    report = run_cleanup(backend.store(), now=NOW)
    assert [(a.account_id, a.uploads, a.objects, a.snapshots) for a in report.accounts] == [(A, [], [], 0)]


def test_default_now_is_the_current_time(backend: Backend) -> None:
    backend.tables.ensure_account(A, "Acme")
    old, _ = nightly(backend, A, day("01-01"), datetime.now(UTC) - timedelta(days=40))
    new, _ = nightly(backend, A, day("01-02"), datetime.now(UTC) - timedelta(days=35))
    before = datetime.now(UTC)
    report = plan_cleanup(backend.store())
    after = datetime.now(UTC)
    assert (report.account(A).uploads, report.account(A).kept_newest) == ([old], new)
    assert report.now is not None and before <= report.now <= after


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"retention_days": 0}, "retention_days"),
        ({"retention_days": -3}, "retention_days"),
        ({"retention_days": True}, "retention_days"),
        ({"retention_days": 1.5}, "retention_days"),
        ({"now": datetime(2026, 6, 30)}, "timezone-aware"),
        ({"account_ids": ["../etc"]}, "Account id must be the dashboard.s account uuid"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_touched(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    tables = IngestTables.sqlite(tmp_path / "ingest.sqlite3")
    store = IngestStore(LocalObjectStore(tmp_path / "objects", BUCKET), tables, owns_accounts=True)
    with pytest.raises(ValueError, match=message):
        run_cleanup(store, **kwargs)
    with pytest.raises(TypeError, match="not a single string"):
        run_cleanup(store, account_ids=A)
    assert not (tmp_path / "ingest.sqlite3").exists()


# --- Storage's quiet answers: an empty listing is no proof (contracts/supabase.md) ---------------------


@pytest.mark.parametrize(
    "store_settings",
    [
        {"bucket": "no-such-bucket"},
        {"service_role_key": DEFAULT_ANON_KEY},
        {"service_role_key": "sb-wrong-" + "0" * 30},
    ],
    ids=["wrong bucket", "key limited by row-level security", "refused key"],
)
def test_a_wrong_bucket_or_a_key_without_rights_deletes_no_row(
    supabase_double: SupabaseStorageDouble,
    supabase_store_factory: Callable[..., SupabaseObjectStore],
    clean_postgres: str,
    store_settings: dict[str, str],
) -> None:
    """The double answers list and remove with 200 [] there, as the real server does: the old cleanup
    deleted every old upload's rows and orphaned its files for ever."""
    tables = IngestTables.postgres(clean_postgres)
    tables.ensure_account(A, "Acme")
    backend = Backend(
        "postgres+supabase", tables, supabase_double, put=lambda key: None, keys=set, outage=print
    )
    backend.put = lambda key, written=None: supabase_double.put_object(key, b"csv\n")
    old, _ = nightly(backend, A, day("04-01"), at("04-02"))
    nightly(backend, A, day("06-28"), at("06-29"))
    before = (backend.rows("select id from uploads order by id"), supabase_double.objects)

    store = IngestStore(objects=supabase_store_factory(**store_settings), tables=tables, owns_accounts=True)
    for dry_run in (True, False):
        with pytest.raises(CleanupError, match="storage check failed") as caught:
            run_cleanup(store, now=NOW, dry_run=dry_run)
        report = caught.value.report
        assert report.storage_error and report.total_uploads == 0 and report.total_objects == 0
        assert (backend.rows("select id from uploads order by id"), supabase_double.objects) == before
    assert derived_counts(
        backend, backend.rows("select id from snapshots where upload_id = ?", (old,))[0][0]
    ) == (2, 2)


class SilentRemove(HookedObjects):
    """A store whose remove answers and removes nothing (as Storage does for a limited key)."""

    def __init__(self, inner: ObjectStore, probe_too: bool) -> None:
        super().__init__(inner, lambda call, keys, inner: None)
        self.probe_too = probe_too

    def remove(self, keys: Sequence[str]) -> None:
        if not self.probe_too and all(key.startswith(f"{PROBE_FOLDER}/") for key in keys):
            self.inner.remove(keys)


def test_a_remove_that_removes_nothing_fails_the_probe(backend: Backend, world: World) -> None:
    before = backend.state()
    with pytest.raises(CleanupError, match="left it in place") as caught:
        run_cleanup(backend.store(SilentRemove(backend.objects, probe_too=True)), now=NOW)
    assert caught.value.report.total_uploads == 0
    after = backend.state()
    ours = [key for key in after["objects"] if not key.startswith(f"{PROBE_FOLDER}/")]  # its marker stayed
    assert ours == before["objects"] and after["snapshots"] == before["snapshots"]


def test_objects_still_listed_after_a_remove_keep_the_rows(backend: Backend, world: World) -> None:
    with pytest.raises(CleanupError, match="still listed") as caught:
        run_cleanup(backend.store(SilentRemove(backend.objects, probe_too=False)), now=NOW)
    a, b = caught.value.report.accounts
    assert a.uploads == [] and b.uploads == [] and a.error and b.error
    assert {world.a_old1, world.a_old2, world.b_old} <= upload_ids(backend)


def test_an_old_upload_whose_folder_lists_nothing_is_reported_and_kept(
    backend: Backend, world: World
) -> None:
    w = world
    backend.objects.remove(objects_of(w.a_old1))  # gone by hand, or a listing that lies

    planned = plan_cleanup(backend.store(), now=NOW)
    report = run_cleanup(backend.store(), now=NOW)

    for result in (planned, report):
        a = result.account(A)
        assert a.uploads == [w.a_old2] and list(a.suspicious) == [w.a_old1]
        assert "lists no object" in a.suspicious[w.a_old1]
        assert result.as_dict()["totals"]["suspicious"] == 1
    assert w.a_old1 in upload_ids(backend)
    assert derived_counts(backend, w.snapshots[w.a_old1]) == (2, 2)


def test_a_cleanup_that_died_between_objects_and_rows_is_finished_by_the_next(
    backend: Backend, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mark on the row says the empty folder is cleanup's own doing: no row is left for ever."""
    from klaviyo_dagster.storage import cleanup

    def lost_connection(*args: object) -> None:
        raise ConnectionError("the database went away (simulated)")

    with monkeypatch.context() as patched:
        patched.setattr(cleanup._Sql, "delete_uploads", lost_connection)
        with pytest.raises(ConnectionError):
            run_cleanup(backend.store(), now=NOW)
    # Rows go per upload, under its publish lock: the first upload's objects are gone, its rows left.
    assert not set(objects_of(world.a_old1)) & backend.keys()
    assert set(objects_of(world.a_old2)) <= backend.keys()
    marks = backend.rows("select error from uploads where id = ?", (world.a_old1,))
    assert marks == [(cleanup_mark(backend.objects),)]
    assert marks[0][0].startswith(CLEANUP_MARK) and backend.objects.describe() in marks[0][0]

    report = run_cleanup(backend.store(), now=NOW)
    assert report.account(A).uploads == [world.a_old1, world.a_old2] and report.account(A).suspicious == {}
    assert not {world.a_old1, world.a_old2} & upload_ids(backend)


# --- staging objects ------------------------------------------------------------------------------------


def test_an_old_uploads_staging_objects_go_with_it(backend: Backend, world: World) -> None:
    staged = [
        f"{world.a_old1}/.staging.flows.csv",
        f"{world.a_old1}/.staging/run-1/flows.csv",
        f"{world.a_old1}/.staging/run-1/campaigns.csv",
    ]
    for key in staged:
        backend.put(key)
    report = run_cleanup(backend.store(), now=NOW)
    assert sorted(report.account(A).objects) == sorted([*objects_of(world.a_old1, world.a_old2), *staged])
    assert not [key for key in sorted(backend.keys()) if key.startswith(world.a_old1)]


def test_orphaned_staging_objects_of_kept_uploads_are_removed_when_old(
    backend: Backend, world: World
) -> None:
    new = world.a_new
    stale = [
        f"{new}/.staging.flows.csv",
        f"{new}/.staging/run-dead/flows.csv",
        f"{new}/.staging/run-dead/subscribers.csv",
    ]
    fresh = [f"{new}/.staging/run-live/flows.csv", f"{new}/.staging.campaigns.csv"]
    for key in stale:
        backend.put(key, written=NOW - timedelta(hours=30))
    backend.put(f"{new}/.staging/run-half/flows.csv", written=NOW - timedelta(hours=30))
    backend.put(f"{new}/.staging/run-half/campaigns.csv", written=NOW - timedelta(hours=1))
    for key in fresh:
        backend.put(key, written=NOW - timedelta(hours=1))
    final = set(objects_of(new))

    planned = plan_cleanup(backend.store(), now=NOW)
    assert sorted(planned.account(A).staging) == sorted(stale)
    assert set(stale) <= backend.keys()  # a dry run removes nothing

    report = run_cleanup(backend.store(), now=NOW)
    assert sorted(report.account(A).staging) == sorted(stale)
    assert report.as_dict()["totals"]["staging"] == 3
    left = backend.keys()
    assert not set(stale) & left
    assert {
        *fresh,
        *final,
        f"{new}/.staging/run-half/flows.csv",
    } <= left  # a run folder goes whole or not at all
    assert plan_cleanup(backend.store(), now=NOW, staging_max_age=timedelta(minutes=30)).account(A).staging


def test_staging_max_age_must_be_positive(backend: Backend) -> None:
    with pytest.raises(ValueError, match="staging_max_age"):
        run_cleanup(backend.store(), now=NOW, staging_max_age=timedelta(0))


# --- the mark is trusted only for its bucket ---------------------------------------------------------


def test_a_mark_left_by_a_failed_night_proves_nothing_for_another_bucket(
    backend: Backend, world: World, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Night 1 marks an old upload and its remove fails; night 2 runs against another bucket that
    exists but is empty (a typo'd DATA_INGEST_BUCKET): the empty listing plus the stale mark must
    not delete the rows (``contracts/supabase.md``: an empty listing is no proof)."""

    def failing_remove(number: int, keys: Sequence[str], inner: ObjectStore) -> None:
        backend.outage(keys)

    with pytest.raises(CleanupError):
        run_cleanup(backend.store(HookedObjects(backend.objects, failing_remove)), now=NOW)
    marks = backend.rows("select error from uploads where id = ?", (world.a_old1,))
    assert marks == [(cleanup_mark(backend.objects),)]
    before = backend.state()

    if backend.name == "postgres+supabase":
        double = request.getfixturevalue("supabase_double")
        with double.state.lock:
            double.state.buckets["other-bucket"] = {}
        other: ObjectStore = request.getfixturevalue("supabase_store_factory")(bucket="other-bucket")
    else:
        other = LocalObjectStore(tmp_path / "other", "other-bucket")
    try:
        report = run_cleanup(backend.store(other), now=NOW)
    finally:
        if backend.name == "postgres+supabase":
            with double.state.lock:
                double.state.buckets.pop("other-bucket", None)
    a = report.account(A)
    assert a.uploads == [] and world.a_old1 in a.suspicious
    assert backend.state()["uploads"] == before["uploads"]
    assert backend.state()["snapshots"] == before["snapshots"]

    # The right bucket again: the objects are there, so the upload goes as usual.
    report = run_cleanup(backend.store(), now=NOW)
    assert world.a_old1 in report.account(A).uploads
