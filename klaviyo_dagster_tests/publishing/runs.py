"""Helpers for the publish tests: per-run files, both stores, the dashboard's invariant, crash injection.

Every run's three files carry its run id in their text and its own numbers, so which run a stored
file, a snapshot's metadata or its derived rows come from can be told apart byte for byte.
"""

from __future__ import annotations

import io
import os
import signal
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from klaviyo_dagster.derived_rows import SnapshotMetrics
from klaviyo_dagster.processing.metrics import compute_metrics, daily_totals
from klaviyo_dagster.publishing.publish import (
    FILE_NAMES,
    Published,
    PublishRequest,
    final_key,
    publish,
    staging_key,
)
from klaviyo_dagster.storage.ids import nightly_upload_id
from klaviyo_dagster.storage.objects import ObjectStore
from klaviyo_dagster.storage.store import IngestStore
from klaviyo_dagster.storage.tables import IngestTables, Timeouts, _Transaction
from klaviyo_dagster_tests.storage.stores import ACCOUNT, postgres_store, sqlite_store

DAY = date(2026, 3, 9)
BASE_DAY = DAY - timedelta(days=1)
UPLOAD = nightly_upload_id(ACCOUNT, DAY)
BASE_UPLOAD = nightly_upload_id(ACCOUNT, BASE_DAY)
SHORT = Timeouts(lock_seconds=2, statement_seconds=10, publish_lock_seconds=5)

FLOWS_HEADER = (
    "Day,Flow Name,Flow Message Channel,Delivered,Unique Opens,Unique Clicks,Placed Order,Revenue,"
    "Unsub Rate,Complaint Rate,Bounce Rate"
)
CAMPAIGNS_HEADER = (
    "Campaign Name,Send Time,Total Recipients,Unique Placed Order,Revenue,Unique Opens,Unique Clicks,"
    "Unsubscribes,Spam Complaints,Bounces"
)


def window_of(day: date, days: int) -> tuple[date, date]:
    return day - timedelta(days=days - 1), day


def run_files(run_id: str, day: date = DAY, days: int = 3) -> dict[str, bytes]:
    """Three valid files that name ``run_id`` and whose numbers depend on it."""
    seed = zlib.crc32(run_id.encode()) % 500 + 100
    first, _ = window_of(day, days)
    flows = [FLOWS_HEADER] + [
        f"{first + timedelta(days=n)},Welcome {run_id},email,{seed + n},{seed // 2},{seed // 5},{n + 1},"
        f"{seed * 1.5 + n},0.01,0.001,0.02"
        for n in range(days)
    ]
    campaigns = [
        CAMPAIGNS_HEADER,
        f"Launch {run_id},{day}T11:30:00-04:00,{seed * 3},4,{seed * 2.25},{seed},{seed // 3},2,1,5",
    ]
    subscribers = ["Email,Source", f"a@example.com,{run_id}", f"b@example.com,{run_id}"]
    return {
        "flows.csv": ("\n".join(flows) + "\n").encode(),
        "campaigns.csv": ("\n".join(campaigns) + "\n").encode(),
        "subscribers.csv": ("\n".join(subscribers) + "\n").encode(),
    }


@dataclass
class Run:
    """A run of a partition: its id, its files, its window."""

    run_id: str
    day: date = DAY
    days: int = 3

    @property
    def upload_id(self) -> str:
        return nightly_upload_id(ACCOUNT, self.day)

    @property
    def files(self) -> dict[str, bytes]:
        return run_files(self.run_id, self.day, self.days)

    def request(self, refresh_newest: bool = False) -> PublishRequest:
        window = window_of(self.day, self.days)
        return PublishRequest(
            upload_id=self.upload_id,
            account_id=ACCOUNT,
            partition_date=self.day,
            window=window,
            run_id=self.run_id,
            metadata={
                "partition_date": self.day.isoformat(),
                "window": {"first_day": window[0].isoformat(), "last_day": window[1].isoformat()},
            },
            expected_rows={"flows.csv": self.days, "campaigns.csv": 1, "subscribers.csv": 2},
            refresh_newest=refresh_newest,
        )


