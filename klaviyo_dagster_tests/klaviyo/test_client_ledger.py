"""The client with a report call ledger: report quotas counted across runs, waited out, never failed.

contracts/klaviyo-api.md, "Rate limits": the report endpoints allow 1/s, 2/min and 225/day per account
and endpoint, shared by every caller of the account. The in-process pacer cannot see another run's
calls; the ledger in the ingest database can. Tests with a fake clock assert exact waits; tests over
real HTTP against the simulator count 429s and failures, never durations.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from pathlib import Path

import httpx
import pytest

import klaviyo_dagster.klaviyo.client as client_module
from klaviyo_dagster.klaviyo.client import KlaviyoClient, RetryPolicy
from klaviyo_dagster.klaviyo.errors import KlaviyoConfigError, KlaviyoQuotaWouldWait, KlaviyoThrottledError
from klaviyo_dagster.klaviyo.ledger import ReportCallLedger
from klaviyo_dagster.sim import DEFAULT_API_KEY, SimulatorServer
from klaviyo_dagster.storage.call_ledger import SqlCallLedgerStore
from klaviyo_dagster.storage.tables import IngestTables, PostgresDialect
from klaviyo_dagster_tests.klaviyo.conftest import FAST_RETRY
from klaviyo_dagster_tests.klaviyo.test_client import flow_series_body, placed_order_metric_id
from klaviyo_dagster_tests.storage.test_call_ledger import START, FakeClock, near

SERIES = "/api/flow-series-reports"
GROUP = "query_flow_series"
ACCOUNT = str(uuid.uuid4())  # for tests that never reach a database


@pytest.fixture(params=["postgres", "sqlite"])
def ledger_store(request: pytest.FixtureRequest, tmp_path: Path) -> SqlCallLedgerStore:
    """The ledger in the ingest database, on each backend (tests use accounts of their own: rows at a
    fake clock's times must not reach another test's account)."""
    if request.param == "postgres":
        return SqlCallLedgerStore(PostgresDialect(request.getfixturevalue("postgres_dsn")))
    return SqlCallLedgerStore.for_tables(IngestTables.sqlite(tmp_path / "ingest.sqlite3"))


@pytest.fixture
def account() -> str:
    return str(uuid.uuid4())


class LongWaits:
    """The hooks a caller gives: what ``on_long_wait`` and ``on_resume`` were told, in order."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def on_long_wait(self, group: str, wait_seconds: float, used: int, limit: int) -> None:
        self.events.append(("wait", group, wait_seconds, used, limit))

    def on_resume(self, group: str) -> None:
        self.events.append(("resume", group))


def offline_client(ledger: ReportCallLedger, sent_at: list[float], **options: object) -> KlaviyoClient:
    """A client whose every call succeeds at once, noting the (fake) time each was sent."""

    def answer(request: httpx.Request) -> httpx.Response:
        sent_at.append(ledger.clock())
        return httpx.Response(200, json={"data": {"type": "flow-series-report", "attributes": {}}})

    return KlaviyoClient(
        "pk_test_" + "0" * 34,
        enabled=True,
        base_url="https://a.klaviyo.com",
        transport=httpx.MockTransport(answer),
        time_scale=ledger.time_scale,
        ledger=ledger,
        **options,
    )


# --- a fake clock ----------------------------------------------------------------------------------


def test_a_full_daily_quota_is_announced_and_waited_out_until_the_oldest_slot_frees(
    ledger_store, account
) -> None:
    clock = FakeClock()
    ledger = ReportCallLedger(
        ledger_store,
        account,
        limit_overrides={GROUP: {"daily": 2}},
        recheck_seconds=3600,
        clock=clock,
        sleep=clock.sleep,
    )
    waits = LongWaits()
    sent_at: list[float] = []
    with offline_client(
        ledger,
        sent_at,
        retry=RetryPolicy(max_wait_seconds=600),
        on_long_wait=waits.on_long_wait,
        on_resume=waits.on_resume,
    ) as client:
        client.post(SERIES, {})
        client.post(SERIES, {})  # waits out the burst slot: 1 s + 1 s margin
        assert sent_at == [START, START + 2]
        assert waits.events == []

        client.post(SERIES, {})  # the day's 2 calls are used: waits, announced, instead of failing

    freed = START + 86_400 + 1  # the first call's release (at once) + one day + the margin
    assert sent_at[2] == near(freed)
    assert waits.events == [("wait", GROUP, near(freed - (START + 2)), 2, 2), ("resume", GROUP)]
    assert max(clock.slept) <= 3600  # re-checked at least hourly, as another run may take the slot
    stats = client.stats.snapshot()[GROUP]
    assert (stats.calls, stats.throttled) == (3, 0)
    assert stats.paced_seconds == near(2 + freed - (START + 2))


