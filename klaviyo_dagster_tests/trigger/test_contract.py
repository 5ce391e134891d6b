"""The old endpoint's contract, status by status, over real HTTP (Dagster faked where launching)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import pytest

from klaviyo_dagster.environment import ingest_store as ingest_store_from_env
from klaviyo_dagster.sim import FaultSpec
from klaviyo_dagster.storage.ids import nightly_upload_id
from klaviyo_dagster.trigger import TriggerSettings
from klaviyo_dagster.trigger.app import STATUS_PATH, UPDATE_PATH
from klaviyo_dagster.trigger.dagster_api import DagsterApi
from klaviyo_dagster_tests.conftest import ACCOUNT_ID
from klaviyo_dagster_tests.producers import test_flows
from klaviyo_dagster_tests.trigger.conftest import SECRET

AUTH = {"x-admin-job-secret": SECRET}
DAY = "2026-03-09"  # the tiny store's partition date
LIVE = {"mode": "live", "accountId": ACCOUNT_ID, "end": DAY}
OTHER_ACCOUNT = "11111111-2222-4333-8444-555555555555"


def assert_json_error(response, status: int, error: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    if error is not None:
        assert body["error"] == error
    return body


# --- 501 and 401, before anything else -------------------------------------------------------------


def test_klaviyo_disabled_answers_501_before_checking_the_secret(trigger, monkeypatch) -> None:
    monkeypatch.setenv("KLAVIYO_ENABLE", "false")
    for response in (
        trigger.post(UPDATE_PATH, json=LIVE),
        trigger.get(UPDATE_PATH, params={"token": "wrong"}),
        trigger.get(STATUS_PATH, params={"runId": "x"}, headers=AUTH),
    ):
        assert assert_json_error(response, 501) == {"error": "Klaviyo source disabled"}


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {"method": "POST", "url": UPDATE_PATH, "json": LIVE},
        {"method": "POST", "url": UPDATE_PATH, "json": LIVE, "headers": {"x-admin-job-secret": "wrong"}},
        {
            "method": "POST",
            "url": UPDATE_PATH,
            "json": LIVE,
            "params": {"token": SECRET},
        },  # POST: header only
        {"method": "GET", "url": UPDATE_PATH, "params": {"token": SECRET[:-1]}},
        {"method": "GET", "url": UPDATE_PATH, "params": {"token": ""}},
        {"method": "GET", "url": STATUS_PATH, "params": {"runId": "abc12345"}},
    ],
)
def test_a_missing_or_wrong_secret_answers_401(trigger, fake_dagster, request_kwargs) -> None:
    response = trigger.request(**request_kwargs)
    assert assert_json_error(response, 401) == {"error": "Unauthorized"}
    assert not fake_dagster.launches


def test_an_unset_secret_refuses_everything(trigger_env, serve, fake_dagster, monkeypatch) -> None:
    monkeypatch.delenv("ADMIN_JOB_SECRET")
    client = serve(TriggerSettings.from_env(), fake_dagster)
    assert_json_error(client.post(UPDATE_PATH, json=LIVE, headers={"x-admin-job-secret": ""}), 401)
    assert_json_error(client.get(UPDATE_PATH, params={"token": ""}), 401)
    assert_json_error(client.get(UPDATE_PATH, params={"token": "None"}), 401)


# --- 400 ---------------------------------------------------------------------------------------------


def test_live_without_an_account_answers_400_before_any_work(trigger, fake_dagster) -> None:
    body = assert_json_error(trigger.post(UPDATE_PATH, json={"mode": "live"}, headers=AUTH), 400)
    assert body["parameter"] == "accountId"
    body = assert_json_error(trigger.get(UPDATE_PATH, params={"token": SECRET}), 400)  # GET: live by default
    assert body["parameter"] == "accountId"
    assert not fake_dagster.launches and not fake_dagster.partitions


def test_an_account_without_a_key_answers_missing_klaviyo_api_key(trigger, sim_env, fake_dagster) -> None:
    for response in (
        trigger.post(UPDATE_PATH, json={**LIVE, "accountId": OTHER_ACCOUNT}, headers=AUTH),
        trigger.post(UPDATE_PATH, json={"accountId": OTHER_ACCOUNT, "end": DAY}, headers=AUTH),  # dry run
    ):
        body = assert_json_error(response, 400, "Missing klaviyoApiKey")
        assert OTHER_ACCOUNT in body["details"]
    assert not fake_dagster.launches
    assert sim_env.requests == []  # no Klaviyo call either


@pytest.mark.parametrize(
    ("body", "parameter"),
    [
        ({"days": 40}, "days"),
        ({"days": "many"}, "days"),
        ({"flow": {"limitFlows": 500}}, "flow.limitFlows"),
        ({"flow": {"limitMessages": 0}}, "flow.limitMessages"),
        ({"flow": {"enrichMessageNames": "perhaps"}}, "flow.enrichMessageNames"),
        ({"flow": 3}, "flow"),
        ({"audience": {"schema": "everything"}}, "audience.schema"),
        ({"audience": {"pageSize": 101}}, "audience.pageSize"),
        ({"audience": {"maxPages": -1}}, "audience.maxPages"),
        ({"campaign": {"timeframeKey": "last_2_days"}}, "campaign.timeframeKey"),
        ({"timeframeKey": "forever"}, "timeframeKey"),
        ({"fast": "sometimes"}, "fast"),
        ({"mode": "rehearsal"}, "mode"),
        ({"accountId": "../../etc"}, "accountId"),
        ({"end": "09/03/2026"}, "end"),
        ({"start": "2026-03-10", "end": DAY}, "start"),
        ({"start": "2026-01-01", "end": DAY}, "start"),
        ({"start": "2026-03-07", "end": DAY, "days": 7}, "days"),
        ({**LIVE, "end": "2099-01-01"}, "end"),
        ({"mode": "live", "accountId": ACCOUNT_ID, "idempotencyKey": "a key with spaces"}, "idempotencyKey"),
    ],
)
def test_bad_values_answer_400_naming_the_parameter(trigger, fake_dagster, body, parameter) -> None:
    response = trigger.post(UPDATE_PATH, json=body, headers=AUTH)
    error = assert_json_error(response, 400)
    assert error["parameter"] == parameter
    assert parameter in error["error"] or parameter == "body"
    assert not fake_dagster.launches


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"days": "0"}, "days"),
        ({"limitFlows": "101"}, "limitFlows"),
        ({"audience.pageSize": "0"}, "audience.pageSize"),
        ({"audienceSchema": "all"}, "audienceSchema"),
        ({"timeframeKey": "last_week"}, "timeframeKey"),
        ({"fast": "maybe"}, "fast"),
    ],
)
def test_bad_query_values_answer_400_naming_the_parameter(trigger, params, parameter) -> None:
    response = trigger.get(UPDATE_PATH, params={"token": SECRET, "accountId": ACCOUNT_ID, **params})
    assert assert_json_error(response, 400)["parameter"] == parameter


def test_a_body_that_is_not_json_answers_400(trigger) -> None:
    response = trigger.post(UPDATE_PATH, content=b"{mode: live", headers=AUTH)
    assert assert_json_error(response, 400)["parameter"] == "body"
    response = trigger.post(UPDATE_PATH, json=["live"], headers=AUTH)
    assert assert_json_error(response, 400)["parameter"] == "body"


def test_a_large_body_answers_413(trigger, fake_dagster) -> None:
    big = {**LIVE, "padding": "x" * (64 * 1024)}
    assert_json_error(trigger.post(UPDATE_PATH, json=big, headers=AUTH), 413, "Request body too large")

    def chunks():  # no content-length: counted while reading
        for _ in range(100):
            yield b" " * 1024

    assert_json_error(trigger.post(UPDATE_PATH, content=chunks(), headers=AUTH), 413)
    assert not fake_dagster.launches


def test_unknown_paths_and_methods_answer_json(trigger) -> None:
    assert_json_error(trigger.get("/api/dashboard/other", headers=AUTH), 404)
    assert_json_error(trigger.put(UPDATE_PATH, headers=AUTH), 405)


# --- the dry run (200, 502, 504) against the simulator -----------------------------------------------


def test_a_dry_run_answers_the_contracts_json(trigger, sim_env, fake_dagster) -> None:
    response = trigger.post(UPDATE_PATH, json={"accountId": ACCOUNT_ID, "end": DAY, "days": 3}, headers=AUTH)

    assert response.status_code == 200, response.text
    result = response.json()
    assert set(result) == {"mode", "rows", "previews", "ms"}
    assert result["mode"] == "dry-run"
    assert result["rows"] == {"flows": 9, "campaigns": 2, "subscribers": 3}
    assert result["previews"]["flows"] == test_flows.EXPECTED.split("\n")[:3]
    assert isinstance(result["ms"], int)
    assert not fake_dagster.launches
    assert {r.method for r in sim_env.requests} <= {"GET", "POST"}


def test_a_dry_run_writes_nothing(trigger, sim_env, tmp_path) -> None:
    response = trigger.post(UPDATE_PATH, json={"end": DAY, "fast": True}, headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json()["rows"] == {"flows": 7, "campaigns": 0, "subscribers": 0}  # one flow, seven days
    assert not (tmp_path / "data" / "objects").exists()


def test_get_and_post_ask_for_the_same_dry_run(trigger, sim_env) -> None:
    post = trigger.post(
        UPDATE_PATH,
        json={
            "mode": "dry-run",
            "accountId": ACCOUNT_ID,
            "start": "2026-03-07",
            "end": DAY,
            "flow": {"limitFlows": 1, "limitMessages": 1, "enrichMessageNames": False},
            "audience": {"schema": "minimal", "maxPages": 0},
            "campaign": {"timeframeKey": "last_7_days"},
        },
        headers=AUTH,
    )
    post_calls = [(r.method, r.path, sorted(r.query.items())) for r in sim_env.requests]
    get = trigger.get(
        UPDATE_PATH,
        params={
            "token": SECRET,
            "mode": "dry-run",
            "accountId": ACCOUNT_ID,
            "start": "2026-03-07",
            "end": DAY,
            "limitFlows": "1",
            "flow.limitMessages": "1",
            "enrichMessageNames": "0",
            "audience.schema": "minimal",
            "audienceMaxPages": "0",
            "timeframeKey": "last_7_days",
        },
    )
    get_calls = [(r.method, r.path, sorted(r.query.items())) for r in sim_env.requests[len(post_calls) :]]

    assert post.status_code == get.status_code == 200, (post.text, get.text)
    assert {k: v for k, v in post.json().items() if k != "ms"} == {
        k: v for k, v in get.json().items() if k != "ms"
    }
    assert post_calls == get_calls  # the same Klaviyo calls, so the same options


def test_a_producer_failure_answers_502_with_klaviyos_errors(trigger, sim_env) -> None:
    sim_env.set_fault("query_flow_series", FaultSpec(status=400))
    response = trigger.post(UPDATE_PATH, json={"end": DAY, "days": 3}, headers=AUTH)
    body = assert_json_error(response, 502, "FlowSyncFailed")
    assert body["details"]["endpoint"] == "POST /api/flow-series-reports"
    assert body["details"]["errors"][0]["status"] == 400


def test_a_dry_run_past_the_time_limit_answers_504(sim_env, serve, fake_dagster) -> None:
    sim_env.set_fault("*", FaultSpec(latency_ms=1500))
    settings = TriggerSettings.from_env()
    settings.dry_run_timeout_seconds = 0.3
    client = serve(settings, fake_dagster)
    assert_json_error(client.post(UPDATE_PATH, json={"end": DAY}, headers=AUTH), 504, "Timeout")


# --- live (202, idempotency) and status, on a fake Dagster ---------------------------------------------


def test_live_launches_the_partition_and_a_repeat_returns_the_same_run(trigger, fake_dagster) -> None:
    first = trigger.post(UPDATE_PATH, json={**LIVE, "days": 3}, headers={**AUTH, "x-idempotency-key": "k-1"})
    again = trigger.post(UPDATE_PATH, json={**LIVE, "days": 3}, headers={**AUTH, "x-idempotency-key": "k-1"})
    other = trigger.post(UPDATE_PATH, json=LIVE, headers={**AUTH, "x-idempotency-key": "k-2"})

    assert first.status_code == again.status_code == other.status_code == 202
    body = first.json()
    assert body == {
        "accountId": ACCOUNT_ID,
        "uploadId": nightly_upload_id(ACCOUNT_ID, datetime(2026, 3, 9).date()),
        "runId": body["runId"],
        "partition": f"{DAY}|{ACCOUNT_ID}",
        "status": "queued",
        "idempotencyKey": "k-1",
    }
    assert again.json()["runId"] == body["runId"] and again.json()["repeated"] is True
    assert other.json()["runId"] != body["runId"]
    assert len(fake_dagster.launches) == 2
    launch = fake_dagster.launches[0]
    assert launch["job"] == "klaviyo_ingest"
    tags = dict(launch["tags"])
    parameters = json.loads(tags.pop("klaviyo/trigger-parameters"))  # compared by a repeat finding the run
    assert parameters["end"] == DAY and parameters["days"] == 3 and parameters["fast"] is False
    assert tags == {
        "dagster/partition": f"{DAY}|{ACCOUNT_ID}",
        "dagster/partition/klaviyo_account": ACCOUNT_ID,
        "dagster/partition/date": DAY,
        "klaviyo/account": ACCOUNT_ID,
        "klaviyo/idempotency-key": "k-1",
        "klaviyo/trigger": "api",
    }
    assert launch["run_config"]["ops"]["flows_csv"] == {"config": {"days": 3}}
    assert ("klaviyo_accounts", ACCOUNT_ID) in fake_dagster.partitions


def test_a_finished_run_is_not_reused(trigger, fake_dagster) -> None:
    first = trigger.post(UPDATE_PATH, json=LIVE, headers=AUTH).json()["runId"]
    fake_dagster.set_status(first, "SUCCESS")
    second = trigger.post(UPDATE_PATH, json=LIVE, headers=AUTH).json()["runId"]
    assert second != first


def fixed_clock_trigger(serve, fake_dagster, now: datetime):
    """The trigger as served, with the clock stopped at ``now`` (which dates are complete)."""
    settings = TriggerSettings.from_env()
    settings.clock = lambda: now
    return serve(settings, fake_dagster)


def test_get_and_post_launch_the_same_run(trigger_env, serve, fake_dagster) -> None:
    ingest_store_from_env().tables.record_account_timezone(ACCOUNT_ID, "America/Los_Angeles", None, "run")
    client = fixed_clock_trigger(serve, fake_dagster, datetime(2026, 3, 10, 12, 0, tzinfo=UTC))
    post = client.post(
        UPDATE_PATH,
        json={
            "mode": "live",
            "accountId": ACCOUNT_ID,
            "fast": True,
            "campaign": {"timeframeKey": "last_7_days"},
        },
        headers=AUTH,
    )
    fake_dagster.set_status(post.json()["runId"], "FAILURE")
    get = client.get(
        UPDATE_PATH,
        params={"token": SECRET, "accountId": ACCOUNT_ID, "fast": "1", "timeframeKey": "last_7_days"},
    )
    assert post.status_code == get.status_code == 202
    assert post.json()["idempotencyKey"] == get.json()["idempotencyKey"] == f"nightly-{DAY}"
    assert post.json()["partition"] == get.json()["partition"] == f"{DAY}|{ACCOUNT_ID}"
    first, second = fake_dagster.launches
    assert first["run_config"] == second["run_config"]
    assert first["run_config"]["ops"]["subscribers_csv"]["config"] == {
        "fast": True,
        "timeframe_key": "last_7_days",
    }
    assert first["tags"] == second["tags"]


@pytest.mark.parametrize(
    ("zone", "now", "newest"),
    [
        ("America/Los_Angeles", datetime(2026, 3, 10, 10, 4, tzinfo=UTC), "2026-03-08"),
        ("America/Los_Angeles", datetime(2026, 3, 10, 10, 5, tzinfo=UTC), "2026-03-09"),  # PDT + 3 h 05
        ("Pacific/Auckland", datetime(2026, 3, 10, 14, 5, tzinfo=UTC), "2026-03-10"),  # NZDT: on D itself
        ("UTC", datetime(2026, 3, 10, 3, 5, tzinfo=UTC), "2026-03-09"),
        (None, datetime(2026, 3, 10, 15, 4, tzinfo=UTC), "2026-03-08"),  # not recorded: UTC-12 assumed
        (None, datetime(2026, 3, 10, 15, 5, tzinfo=UTC), "2026-03-09"),
    ],
)
def test_without_a_date_the_accounts_newest_complete_date_is_synced(
    trigger_env, serve, fake_dagster, zone, now, newest
) -> None:
    if zone is not None:
        ingest_store_from_env().tables.record_account_timezone(ACCOUNT_ID, zone, None, "discovery")
    client = fixed_clock_trigger(serve, fake_dagster, now)

    response = client.get(UPDATE_PATH, params={"token": SECRET, "accountId": ACCOUNT_ID})

    assert response.status_code == 202, response.text
    assert response.json()["partition"] == f"{newest}|{ACCOUNT_ID}"
    assert response.json()["idempotencyKey"] == f"nightly-{newest}"


def test_a_date_not_complete_for_the_account_is_refused(trigger_env, serve, fake_dagster) -> None:
    ingest_store_from_env().tables.record_account_timezone(ACCOUNT_ID, "America/Los_Angeles", None, "run")
    client = fixed_clock_trigger(serve, fake_dagster, datetime(2026, 3, 10, 9, 0, tzinfo=UTC))

    live = client.post(UPDATE_PATH, json={**LIVE, "end": "2026-03-09"}, headers=AUTH)
    by_key = client.get(
        UPDATE_PATH, params={"token": SECRET, "accountId": ACCOUNT_ID, "idempotency": "nightly-2026-03-09"}
    )
    dry = client.post(UPDATE_PATH, json={"accountId": ACCOUNT_ID, "end": "2026-03-09"}, headers=AUTH)

    body = assert_json_error(live, 400)
    assert body == {
        "error": (
            f"end: 2026-03-09 is not complete yet for account {ACCOUNT_ID}: the day ends at "
            "2026-03-10T07:00:00+00:00 in America/Los_Angeles, and is complete 3 h 05 min later, from "
            "2026-03-10T10:05:00+00:00; the newest complete date is 2026-03-08"
        ),
        "parameter": "end",
        "details": {"readyAt": "2026-03-10T10:05:00+00:00", "newestComplete": "2026-03-08"},
    }
    assert assert_json_error(by_key, 400)["parameter"] == "idempotency"
    assert assert_json_error(dry, 400)["parameter"] == "end"
    assert not fake_dagster.launches
    ok = client.post(UPDATE_PATH, json={**LIVE, "end": "2026-03-08"}, headers=AUTH)
    assert ok.status_code == 202, ok.text


def test_the_nightly_key_names_the_partition_date(trigger) -> None:
    response = trigger.get(
        UPDATE_PATH, params={"token": SECRET, "accountId": ACCOUNT_ID, "idempotency": "nightly-2026-03-01"}
    )
    assert response.status_code == 202
    assert response.json()["partition"] == f"2026-03-01|{ACCOUNT_ID}"
    assert response.json()["uploadId"] == nightly_upload_id(ACCOUNT_ID, datetime(2026, 3, 1).date())


def test_status_reports_the_run_and_404s_an_unknown_one(trigger, fake_dagster) -> None:
    run_id = trigger.post(UPDATE_PATH, json=LIVE, headers=AUTH).json()["runId"]

    status = trigger.get(STATUS_PATH, params={"runId": run_id}, headers=AUTH)
    assert status.status_code == 200
    assert status.json() == {
        "runId": run_id,
        "status": "queued",
        "dagsterStatus": "QUEUED",
        "job": "klaviyo_ingest",
        "accountId": ACCOUNT_ID,
        "uploadId": nightly_upload_id(ACCOUNT_ID, datetime(2026, 3, 9).date()),
        "partition": f"{DAY}|{ACCOUNT_ID}",
    }
    fake_dagster.set_status(run_id, "FAILURE")
    assert trigger.get(STATUS_PATH, params={"runId": run_id, "token": SECRET}).json()["status"] == "failed"

    unknown = trigger.get(STATUS_PATH, params={"runId": "00000000-0000-4000-8000-000000000000"}, headers=AUTH)
    assert_json_error(unknown, 404, "Run not found")
    assert assert_json_error(trigger.get(STATUS_PATH, headers=AUTH), 400)["parameter"] == "runId"
    bad = trigger.get(STATUS_PATH, params={"runId": "'; drop"}, headers=AUTH)
    assert assert_json_error(bad, 400)["parameter"] == "runId"


def test_dagster_down_answers_503(trigger_env, serve) -> None:
    settings = TriggerSettings.from_env()
    client = serve(settings, DagsterApi(url="http://127.0.0.1:9", location="klaviyo_dagster.definitions"))
    assert_json_error(client.post(UPDATE_PATH, json=LIVE, headers=AUTH), 503, "Dagster unavailable")
    assert_json_error(client.get(STATUS_PATH, params={"runId": "abcdef12"}, headers=AUTH), 503)


# --- logging --------------------------------------------------------------------------------------------


def test_requests_are_logged_without_the_secret(trigger, sim_env, caplog) -> None:
    caplog.set_level(logging.INFO, logger="klaviyo_dagster.trigger")
    trigger.get(UPDATE_PATH, params={"token": SECRET, "accountId": ACCOUNT_ID, "end": DAY})
    trigger.post(UPDATE_PATH, json={"end": DAY, "fast": True, "days": 1}, headers=AUTH)
    trigger.get(UPDATE_PATH, params={"token": "a-wrong-guess"})

    lines = [record.getMessage() for record in caplog.records if record.name == "klaviyo_dagster.trigger"]
    assert any(
        "GET /api/dashboard/update?token=[redacted]&accountId=" in line and " 202 " in line for line in lines
    )
    assert any("POST /api/dashboard/update 200" in line for line in lines)
    assert not any(SECRET in line or "a-wrong-guess" in line for line in caplog.text.splitlines())


def test_status_of_a_succeeded_run_names_the_keys_written(trigger, fake_dagster, tmp_path) -> None:
    launched = trigger.post(UPDATE_PATH, json=LIVE, headers=AUTH).json()
    source = tmp_path / "flows.csv"
    source.write_text("Day\n")
    store = ingest_store_from_env()
    for name in ("flows.csv", "campaigns.csv"):
        store.objects.upload(f"{launched['uploadId']}/{name}", source)
    fake_dagster.set_status(launched["runId"], "SUCCESS")

    body = trigger.get(STATUS_PATH, params={"runId": launched["runId"]}, headers=AUTH).json()
    assert body["status"] == "succeeded"
    assert body["mode"] == "live"
    assert body["snapshotId"] is None  # no snapshot row in this hand-made store
    assert body["keys"] == [f"{launched['uploadId']}/campaigns.csv", f"{launched['uploadId']}/flows.csv"]
