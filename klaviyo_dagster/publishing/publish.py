"""Publishing a partition: a run's three staged files and its snapshot, all or nothing for the dashboard.

The rule (``contracts/supabase.md``, "Publishing is all or nothing, as the dashboard sees it"): at
every instant, the newest ready snapshot of an account, its derived rows and the three files in its
folder come from one run. Storage and the database share no transaction, so the order of steps
makes it hold:

1. Each file asset stores its file under a per-run staging name,
   ``{uploadId}/.staging/{runId}/{name}`` (:func:`staging_key`); nothing the dashboard reads changes.
2. :func:`publish` downloads the run's three staged files and checks them: each is UTF-8 CSV with a
   header, every record as wide as its header, flows.csv and campaigns.csv parse into daily totals
   (a non-number fails here) that lie inside the window, and the row counts are the ones the run
   recorded. Any failure stops here. A file of ``RECOGNIZED_FROM_BYTES`` or more that is byte for
   byte the same (SHA-256) as one published before (``CheckedBefore``: the day's audience, published
   again for each date of a backfill) is not parsed again; the row counts and daily totals are still
   checked.
3. It takes the upload's publish lock and holds it to the end (a Postgres session advisory lock, or
   ``flock`` beside the SQLite file; a timeout instead of waiting forever), so two publishes of one
   partition never interleave.
4. In one committed transaction: the upload is bound and its one snapshot (same id across reruns,
   inserted on the first run) goes to status ``error`` with ``metadata.publishing`` naming the run.
   The dashboard now shows the account's previous ready snapshot, if any.
5. The checked local copies are uploaded over the three final keys.
6. In one transaction, after the last file is in place: derived rows replaced, metadata set (the
   run, partition date, window, rows), status ``ready``. The derived rows are computed in that
   transaction from these files' daily totals (``processing/metrics.py``) and the account's history
   as an in-order run of its earlier partitions would carry it, whatever order they were published in
   (``IngestTables.history``; ``contracts/supabase.md``, "History"). With ``refresh_newest`` the
   same transaction recomputes the derived rows of the account's newest ready snapshot with a later
   partition date, so the snapshot the dashboard reads gets the history a backfill just published
   (see :class:`PublishRequest`). With a remote processor the metadata is committed first (still
   ``error``), the processor is asked, and only after its 2xx is the snapshot made ready.
7. Housekeeping, which cannot undo the publish: this run's staging objects are removed, so are other
   runs' staging folders last written more than ``stale_staging_after`` ago, and (local store) temp
   files of interrupted writes.

A publish that dies anywhere leaves the snapshot ``error`` (or ``ready`` with all three files of one
run); the next run of the partition runs the whole protocol from its own staged files, which repairs
it. Every database statement runs under lock and statement timeouts (``Timeouts``).

**A lost lock.** The Postgres lock lives in a session of its own, which can end while the process
lives (an admin's ``pg_terminate_backend``, a server idle timeout, a dropped network); another run
may then publish the same folder. The lock session turns the server's idle timeouts off and uses TCP
keepalives, and before every final-file upload (and before each ``finish_publish``) the publish checks
on that session that it still holds the lock; if not, it stops before touching another file
(:class:`PublishInterrupted`). When it had already uploaded a final file, or ``finish_publish`` found
another run owning the snapshot, it first takes the snapshot out of ``ready`` in a committed step on a
fresh connection (``abandon_publish``: status ``error``, ``metadata.needs_republish``), and no run
makes a snapshot ready while that note is set: the next run of the partition clears it and repairs
the folder. The residual window: a process killed (or whose database is unreachable) after its lock
session is already gone, with an upload in flight that lands after another run's — nothing is left to
take the snapshot out of ``ready``. Keep it small: publish over a direct or session-pooler
connection; Supabase's transaction pooler (port 6543) cannot hold a session advisory lock at all.

Plain Python: nothing here knows Dagster. ``run_id`` is any safe key part (Dagster's run id there).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import logging
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, Protocol, runtime_checkable

import psycopg

from klaviyo_dagster.derived_rows import SnapshotMetrics
from klaviyo_dagster.processing.metrics import DayTotals, OwnActivity, daily_totals
from klaviyo_dagster.storage.objects import (
    CSV_OBJECT_NAMES,
    KnowsModifiedTimes,
    ObjectNotFound,
    ObjectStore,
    StorageError,
    validate_object_key,
)
from klaviyo_dagster.storage.store import IngestStore
from klaviyo_dagster.storage.tables import (
    Derivation,
    Finished,
    PublishLock,
    PublishLockLost,
    PublishSuperseded,
    Timeouts,
    history_metadata,
)

log = logging.getLogger(__name__)

FILE_NAMES = CSV_OBJECT_NAMES
STAGING_FOLDER = ".staging"
DEFAULT_STALE_STAGING_AFTER = timedelta(hours=6)

# Asks the web app's processor to compute a snapshot's metrics; raises unless it answered 2xx.
Processor = Callable[[str], None]


class PublishError(Exception):
    """The partition could not be published; what the dashboard sees is unchanged or not ready."""


class StagedFileMissing(PublishError):
    """The run did not stage one of its three files (or it is gone)."""


class StagedFileInvalid(PublishError):
    """A staged file does not parse, or does not hold what the run recorded."""


class PublishTimedOut(PublishError):
    """A statement of the publish waited too long for a lock, or ran too long (``Timeouts``)."""


class PublishInterrupted(PublishError):
    """The publish lost its lock, or another run took the snapshot over, mid-publish; if this run had
    changed a final file, the snapshot was taken out of ``ready`` first (it needs a republish)."""


# Tests shorten these; the Dagster layer uses them as they are.
DEFAULT_TIMEOUTS = Timeouts()


@dataclass(frozen=True)
class PublishRequest:
    """One run's publish of one partition.

    ``metadata`` is stored on the snapshot (source, ...); ``partition_date``, ``window`` (the
    history of later snapshots reads both), ``rows`` and ``dagster_run_id`` are set here from the
    request and the files. ``expected_rows`` (file name → data records), when given, must match the
    staged files.

    ``refresh_newest``: when the account has a ready snapshot with a later partition date than this
    one, the newest such snapshot's derived rows (totals, series, ``last_email_date``) are
    recomputed, in the transaction that makes this snapshot ready, to what an in-order run of all the
    account's partitions would give it (``contracts/supabase.md``, "History"). The caller sets it on
    the publish that ends a backfill or catch-up of the account (once, not on every date), and that
    publish must come after the others have finished. Snapshots strictly between this one and the
    newest keep the history they were published with: the dashboard reads only the newest. Ignored
    with a remote processor, which computes the history itself.
    """

    upload_id: str
    account_id: str
    partition_date: date
    window: tuple[date, date]
    run_id: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    expected_rows: Mapping[str, int] | None = None
    refresh_newest: bool = False


@dataclass(frozen=True)
class Published:
    snapshot_id: str
    rows: dict[str, int]
    metrics: SnapshotMetrics | None
    removed: list[str]  # staging objects and temp files cleaned up afterwards
    refreshed: str | None = None  # the newer snapshot whose derived rows refresh_newest replaced
    recognized: tuple[str, ...] = ()  # files not parsed again (``CheckedBefore``)


@dataclass(frozen=True)
class CheckedFiles:
    """The run's staged files as checked local copies, with their data records (taken from
    ``CheckedBefore`` for the ``recognized`` ones)."""

    paths: dict[str, Path]
    rows: dict[str, int]
    digests: dict[str, str]  # SHA-256 (hex) of the files worth remembering (RECOGNIZED_FROM_BYTES)
    recognized: tuple[str, ...] = ()  # files taken from ``CheckedBefore`` instead of parsed again


# Smaller files are always parsed: below about 1 MiB the parse costs less than asking the database.
RECOGNIZED_FROM_BYTES = 1 << 20


class CheckedBefore(Protocol):
    """Files that passed the per-file check of step 2 before, by name and content (SHA-256, hex):
    the check reads nothing but the bytes, so the same bytes pass again with the same data records.
    ``remember`` is called only for the files of a publish that made its snapshot ready."""

    def rows(self, name: str, sha256: str) -> int | None: ...

    def remember(self, name: str, sha256: str, rows: int) -> None: ...


@runtime_checkable
class SweepsTempFiles(Protocol):
    def remove_stale_temp_files(self, prefix: str, before: datetime) -> list[str]: ...


def final_key(upload_id: str, name: str) -> str:
    """Where the dashboard reads the file (``contracts/supabase.md``, Storage)."""
    return validate_object_key(f"{upload_id}/{name}")


def staging_folder(upload_id: str, run_id: str | None = None) -> str:
    folder = f"{upload_id}/{STAGING_FOLDER}"
    return validate_object_key(f"{folder}/{run_id}" if run_id else folder)


def staging_key(upload_id: str, run_id: str, name: str) -> str:
    """A run's own name for a file until it is published: runs never share a staging name."""
    return validate_object_key(f"{staging_folder(upload_id, run_id)}/{name}")


