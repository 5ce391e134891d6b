"""The retention policy: delete each account's old ingest uploads, expire stale ``preauth`` uploads.

Plain Python (the Dagster job in ``defs/cleanup.py`` only calls :func:`run_cleanup`). The rules, per
account ``A``, with ``cutoff = now - retention_days``:

* **Ingest upload** — an upload of ``A`` with at least one snapshot of ``A`` labelled
  ``Orchestrated Update`` (what this pipeline, and the orchestrator before it, writes). Uploads the
  dashboard's users made themselves are never deleted here.
* **Old** — the upload row's ``created_at`` is before ``cutoff``. Not the snapshot's partition
  date: ``created_at`` is on every upload row, set by the database clock and typed (no JSON to
  parse), and it is what "an upload older than N days" literally means — a backfill of a date months
  ago is kept for the retention like any fresh upload instead of vanishing the next night. A rerun
  overwrites the folder but keeps ``created_at`` (``write_snapshot`` only bumps ``updated_at``), so a
  rerun does not extend the retention. A row without ``created_at`` is never old.
* **Never deleted** — the upload of the account's newest snapshot: the ``ready`` snapshot (the only
  kind the dashboard reads) with the latest partition date (``metadata.partition_date``; for a
  snapshot without one, the UTC date of its ``created_at``), ties broken by the later
  ``created_at``. Also kept: an upload that a snapshot of *another* account references (deleting the
  row would null that snapshot's ``upload_id``: another account's data). Never removed either: an
  upload whose snapshot is mid-publish or waits for a republish (``metadata.publishing`` /
  ``needs_republish``), which also counts for "the account's newest snapshot" (a republish takes the
  snapshot out of ``ready`` for a while; the newest ``ready`` one is kept too), and an upload whose
  publish lock is held: cleanup try-locks it and holds it from the mark to the deleted rows, so a
  publish of the partition waits, and a busy upload is skipped (``skipped``).
* **Storage is checked first** (``../shared/contracts/supabase.md``: a missing bucket, or a key
  limited by row-level security, answers ``200 []`` to listing *and* removing, so "an empty listing
  is not proof that a folder is empty"). Before anything is removed, a probe writes a marker object
  (``.cleanup-probe/{random}.csv``), must see it listed and read it back, removes it and must see it
  gone. A missing bucket (404), a refused key (403), an RLS-limited key (403 on the write, or a
  listing without the marker) or a remove that removes nothing fail the probe: no object is removed
  and no upload row deleted for any account (preauth expiry, database only, still runs), the report's
  ``storage_error`` says why and :class:`CleanupError` is raised. A dry run probes too (the marker is
  its only write, and it is removed at once), so it reports what a real run would do.
* **Deleting an old upload** — its objects (everything under ``{upload_id}/``, sub-folders such as
  the per-run staging folders included) first, then its rows. Before removing, the upload row is
  marked (``uploads.error = 'retention cleanup: objects removed from {bucket}'``, ``updated_at``), after removing,
  the folder is listed again and the removed keys must be gone. An old ingest upload whose folder
  lists **no** object (it should hold three files) is **suspicious**: its rows are kept and it is
  reported in ``suspicious`` — unless the row carries that mark for **this** bucket (a previous
  cleanup removed the objects from it and died before deleting the rows), which is what the mark is
  for; the mark names the bucket (:func:`cleanup_mark`), and a republish clears it. Then, in one
  transaction, its snapshots' derived rows, its snapshots and the upload row, every statement scoped
  by ``account_id``. Derived rows are deleted explicitly
  rather than left to ``on delete cascade``: the dashboard's existing tables predate our migrations.
  Before deleting, the upload row is locked and must still have the ``updated_at`` the plan saw: a
  run that rewrote the partition meanwhile keeps its rows (reported in ``skipped``; the next night
  decides again), so no row-less objects are left behind.
* **Storage failures** — the account's object removal stops at the first failing upload; the rows
  of uploads whose objects are all gone are still deleted, the failing upload's and the rest's are
  kept (the next night retries: removal skips missing keys). Other accounts go on; afterwards
  :class:`CleanupError` (carrying the full report) is raised, so a scheduled run fails visibly.
* **Orphaned staging objects** — in the folders of the account's ingest uploads that are kept,
  staging objects (``.staging.{name}`` beside the files, and the per-run folders
  ``.staging/{run_id}/…``) last written more than ``staging_max_age`` (24 h) before ``now`` are
  removed (a run folder only when every object in it is that old), reported in ``staging``. A store
  that cannot say when an object was written (no ``list_modified``) is left alone.
* **Preauth expiry** — uploads of ``A`` with ``status = 'preauth'``, ``expires_at < now`` and no
  snapshot referencing them get ``status = 'expired'`` (and ``updated_at``); they are not deleted,
  the dashboard may still show them. When cleaning every account (``account_ids=None``), preauth
  uploads that belong to no account yet (``account_id is null``: made before sign-in) are expired
  the same way and reported separately; they are no account's data.

Dry run (:func:`plan_cleanup`, or ``run_cleanup(dry_run=True)``) reads the same rows and lists the
same objects, writes nothing and reports what a real run at the same ``now`` would do. All SQL is
parameterized; only constant dialect fragments are formatted in.
"""