def stage(objects: ObjectStore, run: Run, tmp: Path, files: dict[str, bytes] | None = None) -> None:
    """What the IO manager does for each file asset: the file under the run's staging name."""
    for name, data in (files or run.files).items():
        path = tmp / f"{run.run_id}-{name}"
        path.write_bytes(data)
        objects.upload(staging_key(run.upload_id, run.run_id, name), path)
        path.unlink()


def stage_and_publish(
    store: IngestStore, run: Run, tmp: Path, refresh_newest: bool = False, **kwargs: Any
) -> Published:
    stage(store.objects, run, tmp)
    return publish(store, run.request(refresh_newest), timeouts=kwargs.pop("timeouts", SHORT), **kwargs)


def read_object(objects: ObjectStore, key: str, tmp: Path) -> bytes | None:
    path = tmp / "read.csv"
    try:
        objects.download(key, path)
    except Exception:
        return None
    data = path.read_bytes()
    path.unlink()
    return data


def expected_metrics(
    run: Run, previous: Sequence[Any] = (), previous_last: date | None = None
) -> SnapshotMetrics:
    files = run.files
    current = daily_totals(
        io.StringIO(files["flows.csv"].decode(), newline=""),
        io.StringIO(files["campaigns.csv"].decode(), newline=""),
    )
    return compute_metrics(current, window_of(run.day, run.days), previous, previous_last)


def assert_dashboard_consistent(store: IngestStore, runs: dict[str, Run], tmp: Path, where: str = "") -> None:
    """The contract's invariant: every ready snapshot of the account (so the newest one too), its
    derived rows and the three files in its folder come from the run its metadata names."""
    tables = store.tables
    base = tables.snapshot_for_upload(BASE_UPLOAD)
    base = base if base is not None and base.status == "ready" else None  # history is read from ready ones
    for upload_id in (BASE_UPLOAD, UPLOAD):
        row = tables.snapshot_for_upload(upload_id)
        if row is None or row.status != "ready":
            continue
        run_id = row.metadata.get("dagster_run_id")
        assert run_id in runs, f"{where}: ready snapshot names an unknown run {run_id!r}"
        run = runs[run_id]
        assert "publishing" not in row.metadata, where
        for name in FILE_NAMES:
            stored = read_object(store.objects, final_key(upload_id, name), tmp)
            assert stored == run.files[name], f"{where}: {upload_id}/{name} is not run {run_id}'s"
        if upload_id == UPLOAD and base is not None:
            expected = expected_metrics(run, tables.series(base.id), base.last_email_date)
        else:
            expected = expected_metrics(run)
        assert tables.totals(row.id) == _approx(expected.totals, tables.totals(row.id)), where
        assert len(tables.series(row.id)) == len(expected.series), where
        assert row.last_email_date == expected.last_email_date, where


def _approx(expected: dict[str, float], actual: dict[str, float]) -> dict[str, float]:
    """``actual`` when every value is within 1e-6 (relative) of ``expected``, else ``expected``."""
    close = expected.keys() == actual.keys() and all(
        abs(actual[k] - v) <= 1e-6 * max(1.0, abs(v)) for k, v in expected.items()
    )
    return actual if close else expected


def assert_repaired(store: IngestStore, run: Run, tmp: Path) -> None:
    """Exactly one ready snapshot for the upload, from ``run``, and only the three final files left."""
    tables = store.tables
    assert tables.count_snapshots(UPLOAD) == 1
    row = tables.snapshot_for_upload(UPLOAD)
    assert row is not None and row.status == "ready" and row.metadata["dagster_run_id"] == run.run_id
    assert_dashboard_consistent(store, {run.run_id: run, "base": Run("base", BASE_DAY)}, tmp, "repaired")
    assert sorted(store.objects.list(UPLOAD)) == sorted(FILE_NAMES)


# --- crash injection -------------------------------------------------------------------------------------