def publish(
    store: IngestStore,
    request: PublishRequest,
    *,
    processor: Processor | None = None,
    timeouts: Timeouts | None = None,
    stale_staging_after: timedelta = DEFAULT_STALE_STAGING_AFTER,
    run_finished: Callable[[str], bool] = lambda run_id: False,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    checked_before: CheckedBefore | None = None,
) -> Published:
    """Publishes the run's staged files and the partition's snapshot in the order of the module doc.

    ``run_finished(run_id)`` says that another run is over (failed, killed, done), so its staging can
    go now rather than after ``stale_staging_after``. ``checked_before``: files that passed the
    per-file check before, which are not parsed again (step 2); this publish's files are added once
    its snapshot is ready.
    """
    timeouts = timeouts or DEFAULT_TIMEOUTS
    with tempfile.TemporaryDirectory(prefix="klaviyo-publish-") as folder, _timeouts_named(request):
        checked = check_staged_files(store.objects, request, Path(folder), checked_before)
        derivation = None if processor else _derivation(request, checked)
        if processor is not None and request.refresh_newest:
            log.warning(
                "publish of upload %s: refresh_newest is ignored with a remote processor", request.upload_id
            )
        with store.tables.publish_lock(request.upload_id, timeouts) as lock:
            _held(lock, request, None)
            snapshot_id = store.tables.begin_publish(
                upload_id=request.upload_id,
                account_id=request.account_id,
                run_id=request.run_id,
                timeouts=timeouts,
            )
            touched: list[str] = []  # final files this run has started to upload
            try:
                _promote(store.objects, request.upload_id, checked, lock, touched)
                metadata = {
                    **request.metadata,
                    **history_metadata(request.partition_date, request.window),
                    "rows": _row_metadata(checked),
                    "dagster_run_id": request.run_id,
                }
                if processor is not None:
                    lock.ensure_held()
                    _finish(store, snapshot_id, request, metadata, None, ready=False, timeouts=timeouts)
                    processor(snapshot_id)
                lock.ensure_held()
                finished = _finish(
                    store, snapshot_id, request, metadata, derivation, ready=True, timeouts=timeouts
                )
            except (PublishLockLost, PublishSuperseded) as exc:
                raise _interrupted(store, request, snapshot_id, touched, exc, timeouts) from None
            _remember(checked, checked_before)
            removed = _housekeeping(store.objects, request, now() - stale_staging_after, run_finished)
    return Published(
        snapshot_id, checked.rows, finished.metrics, removed, finished.refreshed, checked.recognized
    )