from __future__ import annotations

import logging
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from klaviyo_dagster.storage.ids import validate_account_id
from klaviyo_dagster.storage.objects import KnowsModifiedTimes, ObjectStore
from klaviyo_dagster.storage.store import IngestStore
from klaviyo_dagster.storage.tables import (
    CLEANUP_MARK_PREFIX,
    NEEDS_REPUBLISH,
    SNAPSHOT_LABEL,
    IngestTables,
    PublishLock,
    SqliteDialect,
)

log = logging.getLogger(__name__)

DEFAULT_RETENTION_DAYS = 30
DEFAULT_STAGING_MAX_AGE = timedelta(hours=24)
PROBE_FOLDER = ".cleanup-probe"
PROBE_DATA = b"klaviyo-dagster cleanup probe: safe to delete\n"
CLEANUP_MARK = f"{CLEANUP_MARK_PREFIX} objects removed"  # + " from <bucket>": see cleanup_mark()
STAGING_FOLDER = ".staging"  # {uploadId}/.staging/{runId}/{name}
STAGING_PREFIX = ".staging."  # {uploadId}/.staging.{name} (the earlier style)
MAX_FOLDER_DEPTH = 4  # {uploadId}/.staging/{runId}/{name} is three levels down


def cleanup_mark(objects: ObjectStore) -> str:
    """The ``uploads.error`` mark for the bucket ``objects`` writes to: trusted only for that bucket."""
    return f"{CLEANUP_MARK} from {objects.describe()}"


