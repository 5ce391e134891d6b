"""What a hostile tester found: HEAD launching, secrets in the log, loose keys and types, deep bodies,
a database down answering a bare 500."""

from __future__ import annotations

import logging

import httpx
import pytest

from klaviyo_dagster.trigger import TriggerSettings
from klaviyo_dagster.trigger.app import STATUS_PATH, UPDATE_PATH
from klaviyo_dagster_tests.conftest import ACCOUNT_ID
from klaviyo_dagster_tests.trigger.conftest import SECRET
from klaviyo_dagster_tests.trigger.test_contract import AUTH, DAY, LIVE, assert_json_error

GUESS = "a-guessed-token-5up3r5ecret"


# --- HEAD and OPTIONS ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS"])
@pytest.mark.parametrize("path", [UPDATE_PATH, STATUS_PATH])
def test_head_and_options_never_launch(trigger, fake_dagster, method, path) -> None:
    params = {"token": SECRET, "accountId": ACCOUNT_ID, "end": DAY, "runId": "abcdef12"}
    response = trigger.request(method, path, params=params, headers=AUTH)
    assert response.status_code == 405
    assert "HEAD" not in response.headers["allow"] and "GET" in response.headers["allow"]
    assert not fake_dagster.launches and not fake_dagster.partitions


# --- the secret in the log -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        f"TOKEN={GUESS}&accountId={ACCOUNT_ID}",
        f"Token={GUESS}",
        f"accountId={ACCOUNT_ID};token={GUESS}",
        f"accountId={ACCOUNT_ID};TOKEN={GUESS};end={DAY}",
        f"%74oken={GUESS}",
        f"%54%4F%4B%45%4E={GUESS}",
        f"to%6Ben={GUESS}&x=1",
        f"token%3D={GUESS}",
        f"x-admin-job-secret={GUESS}",
        f"access_token={GUESS}",
    ],
)
def test_every_spelling_of_the_token_is_blanked_in_the_log(trigger, caplog, query) -> None:
    caplog.set_level(logging.INFO, logger="klaviyo_dagster.trigger")
    trigger.get(f"{UPDATE_PATH}?{query}")
    lines = [r.getMessage() for r in caplog.records if r.name == "klaviyo_dagster.trigger"]
    assert any(UPDATE_PATH in line and "[redacted]" in line for line in lines), lines
    assert GUESS not in caplog.text


def test_the_configured_secret_is_blanked_wherever_it_appears(trigger, caplog) -> None:
    caplog.set_level(logging.INFO, logger="klaviyo_dagster.trigger")
    trigger.get(f"{UPDATE_PATH}?accountId={SECRET}&{SECRET}")
    trigger.get(f"{STATUS_PATH}?runId={SECRET}", headers=AUTH)
    assert SECRET not in caplog.text
    assert caplog.text.count("[redacted]") >= 3


# --- idempotency keys ------------------------------------------------------------------------------


def test_a_key_with_surrounding_whitespace_or_newlines_is_the_same_key(trigger, fake_dagster) -> None:
    first = trigger.post(UPDATE_PATH, json={**LIVE, "idempotencyKey": "k-1"}, headers=AUTH)
    newline = trigger.post(UPDATE_PATH, json={**LIVE, "idempotencyKey": "k-1\n"}, headers=AUTH)
    crlf = trigger.get(
        f"{UPDATE_PATH}?token={SECRET}&accountId={ACCOUNT_ID}&end={DAY}&idempotency=%20k-1%0D%0A"
    )
    header = trigger.post(  # the same key in the header and, with a newline, in the body: one key
        UPDATE_PATH,
        json={**LIVE, "idempotencyKey": "\tk-1\r\n"},
        headers={**AUTH, "x-idempotency-key": "k-1"},
    )

    assert first.status_code == 202, first.text
    for again in (newline, crlf, header):
        assert again.status_code == 202, again.text
        assert again.json()["runId"] == first.json()["runId"]
        assert again.json()["idempotencyKey"] == "k-1"
    assert len(fake_dagster.launches) == 1


@pytest.mark.parametrize("key", ["k\x00-1", "k-\x1b1", "k-1\x7f", "k\u200b-1", "k-\n-1"])
def test_a_key_with_control_characters_is_refused(trigger, fake_dagster, key) -> None:
    body = assert_json_error(
        trigger.post(UPDATE_PATH, json={**LIVE, "idempotencyKey": key}, headers=AUTH), 400
    )
    assert body["parameter"] == "idempotencyKey"
    assert not fake_dagster.launches


