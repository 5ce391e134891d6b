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
  row would null that snapshot's ``upload_id``: another account's data).
* **Deleting an old upload** — its objects (everything ``objects.list(upload_id)`` names, keys
  ``{upload_id}/{name}``) first; then, in one transaction, its snapshots' derived rows, its snapshots
  and the upload row, every statement scoped by ``account_id``. Derived rows are deleted explicitly
  rather than left to ``on delete cascade``: the dashboard's existing tables predate our migrations.
  Before deleting, the upload row is locked and must still have the ``updated_at`` the plan saw: a
  run that rewrote the partition meanwhile keeps its rows (reported in ``skipped``; the next night
  decides again), so no row-less objects are left behind.
* **Storage failures** — the account's object removal stops at the first failing upload; the rows
  of uploads whose objects are all gone are still deleted, the failing upload's and the rest's are
  kept (the next night retries: removal skips missing keys). Other accounts go on; afterwards
  :class:`CleanupError` (carrying the full report) is raised, so a scheduled run fails visibly.
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
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from klaviyo_dagster.storage.store import IngestStore
from klaviyo_dagster.storage.tables import SNAPSHOT_LABEL, IngestTables, SqliteDialect

log = logging.getLogger(__name__)

DEFAULT_RETENTION_DAYS = 30


@dataclass(frozen=True)
class AccountCleanup:
    """What cleanup did (or, in a dry run, would do) for one account."""

    account_id: str
    uploads: list[str]  # upload rows deleted, with their snapshots and derived rows
    objects: list[str]  # storage keys removed
    snapshots: int  # snapshot rows deleted
    expired_preauth: list[str]  # preauth uploads set to 'expired'
    kept_newest: str | None = None  # the upload of the newest snapshot, kept whatever its age
    skipped: list[str] = field(default_factory=list)  # rewritten by a run meanwhile: rows kept
    error: str | None = None  # why this account's cleanup stopped early

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
            },
            "accounts": [a.as_dict() for a in self.accounts],
            "unowned_expired_preauth": list(self.unowned_expired_preauth),
        }


class CleanupError(Exception):
    """Cleanup failed for some accounts (the others were cleaned); ``report`` says what was done."""

    def __init__(self, report: CleanupReport) -> None:
        failed = "; ".join(f"{account}: {error}" for account, error in report.errors.items())
        super().__init__(
            f"Cleanup failed for {len(report.errors)} account(s) — {failed}. Rows of uploads whose "
            "objects could not be removed were kept; the next run retries them."
        )
        self.report = report


def plan_cleanup(
    store: IngestStore,
    *,
    retention_days: int = DEFAULT_RETENTION_DAYS,
    now: datetime | None = None,
    account_ids: Sequence[str] | None = None,
) -> CleanupReport:
    """What :func:`run_cleanup` would delete and expire (a dry run): reads and lists, writes nothing."""
    return run_cleanup(store, retention_days=retention_days, dry_run=True, now=now, account_ids=account_ids)


def run_cleanup(
    store: IngestStore,
    *,
    retention_days: int = DEFAULT_RETENTION_DAYS,
    dry_run: bool = False,
    now: datetime | None = None,
    account_ids: Sequence[str] | None = None,
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
    cutoff = now - timedelta(days=retention_days)
    sql = _Sql(store.tables)
    if account_ids is None:
        accounts = sql.accounts_with_uploads()
    else:
        if isinstance(account_ids, str):
            raise TypeError("account_ids takes a sequence of account ids, not a single string")
        accounts = list(dict.fromkeys(_account_id(a) for a in account_ids))

    results = [_clean_account(store, sql, account, now, cutoff, dry_run) for account in accounts]
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
    if report.errors:
        raise CleanupError(report)
    return report


def _clean_account(
    store: IngestStore, sql: _Sql, account_id: str, now: datetime, cutoff: datetime, dry_run: bool
) -> AccountCleanup:
    kept_newest = sql.newest_snapshot_upload(account_id)
    old = [u for u in sql.old_ingest_uploads(account_id, cutoff) if u.upload_id != kept_newest]

    # Objects first: rows are deleted only for uploads whose objects are all gone.
    cleared: list[_OldUpload] = []
    objects: list[str] = []
    error: str | None = None
    for upload in old:
        try:
            keys = [f"{upload.upload_id}/{name}" for name in store.objects.list(upload.upload_id)]
            if keys and not dry_run:
                store.objects.remove(keys)
        except Exception as exc:  # storage (or key validation): keep the rows, report, go on
            error = f"removing the objects of upload {upload.upload_id} failed: {exc}"
            log.warning("Cleanup of account %s stopped: %s", account_id, error)
            break
        objects.extend(keys)
        cleared.append(upload)

    skipped: list[str] = []
    if dry_run:
        deleted = [u.upload_id for u in cleared]
        snapshots = sum(u.snapshots for u in cleared)
        expired = sql.stale_preauth(account_id, now)
    else:
        deleted, skipped, snapshots = sql.delete_uploads(account_id, cleared)
        expired = sql.expire_preauth(account_id, now)
    return AccountCleanup(
        account_id=account_id,
        uploads=deleted,
        objects=objects,
        snapshots=snapshots,
        expired_preauth=expired,
        kept_newest=kept_newest,
        skipped=skipped,
        error=error,
    )


@dataclass(frozen=True)
class _OldUpload:
    upload_id: str
    updated_at: Any  # as read, compared again before deleting
    snapshots: int


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

    def newest_snapshot_upload(self, account_id: str) -> str | None:
        """The upload of the account's newest ready snapshot (by partition date, then creation)."""
        partition = self.tables.dialect.partition_date()
        created_day = (
            "date(created_at)" if self.sqlite else "to_char(created_at at time zone 'UTC', 'YYYY-MM-DD')"
        )
        rows = self.tables._all(
            f"select upload_id from snapshots where account_id = ? and status = 'ready' "  # noqa: S608  # only constant dialect SQL is interpolated; every value is a parameter  # nosec B608
            f"order by coalesce({partition}, {created_day}) desc nulls last, "
            f"{self._time('created_at')} desc nulls last, id desc limit 1",
            (account_id,),
        )
        return str(rows[0][0]) if rows and rows[0][0] is not None else None

    def old_ingest_uploads(self, account_id: str, cutoff: datetime) -> list[_OldUpload]:
        at, moment = self._at(cutoff)
        rows = self.tables._all(
            "select u.id, u.updated_at, (select count(*) from snapshots s "  # noqa: S608  # only constant dialect SQL is interpolated; every value is a parameter  # nosec B608
            "where s.upload_id = u.id and s.account_id = u.account_id) "
            f"from uploads u where u.account_id = ? and {self._time('u.created_at')} < {at} "
            "and exists (select 1 from snapshots s where s.upload_id = u.id "
            "and s.account_id = u.account_id and s.label = ?) "
            f"and {_NO_FOREIGN_SNAPSHOT} order by {self._time('u.created_at')}, u.id",
            (account_id, moment, SNAPSHOT_LABEL),
        )
        return [_OldUpload(str(id_), updated_at, int(count)) for id_, updated_at, count in rows]

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


def _account_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except (AttributeError, TypeError, ValueError):
        raise ValueError(f"account ids must be the dashboard's account uuids, got {value!r}") from None
