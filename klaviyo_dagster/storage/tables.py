"""The dashboard's tables: uploads, snapshots and their derived rows, in Postgres or SQLite.

One class, two dialects: Supabase's Postgres through a direct connection string (psycopg, prepared
statements off so Supabase's transaction pooler works too), and SQLite for the local store. Every
write that the dashboard could observe happens in one transaction: a snapshot appears together with
its derived rows, and a rerun replaces them instead of adding new ones.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol

import psycopg

from klaviyo_dagster.processing.metrics import SeriesPoint, SnapshotMetrics

SNAPSHOT_LABEL = "Orchestrated Update"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS_DIR = PROJECT_ROOT / "supabase" / "migrations"
SQLITE_SCHEMA = Path(__file__).with_name("sqlite_schema.sql")
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
    def connect(self) -> Any:
        """A new connection."""

    def sql(self, statement: str) -> str:
        return statement


class PostgresDialect(Dialect):
    name = "postgres"
    lock_upload = " for update"
    json_param = "cast(? as jsonb)"
    timezones_table = "klaviyo_dagster.account_timezones"  # off Supabase's Data API (public only)

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn

    def connect(self) -> psycopg.Connection:
        # prepare_threshold=None: no server-side prepared statements, which the pooler cannot route.
        return psycopg.connect(self._dsn, prepare_threshold=None, connect_timeout=10)

    def partition_date(self) -> str:
        return "metadata->>'partition_date'"

    def sql(self, statement: str) -> str:
        return statement.replace("?", "%s")


class SqliteDialect(Dialect):
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path

    def connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        connection.execute("pragma foreign_keys = on")
        connection.execute("pragma journal_mode = wal")
        return connection

    def partition_date(self) -> str:
        return "json_extract(metadata, '$.partition_date')"


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
            tx.execute(
                "insert into uploads (id, account_id, status, updated_at) values (?, ?, 'bound', ?) "
                "on conflict (id) do update set account_id = excluded.account_id, status = 'bound', "
                "updated_at = excluded.updated_at",
                (upload_id, account_id, now),
            )
            # Only constant dialect SQL is ever interpolated in this module; values are parameters.
            tx.execute(f"select id from uploads where id = ?{self.dialect.lock_upload}", (upload_id,))  # noqa: S608  # only constant dialect SQL is interpolated; every value is a parameter  # nosec B608
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

    def _replace_derived(self, tx: _Connection, snapshot_id: str, metrics: SnapshotMetrics) -> None:
        tx.execute("delete from snapshot_totals where snapshot_id = ?", (snapshot_id,))
        tx.execute("delete from snapshot_series where snapshot_id = ?", (snapshot_id,))
        tx.executemany(
            "insert into snapshot_totals (snapshot_id, metric_key, value) values (?, ?, ?)",
            [(snapshot_id, key, value) for key, value in metrics.totals.items()],
        )
        tx.executemany(
            "insert into snapshot_series (snapshot_id, metric_key, date, value) values (?, ?, ?, ?)",
            [(snapshot_id, p.metric_key, p.day.isoformat(), p.value) for p in metrics.series],
        )
        last = metrics.last_email_date.isoformat() if metrics.last_email_date else None
        tx.execute("update snapshots set last_email_date = ? where id = ?", (last, snapshot_id))

    # --- reads -------------------------------------------------------------------------------------

    def previous_snapshot(self, account_id: str, before: date) -> SnapshotRow | None:
        """The account's snapshot with the latest partition date before ``before``.

        By partition date, not creation time: backfills run out of order.
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
    def _transaction(self) -> Iterator[_Transaction]:
        self._ensure_schema()
        connection = self.dialect.connect()
        try:
            if isinstance(self.dialect, SqliteDialect):
                connection.execute("begin immediate")
            yield _Transaction(connection, self.dialect)
            connection.commit()
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