@dataclass(frozen=True)
class AccountCleanup:
    """What cleanup did (or, in a dry run, would do) for one account."""

    account_id: str
    uploads: list[str]  # upload rows deleted, with their snapshots and derived rows
    objects: list[str]  # storage keys removed
    snapshots: int  # snapshot rows deleted
    expired_preauth: list[str]  # preauth uploads set to 'expired'
    kept_newest: str | None = None  # the upload of the newest snapshot, kept whatever its age
    skipped: list[str] = field(default_factory=list)  # rewritten or being published meanwhile: kept
    error: str | None = None  # why this account's cleanup stopped early
    # Old ingest uploads whose folder listed no object: rows kept (upload id -> why).
    suspicious: dict[str, str] = field(default_factory=dict)
    staging: list[str] = field(default_factory=list)  # orphaned staging objects removed

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CleanupReport:
    dry_run: bool
    retention_days: int
    accounts: list[AccountCleanup]
    now: datetime | None = None
    cutoff: datetime | None = None
    # Preauth uploads of no account (account_id null) expired; only when every account was cleaned.
    unowned_expired_preauth: list[str] = field(default_factory=list)
    storage_error: str | None = None  # the storage probe failed: nothing was removed or deleted

    @property
    def total_suspicious(self) -> int:
        return sum(len(a.suspicious) for a in self.accounts)

    @property
    def total_staging(self) -> int:
        return sum(len(a.staging) for a in self.accounts)

    @property
    def total_uploads(self) -> int:
        return sum(len(a.uploads) for a in self.accounts)

    @property
    def total_objects(self) -> int:
        return sum(len(a.objects) for a in self.accounts)

    @property
    def total_snapshots(self) -> int:
        return sum(a.snapshots for a in self.accounts)

    @property
    def total_expired_preauth(self) -> int:
        return sum(len(a.expired_preauth) for a in self.accounts) + len(self.unowned_expired_preauth)

    @property
    def errors(self) -> dict[str, str]:
        """Account id → why its cleanup stopped early."""
        return {a.account_id: a.error for a in self.accounts if a.error}

    def account(self, account_id: str) -> AccountCleanup | None:
        return next((a for a in self.accounts if a.account_id == account_id), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "retention_days": self.retention_days,
            "now": self.now.isoformat() if self.now else None,
            "cutoff": self.cutoff.isoformat() if self.cutoff else None,
            "totals": {
                "accounts": len(self.accounts),
                "uploads": self.total_uploads,
                "objects": self.total_objects,
                "snapshots": self.total_snapshots,
                "expired_preauth": self.total_expired_preauth,
                "errors": len(self.errors),
                "suspicious": self.total_suspicious,
                "staging": self.total_staging,
            },
            "storage_error": self.storage_error,
            "accounts": [a.as_dict() for a in self.accounts],
            "unowned_expired_preauth": list(self.unowned_expired_preauth),
        }


class CleanupError(Exception):
    """Cleanup failed for some accounts (the others were cleaned); ``report`` says what was done."""

    def __init__(self, report: CleanupReport) -> None:
        if report.storage_error:
            message = (
                f"Cleanup removed nothing: the storage check failed — {report.storage_error}. No upload "
                "row was deleted (an empty listing from a missing bucket or a limited key is not proof "
                "that a folder is empty); fix the bucket or the key, the next run retries."
            )
        else:
            failed = "; ".join(f"{account}: {error}" for account, error in report.errors.items())
            message = (
                f"Cleanup failed for {len(report.errors)} account(s) — {failed}. Rows of uploads whose "
                "objects could not be removed were kept; the next run retries them."
            )
        super().__init__(message)
        self.report = report


def plan_cleanup(
    store: IngestStore,
    *,
    retention_days: int = DEFAULT_RETENTION_DAYS,
    now: datetime | None = None,
    account_ids: Sequence[str] | None = None,
    staging_max_age: timedelta = DEFAULT_STAGING_MAX_AGE,
) -> CleanupReport:
    """What :func:`run_cleanup` would delete and expire (a dry run): reads and lists, writes nothing
    but the storage probe's marker, removed at once."""
    return run_cleanup(
        store,
        retention_days=retention_days,
        dry_run=True,
        now=now,
        account_ids=account_ids,
        staging_max_age=staging_max_age,
    )


