"""What a hostile tester found: HEAD launching, secrets in the log, loose keys and types, deep bodies,
a database down answering a bare 500."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import httpx
import pytest

from klaviyo_dagster.environment import ingest_store as ingest_store_from_env
from klaviyo_dagster.trigger import TriggerSettings
from klaviyo_dagster.trigger.app import STATUS_PATH, UPDATE_PATH, redacted_target
from klaviyo_dagster.trigger.request import load_json
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


def test_brackets_inside_strings_do_not_count_as_nesting(trigger, fake_dagster) -> None:
    body = b'{"end": "%s", "fast": true, "note": "%s"}' % (DAY.encode(), b"[{" * 100)
    assert load_json(body, 16)["note"] == "[{" * 100
    # Over HTTP the answer is about "note", which is no parameter, not about the nesting.
    response = trigger.post(UPDATE_PATH, content=body, headers={**AUTH, "content-type": "application/json"})
    assert assert_json_error(response, 400)["parameter"] == "note"


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


# --- dates at the ends of the calendar, and a recorded zone that is not one -------------------------


def _stopped_clock_trigger(serve, fake_dagster, now: datetime) -> httpx.Client:
    settings = TriggerSettings.from_env()
    settings.clock = lambda: now
    return serve(settings, fake_dagster)


NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("mode", ["live", "dry-run"])
def test_a_date_after_the_calendar_ends_is_a_400_not_a_500(trigger_env, serve, fake_dagster, mode) -> None:
    ingest_store_from_env().tables.record_account_timezone(ACCOUNT_ID, "UTC", None, "run")
    client = _stopped_clock_trigger(serve, fake_dagster, NOW)

    response = client.post(
        UPDATE_PATH, json={"mode": mode, "accountId": ACCOUNT_ID, "end": "9999-12-31"}, headers=AUTH
    )

    body = assert_json_error(response, 400)
    assert body["parameter"] == "end"
    assert body["error"].startswith(f"end: 9999-12-31 is never complete for account {ACCOUNT_ID}")
    assert body["details"] == {"newestComplete": "2026-03-09"}
    assert not fake_dagster.launches


@pytest.mark.parametrize(
    ("params", "parameter"),
    [({"end": "0001-01-01"}, "end"), ({"idempotency": "nightly-0001-01-01"}, "idempotency")],
)
def test_a_dry_run_before_the_partitions_start_is_refused(
    trigger_env, serve, fake_dagster, params, parameter
) -> None:
    client = _stopped_clock_trigger(serve, fake_dagster, NOW)

    response = client.post(
        UPDATE_PATH, json={"mode": "dry-run", "accountId": ACCOUNT_ID, **params}, headers=AUTH
    )

    body = assert_json_error(response, 400)
    assert body == {
        "error": f"{parameter} must be a partition date from 2024-01-01, got 0001-01-01",
        "parameter": parameter,
    }


@pytest.mark.parametrize("bad", ["Mars/Olympus", "", "utc", "America/Los_Angeles ", "../../etc/passwd"])
def test_a_recorded_zone_that_is_not_a_timezone_is_taken_as_unknown(
    trigger_env, serve, fake_dagster, caplog, bad
) -> None:
    ingest_store_from_env().tables.record_account_timezone(ACCOUNT_ID, bad, None, "run")
    client = _stopped_clock_trigger(serve, fake_dagster, datetime(2026, 3, 10, 15, 5, tzinfo=UTC))

    with caplog.at_level(logging.WARNING):
        response = client.get(UPDATE_PATH, params={"token": SECRET, "accountId": ACCOUNT_ID})

    assert response.status_code == 202, response.text
    assert response.json()["partition"] == f"2026-03-09|{ACCOUNT_ID}"  # UTC-12 assumed, as with no zone
    assert any(
        ACCOUNT_ID in r.getMessage() and "not a valid timezone" in r.getMessage() for r in caplog.records
    )


# --- JSON strictness ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "parameter"),
    [
        (b'{"flow": {"limitFlows": 5}, "flow.limitFlows": 7}', "flow.limitFlows"),
        (b'{"flow.limitFlows": 7, "flow": {"limitFlows": 5}}', "flow.limitFlows"),
        (b'{"audience": {"schema": "required"}, "audience.schema": "all"}', "audience.schema"),
        (
            b'{"campaign.timeframeKey": "last_7_days", "campaign": {"timeframeKey": "last_7_days"}}',
            "campaign.timeframeKey",
        ),
    ],
    ids=["nested-then-dotted", "dotted-then-nested", "audience", "same-value"],
)
def test_a_name_given_nested_and_dotted_is_refused(trigger, fake_dagster, raw, parameter) -> None:
    body = raw[:-1] + b', "mode": "live", "accountId": "%s", "end": "%s"}' % (
        ACCOUNT_ID.encode(),
        DAY.encode(),
    )
    response = trigger.post(UPDATE_PATH, content=body, headers={**AUTH, "content-type": "application/json"})
    error = assert_json_error(response, 400)
    assert error["parameter"] == parameter
    assert "given twice" in error["error"] and parameter in error["error"]
    assert not fake_dagster.launches


def _nested(levels: int) -> list:
    return [_nested(levels - 1)] if levels else []


# A live body nested 200 deep (the limit is 16) holding a non-ASCII character.
DEEP = json.dumps({**LIVE, "x": ["\u2200", _nested(200)]}, ensure_ascii=False)


@pytest.mark.parametrize(
    "raw",
    [
        DEEP.encode("utf-16-le"),  # "\u2200" is the bytes 00 22 there: a byte scan saw a string open
        DEEP.encode("utf-16"),
        DEEP.encode("utf-32"),
        json.dumps(LIVE).encode("utf-16-be"),
        b'{"mode": "live", "end": "\xff\xfe"}',
    ],
    ids=["utf-16-le-deep", "utf-16-bom-deep", "utf-32-deep", "utf-16-be", "not-utf-8"],
)
def test_a_body_not_in_utf8_is_refused(trigger, fake_dagster, raw) -> None:
    response = trigger.post(UPDATE_PATH, content=raw, headers={**AUTH, "content-type": "application/json"})
    error = assert_json_error(response, 400)
    assert error["parameter"] == "body" and "UTF-8" in error["error"]
    assert not fake_dagster.launches


def test_a_utf8_body_with_a_bom_is_still_read(trigger, fake_dagster) -> None:
    raw = b"\xef\xbb\xbf" + json.dumps(LIVE).encode()
    response = trigger.post(UPDATE_PATH, content=raw, headers={**AUTH, "content-type": "application/json"})
    assert response.status_code == 202, response.text


@pytest.mark.parametrize(
    ("body", "parameter"),
    [
        ({"dayz": 40}, "dayz"),
        ({"flow": {"limitFlow": 5}}, "flow.limitFlow"),
        ({"audience": {"schema": "required", "size": 3}}, "audience.size"),
        ({"Days": 3}, "Days"),
        ({"token": "whatever"}, "token"),  # the secret is a header (or ?token= on GET), never the body
    ],
)
def test_an_unknown_field_is_refused_naming_it_and_the_accepted_ones(
    trigger, fake_dagster, body, parameter
) -> None:
    response = trigger.post(UPDATE_PATH, json={**LIVE, **body}, headers=AUTH)
    error = assert_json_error(response, 400)
    assert error["parameter"] == parameter
    assert error["error"].startswith(f"{parameter} is not a parameter")
    accepted = error["details"]["accepted"]
    for name in ("days", "end", "flow.limitFlows", "limitFlows", "audience.schema", "idempotencyKey"):
        assert name in accepted and name in error["error"]
    assert error["details"]["unknown"] == [parameter]
    assert not fake_dagster.launches


def test_the_documented_aliases_are_still_accepted_in_a_body(trigger, fake_dagster) -> None:
    body = {
        **LIVE,
        "start": "2026-03-03",
        "limitFlows": 5,
        "flow.limitMessages": 4,
        "enrichMessageNames": False,
        "audienceSchema": "required",
        "audience.pageSize": 50,
        "audienceMaxPages": 2,
        "timeframeKey": "last_7_days",
        "idempotencyKey": "k-aliases",
        "idempotency": "k-aliases",
    }
    response = trigger.post(UPDATE_PATH, json=body, headers=AUTH)
    assert response.status_code == 202, response.text
    assert fake_dagster.launches[0]["run_config"]["ops"]["flows_csv"]["config"] == {
        "limit_flows": 5,
        "limit_messages": 4,
        "enrich_message_names": False,
        "audience_page_size": 50,
        "audience_max_pages": 2,
        "timeframe_key": "last_7_days",
    }


# --- the configured secret, encoded ------------------------------------------------------------------


def encoded(text: str, times: int = 1, *, lower: bool = False) -> str:
    """Every byte of ``text`` percent-encoded, ``times`` over (``%25`` for each further round)."""
    form = "".join(f"%{byte:02x}" if lower else f"%{byte:02X}" for byte in text.encode())
    for _ in range(times - 1):
        form = form.replace("%", "%25")
    return form


def test_the_configured_secret_is_blanked_however_often_it_is_encoded(trigger, caplog) -> None:
    caplog.set_level(logging.INFO, logger="klaviyo_dagster.trigger")
    forms = [encoded(SECRET), encoded(SECRET, lower=True), encoded(SECRET, 2), encoded(SECRET, 3)]
    for form in forms:
        trigger.get(f"{UPDATE_PATH}?tokn={form}&accountId={ACCOUNT_ID}")
        trigger.get(f"{UPDATE_PATH}?accountId={ACCOUNT_ID}&note=before-{form}-after")
        trigger.get(f"{UPDATE_PATH}?{form}=1&end={DAY}")  # as a name
    trigger.get(f"{UPDATE_PATH}/{encoded(SECRET, 2)}")  # in the path (decoded once by the server)
    lines = [r.getMessage() for r in caplog.records if r.name == "klaviyo_dagster.trigger"]
    assert len([line for line in lines if "[redacted]" in line]) >= 3 * len(forms) + 1, lines
    for text in (SECRET, *forms, encoded(SECRET)[:30]):
        assert text not in caplog.text
    assert f"accountId={ACCOUNT_ID}" in caplog.text  # the other parameters stay readable


def test_a_secret_with_url_characters_is_blanked_in_every_encoding() -> None:
    secret = "Zm9v+YmFy/c2VjcmV0=s3cr3t"
    for query in (
        "tokn=Zm9v%2BYmFy%2Fc2VjcmV0%3Ds3cr3t",
        "tokn=Zm9v%2bYmFy/c2VjcmV0=s3cr3t",
        "t=Zm9v%252BYmFy%252Fc2VjcmV0%253Ds3cr3t",
        "a=1;b=Zm9v%2BYmFy%2Fc2VjcmV0%3Ds3cr3t&c=2",
        "Zm9v%2BYmFy%2Fc2VjcmV0%3Ds3cr3t",
    ):
        target = redacted_target({"path": UPDATE_PATH, "query_string": query.encode()}, [secret])
        assert "c2VjcmV0" not in target and "s3cr3t" not in target, target
        assert "[redacted]" in target
    assert redacted_target({"path": UPDATE_PATH, "query_string": b"a=1;c=2"}, [secret]).endswith("?a=1;c=2")


# --- a corrupt SQLite file, and methods the router would have answered -------------------------------


def test_a_corrupt_sqlite_file_answers_503_with_a_reason(trigger, fake_dagster, tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "ingest.sqlite3").write_bytes(b"this is not a database" * 100)
    response = trigger.post(UPDATE_PATH, json=LIVE, headers=AUTH)
    body = assert_json_error(response, 503, "Database unavailable")
    assert "file is not a database" in body["details"]
    assert response.headers["retry-after"]
    assert not fake_dagster.launches


@pytest.mark.parametrize("method", ["TRACE", "CONNECT", "PUT", "PROPFIND"])
@pytest.mark.parametrize(("path", "allowed"), [(UPDATE_PATH, ["GET", "POST"]), (STATUS_PATH, ["GET"])])
def test_every_other_method_gets_our_405_with_the_right_allow(
    trigger, fake_dagster, method, path, allowed
) -> None:
    params = {"token": SECRET, "accountId": ACCOUNT_ID, "end": DAY, "runId": "abcdef12"}
    response = trigger.request(method, path, params=params, headers=AUTH)
    body = assert_json_error(response, 405, "Method Not Allowed")
    assert body["allowed"] == allowed
    assert response.headers["allow"] == ", ".join(allowed)
    assert not fake_dagster.launches and not fake_dagster.partitions
