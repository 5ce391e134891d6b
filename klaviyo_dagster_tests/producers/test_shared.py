"""Shared fetches: a batch of partitions built one after another, each as its own run would, writes
exactly the files partition-by-partition runs write, with one audience scan, one read of each flow
definition and one flow-series call per 60 days of windows."""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import pytest

from klaviyo_dagster.klaviyo.client import KlaviyoClient
from klaviyo_dagster.producers import sync
from klaviyo_dagster.producers.options import SyncOptions
from klaviyo_dagster.producers.reconcile import reconcile_subscribers
from klaviyo_dagster.producers.shared import MAX_DAILY_SERIES_DAYS, SharedFetches
from klaviyo_dagster.producers.sync import FILES, SUBSCRIBERS, SyncSession
from klaviyo_dagster.producers.window import Window
from klaviyo_dagster.sim import DEFAULT_API_KEY, SimulatorServer
from klaviyo_dagster.storage.fetch_cache import FetchCache, open_fetch_cache
from klaviyo_dagster.storage.objects import LocalObjectStore
from klaviyo_dagster.storage.tables import SqliteDialect
from klaviyo_dagster_tests.klaviyo.conftest import FAST_RETRY

ACCOUNT = "0bead5a1-0000-4000-8000-00000000000a"
ANCHOR = date(2026, 3, 10)
TODAY = date(2026, 11, 30)  # the UTC day the runs happen: any day, as long as it is one
# Report windows 1000x shorter: a batch makes tens of report calls at Klaviyo's 2 a minute.
TIME_SCALE = 0.001


def _client(sim: SimulatorServer) -> KlaviyoClient:
    """A fresh client of ``sim``, as a run of its own opens one."""
    return KlaviyoClient(DEFAULT_API_KEY, base_url=sim.base_url, retry=FAST_RETRY, time_scale=TIME_SCALE)


def _files(
    sim: SimulatorServer, day: date, options: SyncOptions, shared: SharedFetches | None
) -> dict[str, bytes]:
    """The three files of one partition, built by a run of their own (a fresh client), and its
    subscribers.csv published where ``shared`` says, as the snapshot step would; each file reconciles,
    as its asset checks it."""
    built = {}
    with _client(sim) as client:
        session = SyncSession(client, options, day, shared)
        for file in FILES:
            path, summary = session.write_to_temp(file)
            assert session.reconcile(file, path, summary).passed
            built[file.filename] = path.read_bytes()
            if shared is not None and file.kind == "subscribers":
                assert isinstance(shared.files, LocalObjectStore)
                shared.files.upload(str(shared.audience_key), path)
            path.unlink()
    return built


def _shared(tmp_path: Path, day: date, batch: list[date]) -> SharedFetches:
    dialect, objects = SqliteDialect(tmp_path / "ingest.sqlite"), LocalObjectStore(tmp_path / "objects")
    audience = f"upload-{day.isoformat()}/subscribers.csv"
    return SharedFetches(open_fetch_cache(dialect, ACCOUNT, TODAY), objects, audience, frozenset(batch))


def _operations(sim: SimulatorServer) -> Counter[str]:
    return Counter(str(r.operation_id) for r in sim.requests if r.status < 400)