def run_cleanup(
    store: IngestStore,
    *,
    retention_days: int = DEFAULT_RETENTION_DAYS,
    dry_run: bool = False,
    now: datetime | None = None,
    account_ids: Sequence[str] | None = None,
    staging_max_age: timedelta = DEFAULT_STAGING_MAX_AGE,
) -> CleanupReport:
    """Applies the retention policy (see the module docstring) to ``account_ids`` (default: every
    account with uploads) and reports per account. Raises :class:`CleanupError` after the last
    account when any account failed; ValueError for bad arguments, before touching anything."""
    if isinstance(retention_days, bool) or not isinstance(retention_days, int) or retention_days < 1:
        raise ValueError(f"retention_days must be a whole number of days >= 1, got {retention_days!r}")
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware (e.g. datetime.now(UTC)), got {now!r}")
    if not isinstance(staging_max_age, timedelta) or staging_max_age <= timedelta(0):
        raise ValueError(f"staging_max_age must be a positive timedelta, got {staging_max_age!r}")
    cutoff = now - timedelta(days=retention_days)
    sql = _Sql(store.tables)
    if account_ids is None:
        accounts = sql.accounts_with_uploads()
    else:
        if isinstance(account_ids, str):
            raise TypeError("account_ids takes a sequence of account ids, not a single string")
        accounts = list(dict.fromkeys(validate_account_id(a) for a in account_ids))

    storage_error = probe_storage(store.objects)
    if storage_error:
        log.error("Cleanup removes nothing: the storage check failed: %s", storage_error)
    window = _Window(now, cutoff, now - staging_max_age, dry_run, storage_ok=storage_error is None)
    results = [_clean_account(store, sql, account, window) for account in accounts]
    unowned: list[str] = []
    if account_ids is None:
        unowned = sql.stale_preauth(None, now) if dry_run else sql.expire_preauth(None, now)
    report = CleanupReport(
        dry_run=dry_run,
        retention_days=retention_days,
        accounts=results,
        now=now,
        cutoff=cutoff,
        unowned_expired_preauth=unowned,
        storage_error=storage_error,
    )
    log.info(
        "Cleanup%s (retention %d days, cutoff %s): %d upload(s), %d object(s), %d snapshot(s), "
        "%d preauth upload(s) expired, over %d account(s)",
        " (dry run)" if dry_run else "",
        retention_days,
        cutoff.isoformat(),
        report.total_uploads,
        report.total_objects,
        report.total_snapshots,
        report.total_expired_preauth,
        len(results),
    )
    for account in results:
        for upload, why in account.suspicious.items():
            log.warning("Cleanup kept the rows of upload %s of %s: %s", upload, account.account_id, why)
    if report.errors or storage_error:
        raise CleanupError(report)
    return report


@dataclass(frozen=True)
class _Window:
    """One cleanup's moments and mode."""

    now: datetime
    cutoff: datetime  # uploads created before: old
    staging_before: datetime  # staging objects written before: orphaned
    dry_run: bool
    storage_ok: bool  # the probe passed: objects may be removed and rows deleted


def probe_storage(objects: ObjectStore) -> str | None:
    """None when the bucket exists and the key may write, list, read and remove in it; else why not.

    A marker object is written, listed, read back, removed and listed again
    (``../shared/contracts/supabase.md``: a missing bucket or an RLS-limited key answers ``200 []``
    to list and remove, so neither answer alone proves anything).
    """
    name = f"{uuid.uuid4().hex}.csv"
    key = f"{PROBE_FOLDER}/{name}"
    with tempfile.TemporaryDirectory(prefix="klaviyo-cleanup-") as folder:
        source, copy = Path(folder) / "probe.csv", Path(folder) / "copy.csv"
        source.write_bytes(PROBE_DATA)
        try:
            return _probe_steps(objects, key, name, source, copy)
        except Exception as exc:  # any refusal (bucket, key, rights) is the probe's answer
            return f"{_describe(objects)}: {type(exc).__name__}: {exc}"
        finally:
            _remove_quietly(objects, key)


def _probe_steps(objects: ObjectStore, key: str, name: str, source: Path, copy: Path) -> str | None:
    where = _describe(objects)
    objects.upload(key, source)
    if name not in objects.list(PROBE_FOLDER):
        return (
            f"{where}: a marker object just written is not listed (a missing bucket or a key without rights?)"
        )
    objects.download(key, copy)
    if copy.read_bytes() != PROBE_DATA:
        return f"{where}: a marker object just written reads back different"
    objects.remove([key])
    if name in objects.list(PROBE_FOLDER):
        return f"{where}: removing a marker object left it in place (a key without delete rights?)"
    return None


def _describe(objects: ObjectStore) -> str:
    try:
        return objects.describe()
    except Exception:  # a store that cannot even describe itself is described by its type
        return type(objects).__name__


def _remove_quietly(objects: ObjectStore, key: str) -> None:
    try:
        objects.remove([key])
    except Exception as exc:  # best effort: the probe's own result says what went wrong
        log.debug("Cleanup could not remove its probe object %s: %s", key, exc)