def test_two_different_keys_in_one_request_are_refused(trigger, fake_dagster) -> None:
    response = trigger.post(
        UPDATE_PATH, json={**LIVE, "idempotencyKey": "k-2"}, headers={**AUTH, "x-idempotency-key": "k-1"}
    )
    assert assert_json_error(response, 400)["parameter"] == "idempotency"
    assert not fake_dagster.launches


# --- strict JSON types ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "parameter"),
    [
        ({"days": True}, "days"),
        ({"days": False}, "days"),
        ({"days": 7.0}, "days"),
        ({"days": "7"}, "days"),
        ({"fast": 1}, "fast"),
        ({"fast": "true"}, "fast"),
        ({"flow": {"limitFlows": True}}, "flow.limitFlows"),
        ({"flow": {"enrichMessageNames": 0}}, "flow.enrichMessageNames"),
        ({"audience": {"maxPages": True}}, "audience.maxPages"),
        ({"audience": {"schema": 1}}, "audience.schema"),
        ({"campaign": {"timeframeKey": ["last_7_days"]}}, "campaign.timeframeKey"),
    ],
)
def test_json_values_must_have_their_type(trigger, fake_dagster, body, parameter) -> None:
    response = trigger.post(UPDATE_PATH, json={**LIVE, **body}, headers=AUTH)
    error = assert_json_error(response, 400)
    assert error["parameter"] == parameter
    assert parameter in error["error"]
    assert not fake_dagster.launches


def test_query_values_are_still_text(trigger, fake_dagster) -> None:
    response = trigger.get(
        UPDATE_PATH, params={"token": SECRET, "accountId": ACCOUNT_ID, "end": DAY, "days": "3", "fast": "1"}
    )
    assert response.status_code == 202, response.text
    assert fake_dagster.launches[0]["run_config"]["ops"]["flows_csv"]["config"] == {"days": 3, "fast": True}


# --- malformed bodies --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"[" * 30_000 + b"]" * 30_000, "nested too deeply"),  # within the size limit
        (b'{"flow": ' + b"[" * 40 + b"]" * 40 + b"}", "nested too deeply"),
        (b"{" * 5000, "nested too deeply"),
        (b'{"days": NaN}', "not valid JSON"),
        (b'{"days": 1, "days": 40}', "given twice"),
    ],
    ids=["deep-array", "deep-in-flow", "unclosed-objects", "nan", "duplicate-name"],
)
def test_malformed_bodies_answer_a_clear_400(trigger, fake_dagster, raw, message) -> None:
    response = trigger.post(UPDATE_PATH, content=raw, headers={**AUTH, "content-type": "application/json"})
    error = assert_json_error(response, 400)
    assert message in error["error"]
    assert not fake_dagster.launches


def test_brackets_inside_strings_do_not_count_as_nesting(trigger, sim_env) -> None:
    body = b'{"end": "%s", "fast": true, "note": "%s"}' % (DAY.encode(), b"[{" * 100)
    response = trigger.post(UPDATE_PATH, content=body, headers={**AUTH, "content-type": "application/json"})
    assert response.status_code == 200, response.text


# --- the database down ----------------------------------------------------------------------------


@pytest.fixture
def database_down(trigger_env, monkeypatch) -> str:
    """Supabase configured, its database refusing connections; the DSN's password to search for."""
    password = "db-pa55word-" + "e" * 12
    monkeypatch.setenv("SUPABASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", "sb-test-key")
    monkeypatch.setenv("SUPABASE_DB_URL", f"postgresql://postgres:{password}@127.0.0.1:9/postgres")
    return password


def test_a_database_down_answers_503_with_a_reason_and_no_secret(
    database_down, serve, fake_dagster, caplog
) -> None:
    caplog.set_level(logging.INFO)
    client: httpx.Client = serve(TriggerSettings.from_env(), fake_dagster)
    run_id = fake_dagster.launch(
        "klaviyo_ingest", {}, {"klaviyo/account": ACCOUNT_ID, "dagster/partition/date": DAY}
    )
    fake_dagster.set_status(run_id, "SUCCESS")

    for response in (
        client.post(UPDATE_PATH, json=LIVE, headers=AUTH),  # the account's key, the claim
        client.get(UPDATE_PATH, params={"token": SECRET, "accountId": ACCOUNT_ID}),  # its timezone
        client.post(UPDATE_PATH, json={"accountId": ACCOUNT_ID, "end": DAY}, headers=AUTH),  # a dry run
        client.get(STATUS_PATH, params={"runId": run_id}, headers=AUTH),  # the snapshot written
    ):
        body = assert_json_error(response, 503, "Database unavailable")
        assert body["details"]
        assert response.headers["retry-after"]
        assert database_down not in response.text and "postgresql://" not in response.text
    assert len(fake_dagster.launches) == 1  # the test's own
    assert database_down not in caplog.text
