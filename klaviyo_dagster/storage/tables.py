"""The dashboard's tables: uploads, snapshots and their derived rows, in Postgres or SQLite.

One class, two dialects: Supabase's Postgres through a direct connection string (psycopg, prepared
statements off), and SQLite for the local store. Publishing needs a direct or *session*-pooler
connection: its per-upload lock is a session advisory lock, which Supabase's *transaction* pooler
(port 6543) cannot hold (each statement may run on another server session). Every
write that the dashboard could observe happens in one transaction: a snapshot appears together with
its derived rows, and a rerun replaces them instead of adding new ones.

History (``contracts/supabase.md``, "Snapshot processing", History): :meth:`IngestTables.history`
computes what an in-order run of an account's earlier partitions would carry forward, from each
ready snapshot's own window rows, so a snapshot's derived rows do not depend on the order its
partitions were published in; :meth:`IngestTables.finish_publish` derives them in its own
transaction and, asked to, refreshes the account's newest snapshot there too. Values are written
exactly (Postgres ``numeric`` gets the float's shortest decimal, not 15 digits), so rows rebuilt from
stored ones equal the ones computed from the files.

The tables compute no metric: the rows are plain values (``derived_rows.py``), and what derives them
inside a transaction is handed in (a :class:`Derivation`, built by ``publishing/publish.py`` from
``processing/metrics.py``), so storage imports nothing of processing.
"""

from __future__ import annotations

import fcntl
import json
import logging
import sqlite3
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import psycopg

from klaviyo_dagster.derived_rows import History, SeriesPoint, SnapshotMetrics

log = logging.getLogger(__name__)

SNAPSHOT_LABEL = "Orchestrated Update"
# Shipped inside the package (a wheel or a container image has no project folder);
# supabase/migrations at the project root links here, for the Supabase CLI.
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
SQLITE_SCHEMA = Path(__file__).with_name("sqlite_schema.sql")
# The per-upload publish lock: a session-level advisory lock keyed by this text and the upload id.
PUBLISH_LOCK_NAMESPACE = "klaviyo-dagster publish "
# Held by each transaction that derives an account's rows from its history (Postgres, transaction
# advisory lock keyed by this text and the account id): each one sees the others' committed rows.
HISTORY_LOCK_NAMESPACE = "klaviyo-dagster history "
# Who last wrote an account's timezone: the accounts sensor when it found the account, or a live run.
TIMEZONE_FROM_DISCOVERY = "discovery"
TIMEZONE_FROM_RUN = "run"


@dataclass(frozen=True)
class SnapshotRow:
    id: str
    account_id: str
    upload_id: str | None
    label: str
    status: str
    last_email_date: date | None
    metadata: dict[str, Any]


class OwnWindow(Protocol):
    """A snapshot's own activity over its window, which derives its rows on top of a history
    (processing's ``OwnActivity``)."""

    @property
    def window(self) -> tuple[date, date]: ...  # first, last; inclusive

    def metrics(self, history: History) -> SnapshotMetrics: ...


# A stored snapshot's own window rows (its series points inside its window) as an OwnWindow again
# (processing's ``OwnActivity.from_series``); raises ValueError when they do not fit the window.
StoredOwnWindow = Callable[[tuple[date, date], Iterable[SeriesPoint]], OwnWindow]


@dataclass(frozen=True)
class Derivation:
    """What :meth:`IngestTables.finish_publish` derives a snapshot's rows from, in its transaction.

    ``own`` is the snapshot's window and its files' daily totals; the history comes from the
    account's ready snapshots with an earlier partition date (:meth:`IngestTables.history`). With
    ``refresh_newest``, the account's newest ready snapshot with a later partition date gets its
    derived rows recomputed the same way in the same transaction (``contracts/supabase.md``, "History"),
    its own activity rebuilt from its stored rows by ``stored_own``.
    """

    account_id: str
    partition_date: date
    own: OwnWindow
    stored_own: StoredOwnWindow
    refresh_newest: bool = False


@dataclass(frozen=True)
class Finished:
    """What :meth:`IngestTables.finish_publish` wrote: the snapshot's derived rows (None when left to a
    processor) and the id of the newer snapshot it refreshed, if any."""

    metrics: SnapshotMetrics | None
    refreshed: str | None = None


@dataclass(frozen=True)
class Integration:
    """A store's Klaviyo connection in the dashboard (``account_integrations`` + ``accounts.deleted_at``)."""

    account_id: str
    encrypted_api_key: str
    enabled: bool
    deleted: bool


@dataclass(frozen=True)
class RecordedTimezone:
    """An account's Klaviyo timezone as last recorded (table ``account_timezones``)."""

    account_id: str
    timezone: str
    fallback_reason: str | None  # set when Klaviyo gave no zone and the files are read in UTC
    source: str  # TIMEZONE_FROM_DISCOVERY or TIMEZONE_FROM_RUN
    updated_at: str


@dataclass(frozen=True)
class Timeouts:
    """How long one statement may run and wait for a lock; how long a publish waits for its upload's lock.

    ``contracts/supabase.md``, "Publishing is all or nothing": lock and statement timeouts, so a
    session holding the upload row (``select ... for update``) fails the publish instead of stalling it.
    """

    lock_seconds: float = 30.0
    statement_seconds: float = 120.0
    publish_lock_seconds: float = 600.0


class PublishLockTimeout(Exception):
    """Another publish of the same upload held its lock for longer than the timeout."""


class PublishSuperseded(Exception):
    """The snapshot names another run as publishing it: this run no longer owns the publish."""


class PublishLockLost(Exception):
    """The session holding the upload's publish lock is gone (killed, timed out, network): another
    publish or cleanup may be working on the same folder now."""


# Set on a snapshot's metadata by a run that lost its publish after it had changed a final file: the
# folder may hold files of two runs. The snapshot is not ready; the next publish of the partition
# clears it (``begin_publish``), and no run makes the snapshot ready while it is set.
NEEDS_REPUBLISH = "needs_republish"
# What a retention cleanup writes into ``uploads.error`` before it removes an upload's objects.
CLEANUP_MARK_PREFIX = "retention cleanup:"


