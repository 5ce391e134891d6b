"""Idempotency keys claimed in the shared database: two trigger processes, one run per key."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
import pytest

from klaviyo_dagster.producers.options import SyncOptions
from klaviyo_dagster.redaction import DatabaseConnectionError
from klaviyo_dagster.storage.tables import IngestTables
from klaviyo_dagster.trigger import TriggerSettings
from klaviyo_dagster.trigger.app import PARAMETERS_TAG, UPDATE_PATH, _claim_parameters
from klaviyo_dagster.trigger.claims import POSTGRES_TABLE, IdempotencyClaims
from klaviyo_dagster.trigger.dagster_api import DagsterRefused, DagsterUnavailable
from klaviyo_dagster.trigger.request import TriggerRequest
from klaviyo_dagster_tests.conftest import ACCOUNT_ID
from klaviyo_dagster_tests.paths import PROJECT_ROOT
from klaviyo_dagster_tests.trigger.conftest import FakeDagster
from klaviyo_dagster_tests.trigger.test_contract import AUTH, DAY, LIVE, assert_json_error


def key_headers(key: str) -> dict[str, str]:
    return {**AUTH, "x-idempotency-key": key}


# --- a reused key ------------------------------------------------------------------------------------


def test_a_reused_key_with_other_parameters_answers_409_naming_them(trigger, fake_dagster) -> None:
    first = trigger.post(UPDATE_PATH, json=LIVE, headers=key_headers("k-9"))
    other_date = trigger.post(UPDATE_PATH, json={**LIVE, "end": "2026-03-08"}, headers=key_headers("k-9"))
    other_days = trigger.post(UPDATE_PATH, json={**LIVE, "days": 3}, headers=key_headers("k-9"))

    assert first.status_code == 202, first.text
    body = assert_json_error(other_date, 409)
    assert body["parameter"] == "idempotency"
    assert body["details"] == {"end": {"previous": DAY, "now": "2026-03-08"}}
    assert "end" in body["error"] and body["runId"] == first.json()["runId"]
    assert assert_json_error(other_days, 409)["details"] == {"days": {"previous": 7, "now": 3}}
    assert len(fake_dagster.launches) == 1

    # An option given as its default is the same request; once the run finished, the key is free.
    same = trigger.post(UPDATE_PATH, json={**LIVE, "days": 7, "fast": False}, headers=key_headers("k-9"))
    assert same.json()["runId"] == first.json()["runId"] and same.json()["repeated"] is True
    fake_dagster.set_status(first.json()["runId"], "SUCCESS")
    rerun = trigger.post(UPDATE_PATH, json={**LIVE, "end": "2026-03-08"}, headers=key_headers("k-9"))
    assert rerun.status_code == 202, rerun.text
    assert rerun.json()["partition"].startswith("2026-03-08|")
    assert len(fake_dagster.launches) == 2


def test_the_default_key_with_other_options_answers_409(trigger, fake_dagster) -> None:
    first = trigger.get(
        UPDATE_PATH, params={"token": AUTH["x-admin-job-secret"], "accountId": ACCOUNT_ID, "end": DAY}
    )
    fast = trigger.post(UPDATE_PATH, json={**LIVE, "fast": True}, headers=AUTH)
    assert first.status_code == 202
    body = assert_json_error(fast, 409)
    assert body["details"] == {"fast": {"previous": False, "now": True}}
    assert f"nightly-{DAY}" in body["error"]


# --- failed launches and abandoned claims ------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "status"),
    [(DagsterRefused("RunConfigValidationInvalid", "bad config"), 502), (DagsterUnavailable("down"), 503)],
)
def test_a_failed_launch_releases_its_claim(trigger, fake_dagster, failure, status) -> None:
    object.__setattr__(fake_dagster, "fail_next_launch", failure)
    failed = trigger.post(UPDATE_PATH, json=LIVE, headers=key_headers("k-fail"))
    retried = trigger.post(UPDATE_PATH, json=LIVE, headers=key_headers("k-fail"))

    assert_json_error(failed, status)
    assert retried.status_code == 202, retried.text
    assert "repeated" not in retried.json()
    assert len(fake_dagster.launches) == 1


def test_a_launch_in_progress_elsewhere_is_waited_for_then_an_abandoned_one_taken_over(
    trigger_env, serve, fake_dagster
) -> None:
    request = TriggerRequest("live", ACCOUNT_ID, SyncOptions(mode="live"), date(2026, 3, 9), "k-abandoned")
    # A process claimed the key and died before launching (or before releasing its claim).
    assert IdempotencyClaims.from_env().insert(ACCOUNT_ID, "k-abandoned", _claim_parameters(request))

    settings = TriggerSettings.from_env()
    settings.claim_wait_seconds = 0  # do not wait for the other process
    busy = serve(settings, fake_dagster).post(UPDATE_PATH, json=LIVE, headers=key_headers("k-abandoned"))
    body = assert_json_error(busy, 409, "Launch in progress")
    assert body["parameter"] == "idempotency"
    assert not fake_dagster.launches

    settings = TriggerSettings.from_env()
    settings.claim_stale_seconds = 1e-9  # any claim without a run is abandoned
    taken = serve(settings, fake_dagster).post(UPDATE_PATH, json=LIVE, headers=key_headers("k-abandoned"))
    assert taken.status_code == 202, taken.text
    assert len(fake_dagster.launches) == 1


# --- a launch whose run id cannot be recorded -----------------------------------------------------------


class UnrecordedClaims(IdempotencyClaims):
    """Claims whose ``record`` fails while ``failures`` holds entries (the database gone right after
    the launch); every ``release`` is noted in ``released``."""

    def __init__(self, inner: IdempotencyClaims, failures: list[str], released: list[str]) -> None:
        super().__init__(inner._dialect)
        self._failures = failures
        self._released = released

    def record(self, account_id: str, key: str, token: str, run_id: str) -> bool:
        if self._failures:
            self._failures.pop()
            raise DatabaseConnectionError("Could not connect to the database in SUPABASE_DB_URL (test)")
        return super().record(account_id, key, token, run_id)

    def release(self, account_id: str, key: str, token: str) -> None:
        self._released.append(key)
        super().release(account_id, key, token)


def test_a_launched_run_is_answered_and_kept_when_recording_its_id_fails(
    shared_database, serve_guarded, caplog
) -> None:
    caplog.set_level(logging.WARNING, logger="klaviyo_dagster.trigger")
    dagster, failures, released = FakeDagster(), ["once"], []

    def factory() -> IdempotencyClaims:
        return UnrecordedClaims(IdempotencyClaims.from_env(), failures, released)

    client = serve_guarded(TriggerSettings.from_env(), dagster, factory)[1]
    first = client.post(UPDATE_PATH, json=LIVE, headers=key_headers("k-unrecorded"))

    assert first.status_code == 202, first.text  # not 503: the run was launched
    run_id = first.json()["runId"]
    assert run_id in dagster.runs and "repeated" not in first.json()
    assert "could not record it" in caplog.text and run_id in caplog.text
    claim = IdempotencyClaims.from_env().read(ACCOUNT_ID, "k-unrecorded")
    assert claim is not None and claim.run_id is None  # kept, never released
    assert released == []

    # Other parameters while the run id is unrecorded: the run is found by its tags, and compared.
    other = client.post(UPDATE_PATH, json={**LIVE, "days": 3}, headers=key_headers("k-unrecorded"))
    body = assert_json_error(other, 409)
    assert body["details"] == {"days": {"previous": 7, "now": 3}} and body["runId"] == run_id

    # The same parameters: the same run at once (no 409 "Launch in progress"), and now recorded.
    again = client.post(UPDATE_PATH, json=LIVE, headers=key_headers("k-unrecorded"))
    assert again.status_code == 202, again.text
    assert again.json()["runId"] == run_id and again.json()["repeated"] is True
    claim = IdempotencyClaims.from_env().read(ACCOUNT_ID, "k-unrecorded")
    assert claim is not None and claim.run_id == run_id
    assert len(dagster.launches) == 1 and released == []


def test_the_claimer_may_record_a_run_another_request_recorded_first(trigger_env) -> None:
    claims = IdempotencyClaims.from_env()
    token = claims.insert(ACCOUNT_ID, "k-twice", {"end": DAY})
    assert token is not None
    assert claims.record(ACCOUNT_ID, "k-twice", token, "run-1")
    assert claims.record(ACCOUNT_ID, "k-twice", token, "run-1")  # the same run: still ours
    assert not claims.record(ACCOUNT_ID, "k-twice", token, "run-2")


def _parameters(**options: Any) -> dict[str, Any]:
    request = TriggerRequest("live", ACCOUNT_ID, SyncOptions(mode="live", **options), date(2026, 3, 9), "k")
    return _claim_parameters(request)


def test_a_run_found_in_dagster_under_a_new_claim_is_compared_too(trigger, fake_dagster) -> None:
    # The key's run is in Dagster but its claim is gone (released by an older trigger, or never made).
    tags = {
        "dagster/partition": f"{DAY}|{ACCOUNT_ID}",
        "dagster/partition/klaviyo_account": ACCOUNT_ID,
        "dagster/partition/date": DAY,
        "klaviyo/account": ACCOUNT_ID,
        "klaviyo/idempotency-key": "k-found",
        PARAMETERS_TAG: json.dumps(_parameters(days=3)),
    }
    run_id = fake_dagster.launch("klaviyo_ingest", {}, tags)

    other = trigger.post(UPDATE_PATH, json=LIVE, headers=key_headers("k-found"))
    body = assert_json_error(other, 409)
    assert body["details"] == {"days": {"previous": 3, "now": 7}} and body["runId"] == run_id
    assert IdempotencyClaims.from_env().read(ACCOUNT_ID, "k-found") is None  # nothing launched: given back

    same = trigger.post(UPDATE_PATH, json={**LIVE, "days": 3}, headers=key_headers("k-found"))
    assert same.status_code == 202, same.text
    assert same.json()["runId"] == run_id and same.json()["repeated"] is True
    assert len(fake_dagster.launches) == 1  # the test's own


# --- two processes racing -----------------------------------------------------------------------------


class RacingClaims(IdempotencyClaims):
    """Claims whose first insert per request waits for the other app's: both inserts meet at once."""

    def __init__(self, inner: IdempotencyClaims, barrier: threading.Barrier, arrivals: Counter) -> None:
        super().__init__(inner._dialect)
        self._barrier = barrier
        self._arrivals = arrivals

    def insert(self, account_id: str, key: str, parameters: Any) -> str | None:
        with ARRIVALS_LOCK:
            self._arrivals[key] += 1
            first_two = self._arrivals[key] <= 2
        if first_two:
            self._barrier.wait(timeout=60)
        return super().insert(account_id, key, parameters)


