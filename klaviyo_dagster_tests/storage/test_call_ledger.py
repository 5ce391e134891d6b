"""The report call ledger in real PostgreSQL and in SQLite: the same tests on both.

contracts/klaviyo-api.md, "Rate limits": report calls are 1/s, 2/min and 225/day per account and
endpoint, shared by everything calling the account. Several ledgers (as in several runs and
processes) on one database must never let more calls than a window's limit arrive in any window.
Time is a fake clock except in the test of real threads, which counts calls, never durations.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
import uuid
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from klaviyo_dagster.klaviyo.ledger import LedgerSlot, RecordedCall, ReportCallLedger
from klaviyo_dagster.klaviyo.spec import RateLimit, Window, load_operations
from klaviyo_dagster.storage.call_ledger import (
    POSTGRES_TABLE,
    CallLedgerNotMigrated,
    CallLedgerUnavailable,
    SqlCallLedgerStore,
)
from klaviyo_dagster.storage.tables import IngestTables, PostgresDialect, SqliteDialect

REPORTS = load_operations()["query_flow_series"].rate_limit  # burst 1/s, steady 2/min, daily 225/day
GROUP = "query_flow_series"
DAY = 86_400.0
START = 1_800_000_000.0  # a fake wall clock: 2027-01-15 08:00 UTC


def near(expected: float, tolerance: float = 1e-3) -> object:
    """``pytest.approx`` to an absolute tolerance: its relative default is half an hour at START."""
    return pytest.approx(expected, rel=0, abs=tolerance)


@dataclass
class FakeClock:
    now: float = START
    slept: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture(params=["postgres", "sqlite"])
def tables(request: pytest.FixtureRequest, tmp_path: Path) -> IngestTables:
    """The ingest database, migrated (Postgres) or not yet created (SQLite: the ledger creates it)."""
    if request.param == "postgres":
        return IngestTables.postgres(request.getfixturevalue("postgres_dsn"))
    return IngestTables.sqlite(tmp_path / "data" / "ingest.sqlite3")


@pytest.fixture
def account() -> str:
    return str(uuid.uuid4())  # every test counts its own account's calls


def ledger_on(tables: IngestTables, account: str, clock: FakeClock, **options: object) -> ReportCallLedger:
    """A ledger as one run would have it: a store (and so connections) of its own."""
    settings: dict = {"clock": clock, "sleep": clock.sleep, **options}
    return ReportCallLedger(SqlCallLedgerStore.for_tables(tables), account, **settings)


def most_in_any_window(arrivals: list[float], seconds: float) -> int:
    """The most arrivals in any interval [t, t + seconds): at least as many as in any fixed window."""
    ordered = sorted(arrivals)
    return max((sum(1 for b in ordered[i:] if b < a + seconds) for i, a in enumerate(ordered)), default=0)


def test_two_ledgers_on_one_database_never_exceed_any_window_between_them(tables, account) -> None:
    """Two runs (ledgers with their own connections) take turns on one fake clock; each call arrives
    somewhere between its send and its response, as at Klaviyo. Daily limit 5, to cross days."""
    clock = FakeClock()
    overrides = {GROUP: {"daily": 5}}
    ledgers = [ledger_on(tables, account, clock, limit_overrides=overrides) for _ in range(2)]
    rng = random.Random(11)
    arrivals: list[float] = []
    # Each run wants 7 calls; (time, run, slot or None): the next thing each run does.
    wanted = [7, 7]
    agenda: list[tuple[float, int, LedgerSlot | None]] = [(START, 0, None), (START + 0.3, 1, None)]
    while agenda:
        agenda.sort(key=lambda item: item[0])
        at, run, slot = agenda.pop(0)
        clock.now = max(clock.now, at)
        ledger = ledgers[run]
        if slot is not None:  # the response is back
            ledger.release(slot)
            wanted[run] -= 1
            if wanted[run]:
                agenda.append((clock.now + rng.uniform(0, 2), run, None))
            continue
        admission, slot = ledger.try_acquire(GROUP, REPORTS)
        if slot is None:
            agenda.append((clock.now + admission.wait_seconds, run, None))
            continue
        latency = rng.uniform(0.05, 3.0)
        arrivals.append(clock.now + rng.uniform(0, latency))
        agenda.append((clock.now + latency, run, slot))

    assert len(arrivals) == 14
    assert most_in_any_window(arrivals, 1) <= 1
    assert most_in_any_window(arrivals, 60) <= 2
    assert most_in_any_window(arrivals, DAY) <= 5
    assert max(arrivals) - min(arrivals) > 2 * DAY  # 14 calls at 5 a day take three days


def test_ledgers_in_threads_with_their_own_connections_share_the_steady_window(tables, account) -> None:
    """Real threads and the real clock, each thread a ledger of its own (as separate processes):
    admissions are serialized by the database, so no steady window ever sees more than 2 calls."""
    scale = 0.005  # 1 s → 5 ms, 60 s → 0.3 s
    arrivals: list[float] = []
    lock = threading.Lock()
    rng = random.Random(5)
    # Provision the SQLite schema before the threads race to create it.
    SqlCallLedgerStore.for_tables(tables).recorded(account, GROUP)

    def run(calls: int) -> None:
        ledger = ReportCallLedger(SqlCallLedgerStore.for_tables(tables), account, time_scale=scale)
        for _ in range(calls):
            slot = ledger.acquire(GROUP, REPORTS, max_wait_seconds=60)
            sent = time.time()
            latency = rng.uniform(0, 0.01)
            time.sleep(latency)
            with lock:
                arrivals.append(sent + rng.uniform(0, latency))
            ledger.release(slot)

    threads = [threading.Thread(target=run, args=(2,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(arrivals) == 8
    assert most_in_any_window(arrivals, 60 * scale) <= 2
    assert most_in_any_window(arrivals, 1 * scale) <= 1


def test_a_full_daily_window_answers_the_wait_until_the_oldest_slot_frees(tables, account) -> None:
    clock = FakeClock()
    ledger = ledger_on(tables, account, clock, limit_overrides={GROUP: {"daily": 2}})
    releases = []
    for _ in range(2):
        admission, slot = ledger.try_acquire(GROUP, REPORTS)
        assert slot is not None and admission.admitted
        clock.now += 1
        ledger.release(slot)
        releases.append(clock.now)
        clock.now += 100
    first_release = releases[0]

    admission, slot = ledger.try_acquire(GROUP, REPORTS)

    assert slot is None
    assert (admission.window.name, admission.used, admission.limit) == ("daily", 2, 2)
    held = (DAY + ledger.clock_margin_seconds) * ledger.time_scale
    assert admission.wait_seconds == near(first_release + held - clock.now)
    clock.now = first_release + held
    assert ledger.try_acquire(GROUP, REPORTS)[1] is not None


def test_a_stale_in_flight_row_stops_blocking(tables, account) -> None:
    """A worker that died mid-call never releases its row: after ``stale_after_seconds`` it counts as
    released then, so its slot frees one window later instead of never."""
    clock = FakeClock()
    one_a_minute = RateLimit((Window("steady", 1, 60), Window("daily", 225, 86_400)))
    crashed = ledger_on(tables, account, clock, stale_after_seconds=180)
    assert crashed.try_acquire("g", one_a_minute)[1] is not None  # and never released

    other = ledger_on(tables, account, clock, stale_after_seconds=180)
    clock.now = START + 100  # in flight: it may end any moment, so wait a window at the least
    admission, slot = other.try_acquire("g", one_a_minute)
    assert slot is None
    assert admission.window.name == "steady"
    assert admission.wait_seconds == near(61)

    clock.now = START + 200  # stale: counted as released at START + 180
    admission, slot = other.try_acquire("g", one_a_minute)
    assert slot is None
    assert admission.wait_seconds == near(START + 180 + 61 - clock.now)

    clock.now = START + 180 + 61
    assert other.try_acquire("g", one_a_minute)[1] is not None


def test_windows_and_stale_limit_scale_with_time(tables, account) -> None:
    clock = FakeClock()
    ledger = ledger_on(tables, account, clock, time_scale=0.01)
    _, first = ledger.try_acquire(GROUP, REPORTS)
    ledger.release(first)
    clock.now += 0.02  # the burst slot (1 s + 1 s margin) is 20 ms at this scale
    _, second = ledger.try_acquire(GROUP, REPORTS)
    ledger.release(second)
    clock.now += 0.02

    admission, third = ledger.try_acquire(GROUP, REPORTS)

    assert third is None
    assert admission.window.name == "steady"
    assert admission.wait_seconds == near(0.61 - 0.04)


def test_rows_older_than_two_days_are_pruned_and_others_kept(tables, account) -> None:
    clock = FakeClock()
    ledger = ledger_on(tables, account, clock)
    store = ledger.store
    for _ in range(3):
        _, slot = ledger.try_acquire(GROUP, REPORTS)
        ledger.release(slot)
        clock.now += DAY

    assert len(store.recorded(account, GROUP)) == 3
    clock.now = START + 4 * DAY - 5  # the first two are over two days old now, the third not
    ledger.try_acquire(GROUP, REPORTS)

    kept = store.recorded(account, GROUP)
    assert [round(call.sent_at - START) for call in kept] == [2 * DAY, 4 * DAY - 5]
    assert kept[0].released_at == near(START + 2 * DAY)
    assert kept[1].released_at is None


def test_accounts_and_groups_are_counted_apart(tables, account) -> None:
    clock = FakeClock()
    ledger = ledger_on(tables, account, clock, limit_overrides={GROUP: {"daily": 1}})
    assert ledger.try_acquire(GROUP, REPORTS)[1] is not None

    assert ledger.try_acquire(GROUP, REPORTS)[1] is None
    assert ledger.try_acquire("query_campaign_values", REPORTS)[1] is not None
    other_account = ledger_on(tables, str(uuid.uuid4()), clock, limit_overrides={GROUP: {"daily": 1}})
    assert other_account.try_acquire(GROUP, REPORTS)[1] is not None


def test_times_are_stored_in_utc(tables, account) -> None:
    clock = FakeClock(now=START + 0.123456)
    ledger = ledger_on(tables, account, clock)
    _, slot = ledger.try_acquire(GROUP, REPORTS)
    clock.now += 1.5
    ledger.release(slot)

    [call] = ledger.store.recorded(account, GROUP)
    assert call == RecordedCall(near(START + 0.123456, 1e-5), near(START + 1.623456, 1e-5))
    if isinstance(tables.dialect, SqliteDialect):
        with closing(sqlite3.connect(tables.dialect.path)) as connection:
            sent = connection.execute("select sent_at from klaviyo_report_calls").fetchone()[0]
        assert sent == "2027-01-15T08:00:00.123456Z"


def test_a_missing_postgres_table_names_the_migration(postgres_dsn, account) -> None:
    with psycopg.connect(postgres_dsn) as connection:
        connection.execute(f"drop table {POSTGRES_TABLE}")
    try:
        ledger = ReportCallLedger(SqlCallLedgerStore(PostgresDialect(postgres_dsn)), account)
        with pytest.raises(CallLedgerNotMigrated, match="python -m klaviyo_dagster migrate"):
            ledger.try_acquire(GROUP, REPORTS)
    finally:
        IngestTables.postgres(postgres_dsn).migrate()


def test_an_unreachable_database_fails_without_quoting_the_password(account) -> None:
    dsn = "postgresql://postgres:pa ss@word-9f3e@127.0.0.1:1/klaviyo"  # unencoded, refused port
    ledger = ReportCallLedger(SqlCallLedgerStore(PostgresDialect(dsn)), account)

    with pytest.raises(CallLedgerUnavailable) as failure:
        ledger.try_acquire(GROUP, REPORTS)

    message = str(failure.value)
    assert "could not be reached" in message
    for fragment in ("pa ss", "word-9f3e"):
        assert fragment not in message
    assert failure.value.__cause__ is None
    assert failure.value.__suppress_context__