def test_a_daily_wait_within_the_cap_is_slept_without_announcing_it(ledger_store, account) -> None:
    clock = FakeClock()
    ledger = ReportCallLedger(
        ledger_store,
        account,
        limit_overrides={GROUP: {"daily": 1}},
        recheck_seconds=3600,
        clock=clock,
        sleep=clock.sleep,
    )
    waits = LongWaits()
    sent_at: list[float] = []
    with offline_client(
        ledger, sent_at, retry=RetryPolicy(max_wait_seconds=2 * 86_400), on_long_wait=waits.on_long_wait
    ) as client:
        client.post(SERIES, {})
        client.post(SERIES, {})

    assert sent_at == [START, near(START + 86_401)]
    assert waits.events == []


def test_other_groups_are_paced_in_process_and_never_touch_the_ledger(ledger_store, account) -> None:
    clock = FakeClock()
    ledger = ReportCallLedger(ledger_store, account, clock=clock, sleep=clock.sleep)
    with offline_client(ledger, []) as client:
        client.get("/api/flows")

    assert ledger_store.recorded(account, "get_flows") == []


def test_the_account_lookup_goes_through_the_ledger_as_every_file_step_makes_it_at_once(
    ledger_store, account
) -> None:
    """Three steps of one run, each its own process (client), read the account at the same moment:
    the 1/s burst lets one through per second between them, not one per process."""
    clock = FakeClock()
    sent_at: list[float] = []
    for _ in range(3):
        ledger = ReportCallLedger(ledger_store, account, clock=clock, sleep=clock.sleep)
        with offline_client(ledger, sent_at) as client:
            client.get("/api/accounts")

    assert len(ledger_store.recorded(account, "get_accounts")) == 3
    assert all(later - earlier >= 1 for earlier, later in itertools.pairwise(sent_at))


def test_a_ledger_counting_time_differently_is_refused() -> None:
    ledger = ReportCallLedger(
        SqlCallLedgerStore(PostgresDialect("postgresql://unused")), ACCOUNT, time_scale=0.5
    )
    with pytest.raises(KlaviyoConfigError, match="time_scale"):
        KlaviyoClient("pk_test_" + "0" * 34, enabled=True, ledger=ledger, time_scale=1.0)


def test_a_ledger_database_that_fails_leaves_the_client_pacing_in_process_and_says_so_without_secrets(
    caplog,
) -> None:
    password = "hunter2-ledger-secret"
    dsn = f"postgresql://postgres:{password}@127.0.0.1:1/klaviyo"
    ledger = ReportCallLedger(SqlCallLedgerStore(PostgresDialect(dsn)), ACCOUNT, time_scale=0.01)
    sent_at: list[float] = []
    with caplog.at_level(logging.WARNING), offline_client(ledger, sent_at) as client:
        client.post(SERIES, {})
        client.post(SERIES, {})  # paced in-process now, without asking the database again

    assert len(sent_at) == 2
    warnings = [r.getMessage() for r in caplog.records if "report call ledger" in r.getMessage()]
    assert len(warnings) == 1
    assert "paced in this process only" in warnings[0]
    assert "could not be reached" in warnings[0]
    assert password not in caplog.text


# --- the simulator, over real HTTP -------------------------------------------------------------------


def sim_client(sim: SimulatorServer, ledger: ReportCallLedger | None, **options: object) -> KlaviyoClient:
    settings: dict = {"retry": FAST_RETRY, **options}
    return KlaviyoClient(
        DEFAULT_API_KEY, base_url=sim.base_url, time_scale=sim.config.time_scale, ledger=ledger, **settings
    )


def new_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a new Dagster run starts with: no in-process pacer remembers the previous run's calls."""
    monkeypatch.setattr(client_module, "_PACERS", {})


def report_statuses(sim: SimulatorServer) -> list[int]:
    return [r.status for r in sim.requests if r.operation_id == GROUP]