def _folder_keys(
    objects: ObjectStore, folder: str, depth: int = MAX_FOLDER_DEPTH
) -> dict[str, datetime | None]:
    """Every object key under ``folder``, sub-folders included → when it was written (None: unknown)."""
    if isinstance(objects, KnowsModifiedTimes):
        entries = objects.list_modified(folder)
    else:
        entries = dict.fromkeys(objects.list(folder))
    keys: dict[str, datetime | None] = {}
    for name, written in sorted(entries.items()):
        key = f"{folder}/{name}"
        inner = _folder_keys(objects, key, depth - 1) if written is None and depth > 1 else {}
        keys.update(inner or {key: written})
    return keys


def _clean_account(store: IngestStore, sql: _Sql, account_id: str, window: _Window) -> AccountCleanup:
    kept_newest = sql.newest_snapshot_upload(account_id)
    kept = {kept_newest, sql.newest_snapshot_upload(account_id, ready_only=True)}
    mark = cleanup_mark(store.objects)
    old = [u for u in sql.old_ingest_uploads(account_id, window.cutoff, mark) if u.upload_id not in kept]
    cleared: list[_OldUpload] = []
    objects: list[str] = []
    skipped: list[str] = []
    suspicious: dict[str, str] = {}
    error: str | None = None
    deleted: list[str] = []
    snapshots = 0
    for upload in old if window.storage_ok else []:  # objects first: rows only of emptied folders
        # The upload's publish lock, held from the mark to the deleted rows: a publish of the
        # partition waits for it, and an upload being published now is skipped (next night decides).
        with store.tables.try_publish_lock(upload.upload_id) as lock:
            if lock is None or sql.in_flight(account_id, upload.upload_id):
                skipped.append(upload.upload_id)
                continue
            try:
                outcome = _clear_upload(store.objects, sql, account_id, upload, window.dry_run, lock, mark)
            except Exception as exc:  # storage (or key validation): keep the rows, report, go on
                error = f"removing the objects of upload {upload.upload_id} failed: {exc}"
                log.warning("Cleanup of account %s stopped: %s", account_id, error)
                break
            if outcome == _REWRITTEN:
                skipped.append(upload.upload_id)
                continue
            if isinstance(outcome, str):
                suspicious[upload.upload_id] = outcome
                continue
            marked, keys = outcome
            objects.extend(keys)
            cleared.append(marked)
            if not window.dry_run:
                lock.ensure_held()
                gone, also_skipped, count = sql.delete_uploads(account_id, [marked])
                deleted += gone
                skipped += also_skipped
                snapshots += count

    staging: list[str] = []
    if window.storage_ok and error is None:
        old_ids = {u.upload_id for u in old}
        kept = [u for u in sql.ingest_uploads(account_id) if u not in old_ids]
        staging, error = _sweep_staging(store.objects, kept, window)
    if window.dry_run:
        deleted = [u.upload_id for u in cleared]
        snapshots = sum(u.snapshots for u in cleared)
        expired = sql.stale_preauth(account_id, window.now)
    else:
        expired = sql.expire_preauth(account_id, window.now)
    return AccountCleanup(
        account_id=account_id,
        uploads=deleted,
        objects=objects,
        snapshots=snapshots,
        expired_preauth=expired,
        kept_newest=kept_newest,
        skipped=skipped,
        error=error,
        suspicious=suspicious,
        staging=staging,
    )


_REWRITTEN = "rewritten by a run meanwhile"