def _held(lock: PublishLock, request: PublishRequest, snapshot_id: str | None) -> None:
    """Raises PublishInterrupted unless the publish lock is still held (nothing was changed yet)."""
    try:
        lock.ensure_held()
    except PublishLockLost as exc:
        raise PublishInterrupted(
            f"publish of upload {request.upload_id} by run {request.run_id} stopped before changing "
            f"anything: {exc}; rerun the partition"
        ) from None


def _interrupted(
    store: IngestStore,
    request: PublishRequest,
    snapshot_id: str,
    touched: list[str],
    cause: Exception,
    timeouts: Timeouts,
) -> PublishInterrupted:
    """The error for a publish that lost its lock or its snapshot; when this run had changed a final
    file, the snapshot is first taken out of ``ready`` (committed, on a fresh connection)."""
    where = f"publish of upload {request.upload_id} by run {request.run_id}"
    if not touched:
        return PublishInterrupted(
            f"{where} stopped before changing a final file: {cause}; rerun the partition"
        )
    reason = f"{type(cause).__name__}: {cause}"
    try:
        store.tables.abandon_publish(
            snapshot_id=snapshot_id, run_id=request.run_id, reason=reason, timeouts=timeouts
        )
    except Exception as exc:  # the database is unreachable too: say so, the error still stands
        log.error("%s could not take snapshot %s out of ready: %s", where, snapshot_id, exc)
        return PublishInterrupted(
            f"{where} stopped after uploading {', '.join(touched)}: {cause}. Taking snapshot {snapshot_id} "
            f"out of ready failed too ({type(exc).__name__}: {exc}): its folder may mix two runs' "
            "files; rerun the partition now"
        )
    return PublishInterrupted(
        f"{where} stopped after uploading {', '.join(touched)}: {cause}. Snapshot {snapshot_id} was "
        "taken out of ready (metadata.needs_republish): its folder needs a republish; rerun the partition"
    )


