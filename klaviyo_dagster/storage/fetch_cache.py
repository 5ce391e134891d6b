"""The fetch cache: Klaviyo answers one account's runs of one UTC day share (``producers/shared.py``).

Rows of ``(account, UTC day, key) -> JSON`` in the ingest database (Postgres:
``klaviyo_dagster.klaviyo_fetch_cache``, ``supabase/migrations/*_klaviyo_fetch_cache.sql``; the local
store's SQLite file gets its table on first use). Only the current UTC day is read; each run first
deletes its account's rows of earlier days and every account's rows older than yesterday, so the
table holds at most two days. Nothing is added to the bucket: the day's subscribers.csv is read back
from the upload folder it was published to, and its record holds counts only. The rows hold what a
run read from Klaviyo about the account (flow and campaign definitions, sender addresses included,
report numbers) and the SHA-256 and row count of each file of 1 MiB or more a publish made ready
today (``defs/snapshot.py``; a fingerprint of a whole file of thousands of profiles), never a key or
a subscriber's data.

Storage knows nothing of the producers: :func:`open_fetch_cache` gives a store of JSON documents
(what ``producers.shared.ResponseStore`` asks for), and the Dagster layer hands it to them.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from klaviyo_dagster.storage.tables import Dialect, SqliteDialect, run_statement

T = TypeVar("T")
log = logging.getLogger(__name__)
POSTGRES_TABLE = "klaviyo_dagster.klaviyo_fetch_cache"
SQLITE_TABLE = "klaviyo_fetch_cache"
SQLITE_DDL = f"""
create table if not exists {SQLITE_TABLE} (
  account_id text not null,
  fetched_on text not null,
  cache_key text not null,
  payload text not null,
  created_at text not null,
  primary key (account_id, fetched_on, cache_key)
)
"""


class FetchCacheNotMigrated(Exception):
    """The Postgres table is missing: run ``python -m klaviyo_dagster migrate``."""


class FetchCache:
    """The cache rows of one account and UTC day (a ``producers.shared.ResponseStore``)."""

    def __init__(self, dialect: Dialect, account_id: str, day: date) -> None:
        self._dialect = dialect
        self._sqlite = isinstance(dialect, SqliteDialect)
        self._table = SQLITE_TABLE if self._sqlite else POSTGRES_TABLE
        self.account_id = account_id
        self.day = day
        self._pruned = False

    def get(self, key: str) -> dict[str, Any] | None:
        rows = self._run(
            f"select payload from {self._table} where account_id = ? and fetched_on = ? and cache_key = ?",  # noqa: S608  # nosec B608  # only the constant table name is interpolated
            (self.account_id, self._day(), key),
        )
        return json.loads(rows[0][0]) if rows else None

    def put(self, key: str, value: Mapping[str, Any]) -> None:
        self._run(
            f"insert into {self._table} (account_id, fetched_on, cache_key, payload, created_at) "  # noqa: S608  # nosec B608
            "values (?, ?, ?, ?, ?) on conflict (account_id, fetched_on, cache_key) "
            "do update set payload = excluded.payload, created_at = excluded.created_at",
            (self.account_id, self._day(), key, json.dumps(value), self._now()),
        )

    def keys(self, prefix: str) -> list[str]:
        rows = self._run(
            f"select cache_key from {self._table} where account_id = ? and fetched_on = ? "  # noqa: S608  # nosec B608
            "and cache_key like ? order by cache_key",
            (self.account_id, self._day(), _like_prefix(prefix)),
        )
        return [str(row[0]) for row in rows]

    def remove_earlier_days(self) -> int:
        """Deletes this account's rows of days before this one, and every account's rows older than
        yesterday (an account no longer synced leaves nothing behind for long); returns how many."""
        yesterday = self.day - timedelta(days=1)
        rows = self._run(
            f"delete from {self._table} where (account_id = ? and fetched_on < ?) or fetched_on < ? "  # noqa: S608  # nosec B608
            "returning cache_key",
            (self.account_id, self._day(), yesterday.isoformat() if self._sqlite else yesterday),
        )
        return len(rows)

    def _day(self) -> date | str:
        return self.day.isoformat() if self._sqlite else self.day

    def _now(self) -> datetime | str:
        now = datetime.now(UTC)
        return now.isoformat() if self._sqlite else now

    def _run(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """One statement in its own transaction; the rows it returned."""
        return run_statement(self._dialect, sql, params, sqlite_ddl=SQLITE_DDL, not_migrated=_not_migrated)[1]


def _not_migrated() -> FetchCacheNotMigrated:
    return FetchCacheNotMigrated(
        f"The table {POSTGRES_TABLE} does not exist: run `python -m klaviyo_dagster migrate`"
    )


def _like_prefix(prefix: str) -> str:
    if not re.fullmatch(r"[a-z0-9:-]*", prefix):  # nothing LIKE would read as a wildcard
        raise ValueError(f"a cache key prefix is letters, digits, ':' and '-' only, got {prefix!r}")
    return prefix + "%"


def open_fetch_cache(
    dialect: Dialect, account_id: str, today: date | None = None, *, reuse: bool = True, prune: bool = True
) -> TolerantFetchCache:
    """The account's fetch cache for today (UTC), after removing its earlier days' rows (``prune``;
    a step that runs after the file steps, which pruned, skips it).

    ``reuse=False``: this run reads nothing from the cache (it asks Klaviyo afresh) but leaves what it
    read for the others. Raises the database's error if the cache cannot be opened; once open, a
    failing read is a miss and a failing write is skipped, with a warning naming the error's type only.
    """
    cache = FetchCache(dialect, account_id, today or datetime.now(UTC).date())
    if prune:
        cache.remove_earlier_days()
    return TolerantFetchCache(cache, reads=reuse)


class TolerantFetchCache:
    """A cache that never fails the files: sharing only saves calls (a ``producers.shared.ResponseStore``)."""

    def __init__(self, cache: FetchCache, *, reads: bool) -> None:
        self._cache = cache
        self._reads = reads
        self._warned = False

    def get(self, key: str) -> dict[str, Any] | None:
        return self._safely(lambda: self._cache.get(key), None) if self._reads else None

    def put(self, key: str, value: Mapping[str, Any]) -> None:
        self._safely(lambda: self._cache.put(key, value), None)

    def keys(self, prefix: str) -> list[str]:
        return self._safely(lambda: self._cache.keys(prefix), []) if self._reads else []

    def _safely(self, action: Callable[[], T], fallback: T) -> T:
        try:
            return action()
        except Exception as exc:  # any database failure: see the class docstring
            if not self._warned:
                self._warned = True
                log.warning("the fetch cache failed (%s); going on without it", type(exc).__name__)
            return fallback
