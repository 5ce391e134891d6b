"""The report call ledger's rows in the ingest database: Postgres (Supabase) or the local SQLite file.

The rule deciding what a row means lives in ``klaviyo_dagster/klaviyo/ledger.py``; this module keeps
the rows and serializes admissions per (account, rate-limit group):

- Postgres: table ``klaviyo_dagster.klaviyo_report_calls``
  (``supabase/migrations/20261202000000_klaviyo_report_calls.sql``); one transaction per admission
  holding ``pg_advisory_xact_lock`` on a hash of the key, so two processes admitting a call of one
  account's group take turns, while other keys do not wait. Lock and statement timeouts keep a stuck
  database from hanging a run. Works through Supabase's transaction pooler too (the lock is the
  transaction's).
- SQLite (the local store): table ``klaviyo_report_calls`` (``storage/sqlite_schema.sql``, created on
  first use); ``begin immediate`` serializes every writer of the file.

Times are stored as UTC: ``timestamptz`` in Postgres, ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` text in SQLite
(fixed width, so text order is time order). Errors never quote the connection string: connecting goes
through ``PostgresDialect.connect`` (see ``klaviyo_dagster/redaction.py``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager, suppress
from datetime import UTC, datetime
from typing import Any

import psycopg

from klaviyo_dagster.klaviyo.ledger import Admission, CallLedgerError, RecordedCall
from klaviyo_dagster.redaction import DatabaseConnectionError
from klaviyo_dagster.storage.tables import Dialect, IngestTables, SqliteDialect

POSTGRES_TABLE = "klaviyo_dagster.klaviyo_report_calls"
SQLITE_TABLE = "klaviyo_report_calls"
LOCK_NAMESPACE = "klaviyo-dagster report calls "
LOCK_TIMEOUT = "30s"
STATEMENT_TIMEOUT = "30s"
_SQLITE_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"


class CallLedgerNotMigrated(CallLedgerError):
    """The Postgres table is missing: the database was not migrated since the ledger was added."""


class CallLedgerUnavailable(CallLedgerError):
    """The ingest database failed or could not be reached."""


class SqlCallLedgerStore:
    """``CallLedgerStore`` (``klaviyo/ledger.py``) on the ingest database's dialect."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._sqlite = isinstance(dialect, SqliteDialect)
        self._table = SQLITE_TABLE if self._sqlite else POSTGRES_TABLE
        self._schema_ready = not self._sqlite

    @classmethod
    def for_tables(cls, tables: IngestTables) -> SqlCallLedgerStore:
        """The ledger in the same database as the ingest tables."""
        return cls(tables.dialect)

    # --- CallLedgerStore ---------------------------------------------------------------------------

    def admit(
        self,
        account_id: str,
        group: str,
        *,
        run_id: str | None,
        clock: Callable[[], float],
        horizon_seconds: float,
        keep_seconds: float,
        decide: Callable[[Sequence[RecordedCall], float], Admission],
    ) -> tuple[Admission, Any]:
        key = (account_id, group)
        with self._transaction(key) as tx:
            now = clock()  # read once the key is ours: no admission of the key is in between
            rows = tx.execute(
                f"select sent_at, released_at from {self._table} "  # noqa: S608  # only the constant table name is interpolated  # nosec B608
                "where account_id = ? and rate_limit_group = ? and sent_at >= ?",
                (*key, self._stamp(now - horizon_seconds)),
            ).fetchall()
            calls = [RecordedCall(self._seconds(sent), self._seconds(released)) for sent, released in rows]
            admission = decide(calls, now)
            call_id = None
            if admission.admitted:
                call_id = tx.execute(
                    f"insert into {self._table} (account_id, rate_limit_group, sent_at, run_id) "  # noqa: S608  # only the constant table name is interpolated  # nosec B608
                    "values (?, ?, ?, ?) returning id",
                    (*key, self._stamp(now), run_id),
                ).fetchone()[0]
            tx.execute(
                f"delete from {self._table} where account_id = ? and rate_limit_group = ? and sent_at < ?",  # noqa: S608  # only the constant table name is interpolated  # nosec B608
                (*key, self._stamp(now - keep_seconds)),
            )
        return admission, call_id

    def release(self, call_id: Any, released_at: float) -> None:
        with self._transaction(None) as tx:
            tx.execute(
                f"update {self._table} set released_at = ? where id = ? and released_at is null",  # noqa: S608  # only the constant table name is interpolated  # nosec B608
                (self._stamp(released_at), call_id),
            )

    # --- reads, for operators and tests ------------------------------------------------------------

    def recorded(self, account_id: str, group: str) -> list[RecordedCall]:
        """The key's rows still kept, oldest first."""
        with self._transaction(None) as tx:
            rows = tx.execute(
                f"select sent_at, released_at from {self._table} "  # noqa: S608  # only the constant table name is interpolated  # nosec B608
                "where account_id = ? and rate_limit_group = ? order by sent_at, id",
                (account_id, group),
            ).fetchall()
        return [RecordedCall(self._seconds(sent), self._seconds(released)) for sent, released in rows]

    # --- plumbing ----------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self, key: tuple[str, str] | None) -> Iterator[_Statements]:
        """One short transaction; with a key, serialized against every other one of the same key.

        Database errors become ``CallLedgerError``s whose text holds no secret.
        """
        with _translated_errors():
            if not self._schema_ready:
                IngestTables(self._dialect).migrate()  # the local store's schema, created on first use
                self._schema_ready = True
            with closing(self._dialect.connect()) as connection:
                try:
                    tx = _Statements(connection, self._dialect)
                    if self._sqlite:
                        connection.execute("begin immediate")
                    else:
                        tx.execute(
                            "select set_config('lock_timeout', ?, true), set_config('statement_timeout', ?, true)",
                            (LOCK_TIMEOUT, STATEMENT_TIMEOUT),
                        )
                        if key is not None:
                            tx.execute(
                                "select pg_advisory_xact_lock(hashtextextended(?, 0))",
                                (f"{LOCK_NAMESPACE}{key[0]} {key[1]}",),
                            )
                    yield tx
                    connection.commit()
                except BaseException:
                    with suppress(psycopg.Error, sqlite3.Error):
                        connection.rollback()
                    raise

    def _stamp(self, seconds: float) -> datetime | str:
        moment = datetime.fromtimestamp(seconds, UTC)
        return moment.strftime(_SQLITE_TIME) if self._sqlite else moment

    def _seconds(self, value: Any) -> float | None:
        if value is None:
            return None
        if isinstance(value, str):
            return datetime.strptime(value, _SQLITE_TIME).replace(tzinfo=UTC).timestamp()
        return float(value.timestamp())


class _Statements:
    """A connection in a ledger transaction, speaking the ``?`` placeholders of both dialects."""

    def __init__(self, connection: Any, dialect: Dialect) -> None:
        self._connection = connection
        self._dialect = dialect

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._connection.execute(self._dialect.sql(sql), params)


@contextmanager
def _translated_errors() -> Iterator[None]:
    """psycopg and sqlite3 errors as CallLedgerErrors: Postgres ones by type only (a server message may
    quote what it was given), a refused connection by its redacted text."""
    try:
        yield
        return
    except psycopg.errors.UndefinedTable:
        raise CallLedgerNotMigrated(
            f"the table {POSTGRES_TABLE} does not exist: run `python -m klaviyo_dagster migrate` "
            "(it only creates what is missing)"
        ) from None
    except DatabaseConnectionError as exc:
        error = CallLedgerUnavailable(f"the ingest database could not be reached: {exc}")
    except psycopg.Error as exc:
        error = CallLedgerUnavailable(f"the ingest database failed ({type(exc).__name__})")
    except sqlite3.Error as exc:
        error = CallLedgerUnavailable(f"the local ingest database failed ({type(exc).__name__}: {exc})")
    raise error from None  # outside the handler: nothing chains the original error