@contextmanager
def _timeouts_named(request: PublishRequest) -> Iterator[None]:
    """A lock or statement timeout (or SQLite's busy timeout) becomes PublishTimedOut."""
    try:
        yield
    except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled) as exc:
        raise PublishTimedOut(_timed_out(request, type(exc).__name__)) from None
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc):
            raise
        raise PublishTimedOut(_timed_out(request, "database is locked")) from None


def _timed_out(request: PublishRequest, reason: str) -> str:
    return (
        f"publish of upload {request.upload_id} by run {request.run_id} timed out ({reason}): another "
        "session holds its rows or the database is slow; the snapshot is not ready or unchanged, rerun the partition"
    )


# --- 2. check the staged files ------------------------------------------------------------------------


def check_staged_files(
    objects: ObjectStore, request: PublishRequest, folder: Path, checked_before: CheckedBefore | None = None
) -> CheckedFiles:
    """Downloads the run's three staged files into ``folder`` and checks each one (step 2); a file
    ``checked_before`` knows by its content is not parsed again."""
    paths: dict[str, Path] = {}
    for name in FILE_NAMES:
        key = staging_key(request.upload_id, request.run_id, name)
        paths[name] = folder / name
        try:
            objects.download(key, paths[name])
        except ObjectNotFound:
            raise StagedFileMissing(
                f"run {request.run_id} staged no {name} for upload {request.upload_id} ({key}): "
                "rerun the whole partition"
            ) from None
    digests: dict[str, str] = {}  # only with somewhere to remember them: hashing 40 MB costs ~45 ms
    known: dict[str, int | None] = {}
    if checked_before is not None:
        digests = {
            name: _sha256(path)
            for name, path in paths.items()
            if path.stat().st_size >= RECOGNIZED_FROM_BYTES
        }
        known = {name: checked_before.rows(name, digest) for name, digest in digests.items()}
    rows: dict[str, int] = {}
    for name in FILE_NAMES:
        kept = known.get(name)
        rows[name] = kept if kept is not None else _checked_rows(paths[name], name)
    _daily_totals(paths)  # flows.csv and campaigns.csv parse as the metrics read them
    for name, expected in (request.expected_rows or {}).items():
        if rows.get(name) != expected:
            raise StagedFileInvalid(
                f"staged {name} of run {request.run_id} has {rows.get(name)} data rows, the run recorded {expected}"
            )
    recognized = tuple(name for name in FILE_NAMES if known.get(name) is not None)
    return CheckedFiles(paths, rows, digests, recognized)


def _remember(checked: CheckedFiles, checked_before: CheckedBefore | None) -> None:
    if checked_before is None:
        return
    for name, digest in checked.digests.items():
        if name not in checked.recognized:
            checked_before.remember(name, digest, checked.rows[name])


def _sha256(path: Path) -> str:
    with path.open("rb") as raw:
        return hashlib.file_digest(raw, "sha256").hexdigest()


def _checked_rows(path: Path, name: str) -> int:
    """Data records of a CSV file; fails unless it is UTF-8 without a byte-order mark or NUL (csv.md,
    "Common rules"), with a header and RFC 4180 records as wide as it (a quote left open at the end
    of the file, as a cut-off upload leaves it, or text after a closing quote fails)."""
    _check_text_bytes(path, name)
    try:
        with path.open(encoding="utf-8", errors="strict", newline="") as text:
            reader = csv.reader(text, strict=True)
            header = next(reader, None)
            if not header or not any(header):
                raise StagedFileInvalid(f"staged {name} has no header")
            widths = Counter(map(len, reader))  # in C: a subscribers file has hundreds of thousands
            if set(widths) - {len(header)}:
                _raise_first_misfit(path, name, len(header))
            return widths.total()
    except (UnicodeDecodeError, csv.Error) as exc:
        raise StagedFileInvalid(
            f"staged {name} is not a readable UTF-8 CSV: {type(exc).__name__}: {exc}"
        ) from None


def _check_text_bytes(path: Path, name: str) -> None:
    with path.open("rb") as raw:
        if raw.read(len(codecs.BOM_UTF8)) == codecs.BOM_UTF8:
            raise StagedFileInvalid(f"staged {name} starts with a byte-order mark; the files are plain UTF-8")
        raw.seek(0)
        if any(b"\x00" in block for block in iter(lambda: raw.read(1 << 20), b"")):
            raise StagedFileInvalid(f"staged {name} holds a NUL byte; the producers drop them (csv.md)")


def _raise_first_misfit(path: Path, name: str, width: int) -> NoReturn:
    """Fails naming the first record of ``path`` that is not ``width`` fields wide (without a line
    if a second reading finds none: the file changed between the two)."""
    with path.open(encoding="utf-8", newline="") as text:
        reader = csv.reader(text, strict=True)
        next(reader, None)
        for record in reader:
            if len(record) != width:
                raise StagedFileInvalid(
                    f"staged {name} line {reader.line_num} has {len(record)} fields, its header {width}"
                )
    raise StagedFileInvalid(f"staged {name} has records that are not {width} fields wide, as its header")