def _clear_upload(
    objects: ObjectStore,
    sql: _Sql,
    account_id: str,
    upload: _OldUpload,
    dry_run: bool,
    lock: PublishLock,
    mark: str,
) -> tuple[_OldUpload, list[str]] | str:
    """Removes an old upload's objects: (the upload as now marked, the keys removed), or why its rows
    must be kept (:data:`_REWRITTEN`, or why the folder is suspicious). Called holding the upload's
    publish lock; checks it is still held before removing anything."""
    keys = sorted(_folder_keys(objects, upload.upload_id))
    if not keys:
        # A previous cleanup removed them from this very bucket, then died before deleting the rows.
        # A mark for another bucket (or a mark a republish cleared) proves nothing here.
        if upload.marked:
            return upload, []
        return (
            "its folder lists no object, though an ingest upload holds three files: a wrong bucket, "
            "a key without rights, or files removed by hand; rows kept, check the bucket"
        )
    if dry_run:
        return upload, keys
    marked = sql.mark_clearing(account_id, upload, mark)
    if marked is None:
        return _REWRITTEN
    lock.ensure_held()
    objects.remove(keys)
    left = set(keys) & set(_folder_keys(objects, upload.upload_id))
    if left and sql.unchanged(account_id, marked):
        raise RuntimeError(
            f"Storage answered the remove, but {len(left)} object(s) are still listed, e.g. {min(left)}"
        )
    return _REWRITTEN if left else (marked, keys)


def _sweep_staging(objects: ObjectStore, uploads: list[str], window: _Window) -> tuple[list[str], str | None]:
    """Removes orphaned staging objects from the folders of kept uploads: (keys removed, error)."""
    if not isinstance(objects, KnowsModifiedTimes):
        return [], None
    removed: list[str] = []
    for upload_id in uploads:
        try:
            stale = _stale_staging(objects, upload_id, window.staging_before)
            if stale and not window.dry_run:
                objects.remove(stale)
        except Exception as exc:  # keep going next night; the job fails visibly
            return removed, f"removing orphaned staging objects of upload {upload_id} failed: {exc}"
        removed += stale
    return removed, None


def _stale_staging(objects: KnowsModifiedTimes, upload_id: str, before: datetime) -> list[str]:
    """Staging keys of ``upload_id`` written before ``before``: a ``.staging.{name}`` object, or every
    object of a ``.staging/{run_id}/`` folder when all of them are that old."""
    entries = objects.list_modified(upload_id)
    stale = [
        f"{upload_id}/{name}"
        for name, written in entries.items()
        if name.startswith(STAGING_PREFIX) and written is not None and written < before
    ]
    if STAGING_FOLDER in entries:
        staging = f"{upload_id}/{STAGING_FOLDER}"
        for run_folder, written in sorted(objects.list_modified(staging).items()):
            keys = (
                _folder_keys(objects, f"{staging}/{run_folder}")
                if written is None
                else {f"{staging}/{run_folder}": written}
            )
            if keys and all(stamp is not None and stamp < before for stamp in keys.values()):
                stale += sorted(keys)
    return stale


@dataclass(frozen=True)
class _OldUpload:
    upload_id: str
    updated_at: Any  # as read, compared again before deleting
    snapshots: int
    marked: bool = False  # uploads.error says a cleanup already removed its objects