class PublishLock:
    """A held publish lock; :meth:`ensure_held` raises PublishLockLost when it is no longer held."""

    def __init__(self, upload_id: str, connection: Any = None) -> None:
        self.upload_id = upload_id
        self._connection = connection  # Postgres: the lock's own session; SQLite (flock): None

    def ensure_held(self) -> None:
        """Checks on the lock's own session that it is alive and still holds the advisory lock.

        A ``flock`` cannot be lost while the process lives, so SQLite has nothing to check.
        """
        if self._connection is None:
            return
        try:
            held = self._connection.execute(
                "select count(*) from pg_locks where locktype = 'advisory' and pid = pg_backend_pid() "
                "and granted"
            ).fetchone()[0]
        except psycopg.Error as exc:
            raise self._lost(f"its session is gone ({type(exc).__name__})") from None
        if not held:
            raise self._lost("its session no longer holds it")

    def _lost(self, why: str) -> PublishLockLost:
        return PublishLockLost(f"the publish lock of upload {self.upload_id} was lost: {why}")


class _Connection(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any: ...


class Dialect(ABC):
    """What differs between Postgres and SQLite in the few statements we run."""

    name: str
    lock_upload = ""  # row lock taken on the upload while its snapshot is written
    json_param = "?"
    # This project's own table of account timezones (supabase/migrations/*_account_timezones.sql).
    timezones_table = "klaviyo_account_timezones"

    @abstractmethod
    def partition_date(self) -> str:
        """The SQL expression of a snapshot's partition date (from its metadata)."""

    @abstractmethod
    def window_day(self, which: str) -> str:
        """The SQL expression of a snapshot's window ``first_day`` or ``last_day`` (from its metadata),
        as ``YYYY-MM-DD`` text."""

    @abstractmethod
    def date_of(self, text: str) -> str:
        """The SQL expression of ``YYYY-MM-DD`` text as a value comparable with a date column (the
        comparison can use an index)."""

    # Literals below and above every date, as values comparable with a date column.
    min_date = "''"
    max_date = "'9999-12-31'"

    def number(self, value: float) -> Any:
        """A derived value as a statement parameter."""
        return float(value)

    @abstractmethod
    def lock_history(self, tx: _Transaction, account_id: str) -> None:
        """Serializes the transactions that derive the account's rows from its history."""

    @abstractmethod
    def connect(self) -> Any:
        """A new connection."""

    def sql(self, statement: str) -> str:
        return statement

    @abstractmethod
    def apply_timeouts(self, tx: _Transaction, timeouts: Timeouts) -> None:
        """Lock and statement timeouts for the transaction ``tx`` has open."""


class PostgresDialect(Dialect):
    name = "postgres"
    lock_upload = " for update"
    json_param = "cast(? as jsonb)"
    timezones_table = "klaviyo_dagster.account_timezones"  # off Supabase's Data API (public only)

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn

    def connect(self, **options: Any) -> psycopg.Connection:
        """A new connection; a failure is a ``DatabaseConnectionError`` without the DSN's secrets
        (psycopg quotes an unencoded password: see ``klaviyo_dagster/redaction.py``). ``options``
        are further libpq parameters (the lock session's TCP keepalives)."""
        from klaviyo_dagster.redaction import connection_error

        try:
            # prepare_threshold=None: no server-side prepared statements, which the pooler cannot route.
            return psycopg.connect(self._dsn, prepare_threshold=None, connect_timeout=10, **options)
        except psycopg.Error as exc:
            error = connection_error(exc, self._dsn)
        raise error from None  # outside the handler: neither __cause__ nor __context__ holds the DSN

    def partition_date(self) -> str:
        return "metadata->>'partition_date'"

    def window_day(self, which: str) -> str:
        assert which in ("first_day", "last_day")
        return f"metadata->'window'->>'{which}'"

    min_date = "'-infinity'::date"
    max_date = "'infinity'::date"

    def date_of(self, text: str) -> str:
        return f"cast({text} as date)"

    def number(self, value: float) -> Any:
        """The float's shortest exact decimal: a float parameter would be cast to ``numeric`` with 15
        significant digits, and rows rebuilt from stored ones would drift from the files' numbers."""
        return Decimal(repr(float(value)))

    def lock_history(self, tx: _Transaction, account_id: str) -> None:
        """A transaction advisory lock (released at commit or rollback), under the lock timeout."""
        tx.execute(
            "select pg_advisory_xact_lock(hashtextextended(?, 0))", (HISTORY_LOCK_NAMESPACE + account_id,)
        )

    def sql(self, statement: str) -> str:
        return statement.replace("?", "%s")

    def apply_timeouts(self, tx: _Transaction, timeouts: Timeouts) -> None:
        # set_config(..., true) is SET LOCAL: it ends with the transaction.
        tx.execute(
            "select set_config('lock_timeout', ?, true), set_config('statement_timeout', ?, true)",
            (_milliseconds(timeouts.lock_seconds), _milliseconds(timeouts.statement_seconds)),
        )


class SqliteDialect(Dialect):
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path

    def connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        connection.execute("pragma foreign_keys = on")
        _use_wal(connection)
        return connection

    def partition_date(self) -> str:
        return "json_extract(metadata, '$.partition_date')"

    def window_day(self, which: str) -> str:
        assert which in ("first_day", "last_day")
        return f"json_extract(metadata, '$.window.{which}')"

    def date_of(self, text: str) -> str:
        return text  # dates are stored as YYYY-MM-DD text

    def lock_history(self, tx: _Transaction, account_id: str) -> None:
        """``begin immediate`` already holds the whole file."""

    def apply_timeouts(self, tx: _Transaction, timeouts: Timeouts) -> None:
        """SQLite locks the whole file: ``begin immediate`` waits up to the busy timeout, set on connect."""


def _use_wal(connection: sqlite3.Connection, attempts: int = 60) -> None:
    """``pragma journal_mode = wal``, retried: two connections switching a new file to WAL at once
    get "database is locked" at once, without SQLite's busy timeout (seen with two triggers racing)."""
    for attempt in range(attempts):
        try:
            connection.execute("pragma journal_mode = wal")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05)