@pytest.mark.parametrize(("seed", "days"), [(3, 7), (11, 30), (19, 1)])
def test_a_batch_built_with_shared_fetches_writes_the_same_bytes_with_one_scan(
    simulator_factory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, seed: int, days: int
) -> None:
    monkeypatch.setenv("KLAVIYO_ENABLE", "true")
    monkeypatch.delenv("SHOPIFY_PLACED_ORDER_METRIC_ID", raising=False)
    sim = simulator_factory(
        profiles=320, flows=12, seed=seed, anchor=ANCHOR, timezone=None, time_scale=TIME_SCALE
    )
    options = SyncOptions(days=days, audience_page_size=50)
    dates = [ANCHOR - timedelta(days=n) for n in range(1, 13)]

    alone = {dates[0]: _files(sim, dates[0], options, None)}
    one_scan = _operations(sim)["get_profiles"]
    alone.update({day: _files(sim, day, options, None) for day in dates[1:]})
    values_calls = _operations(sim)["query_campaign_values"]
    sim.reset()
    together = {}
    for n, day in enumerate(dates):  # newest first, as a catch-up finds them; each its own run
        together[day] = _files(sim, day, options, _shared(tmp_path, day, dates[n + 1 :]))

    assert together == alone
    emails = {line.split(b",")[0] for line in alone[dates[0]]["subscribers.csv"].splitlines()[1:]}
    kept = FetchCache(SqliteDialect(tmp_path / "ingest.sqlite"), ACCOUNT, TODAY)
    cached = b"".join(json.dumps(kept.get(key)).encode() for key in kept.keys("audience"))
    assert cached and not any(email and email in cached for email in emails)  # counts only, no subscriber
    calls = _operations(sim)
    reads = Counter(
        (r.path, tuple(sorted(r.query.items())))
        for r in sim.requests
        if r.method == "GET" and not r.path.startswith("/api/profiles")
    )
    assert reads and max(reads.values()) == 1  # every as-of-the-run read once a day, 404s included
    assert calls["query_flow_series"] == 1  # 12 dates' windows span at most 41 days
    assert calls["get_flow"] == len([f for f in sim.account.flows if f.status == "live" and not f.archived])
    assert calls["get_flows"] == 1 and calls["get_accounts"] == 1 and calls["get_metrics"] == 1
    assert calls["get_profiles"] == one_scan > 0
    assert calls["query_campaign_values"] == values_calls  # one per metrics window, as before