class _Sql:
    """The cleanup's statements in the store's dialect (``?`` placeholders, as in ``tables``)."""

    def __init__(self, tables: IngestTables) -> None:
        self.tables = tables
        self.sqlite = isinstance(tables.dialect, SqliteDialect)

    # SQLite keeps timestamps as text in more than one format (``current_timestamp`` and ISO 8601
    # with an offset): compare them as Julian days. Postgres compares timestamptz directly.
    def _time(self, column: str) -> str:
        return f"julianday({column})" if self.sqlite else column

    def _at(self, moment: datetime) -> tuple[str, Any]:
        return ("julianday(?)", moment.isoformat()) if self.sqlite else ("?", moment)

    def _stamp(self) -> Any:
        stamp = datetime.now(UTC)
        return stamp.isoformat() if self.sqlite else stamp

    def accounts_with_uploads(self) -> list[str]:
        rows = self.tables._all(
            "select distinct account_id from uploads where account_id is not null order by account_id", ()
        )
        return [str(row[0]) for row in rows]

    def _in_flight(self, alias: str = "") -> str:
        """SQL: the snapshot is mid-publish (``metadata.publishing``) or needs a republish."""
        column = f"{alias}metadata"
        if self.sqlite:
            return (
                f"(json_extract({column}, '$.publishing') is not null "
                f"or json_extract({column}, '$.{NEEDS_REPUBLISH}') is not null)"
            )
        return f"({column}->'publishing' is not null or {column}->'{NEEDS_REPUBLISH}' is not null)"

    def in_flight(self, account_id: str, upload_id: str) -> bool:
        """A snapshot of the upload is being published (or waits for a republish): keep it."""
        rows = self.tables._all(
            f"select 1 from snapshots where upload_id = ? and {self._in_flight()}",  # noqa: S608  # only constant dialect SQL is interpolated; every value is a parameter  # nosec B608
            (upload_id,),
        )
        return bool(rows)

    def newest_snapshot_upload(self, account_id: str, ready_only: bool = False) -> str | None:
        """The upload of the account's newest snapshot (by partition date, then creation): ready, or
        being published (a republish takes a ready snapshot out of ``ready`` for a while)."""
        partition = self.tables.dialect.partition_date()
        created_day = (
            "date(created_at)" if self.sqlite else "to_char(created_at at time zone 'UTC', 'YYYY-MM-DD')"
        )
        shown = "status = 'ready'" if ready_only else f"(status = 'ready' or {self._in_flight()})"
        rows = self.tables._all(
            f"select upload_id from snapshots where account_id = ? and {shown} "  # noqa: S608  # only constant dialect SQL is interpolated; every value is a parameter  # nosec B608
            f"order by coalesce({partition}, {created_day}) desc nulls last, "
            f"{self._time('created_at')} desc nulls last, id desc limit 1",
            (account_id,),
        )
        return str(rows[0][0]) if rows and rows[0][0] is not None else None

    def old_ingest_uploads(self, account_id: str, cutoff: datetime, mark: str) -> list[_OldUpload]:
        """Old ingest uploads of the account, none of whose snapshots is being published; ``marked``
        when ``uploads.error`` is ``mark`` (a cleanup removed its objects from this bucket)."""
        at, moment = self._at(cutoff)
        rows = self.tables._all(
            "select u.id, u.updated_at, (select count(*) from snapshots s "  # noqa: S608  # only constant dialect SQL is interpolated; every value is a parameter  # nosec B608
            "where s.upload_id = u.id and s.account_id = u.account_id), "
            "case when u.error = ? then 1 else 0 end "
            f"from uploads u where u.account_id = ? and {self._time('u.created_at')} < {at} "
            "and exists (select 1 from snapshots s where s.upload_id = u.id "
            "and s.account_id = u.account_id and s.label = ?) "
            f"and not exists (select 1 from snapshots p where p.upload_id = u.id and {self._in_flight('p.')}) "
            f"and {_NO_FOREIGN_SNAPSHOT} order by {self._time('u.created_at')}, u.id",
            (mark, account_id, moment, SNAPSHOT_LABEL),
        )
        return [
            _OldUpload(str(id_), updated_at, int(count), bool(marked))
            for id_, updated_at, count, marked in rows
        ]

    def ingest_uploads(self, account_id: str) -> list[str]:
        """Every upload of the account with an ingest snapshot (where staging objects may be left)."""
        rows = self.tables._all(
            "select distinct u.id from uploads u join snapshots s on s.upload_id = u.id "
            "and s.account_id = u.account_id where u.account_id = ? and s.label = ? order by u.id",
            (account_id, SNAPSHOT_LABEL),
        )
        return [str(row[0]) for row in rows]

    def _same(self) -> str:
        return "is" if self.sqlite else "is not distinct from"

    def mark_clearing(self, account_id: str, upload: _OldUpload, mark: str) -> _OldUpload | None:
        """Marks the upload row (``mark`` names the bucket) before its objects go (None: a run
        rewrote it since the plan)."""
        with self.tables._transaction() as tx:
            row = tx.execute(
                f"update uploads set error = ?, updated_at = ? where id = ? and account_id = ? "  # noqa: S608  # only constant dialect SQL is interpolated; every value is a parameter  # nosec B608
                f"and updated_at {self._same()} ? returning updated_at",
                (mark, self._stamp(), upload.upload_id, account_id, upload.updated_at),
            ).fetchone()
        return None if row is None else _OldUpload(upload.upload_id, row[0], upload.snapshots, True)

    def unchanged(self, account_id: str, upload: _OldUpload) -> bool:
        rows = self.tables._all(
            f"select 1 from uploads where id = ? and account_id = ? and updated_at {self._same()} ?",  # noqa: S608  # only constant dialect SQL is interpolated; every value is a parameter  # nosec B608
            (upload.upload_id, account_id, upload.updated_at),
        )
        return bool(rows)

    def delete_uploads(self, account_id: str, uploads: list[_OldUpload]) -> tuple[list[str], list[str], int]:
        """Deletes the uploads' derived rows, snapshots and rows in one transaction; (deleted,
        skipped because a run changed them meanwhile, snapshot rows deleted)."""
        if not uploads:
            return [], [], 0
        deleted: list[str] = []
        skipped: list[str] = []
        snapshots = 0
        same = "is" if self.sqlite else "is not distinct from"
        lock = self.tables.dialect.lock_upload
        with self.tables._transaction() as tx:
            for upload in uploads:
                params = (upload.upload_id, account_id)
                unchanged = tx.execute(
                    f"select u.id from uploads u where u.id = ? and u.account_id = ? "  # noqa: S608  # only constant dialect SQL is interpolated; every value is a parameter  # nosec B608
                    f"and u.updated_at {same} ? and {_NO_FOREIGN_SNAPSHOT}{lock}",
                    (*params, upload.updated_at),
                ).fetchone()
                if unchanged is None:
                    skipped.append(upload.upload_id)
                    continue
                for derived in ("snapshot_series", "snapshot_totals"):
                    tx.execute(
                        f"delete from {derived} where snapshot_id in "  # noqa: S608  # only constant dialect SQL is interpolated; every value is a parameter  # nosec B608
                        "(select id from snapshots where upload_id = ? and account_id = ?)",
                        params,
                    )
                snapshots += tx.execute(
                    "delete from snapshots where upload_id = ? and account_id = ?", params
                ).rowcount
                tx.execute("delete from uploads where id = ? and account_id = ?", params)
                deleted.append(upload.upload_id)
        if skipped:
            log.info("Cleanup kept %d upload(s) of %s that a run rewrote meanwhile", len(skipped), account_id)
        return deleted, skipped, snapshots

    def _preauth_where(self, account_id: str | None, now: datetime) -> tuple[str, tuple[Any, ...]]:
        at, moment = self._at(now)
        owner = ("account_id = ?", (account_id,)) if account_id is not None else ("account_id is null", ())
        return (
            f"{owner[0]} and status = 'preauth' and expires_at is not null "  # noqa: S608  # only constant dialect SQL is interpolated; every value is a parameter  # nosec B608
            f"and {self._time('expires_at')} < {at} "
            "and not exists (select 1 from snapshots s where s.upload_id = uploads.id)",
            (*owner[1], moment),
        )

    def stale_preauth(self, account_id: str | None, now: datetime) -> list[str]:
        where, params = self._preauth_where(account_id, now)
        rows = self.tables._all(f"select id from uploads where {where} order by id", params)  # noqa: S608  # only constant dialect SQL is interpolated; every value is a parameter  # nosec B608
        return [str(row[0]) for row in rows]

    def expire_preauth(self, account_id: str | None, now: datetime) -> list[str]:
        where, params = self._preauth_where(account_id, now)
        with self.tables._transaction() as tx:
            rows = tx.execute(
                f"update uploads set status = 'expired', updated_at = ? where {where} returning id",  # noqa: S608  # only constant dialect SQL is interpolated; every value is a parameter  # nosec B608
                (self._stamp(), *params),
            ).fetchall()
        return sorted(str(row[0]) for row in rows)


# No snapshot of another account references the upload ``u``.
_NO_FOREIGN_SNAPSHOT = (
    "not exists (select 1 from snapshots f where f.upload_id = u.id and f.account_id <> u.account_id)"
)