ARRIVALS_LOCK = threading.Lock()


@pytest.fixture
def postgres_env(trigger_env, clean_postgres, monkeypatch) -> str:
    """The trigger on a shared Postgres database (Supabase's settings; Storage is never called)."""
    with psycopg.connect(clean_postgres) as connection:
        connection.execute(f"truncate {POSTGRES_TABLE}")
    monkeypatch.setenv("SUPABASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", "sb-test-key")
    monkeypatch.setenv("SUPABASE_DB_URL", clean_postgres)
    return clean_postgres


@pytest.fixture(params=["postgres", "sqlite"])
def shared_database(request) -> str:
    """Each database the trigger may share with another trigger process."""
    if request.param == "postgres":
        return request.getfixturevalue("postgres_env")
    request.getfixturevalue("trigger_env")
    return "sqlite"


def test_two_apps_racing_on_one_key_launch_one_run(shared_database, serve_guarded) -> None:
    dagster = FakeDagster()
    object.__setattr__(dagster, "launch_delay", 0.2)  # the loser reads the claim while the winner launches
    barrier, arrivals = threading.Barrier(2), Counter()

    def factory() -> IdempotencyClaims:
        return RacingClaims(IdempotencyClaims.from_env(), barrier, arrivals)

    clients = [serve_guarded(TriggerSettings.from_env(), dagster, factory)[1] for _ in range(2)]
    keys = [f"race-{n}" for n in range(3)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = {
            key: [
                future.result()
                for future in [
                    pool.submit(client.post, UPDATE_PATH, json=LIVE, headers=key_headers(key))
                    for client in clients
                ]
            ]
            for key in keys
        }

    for key, (one, two) in answers.items():
        assert one.status_code == two.status_code == 202, (one.text, two.text)
        assert one.json()["runId"] == two.json()["runId"], key
        assert sorted([one.json().get("repeated", False), two.json().get("repeated", False)]) == [False, True]
    assert len(dagster.launches) == len(keys)
    assert sorted(launch["tags"]["klaviyo/idempotency-key"] for launch in dagster.launches) == keys


def test_a_burst_on_one_key_across_two_apps_launches_one_run(postgres_env, serve_guarded) -> None:
    dagster = FakeDagster()
    object.__setattr__(dagster, "launch_delay", 0.05)
    clients = [serve_guarded(TriggerSettings.from_env(), dagster)[1] for _ in range(2)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [
            pool.submit(clients[n % 2].post, UPDATE_PATH, json=LIVE, headers=key_headers("burst"))
            for n in range(8)
        ]
        answers = [future.result() for future in futures]
    assert {answer.status_code for answer in answers} == {202}
    assert len({answer.json()["runId"] for answer in answers}) == 1
    assert len(dagster.launches) == 1


CLAIMER = """
import json, pathlib, sys, time
from klaviyo_dagster.storage.tables import IngestTables
from klaviyo_dagster.trigger.claims import IdempotencyClaims
dsn, go, count = sys.argv[1], pathlib.Path(sys.argv[2]), int(sys.argv[3])
claims = IdempotencyClaims(IngestTables.postgres(dsn).dialect)
claims.read("warm-up", "warm-up")  # connect once before the start line
while not go.exists():
    time.sleep(0.001)
won = [n for n in range(count) if claims.insert("%s", f"proc-{n}", {"end": "2026-03-09"})]
print(json.dumps(won))
"""


def test_two_processes_claiming_the_same_keys_each_win_distinct_ones(postgres_env, tmp_path: Path) -> None:
    go, count = tmp_path / "go", 40
    script = CLAIMER % ACCOUNT_ID
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, postgres_env, str(go), str(count)],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    go.touch()
    results = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        results.append(set(json.loads(out)))

    assert not results[0] & results[1]  # never both
    assert results[0] | results[1] == set(range(count))  # always one
    rows = IngestTables.postgres(postgres_env).dialect.connect()
    with rows:
        (claimed,) = rows.execute(
            "select count(*) from klaviyo_dagster.trigger_idempotency where account_id = %s", (ACCOUNT_ID,)
        ).fetchone()
    assert claimed == count