def run_statement(
    dialect: Dialect,
    sql: str,
    params: Sequence[Any],
    *,
    sqlite_ddl: str,
    not_migrated: Callable[[], Exception],
) -> tuple[int, list[Any]]:
    """One statement in its own short transaction on a new connection: (rows affected, rows returned).

    For a project table kept outside ``IngestTables`` (trigger claims, the fetch cache): the local
    SQLite file gets ``sqlite_ddl`` first (its table is created on first use); a Postgres table that
    is not there raises ``not_migrated()``; any other failure rolls back and propagates.
    """
    with closing(dialect.connect()) as connection:
        try:
            if isinstance(dialect, SqliteDialect):
                connection.execute(sqlite_ddl)
            cursor = connection.execute(dialect.sql(sql), params)
            rows = list(cursor.fetchall()) if cursor.description else []
            count = cursor.rowcount
            connection.commit()
        except psycopg.errors.UndefinedTable:
            raise not_migrated() from None
        except BaseException:
            with suppress(psycopg.Error, sqlite3.Error):  # a connection already gone: closing is all left
                connection.rollback()
            raise
    return count, rows


class IngestTables:
    """Reads and writes the dashboard's ingest tables; ``postgres(dsn)`` or ``sqlite(path)``."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self._schema_checked = False

    @classmethod
    def postgres(cls, dsn: str) -> IngestTables:
        return cls(PostgresDialect(dsn))

    @classmethod
    def sqlite(cls, path: Path) -> IngestTables:
        return cls(SqliteDialect(path))

    def describe(self) -> str:
        return self.dialect.name

    # --- schema ----------------------------------------------------------------------------------

    def migrate(self) -> list[str]:
        """Creates the tables where missing (harmless on the dashboard's database); the scripts run."""
        if isinstance(self.dialect, SqliteDialect):
            scripts = [SQLITE_SCHEMA]
            with closing(self.dialect.connect()) as connection:
                connection.executescript(SQLITE_SCHEMA.read_text())
        else:
            scripts = sorted(MIGRATIONS_DIR.glob("*.sql"))
            if not scripts:  # an install without its package data must not report success
                raise FileNotFoundError(
                    f"no migration scripts in {MIGRATIONS_DIR}: reinstall klaviyo_dagster"
                )
            with self.dialect.connect() as connection:
                for script in scripts:
                    connection.execute(script.read_text())
        return [script.name for script in scripts]

    def ensure_account(self, account_id: str, name: str) -> None:
        """Adds an account row if missing: the local store and tests own their accounts."""
        with self._transaction() as tx:
            tx.execute(
                "insert into accounts (id, owner_user_id, name) values (?, ?, ?) on conflict (id) do nothing",
                (account_id, str(uuid.UUID(int=0)), name),
            )

    # --- the snapshot of an upload -----------------------------------------------------------------

    def write_snapshot(
        self,
        *,
        upload_id: str,
        account_id: str,
        metadata: dict[str, Any],
        metrics: SnapshotMetrics | None,
    ) -> str:
        """Binds the upload and writes its one snapshot (and, given metrics, its derived rows).

        All in one transaction with the upload row locked, so two runs of one partition cannot both
        insert a snapshot, and the dashboard never sees a snapshot without its derived rows.
        """
        now = datetime.now(UTC).isoformat()
        with _foreign_keys_named(account_id), self._transaction() as tx:
            self._bind_upload(tx, upload_id, account_id, now)
            snapshot_id = self._upsert_snapshot(tx, upload_id, account_id, metadata)
            if metrics is not None:
                self._replace_derived(tx, snapshot_id, metrics)
        return snapshot_id

    def _upsert_snapshot(
        self, tx: _Connection, upload_id: str, account_id: str, metadata: dict[str, Any]
    ) -> str:
        found = tx.execute(
            "select id from snapshots where upload_id = ? order by created_at limit 1", (upload_id,)
        ).fetchone()
        payload = json.dumps(metadata, sort_keys=True)
        if found:
            snapshot_id = str(found[0])
            tx.execute(
                f"update snapshots set account_id = ?, label = ?, status = 'ready', metadata = {self.dialect.json_param} "  # noqa: S608  # only constant dialect SQL is interpolated; every value is a parameter  # nosec B608
                "where id = ?",
                (account_id, SNAPSHOT_LABEL, payload, snapshot_id),
            )
            return snapshot_id
        snapshot_id = str(uuid.uuid4())
        tx.execute(
            "insert into snapshots (id, account_id, upload_id, label, status, metadata) "  # noqa: S608  # only constant dialect SQL is interpolated; every value is a parameter  # nosec B608
            f"values (?, ?, ?, ?, 'ready', {self.dialect.json_param})",
            (snapshot_id, account_id, upload_id, SNAPSHOT_LABEL, payload),
        )
        return snapshot_id

    def _replace_derived(self, tx: _Transaction, snapshot_id: str, metrics: SnapshotMetrics) -> None:
        """Replaces the snapshot's totals, series and ``last_email_date`` (inside ``tx``)."""
        tx.execute("delete from snapshot_totals where snapshot_id = ?", (snapshot_id,))
        tx.execute("delete from snapshot_series where snapshot_id = ?", (snapshot_id,))
        number = self.dialect.number
        tx.executemany(
            "insert into snapshot_totals (snapshot_id, metric_key, value) values (?, ?, ?)",
            [(snapshot_id, key, number(value)) for key, value in metrics.totals.items()],
        )
        tx.executemany(
            "insert into snapshot_series (snapshot_id, metric_key, date, value) values (?, ?, ?, ?)",
            [(snapshot_id, p.metric_key, p.day.isoformat(), number(p.value)) for p in metrics.series],
        )
        last = metrics.last_email_date.isoformat() if metrics.last_email_date else None
        tx.execute("update snapshots set last_email_date = ? where id = ?", (last, snapshot_id))

    # --- publishing (publishing/publish.py) ---------------------------------------------------------------

    @contextmanager
    def publish_lock(self, upload_id: str, timeouts: Timeouts) -> Iterator[PublishLock]:
        """Held for a whole publish of ``upload_id``: two publishes of one partition never interleave.

        ``contracts/supabase.md``, "Publishing is all or nothing" (two runs of the same partition at
        once). Postgres: a session-level advisory lock on a dedicated connection, so it is released
        when the process dies; SQLite: ``flock`` on a lock file beside the database, released the same
        way. Waits at most ``timeouts.publish_lock_seconds``, then raises PublishLockTimeout.

        A Postgres session can still be lost while the process lives (killed by an admin, a server
        idle timeout, a dropped network): the lock session turns the server's idle timeouts off and
        uses TCP keepalives, and the publish calls ``ensure_held()`` on the yielded lock before each
        change it makes to the folder. Needs a direct or session-pooler connection: Supabase's
        transaction pooler (port 6543) cannot hold a session advisory lock.
        """
        if isinstance(self.dialect, SqliteDialect):
            with _file_lock(self.dialect.path.parent / "locks" / f"{upload_id}.lock", upload_id, timeouts):
                yield PublishLock(upload_id)
            return
        with self._lock_session(timeouts.publish_lock_seconds) as tx:
            key = (PUBLISH_LOCK_NAMESPACE + upload_id,)
            try:
                tx.execute("select pg_advisory_lock(hashtextextended(?, 0))", key)
            except psycopg.errors.LockNotAvailable:
                raise _lock_timeout(upload_id, timeouts) from None
            try:
                yield PublishLock(upload_id, tx)
            finally:
                _unlock(tx, key)

    @contextmanager
    def try_publish_lock(self, upload_id: str) -> Iterator[PublishLock | None]:
        """The upload's publish lock if it is free right now, else None (without waiting).

        Cleanup holds it while it removes an upload's objects and rows, so it never races a publish.
        """
        if isinstance(self.dialect, SqliteDialect):
            path = self.dialect.path.parent / "locks" / f"{upload_id}.lock"
            with _file_lock(path, upload_id, Timeouts(publish_lock_seconds=0), wait=False) as got:
                yield PublishLock(upload_id) if got else None
            return
        with self._lock_session(Timeouts().lock_seconds) as tx:
            key = (PUBLISH_LOCK_NAMESPACE + upload_id,)
            if not tx.execute("select pg_try_advisory_lock(hashtextextended(?, 0))", key).fetchone()[0]:
                yield None
                return
            try:
                yield PublishLock(upload_id, tx)
            finally:
                _unlock(tx, key)

    @contextmanager
    def _lock_session(self, lock_wait_seconds: float) -> Iterator[_Transaction]:
        """A dedicated autocommit session for a publish lock: no idle timeouts, TCP keepalives."""
        assert isinstance(self.dialect, PostgresDialect)  # the caller checked the dialect
        connection = self.dialect.connect(
            keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3
        )
        with closing(connection):
            connection.autocommit = True
            tx = _Transaction(connection, self.dialect)
            tx.execute("select set_config('lock_timeout', ?, false)", (_milliseconds(lock_wait_seconds),))
            # The lock lives as long as this session: a server-side idle timeout would end it while
            # the publish uploads files. (idle_session_timeout is PostgreSQL 14+.)
            for setting in ("idle_in_transaction_session_timeout", "idle_session_timeout"):
                with suppress(psycopg.errors.UndefinedObject):
                    tx.execute("select set_config(?, '0', false)", (setting,))
            yield tx

    def begin_publish(self, *, upload_id: str, account_id: str, run_id: str, timeouts: Timeouts) -> str:
        """Binds the upload and takes its one snapshot out of ``ready`` (status ``error``), committed.

        The metadata keeps what it said and gains ``publishing`` (the run, since when); a new snapshot
        is inserted in that state. The snapshot's id never changes. ``contracts/supabase.md``,
        "Publishing is all or nothing": done before the first final file changes.
        """
        now = datetime.now(UTC).isoformat()
        marker = {"dagster_run_id": run_id, "started_at": now}
        with _foreign_keys_named(account_id), self._transaction(timeouts) as tx:
            self._bind_upload(tx, upload_id, account_id, now)
            found = tx.execute(
                "select id, metadata from snapshots where upload_id = ? order by created_at limit 1",
                (upload_id,),
            ).fetchone()
            if found:
                snapshot_id = str(found[0])
                metadata = {**_metadata(found[1]), "publishing": marker}
                metadata.pop(NEEDS_REPUBLISH, None)  # this run rewrites all three files
                tx.execute(
                    f"update snapshots set account_id = ?, label = ?, status = 'error', metadata = {self.dialect.json_param} "  # noqa: S608  # only constant dialect SQL is interpolated; every value is a parameter  # nosec B608
                    "where id = ?",
                    (account_id, SNAPSHOT_LABEL, json.dumps(metadata, sort_keys=True), snapshot_id),
                )
                return snapshot_id
            snapshot_id = str(uuid.uuid4())
            tx.execute(
                "insert into snapshots (id, account_id, upload_id, label, status, metadata) "  # noqa: S608  # only constant dialect SQL is interpolated; every value is a parameter  # nosec B608
                f"values (?, ?, ?, ?, 'error', {self.dialect.json_param})",
                (snapshot_id, account_id, upload_id, SNAPSHOT_LABEL, json.dumps({"publishing": marker})),
            )
        return snapshot_id

    def finish_publish(
        self,
        *,
        snapshot_id: str,
        run_id: str,
        metadata: dict[str, Any],
        metrics: SnapshotMetrics | Derivation | None,
        ready: bool,
        timeouts: Timeouts,
    ) -> Finished:
        """In one transaction: the snapshot's derived rows (given ``metrics``), its metadata and, when
        ``ready``, status ``ready``. Raises PublishSuperseded unless ``run_id`` still owns the publish.

        ``contracts/supabase.md``, "Publishing is all or nothing": only after the last file is in
        place; a snapshot is never ready without its derived rows.

        Given a :class:`Derivation`, the rows are computed here, from the history the transaction
        reads (:meth:`history`; ``contracts/supabase.md``, "History"), and the metadata records the
        partition date and window the history of later snapshots reads. Its ``refresh_newest`` (only
        with ``ready``) also recomputes, after this snapshot is ready, the derived rows of the account's
        newest ready snapshot with a later partition date (:meth:`_refresh_newest`). Snapshots between
        the two are left as they are: the dashboard reads the newest. Transactions that derive rows of
        one account take a lock on it first, so each sees the rows the others committed.
        """
        with self._transaction(timeouts) as tx:
            derivation = metrics if isinstance(metrics, Derivation) else None
            if derivation is not None:
                self.dialect.lock_history(tx, derivation.account_id)
                metadata = {**metadata, **history_metadata(derivation.partition_date, derivation.own.window)}
            lock = self.dialect.lock_upload
            query = f"select metadata from snapshots where id = ?{lock}"  # noqa: S608  # only constant dialect SQL is interpolated; every value is a parameter  # nosec B608
            row = tx.execute(query, (snapshot_id,)).fetchone()
            publishing = _metadata(row[0]).get("publishing") if row else None
            if not isinstance(publishing, dict) or publishing.get("dagster_run_id") != run_id:
                raise PublishSuperseded(
                    f"snapshot {snapshot_id} is no longer being published by run {run_id}: another run "
                    "took over the partition; rerun it"
                )
            if ready and _metadata(row[0]).get(NEEDS_REPUBLISH):
                raise PublishSuperseded(
                    f"snapshot {snapshot_id}: a run that lost its publish lock changed files of the "
                    f"folder while run {run_id} published it; the folder needs a republish: rerun the partition"
                )
            if derivation is not None:
                history = self._history(tx.execute, derivation.account_id, derivation.partition_date)
                metrics = derivation.own.metrics(history)
            if metrics is not None:
                self._replace_derived(tx, snapshot_id, metrics)
            stored = metadata if ready else {**metadata, "publishing": publishing}
            tx.execute(
                f"update snapshots set status = ?, metadata = {self.dialect.json_param} where id = ?",  # noqa: S608  # only constant dialect SQL is interpolated; every value is a parameter  # nosec B608
                ("ready" if ready else "error", json.dumps(stored, sort_keys=True), snapshot_id),
            )
            refreshed = None
            if derivation is not None and derivation.refresh_newest and ready:
                refreshed = self._refresh_newest(tx, derivation)
        return Finished(metrics, refreshed)

    # --- history (contracts/supabase.md, "Snapshot processing", History) ------------------------------

    def history(self, account_id: str, before: date) -> History:
        """What an in-order run of the account's partitions before ``before`` carries forward.

        ``contracts/supabase.md``, "History": publishing the partitions in date order gives each
        snapshot ``k`` (window ``[first_k, last_k]``) the chain value of a day ``d``: its own value when
        ``d`` is in its window, else (``d < first_k``) snapshot ``k-1``'s chain value; days after the
        window are dropped. Unrolled, the last snapshot's value of ``d`` is the own value of ``k*``, the
        latest partition whose window starts on or before ``d``, when ``d <= last_k*``; else there is
        no day ``d``. Computed from each snapshot's own window rows, that does not depend on the order
        the runs happened in, nor on the carried rows of the snapshots in between.

        The snapshots: the account's ``ready`` ones with a partition date before ``before`` and a
        window in their metadata (what ``publish`` records); of several with one partition date, the
        latest created (as the previous snapshot used to be chosen).

        Deleted snapshots (retention cleanup): a day that no remaining window holds (there is no
        ``k*``, or ``k*``'s window ends before it) is taken from the carried rows of the snapshot
        right after ``k*`` (the earliest one, when there is no ``k*``), if it has the day: that is
        where the days of the deleted snapshots before it live on. An in-order run has no such rows,
        so it is unchanged by this. The limit: a day that a remaining window holds comes from that
        window even when a later, deleted partition's window held it too (as if that partition had
        never run; both are fetches of the same day).

        ``last_email_date`` is the latest day with emails sent in those snapshots' own windows (or in
        the carried days taken from them), or the earliest snapshot's ``last_email_date`` if later:
        what the previous snapshot's ``last_email_date`` is in an in-order run. Two queries, whatever
        the number of snapshots: windows and the chain in SQL (window functions), only the rows of
        the history come back.
        """
        return self._history(lambda sql, params: self._all(sql, params), account_id, before)

    def _history(self, run: Callable[..., Any], account_id: str, before: date) -> History:
        """:meth:`history`, its statements run by ``run(sql, params)`` (a transaction's ``execute``,
        whose result has ``fetchall``, or :meth:`_all`, a list of rows).

        Each part reads a date range of one snapshot's rows (index ``snapshot_series (snapshot_id,
        date)``): its own window up to the next window's start, and the days between the windows
        before it and its own.
        """
        lowest, highest = self.dialect.min_date, self.dialect.max_date
        own = "s.date >= c.first_day and s.date <= c.last_day"
        carried = f"s.date > coalesce(c.before_last, {lowest}) and s.date < c.first_day"
        below_cutoff = f"s.date < coalesce(c.cutoff, {highest})"
        rows = _rows(
            run(
                f"{self._chain_sql()} "  # noqa: S608  # only constant dialect SQL is interpolated; every value is a parameter  # nosec B608
                "select s.metric_key, s.date, s.value from chain c join snapshot_series s on s.snapshot_id = c.id "
                f"where {own} and {below_cutoff} union all "
                "select s.metric_key, s.date, s.value from chain c join snapshot_series s on s.snapshot_id = c.id "
                f"where {carried} and {below_cutoff} order by 2, 1",
                (account_id, before.isoformat()),
            )
        )
        series = [SeriesPoint(key, _as_date(when), float(value)) for key, when, value in rows]
        emails = "s.metric_key = 'emailsSent' and s.value > 0"
        found = _rows(
            run(
                f"{self._chain_sql()} select "  # noqa: S608  # only constant dialect SQL is interpolated; every value is a parameter  # nosec B608
                "(select max(s.date) from chain c join snapshot_series s on s.snapshot_id = c.id "
                f"where {own} and {emails}), "
                "(select max(s.date) from chain c join snapshot_series s on s.snapshot_id = c.id "
                f"where {carried} and {emails}), "
                "(select last_email_date from chain where before_last is null)",
                (account_id, before.isoformat()),
            )
        )
        last = [_as_date(value) for value in (found[0] if found else ()) if value is not None]
        return History(series, max(last, default=None))

    def _chain_sql(self) -> str:
        """``with ... chain``: the account's ready snapshots before a partition date (parameters:
        account id, date), one per partition date, each with its window, ``cutoff`` (the earliest
        first day of a later one) and ``before_last`` (the latest last day of an earlier one)."""
        partition = self.dialect.partition_date()
        first, last = self.dialect.window_day("first_day"), self.dialect.window_day("last_day")
        return (
            "with ready as ("  # noqa: S608  # only constant dialect SQL is interpolated  # nosec B608
            f"select id, last_email_date, {partition} as partition_date, "
            f"{self.dialect.date_of(first)} as first_day, {self.dialect.date_of(last)} as last_day, "
            f"row_number() over (partition by {partition} order by created_at desc, id desc) as tie "
            f"from snapshots where account_id = ? and status = 'ready' and {partition} < ? "
            f"and {first} is not null and {last} is not null), "
            "chain as (select id, last_email_date, first_day, last_day, "
            "min(first_day) over (order by partition_date rows between 1 following and unbounded following) as cutoff, "
            "max(last_day) over (order by partition_date rows between unbounded preceding and 1 preceding) as before_last "
            "from ready where tie = 1)"
        )

    def _refresh_newest(self, tx: _Transaction, derivation: Derivation) -> str | None:
        """Recomputes the derived rows of the account's newest ready snapshot with a partition date
        after the derivation's from its own window rows (``derivation.stored_own``) and its history
        (:meth:`history`), inside ``tx``.

        The newest *ready* one is the one the dashboard shows. Its row is locked (a republish of it
        waits, or is waited for: then it is found only if still ready); a newer snapshot being
        republished right now is not ready and derives its own rows when it finishes, after this
        transaction (the account lock of ``finish_publish``). One without a partition date or window in
        its metadata is left alone. Own rows are its stored series days inside its window, rebuilt
        exactly (values are stored exactly), so the result equals an in-order run's rows for it.
        Returns its id when its rows were replaced.
        """
        account_id, after = derivation.account_id, derivation.partition_date
        partition = self.dialect.partition_date()
        row = tx.execute(
            f"select id, metadata from snapshots where account_id = ? and status = 'ready' "  # noqa: S608  # only constant dialect SQL is interpolated; every value is a parameter  # nosec B608
            f"and {partition} > ? order by {partition} desc, created_at desc limit 1{self.dialect.lock_upload}",
            (account_id, after.isoformat()),
        ).fetchone()
        if row is None:
            return None
        snapshot_id, metadata = str(row[0]), _metadata(row[1])
        try:
            newest = date.fromisoformat(str(metadata["partition_date"]))
            window = (
                date.fromisoformat(str(metadata["window"]["first_day"])),
                date.fromisoformat(str(metadata["window"]["last_day"])),
            )
        except (KeyError, TypeError, ValueError):
            log.warning(
                "snapshot %s has no partition date or window in its metadata: not refreshed", snapshot_id
            )
            return None
        own = tx.execute(
            "select metric_key, date, value from snapshot_series where snapshot_id = ? "
            "and date >= ? and date <= ?",
            (snapshot_id, window[0].isoformat(), window[1].isoformat()),
        ).fetchall()
        points = [SeriesPoint(key, _as_date(when), value) for key, when, value in own]
        try:
            activity = derivation.stored_own(window, points)
        except ValueError as exc:
            log.warning("snapshot %s: %s; not refreshed", snapshot_id, exc)
            return None
        self._replace_derived(
            tx, snapshot_id, activity.metrics(self._history(tx.execute, account_id, newest))
        )
        return snapshot_id

    def abandon_publish(self, *, snapshot_id: str, run_id: str, reason: str, timeouts: Timeouts) -> None:
        """Takes the snapshot out of ``ready`` (status ``error``), committed on a fresh connection, with
        ``metadata.needs_republish`` saying why: a run that lost its publish changed final files, so the
        folder may mix two runs' files. ``publishing`` stays as it is; the next publish clears the note.
        """
        note = {"by_run": run_id, "reason": reason, "at": datetime.now(UTC).isoformat()}
        with self._transaction(timeouts) as tx:
            query = f"select metadata from snapshots where id = ?{self.dialect.lock_upload}"  # noqa: S608  # only constant dialect SQL is interpolated; every value is a parameter  # nosec B608
            row = tx.execute(query, (snapshot_id,)).fetchone()
            if row is None:
                return
            metadata = {**_metadata(row[0]), NEEDS_REPUBLISH: note}
            tx.execute(
                f"update snapshots set status = 'error', metadata = {self.dialect.json_param} where id = ?",  # noqa: S608  # only constant dialect SQL is interpolated; every value is a parameter  # nosec B608
                (json.dumps(metadata, sort_keys=True), snapshot_id),
            )

    # --- reads -------------------------------------------------------------------------------------

    def _bind_upload(self, tx: _Transaction, upload_id: str, account_id: str, now: str) -> None:
        """Upserts the upload as ``bound`` to the account and locks its row for the transaction.

        A retention cleanup's mark goes: the folder is being rewritten, it is no longer emptied.
        Only constant dialect SQL is ever interpolated in this module; values are parameters.
        """
        tx.execute(
            "insert into uploads (id, account_id, status, updated_at) values (?, ?, 'bound', ?) "
            "on conflict (id) do update set account_id = excluded.account_id, status = 'bound', "
            "updated_at = excluded.updated_at, "
            "error = case when uploads.error like ? then null else uploads.error end",
            (upload_id, account_id, now, CLEANUP_MARK_PREFIX + "%"),
        )
        tx.execute(f"select id from uploads where id = ?{self.dialect.lock_upload}", (upload_id,))  # noqa: S608  # only constant dialect SQL is interpolated; every value is a parameter  # nosec B608

    def previous_snapshot(self, account_id: str, before: date) -> SnapshotRow | None:
        """The account's ready snapshot with the latest partition date before ``before``.

        By partition date, not creation time: backfills run out of order. (Publishing no longer takes
        its history from this one snapshot's series but from :meth:`history`.)
        """
        partition = self.dialect.partition_date()
        row = self._one(
            f"select {self._snapshot_columns} from snapshots where account_id = ? and status = 'ready' "  # noqa: S608  # only constant dialect SQL is interpolated; every value is a parameter  # nosec B608
            f"and {partition} < ? order by {partition} desc, created_at desc limit 1",
            (account_id, before.isoformat()),
        )
        return _snapshot(row) if row else None

    def snapshot_for_upload(self, upload_id: str) -> SnapshotRow | None:
        row = self._one(f"select {self._snapshot_columns} from snapshots where upload_id = ?", (upload_id,))  # noqa: S608  # only constant dialect SQL is interpolated; every value is a parameter  # nosec B608
        return _snapshot(row) if row else None

    def upload(self, upload_id: str) -> dict[str, Any] | None:
        row = self._one("select id, account_id, status from uploads where id = ?", (upload_id,))
        return {"id": str(row[0]), "account_id": str(row[1]), "status": row[2]} if row else None

    def series(self, snapshot_id: str) -> list[SeriesPoint]:
        rows = self._all(
            "select metric_key, date, value from snapshot_series where snapshot_id = ? order by date, metric_key",
            (snapshot_id,),
        )
        return [SeriesPoint(key, _as_date(day), float(value)) for key, day, value in rows]

    def totals(self, snapshot_id: str) -> dict[str, float]:
        rows = self._all(
            "select metric_key, value from snapshot_totals where snapshot_id = ?", (snapshot_id,)
        )
        return {key: float(value) for key, value in rows}

    def klaviyo_integrations(self) -> list[Integration]:
        rows = self._all(
            "select i.account_id, i.encrypted_api_key, i.enabled, a.deleted_at is not null "
            "from account_integrations i join accounts a on a.id = i.account_id "
            "where i.provider = 'klaviyo' order by i.account_id",
            (),
        )
        return [Integration(str(a), key, bool(enabled), bool(deleted)) for a, key, enabled, deleted in rows]

    def record_integration_run(self, account_id: str, error: str | None) -> None:
        """``last_run_at`` = now and ``last_error`` = ``error`` (None clears it) on the Klaviyo row."""
        now = datetime.now(UTC).isoformat()
        with self._transaction() as tx:
            tx.execute(
                "update account_integrations set last_run_at = ?, last_error = ?, updated_at = ? "
                "where account_id = ? and provider = 'klaviyo'",
                (now, error, now, account_id),
            )

    def integration_status(self, account_id: str) -> tuple[str | None, str | None]:
        """(last_run_at, last_error) of the account's Klaviyo row, as stored."""
        row = self._one(
            "select last_run_at, last_error from account_integrations where account_id = ? and provider = 'klaviyo'",
            (account_id,),
        )
        return (str(row[0]) if row and row[0] else None, row[1] if row else None)

    def account_timezones(self) -> dict[str, RecordedTimezone]:
        """Every recorded account timezone, by account id, in one query (read on every schedule tick)."""
        with _migrated(self.dialect.timezones_table):
            rows = self._all(
                "select account_id, timezone, fallback_reason, source, updated_at "  # noqa: S608  # only constant dialect SQL is interpolated; every value is a parameter  # nosec B608
                f"from {self.dialect.timezones_table}",
                (),
            )
        return {
            str(account): RecordedTimezone(str(account), timezone, reason, source, str(updated))
            for account, timezone, reason, source, updated in rows
        }

    def record_account_timezone(
        self, account_id: str, timezone: str, fallback_reason: str | None, source: str
    ) -> None:
        """Inserts or replaces the account's timezone; ``source`` says who read it from Klaviyo."""
        now = datetime.now(UTC).isoformat()
        with _migrated(self.dialect.timezones_table), self._transaction() as tx:
            tx.execute(
                f"insert into {self.dialect.timezones_table} "  # noqa: S608  # only constant dialect SQL is interpolated; every value is a parameter  # nosec B608
                "(account_id, timezone, fallback_reason, source, updated_at) values (?, ?, ?, ?, ?) "
                "on conflict (account_id) do update set timezone = excluded.timezone, "
                "fallback_reason = excluded.fallback_reason, source = excluded.source, "
                "updated_at = excluded.updated_at",
                (account_id, timezone, fallback_reason, source, now),
            )

    def count_snapshots(self, upload_id: str) -> int:
        return int(self._one("select count(*) from snapshots where upload_id = ?", (upload_id,))[0])

    _snapshot_columns = "id, account_id, upload_id, label, status, last_email_date, metadata"

    # --- plumbing ----------------------------------------------------------------------------------

    def _owned_and_missing(self) -> bool:
        """A local SQLite file that does not exist yet: reads find nothing, without creating it."""
        return isinstance(self.dialect, SqliteDialect) and not self.dialect.path.exists()

    def _ensure_schema(self) -> None:
        # The local store owns its SQLite file and creates the schema on first use; Postgres is the
        # dashboard's, migrated on purpose with `python -m klaviyo_dagster migrate`.
        if isinstance(self.dialect, SqliteDialect) and not self._schema_checked:
            self.migrate()
            self._schema_checked = True

    @contextmanager
    def _transaction(self, timeouts: Timeouts | None = None) -> Iterator[_Transaction]:
        self._ensure_schema()
        connection = self.dialect.connect()
        try:
            if isinstance(self.dialect, SqliteDialect):
                if timeouts is not None:
                    connection.execute(f"pragma busy_timeout = {int(timeouts.lock_seconds * 1000)}")
                connection.execute("begin immediate")
            tx = _Transaction(connection, self.dialect)
            if timeouts is not None:
                self.dialect.apply_timeouts(tx, timeouts)
            yield tx
            tx.commit()
        except BaseException:
            connection.rollback()
            raise
        finally:
            connection.close()

    def _one(self, sql: str, params: Sequence[Any]) -> Any:
        if self._owned_and_missing():
            return None
        self._ensure_schema()
        with closing(self.dialect.connect()) as connection:
            return connection.execute(self.dialect.sql(sql), params).fetchone()

    def _all(self, sql: str, params: Sequence[Any]) -> list[Any]:
        if self._owned_and_missing():
            return []
        self._ensure_schema()
        with closing(self.dialect.connect()) as connection:
            return list(connection.execute(self.dialect.sql(sql), params).fetchall())


class _Transaction:
    """A connection inside ``IngestTables._transaction`` speaking our ``?`` placeholders."""

    def __init__(self, connection: Any, dialect: Dialect) -> None:
        self._connection = connection
        self._dialect = dialect

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._connection.execute(self._dialect.sql(sql), params)

    def commit(self) -> None:
        self._connection.commit()

    def executemany(self, sql: str, rows: list[Sequence[Any]]) -> None:
        if not rows:
            return
        if isinstance(self._connection, sqlite3.Connection):
            self._connection.executemany(sql, rows)
        else:
            with self._connection.cursor() as cursor:
                cursor.executemany(self._dialect.sql(sql), rows)


class UnknownAccount(Exception):
    """The account has no row in the dashboard's ``accounts`` table."""


class MissingTable(Exception):
    """A table of this project is missing: the database was not migrated since it was added."""


@contextmanager
def _foreign_keys_named(account_id: str) -> Iterator[None]:
    try:
        yield
    except (psycopg.errors.ForeignKeyViolation, sqlite3.IntegrityError) as exc:
        if "foreign key" not in str(exc).lower():
            raise
        raise UnknownAccount(
            f"Account {account_id} is not in the dashboard's accounts table: create the account in the "
            "dashboard first (or check KLAVIYO_ACCOUNT_ID)."
        ) from None


@contextmanager
def _migrated(table: str) -> Iterator[None]:
    """A missing table (Postgres not migrated since it was added) becomes MissingTable, naming the fix."""
    try:
        yield
    except psycopg.errors.UndefinedTable:
        raise MissingTable(
            f"The table {table} does not exist: run `python -m klaviyo_dagster migrate` (it only "
            "creates what is missing)"
        ) from None


def _milliseconds(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def _metadata(value: Any) -> dict[str, Any]:
    """A snapshot's metadata as a dict (jsonb arrives parsed, SQLite text does not)."""
    if isinstance(value, str):
        value = json.loads(value or "{}")
    return dict(value) if isinstance(value, dict) else {}


def _lock_timeout(upload_id: str, timeouts: Timeouts) -> PublishLockTimeout:
    return PublishLockTimeout(
        f"another publish of upload {upload_id} held its lock for over {timeouts.publish_lock_seconds:g} s; "
        "nothing was changed: rerun the partition once it is done"
    )


@contextmanager
def _file_lock(path: Path, upload_id: str, timeouts: Timeouts, wait: bool = True) -> Iterator[bool]:
    """An exclusive ``flock`` on ``path``, polled until ``timeouts.publish_lock_seconds``; with
    ``wait=False`` tried once, yielding whether it was taken.

    Held per open file, so two threads of one process exclude each other too; the kernel releases it
    when the process dies.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeouts.publish_lock_seconds
    with path.open("a+b") as handle:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    yield False
                    return
                if time.monotonic() >= deadline:
                    raise _lock_timeout(upload_id, timeouts) from None
                time.sleep(0.02)
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _unlock(tx: _Transaction, key: tuple[str]) -> None:
    """Releases a session advisory lock; a session already gone released it with itself."""
    with suppress(psycopg.Error):
        tx.execute("select pg_advisory_unlock(hashtextextended(?, 0))", key)


def _rows(result: Any) -> list[Any]:
    """The rows of a statement's result: a cursor's ``fetchall()``, or the rows themselves."""
    return list(result.fetchall()) if hasattr(result, "fetchall") else list(result)


def history_metadata(partition_date: date, window: tuple[date, date]) -> dict[str, Any]:
    """A snapshot's partition date and window as its metadata records them (and
    :meth:`IngestTables.history` reads them)."""
    return {
        "partition_date": partition_date.isoformat(),
        "window": {"first_day": window[0].isoformat(), "last_day": window[1].isoformat()},
    }


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _snapshot(row: Sequence[Any]) -> SnapshotRow:
    id_, account_id, upload_id, label, status, last_email_date, metadata = row
    if isinstance(metadata, str):
        metadata = json.loads(metadata)
    return SnapshotRow(
        id=str(id_),
        account_id=str(account_id),
        upload_id=str(upload_id) if upload_id else None,
        label=label,
        status=status,
        last_email_date=_as_date(last_email_date) if last_email_date else None,
        metadata=metadata or {},
    )
