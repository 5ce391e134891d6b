"""Which profile ids a scan has already written, exactly, in bounded memory.

Klaviyo's cursor pagination can hand the same profile out twice (a profile that moves while the
scan runs, a cursor served twice); the file must hold it once. A whole audience can be millions of
ids, so the set lives in a temporary SQLite file (stdlib, exact, no false positives), with SQLite's
page cache (a few MB) as the only memory it takes, however large the audience.
"""

from __future__ import annotations

import sqlite3
import tempfile
import threading
from pathlib import Path
from types import TracebackType

# SQLite's page cache for the set, in KiB (negative cache_size is KiB): the memory bound.
CACHE_KIB = 4096


class SeenIds:
    """``add(id)`` is True the first time an id is added, False every later time. Thread-safe."""

    def __init__(self) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="klaviyo-dagster-seen-")
        self.path = Path(self._folder.name) / "seen.sqlite"
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute(f"pragma cache_size = -{CACHE_KIB}")
        self._db.execute("pragma journal_mode = off")
        self._db.execute("pragma synchronous = off")
        self._db.execute("create table seen (id text primary key) without rowid")
        self._lock = threading.Lock()

    def add(self, profile_id: str) -> bool:
        with self._lock:
            cursor = self._db.execute("insert or ignore into seen (id) values (?)", (profile_id,))
            return cursor.rowcount == 1

    def size_bytes(self) -> int:
        """The set's file on disk (its memory is bounded by ``CACHE_KIB``)."""
        return self.path.stat().st_size

    def close(self) -> None:
        self._db.close()
        self._folder.cleanup()

    def __enter__(self) -> SeenIds:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