def test_a_series_kept_for_a_wider_window_gives_a_partition_only_its_own_days_and_groupings(
    simulator_factory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A removed email that sent only outside a partition's window is not in that partition's file,
    although the shared report (over the batch's windows) has it."""
    monkeypatch.setenv("KLAVIYO_ENABLE", "true")
    sim = simulator_factory(profiles=0, flows=30, seed=5, anchor=ANCHOR, time_scale=TIME_SCALE)
    options = SyncOptions(days=1, audience_max_pages=0)
    dates = [ANCHOR - timedelta(days=n) for n in range(1, 22)]
    differs = 0
    first = None
    for n, day in enumerate(dates):
        built = _files(sim, day, options, _shared(tmp_path, day, dates[n + 1 :]))["flows.csv"]
        own = _files(sim, day, options, None)["flows.csv"]
        assert built == own, day
        first = first or built
        differs += built != first
    assert differs  # the days really differ, so the slicing was exercised


def test_report_windows_are_chunks_of_at_most_60_days_that_every_partition_computes_alike() -> None:
    tz = "Pacific/Auckland"
    dates = [date(2025, 1, 1) + timedelta(days=n) for n in range(365)]
    chunks = set()
    for day in dates:
        window = Window.ending_on(day, 7, tz)
        shared = SharedFetches(_NoStore(), _NoFiles(), None, frozenset(dates))
        asked = shared.report_window(window)
        assert asked.first_day <= window.first_day and window.last_day <= asked.last_day
        assert (asked.last_day - asked.first_day).days + 1 <= MAX_DAILY_SERIES_DAYS
        chunks.add(asked)
    assert len(chunks) == 7  # 365 dates + 6 days of the first window, 60 days (54 dates) a call


def test_a_lone_partition_asks_for_its_own_window() -> None:
    window = Window.ending_on(date(2026, 3, 9), 7, "UTC")
    assert SharedFetches(_NoStore(), _NoFiles()).report_window(window) == window


def test_the_cache_keeps_one_utc_day_and_removes_the_accounts_earlier_days(tmp_path: Path) -> None:
    dialect = SqliteDialect(tmp_path / "ingest.sqlite")
    yesterday = TODAY - timedelta(days=1)
    open_fetch_cache(dialect, ACCOUNT, today=yesterday).put("get:abc", {"data": []})
    open_fetch_cache(dialect, "another-account", today=yesterday).put("get:abc", {"data": [1]})

    today = open_fetch_cache(dialect, ACCOUNT, today=TODAY)

    assert today.get("get:abc") is None
    assert FetchCache(dialect, ACCOUNT, yesterday).get("get:abc") is None
    assert FetchCache(dialect, "another-account", yesterday).get("get:abc") == {"data": [1]}


@pytest.fixture
def small_store(simulator_factory, monkeypatch: pytest.MonkeyPatch) -> SimulatorServer:
    """120 profiles and 2 flows behind the simulator, Klaviyo enabled."""
    monkeypatch.setenv("KLAVIYO_ENABLE", "true")
    return simulator_factory(profiles=120, flows=2, seed=4, anchor=ANCHOR, time_scale=TIME_SCALE)


def test_a_published_audience_that_changed_since_is_built_again(
    small_store: SimulatorServer, tmp_path: Path
) -> None:
    sim, options = small_store, SyncOptions(days=1)
    first, second = ANCHOR - timedelta(days=1), ANCHOR - timedelta(days=2)
    built = _files(sim, first, options, _shared(tmp_path, first, [second]))["subscribers.csv"]
    (tmp_path / "changed.csv").write_bytes(built + b"\nextra@example.com")
    LocalObjectStore(tmp_path / "objects").upload(
        f"upload-{first.isoformat()}/subscribers.csv", tmp_path / "changed.csv"
    )
    sim.reset()

    again = _files(sim, second, options, _shared(tmp_path, second, []))["subscribers.csv"]

    assert again == built and _operations(sim)["get_profiles"] > 0


def test_an_audience_written_by_another_release_is_built_again(
    small_store: SimulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deploy between the day's first run and a later one: the later run writes the new format."""
    sim, options = small_store, SyncOptions(days=1)
    first, second = ANCHOR - timedelta(days=1), ANCHOR - timedelta(days=2)
    _files(sim, first, options, _shared(tmp_path, first, [second]))
    monkeypatch.setattr(sync, "AUDIENCE_WRITER", "the next release")
    sim.reset()

    _files(sim, second, options, _shared(tmp_path, second, []))

    assert _operations(sim)["get_profiles"] > 0


def test_an_audience_read_back_reconciles_with_the_records_of_the_file_it_copies(
    small_store: SimulatorServer, tmp_path: Path
) -> None:
    sim, options = small_store, SyncOptions(days=1)
    first, second = ANCHOR - timedelta(days=1), ANCHOR - timedelta(days=2)
    _files(sim, first, options, _shared(tmp_path, first, [second]))

    with _client(sim) as client:
        session = SyncSession(client, options, second, _shared(tmp_path, second, []))
        path, summary = session.write_to_temp(SUBSCRIBERS)
        verdict = session.reconcile(SUBSCRIBERS, path, summary)
    with path.open(encoding="utf-8", newline="") as text:
        records = len(list(csv.reader(text))) - 1
    one_too_many = reconcile_subscribers(path, summary.reconciliation, records=records + 1)
    path.unlink()

    assert session.audience_reused and verdict.passed
    assert verdict.figures["file_records"] == records == summary.rows > 0
    assert not one_too_many.passed  # the count taken from the record is the one checked


def test_an_audience_that_does_not_reconcile_is_not_kept_for_the_days_later_runs(
    small_store: SimulatorServer, tmp_path: Path
) -> None:
    sim, options = small_store, SyncOptions(days=1)
    first, second = ANCHOR - timedelta(days=1), ANCHOR - timedelta(days=2)
    with _client(sim) as client:
        shared = _shared(tmp_path, first, [second])
        session = SyncSession(client, options, first, shared)
        path, summary = session.write_to_temp(SUBSCRIBERS)
        seen = summary.reconciliation["profiles_seen"] + 1  # a profile the file does not account for
        unaccounted = replace(summary, reconciliation={**summary.reconciliation, "profiles_seen": seen})
        verdict = session.reconcile(SUBSCRIBERS, path, unaccounted)
        assert isinstance(shared.files, LocalObjectStore)
        shared.files.upload(str(shared.audience_key), path)
    path.unlink()
    sim.reset()

    _files(sim, second, options, _shared(tmp_path, second, []))

    assert not verdict.passed
    assert _operations(sim)["get_profiles"] > 0  # the later run scanned the audience itself


class _NoStore:
    def get(self, key: str) -> None:
        raise AssertionError("not read")

    def put(self, key: str, value: object) -> None:
        raise AssertionError("not written")

    def keys(self, prefix: str) -> list[str]:
        return []


class _NoFiles:
    def download(self, key: str, destination: Path) -> None:
        raise AssertionError("not read")