class Crash(Exception):
    """The injected crash (the exception variant)."""


class CrashPoints:
    """Counts every Storage call and database statement while armed; the ``at``-th one crashes
    right after it completed: an exception, or SIGKILL of the whole process."""

    def __init__(self, at: int | None = None, kill: bool = False) -> None:
        self.at = at
        self.kill = kill
        self.labels: list[str] = []
        self.armed = False

    def tick(self, label: str) -> None:
        if not self.armed:
            return
        self.labels.append(label)
        if self.at is not None and len(self.labels) == self.at:
            self.armed = False
            if self.kill:
                os.kill(os.getpid(), signal.SIGKILL)
            raise Crash(f"crash after #{self.at}: {label}")


class CrashingObjects:
    """An object store that reports each completed call to ``points``."""

    COUNTED = ("upload", "download", "list", "list_modified", "remove", "remove_stale_temp_files")

    def __init__(self, inner: ObjectStore, points: CrashPoints) -> None:
        self._inner = inner
        self._points = points
        self.bucket = inner.bucket

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name not in self.COUNTED:
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            result = attribute(*args, **kwargs)
            self._points.tick(f"storage {name} {args[0] if args else ''}")
            return result

        return counted

    def upload(self, key: str, source: Path, content_type: str = "text/csv") -> None:
        return self.__getattr__("upload")(key, source, content_type)

    def download(self, key: str, destination: Path) -> None:
        return self.__getattr__("download")(key, destination)

    def list(self, prefix: str) -> list[str]:
        return self.__getattr__("list")(prefix)

    def remove(self, keys: Sequence[str]) -> None:
        return self.__getattr__("remove")(keys)

    def describe(self) -> str:
        return self._inner.describe()


@contextmanager
def crash_points(store: IngestStore, points: CrashPoints) -> Iterator[IngestStore]:
    """``store`` with its object calls and every database statement (and commit) counted."""
    originals: dict[tuple[type, str], Callable[..., Any]] = {}

    def wrap(owner: type, name: str, label: Callable[[tuple[Any, ...]], str]) -> None:
        real = getattr(owner, name)
        originals[(owner, name)] = real

        def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = real(self, *args, **kwargs)
            points.tick(label(args))
            return result

        setattr(owner, name, counted)

    wrap(_Transaction, "execute", lambda args: "sql " + " ".join(str(args[0]).split())[:70])
    wrap(_Transaction, "executemany", lambda args: "sql many " + " ".join(str(args[0]).split())[:60])
    wrap(_Transaction, "commit", lambda args: "sql commit")
    wrap(IngestTables, "_one", lambda args: "sql read " + " ".join(str(args[0]).split())[:60])
    wrap(IngestTables, "_all", lambda args: "sql read " + " ".join(str(args[0]).split())[:60])
    try:
        yield IngestStore(CrashingObjects(store.objects, points), store.tables, store.owns_accounts)  # type: ignore[arg-type]
    finally:
        for (owner, name), real in originals.items():
            setattr(owner, name, real)


# --- a publish in a process of its own, SIGKILLed at a crash point ------------------------------------


@dataclass(frozen=True)
class StoreSpec:
    """How a child process rebuilds the store (nothing shared with the parent's connections)."""

    kind: str  # "postgres" (Storage double + PostgreSQL) or "sqlite" (folder + SQLite)
    root: str = ""
    double_url: str = ""
    service_key: str = ""
    dsn: str = ""

    def build(self) -> IngestStore:
        if self.kind == "sqlite":
            return sqlite_store(Path(self.root))
        return postgres_store(self.double_url, self.service_key, self.dsn)


def publish_and_die(spec: StoreSpec, run: Run, at: int) -> None:
    """The child: publish ``run`` and SIGKILL itself right after the ``at``-th counted call."""
    points = CrashPoints(at, kill=True)
    with crash_points(spec.build(), points) as store:
        points.armed = True
        publish(store, run.request(), timeouts=SHORT)