def _daily_totals(paths: Mapping[str, Path]) -> dict[date, DayTotals]:
    """Daily totals of the staged flows.csv and campaigns.csv; a non-number or bad date fails here."""
    try:
        with (
            paths["flows.csv"].open(encoding="utf-8", newline="") as flows,
            paths["campaigns.csv"].open(encoding="utf-8", newline="") as campaigns,
        ):
            return daily_totals(flows, campaigns)
    except ValueError as exc:
        raise StagedFileInvalid(f"staged files do not parse: {exc}") from None


def _derivation(request: PublishRequest, checked: CheckedFiles) -> Derivation:
    """What the derived rows are computed from when the snapshot is made ready: the staged files'
    daily totals over the window (checked here: a day outside it fails), and the history the
    finishing transaction reads (``contracts/supabase.md``, "History")."""
    try:
        own = OwnActivity(request.window, _daily_totals(checked.paths))
    except ValueError as exc:
        raise StagedFileInvalid(f"staged files disagree with the window: {exc}") from None
    return Derivation(
        request.account_id,
        request.partition_date,
        own,
        stored_own=OwnActivity.from_series,
        refresh_newest=request.refresh_newest,
    )


def _row_metadata(checked: CheckedFiles) -> dict[str, int]:
    return {name.removesuffix(".csv"): count for name, count in checked.rows.items()}


# --- 5. move into place, 6. make ready ------------------------------------------------------------------


def _promote(
    objects: ObjectStore, upload_id: str, checked: CheckedFiles, lock: PublishLock, touched: list[str]
) -> None:
    """Uploads the checked copies over the final keys (upsert), while the snapshot is not ready;
    checks before each that the publish lock is still held (PublishLockLost), and records in
    ``touched`` each file it starts to upload."""
    for name in FILE_NAMES:
        lock.ensure_held()
        touched.append(name)
        objects.upload(final_key(upload_id, name), checked.paths[name])


def _finish(
    store: IngestStore,
    snapshot_id: str,
    request: PublishRequest,
    metadata: dict[str, Any],
    metrics: SnapshotMetrics | Derivation | None,
    *,
    ready: bool,
    timeouts: Timeouts,
) -> Finished:
    return store.tables.finish_publish(
        snapshot_id=snapshot_id,
        run_id=request.run_id,
        metadata=metadata,
        metrics=metrics,
        ready=ready,
        timeouts=timeouts,
    )


# --- 7. housekeeping ----------------------------------------------------------------------------------


def _housekeeping(
    objects: ObjectStore, request: PublishRequest, stale_before: datetime, run_finished: Callable[[str], bool]
) -> list[str]:
    """Removes this run's staging, stale staging of other runs and stale temp files; never raises
    for a Storage failure (the publish is done: a later run retries)."""
    removed: list[str] = []
    try:
        own = [staging_key(request.upload_id, request.run_id, name) for name in FILE_NAMES]
        objects.remove(own)
        removed += own
        removed += remove_stale_staging(
            objects, request.upload_id, stale_before, request.run_id, run_finished
        )
        if isinstance(objects, SweepsTempFiles):
            removed += objects.remove_stale_temp_files(request.upload_id, stale_before)
    except StorageError as exc:
        log.warning(
            "publish of upload %s: staging not cleaned up (%s); a later run retries", request.upload_id, exc
        )
    return removed


def remove_stale_staging(
    objects: ObjectStore,
    upload_id: str,
    stale_before: datetime,
    keep: str | None = None,
    run_finished: Callable[[str], bool] = lambda run_id: False,
) -> list[str]:
    """Deletes the staging folders of other runs that are finished, or whose every object was last
    written before ``stale_before``. Otherwise a folder whose times are unknown is kept: a missing
    time is no proof (``contracts/supabase.md``, Storage)."""
    if not isinstance(objects, KnowsModifiedTimes):
        return []
    removed: list[str] = []
    for run_id in objects.list(staging_folder(upload_id)):
        if run_id == keep:
            continue
        folder = staging_folder(upload_id, run_id)
        times = objects.list_modified(folder)
        stale = all(moment is not None and moment < stale_before for moment in times.values())
        if times and (run_finished(run_id) or stale):
            keys = [f"{folder}/{name}" for name in times]
            objects.remove(keys)
            removed += keys
    return removed
