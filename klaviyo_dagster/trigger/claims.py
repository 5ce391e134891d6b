"""Idempotency keys claimed atomically in the ingest database, so two trigger processes launch one run.

A live call first inserts a row for (account, idempotency key) with ``insert ... on conflict do
nothing``: the one request whose insert lands launches; every other request reads the row. The row
holds the request's parameters (and their fingerprint), the claim's token and, once launched, the
run id. A failed launch deletes its claim; a successful one never does, even when recording its run
id fails (the next request with the key finds the run in Dagster by its tags and records it); a
finished run's claim is taken over (compare-and-set on the token and run id) by the next request
with the key. Postgres: the table
``klaviyo_dagster.trigger_idempotency`` (``supabase/migrations/*_trigger_idempotency.sql``); the local
store's SQLite file gets its table on first use.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from klaviyo_dagster import environment
from klaviyo_dagster.storage.tables import Dialect, SqliteDialect, run_statement

POSTGRES_TABLE = "klaviyo_dagster.trigger_idempotency"
SQLITE_TABLE = "klaviyo_trigger_idempotency"
SQLITE_DDL = f"""
create table if not exists {SQLITE_TABLE} (
  account_id text not null,
  idempotency_key text not null,
  fingerprint text not null,
  parameters text not null,
  run_id text,
  claim_token text not null,
  created_at text not null,
  updated_at text not null,
  primary key (account_id, idempotency_key)
)
"""
_COLUMNS = "fingerprint, parameters, run_id, claim_token, updated_at"


class ClaimsNotMigrated(Exception):
    """The Postgres table is missing: the database was not migrated since the trigger claimed keys."""


@dataclass(frozen=True)
class Claim:
    """The row of one (account, idempotency key): who claimed it, with what, and the run once launched."""

    fingerprint: str
    parameters: dict[str, Any]
    run_id: str | None  # None while the claimer launches
    token: str
    updated_at: datetime

    def age_seconds(self, now: datetime) -> float:
        return (now - self.updated_at).total_seconds()


def fingerprint_of(parameters: Mapping[str, Any]) -> str:
    """A stable digest of a request's parameters (sorted keys, compact JSON)."""
    canonical = json.dumps(parameters, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def differences(before: Mapping[str, Any], now: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The parameters whose values differ: ``{name: {"previous": ..., "now": ...}}``."""
    names = sorted(set(before) | set(now))
    return {
        name: {"previous": before.get(name), "now": now.get(name)}
        for name in names
        if before.get(name) != now.get(name)
    }


class IdempotencyClaims:
    """Claims of idempotency keys in the ingest database's dialect (Postgres or the local SQLite)."""

    def __init__(self, dialect: Dialect, clock: Callable[[], datetime] | None = None) -> None:
        self._dialect = dialect
        self._sqlite = isinstance(dialect, SqliteDialect)
        self._table = SQLITE_TABLE if self._sqlite else POSTGRES_TABLE
        self._clock = clock or (lambda: datetime.now(UTC))

    @classmethod
    def from_env(cls) -> IdempotencyClaims:
        """The claims of the ingest store the environment names (as every other read of the trigger)."""
        return cls(environment.ingest_store().tables.dialect)

    def now(self) -> datetime:
        return self._clock()

    # --- the four operations ------------------------------------------------------------------------

    def insert(self, account_id: str, key: str, parameters: Mapping[str, Any]) -> str | None:
        """Claims the key when no row exists; the new claim's token, or None when another holds it."""
        token, stamp = uuid.uuid4().hex, self._stamp()
        count, _ = self._run(
            f"insert into {self._table} (account_id, idempotency_key, fingerprint, parameters, run_id, "  # noqa: S608  # only the constant table name is interpolated  # nosec B608
            "claim_token, created_at, updated_at) values (?, ?, ?, ?, null, ?, ?, ?) "
            "on conflict (account_id, idempotency_key) do nothing",
            (account_id, key, fingerprint_of(parameters), _dumps(parameters), token, stamp, stamp),
        )
        return token if count == 1 else None

    def read(self, account_id: str, key: str) -> Claim | None:
        """The key's row, None when there is none."""
        _, rows = self._run(
            f"select {_COLUMNS} from {self._table} where account_id = ? and idempotency_key = ?",  # noqa: S608  # only constant names are interpolated  # nosec B608
            (account_id, key),
        )
        return _claim(rows[0]) if rows else None

    def take_over(
        self, account_id: str, key: str, previous: Claim, parameters: Mapping[str, Any]
    ) -> str | None:
        """Replaces ``previous`` (a finished run, or an abandoned launch) by a new claim; None if it changed."""
        token = uuid.uuid4().hex
        same_run = "run_id is null" if previous.run_id is None else "run_id = ?"
        run_param: tuple[Any, ...] = () if previous.run_id is None else (previous.run_id,)
        count, _ = self._run(
            f"update {self._table} set fingerprint = ?, parameters = ?, run_id = null, claim_token = ?, "  # noqa: S608  # only constant SQL is interpolated  # nosec B608
            f"updated_at = ? where account_id = ? and idempotency_key = ? and claim_token = ? and {same_run}",
            (
                fingerprint_of(parameters),
                _dumps(parameters),
                token,
                self._stamp(),
                account_id,
                key,
                previous.token,
                *run_param,
            ),
        )
        return token if count == 1 else None

    def record(self, account_id: str, key: str, token: str, run_id: str) -> bool:
        """Stores the launched run's id on the claim ``token``; False when the claim was taken over
        meanwhile. Recording the same run again is True: a request that found the run in Dagster (its
        claimer could not record it) may have recorded it first."""
        count, _ = self._run(
            f"update {self._table} set run_id = ?, updated_at = ? "  # noqa: S608  # only the constant table name is interpolated  # nosec B608
            "where account_id = ? and idempotency_key = ? and claim_token = ? "
            "and (run_id is null or run_id = ?)",
            (run_id, self._stamp(), account_id, key, token, run_id),
        )
        return count == 1

    def release(self, account_id: str, key: str, token: str) -> None:
        """Deletes our claim (its launch failed), so the next request with the key launches."""
        self._run(
            f"delete from {self._table} "  # noqa: S608  # only the constant table name is interpolated  # nosec B608
            "where account_id = ? and idempotency_key = ? and claim_token = ? and run_id is null",
            (account_id, key, token),
        )

    # --- plumbing -----------------------------------------------------------------------------------

    def _stamp(self) -> datetime | str:
        now = self.now()
        return now.isoformat() if self._sqlite else now

    def _run(self, sql: str, params: Sequence[Any]) -> tuple[int, list[Any]]:
        """One statement in its own transaction: (rows affected, rows returned)."""
        return run_statement(self._dialect, sql, params, sqlite_ddl=SQLITE_DDL, not_migrated=_not_migrated)


def _not_migrated() -> ClaimsNotMigrated:
    return ClaimsNotMigrated(
        f"The table {POSTGRES_TABLE} does not exist: run `python -m klaviyo_dagster migrate`"
    )


def _dumps(parameters: Mapping[str, Any]) -> str:
    return json.dumps(parameters, sort_keys=True, default=str)


def _claim(row: Sequence[Any]) -> Claim:
    fingerprint, parameters, run_id, token, updated_at = row
    if isinstance(updated_at, str):
        updated_at = datetime.fromisoformat(updated_at)
    if isinstance(parameters, str):
        parameters = json.loads(parameters)
    return Claim(fingerprint, dict(parameters), run_id, token, updated_at)