def test_without_a_ledger_a_second_run_lands_in_the_first_runs_steady_window(
    simulator_factory, klaviyo_env, monkeypatch
) -> None:
    """The issue: the in-process pacer of a new run does not know the previous run's calls."""
    sim = simulator_factory(profiles=10, time_scale=0.02)
    with sim_client(sim, None) as first:
        body = flow_series_body(placed_order_metric_id(first))
        first.post(SERIES, body)
        first.post(SERIES, body)  # the steady window's 2 calls
    new_process(monkeypatch)
    with sim_client(sim, None) as second:
        second.post(SERIES, body)

    assert report_statuses(sim)[:3] == [200, 200, 429]


def test_runs_one_after_another_share_the_ledger_and_meet_no_429(
    simulator_factory, klaviyo_env, monkeypatch, ledger_store, account
) -> None:
    sim = simulator_factory(profiles=10, time_scale=0.01)
    for _run in range(2):
        new_process(monkeypatch)
        ledger = ReportCallLedger(ledger_store, account, time_scale=0.01)
        with sim_client(sim, ledger) as client:
            body = flow_series_body(placed_order_metric_id(client))
            for _ in range(3):
                client.post(SERIES, body)
        assert client.stats.snapshot()[GROUP].throttled == 0

    assert report_statuses(sim) == [200] * 6
    assert len(ledger_store.recorded(account, GROUP)) == 6


def test_a_daily_quota_spread_over_two_days_completes_every_call(
    simulator_factory, klaviyo_env, monkeypatch, ledger_store, account
) -> None:
    """Daily limit 4 at the simulator and in the ledger; 6 calls by two runs: the fifth and sixth wait
    for the next (simulated) day instead of failing. At this scale a day is 4.3 s: long enough that
    the first four calls share one day even on a busy machine (at 0.86 s they sometimes did not)."""
    scale = 0.00005
    daily = {GROUP: {"daily": 4}}
    sim = simulator_factory(profiles=10, time_scale=scale, rate_limit_overrides=daily)
    waits = LongWaits()
    for _run in range(2):
        new_process(monkeypatch)
        ledger = ReportCallLedger(ledger_store, account, time_scale=scale, limit_overrides=daily)
        with sim_client(
            sim,
            ledger,
            retry=RetryPolicy(max_retries=3, max_wait_seconds=0.05),
            on_long_wait=waits.on_long_wait,
            on_resume=waits.on_resume,
        ) as client:
            body = flow_series_body(placed_order_metric_id(client))
            for _ in range(3):
                client.post(SERIES, body)

    assert report_statuses(sim) == [200] * 6
    announced = [event for event in waits.events if event[0] == "wait"]
    assert announced and all(event[1:2] + event[3:] == (GROUP, 4, 4) for event in announced)
    assert waits.events[-1] == ("resume", GROUP)


def test_a_429_for_the_daily_quota_spent_by_someone_else_still_fails_clearly(
    simulator_factory, klaviyo_env, ledger_store, account
) -> None:
    """The ledger knows only our calls: when Klaviyo says the day is over anyway, fail as before."""
    sim = simulator_factory(profiles=10, time_scale=0.01, rate_limit_overrides={GROUP: {"daily": 1}})
    ledger = ReportCallLedger(ledger_store, account, time_scale=0.01)  # believes 225 a day
    with sim_client(sim, ledger, retry=RetryPolicy(max_wait_seconds=60)) as client:
        body = flow_series_body(placed_order_metric_id(client))
        client.post(SERIES, body)
        with pytest.raises(KlaviyoThrottledError, match=f"daily quota exhausted for POST {SERIES}"):
            client.post(SERIES, body)

    assert report_statuses(sim) == [200, 429]


def test_calls_asked_ahead_for_other_runs_never_wait_for_the_daily_quota(ledger_store, account) -> None:
    """``without_daily_waits`` (the values reports a run asks ahead for its batch): a full day is
    refused at once, without announcing a wait, and the client waits again outside it."""
    clock = FakeClock()
    ledger = ReportCallLedger(
        ledger_store, account, limit_overrides={GROUP: {"daily": 1}}, clock=clock, sleep=clock.sleep
    )
    waits = LongWaits()
    sent_at: list[float] = []
    with offline_client(
        ledger, sent_at, retry=RetryPolicy(max_wait_seconds=600), on_long_wait=waits.on_long_wait
    ) as client:
        client.post(SERIES, {})
        with client.without_daily_waits(), pytest.raises(KlaviyoQuotaWouldWait, match="1 of 1 daily"):
            client.post(SERIES, {})
        assert sent_at == [START] and waits.events == [] and clock.slept == []

        client.post(SERIES, {})  # its own call: waits for the day, as before

    assert len(sent_at) == 2 and waits.events[0][0] == "wait"
