"""Regression tests: odd data that real Klaviyo accounts send, each case with its exact outcome.

The tiny store is served by the simulator over real HTTP; ``RewritingTransport`` then changes one
response the way a real account's differed (modelled on public bug reports against other Klaviyo
connectors): half an emoji in a name, a statistic that is not a number, profiles returned without
their ``subscriptions`` object, campaigns that are scheduled but not sent. Every case ends as a
valid file or as the file's named failure with Klaviyo's details, never a raw exception.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from klaviyo_dagster.klaviyo.client import KlaviyoClient
from klaviyo_dagster.producers.options import SyncOptions
from klaviyo_dagster.producers.sync import (
    CAMPAIGNS,
    FLOWS,
    STALE_AFTER,
    SUBSCRIBERS,
    CsvFile,
    SyncFailed,
    SyncSession,
    work_folder,
)
from klaviyo_dagster.sim import DEFAULT_API_KEY, SimulatorServer
from klaviyo_dagster_tests.klaviyo.conftest import FAST_RETRY
from klaviyo_dagster_tests.producers import test_flows
from klaviyo_dagster_tests.producers.tiny_store import DAYS, PARTITION_DATE

Rewrite = Callable[[dict[str, Any]], None]  # changes a decoded JSON body in place


class RewritingTransport(httpx.HTTPTransport):
    """Passes every call to the simulator, then rewrites the JSON body of responses to ``path``."""

    def __init__(self, path_prefix: str, rewrite: Rewrite) -> None:
        super().__init__()
        self.path_prefix = path_prefix
        self.rewrite = rewrite
        self.rewritten = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if not request.url.path.startswith(self.path_prefix) or response.status_code != 200:
            return response
        body = json.loads(response.read())
        self.rewrite(body)
        self.rewritten += 1
        # Escaped as Klaviyo sends it: a lone surrogate travels as the JSON escape "\ud83d".
        content = json.dumps(body, ensure_ascii=True).encode()
        headers = [(k, v) for k, v in response.headers.items() if k.lower() not in ("content-length",)]
        return httpx.Response(response.status_code, headers=headers, content=content)


@pytest.fixture
def build(tiny_sim: SimulatorServer) -> Iterator[Callable[..., tuple[str, Any]]]:
    """``build(file, path_prefix, rewrite, **options)`` → (the file's text, its summary)."""
    clients: list[KlaviyoClient] = []

    def make(file: CsvFile, path_prefix: str, rewrite: Rewrite, **options: Any) -> tuple[str, Any]:
        transport = RewritingTransport(path_prefix, rewrite)
        client = KlaviyoClient(
            DEFAULT_API_KEY, base_url=tiny_sim.base_url, retry=FAST_RETRY, transport=transport
        )
        clients.append(client)
        session = SyncSession(client, SyncOptions(days=DAYS, **options), PARTITION_DATE)
        out = io.StringIO(newline="")
        summary = session.write(file, out)
        assert transport.rewritten, f"nothing answered under {path_prefix}"
        return out.getvalue(), summary

    yield make
    for client in clients:
        client.close()


def records(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


# --- text that is not valid UTF-8 on its own ----------------------------------------------------------


def _half_an_emoji_in_flow_names(body: dict[str, Any]) -> None:
    flows = body["data"] if isinstance(body["data"], list) else [body["data"]]
    for flow in flows:
        flow["attributes"]["name"] = "Birthday \ud83d"  # the high half of 🎂, without its low half


def test_half_an_emoji_in_a_flow_name_becomes_a_replacement_character(build) -> None:
    text, summary = build(FLOWS, "/api/flows", _half_an_emoji_in_flow_names)

    names = {record["Flow Name"] for record in records(text)}
    assert names == {"Birthday \ufffd"}
    assert text.encode("utf-8").decode("utf-8") == text  # writable and readable as UTF-8
    assert summary.rows == 3 * DAYS  # MSG01A and MSG01B of FLW001, MSG02A of FLW002, each day
    assert all("\ud83d" not in line for line in summary.preview)


def _half_an_emoji_in_profile_names(body: dict[str, Any]) -> None:
    for profile in body["data"]:
        profile["attributes"]["first_name"] = "\ude00Zoë"  # a low half first, as a cut string would
        profile["attributes"]["last_name"] = "Null\x00byte"


def test_half_an_emoji_in_a_profile_name_is_written_not_raised(build) -> None:
    text, summary = build(SUBSCRIBERS, "/api/profiles", _half_an_emoji_in_profile_names)

    assert [r["First Name"] for r in records(text)] == ["\ufffdZoë"] * 3
    assert [r["Last Name"] for r in records(text)] == ["Nullbyte"] * 3
    assert summary.rows == 3


# --- statistics that are not numbers -------------------------------------------------------------------


def _flow_statistic(value: Any) -> Rewrite:
    def rewrite(body: dict[str, Any]) -> None:
        body["data"]["attributes"]["results"][0]["statistics"]["delivered"][0] = value

    return rewrite


def _campaign_statistic(value: Any) -> Rewrite:
    def rewrite(body: dict[str, Any]) -> None:
        body["data"]["attributes"]["results"][0]["statistics"]["conversion_value"] = value

    return rewrite


NOT_NUMBERS = {"NaN": "'NaN'", "12abc": "'12abc'", float("inf"): "inf", True: "True"}


@pytest.mark.parametrize("value", list(NOT_NUMBERS), ids=[str(v) for v in NOT_NUMBERS])
def test_a_flow_statistic_that_is_not_a_number_fails_flows_csv_by_name(build, value) -> None:
    with pytest.raises(SyncFailed) as failure:
        build(FLOWS, "/api/flow-series-reports", _flow_statistic(value))

    assert failure.value.name == "FlowSyncFailed"
    message = str(failure.value)
    assert "'delivered'" in message
    assert NOT_NUMBERS[value] in message
    assert "flow_message_id=" in message  # which row it was
    assert failure.value.details()["endpoint"] == "POST /api/flow-series-reports"


@pytest.mark.parametrize("value", list(NOT_NUMBERS), ids=[str(v) for v in NOT_NUMBERS])
def test_a_campaign_statistic_that_is_not_a_number_fails_campaigns_csv_by_name(build, value) -> None:
    with pytest.raises(SyncFailed) as failure:
        build(CAMPAIGNS, "/api/campaign-values-reports", _campaign_statistic(value))

    assert failure.value.name == "CampaignSyncFailed"
    assert "'conversion_value'" in str(failure.value)
    assert NOT_NUMBERS[value] in str(failure.value)


def test_a_null_statistic_is_zero_not_a_failure(build) -> None:
    text, _ = build(FLOWS, "/api/flow-series-reports", _flow_statistic(None))

    assert records(text)[0]["Delivered"] == "0"


# --- profiles without their subscriptions --------------------------------------------------------------


def _without_subscriptions(body: dict[str, Any]) -> None:
    for profile in body["data"]:
        profile["attributes"].pop("subscriptions", None)


def test_profiles_returned_without_subscriptions_are_kept_with_an_empty_consent(build, tmp_path) -> None:
    text, summary = build(SUBSCRIBERS, "/api/profiles", _without_subscriptions)

    found = records(text)
    # Every profile with an email (P3 is phone-only): we cannot tell, so we do not hide them.
    assert [r["Email"] for r in found] == [
        "ana@example.com",
        "bounced@example.com",
        "never@example.com",
        "gone@example.com",
        "anne.marie@example.com",
    ]
    assert {r["Email Marketing Consent"] for r in found} == {""}
    assert {r["Email Suppressions"] for r in found} == {"[]"}
    assert summary.reconciliation == {
        "profiles_seen": 6,
        "profiles_written": 5,
        "profiles_dropped": {"no_email": 1},
        "profiles_kept_subscriptions_missing": 5,
        "profiles_repeated": 0,
    }
    path = tmp_path / "subscribers.csv"
    path.write_bytes(text.encode())
    verdict = SUBSCRIBERS.reconcile(path, summary.reconciliation)
    assert verdict.passed
    assert verdict.notes == (
        "5 profile(s) came without their subscriptions object: kept, with an empty consent, as "
        "Klaviyo did not say whether they can receive email",
    )  # logged as a warning by the asset: not silent


# --- campaigns scheduled in the window but not sent ---------------------------------------------------


def _status_of(campaign_id: str, status: str) -> Rewrite:
    def rewrite(body: dict[str, Any]) -> None:
        for campaign in body["data"]:
            if campaign["id"] == campaign_id:
                campaign["attributes"]["status"] = status
                campaign["attributes"]["send_time"] = None

    return rewrite


@pytest.mark.parametrize("status", ["Scheduled", "Queued without Recipients", "Preparing to send"])
def test_a_campaign_scheduled_in_the_window_but_not_sent_is_left_out_and_counted(build, status) -> None:
    # CAMP06 is scheduled for 2026-03-09 19:00 in New York, inside the window.
    text, summary = build(CAMPAIGNS, "/api/campaigns", _status_of("CAMP06", status))

    assert [r["Campaign ID"] for r in records(text)] == ["CAMP01"]
    assert summary.reconciliation["campaigns_seen_by_status"][status] == 1
    assert summary.reconciliation["campaigns_left_out"]["not_sent"] == 2  # CAMP06 and the draft CAMP04


def test_a_sent_campaign_is_kept_whatever_its_updated_at(build) -> None:
    def edited_long_ago(body: dict[str, Any]) -> None:
        for campaign in body["data"]:
            campaign["attributes"]["updated_at"] = "2025-01-01T00:00:00+00:00"

    text, summary = build(CAMPAIGNS, "/api/campaigns", edited_long_ago)

    assert [r["Campaign ID"] for r in records(text)] == ["CAMP01", "CAMP06"]
    assert summary.reconciliation["campaigns_written"] == 2


# --- found by a fresh reviewer trying to break it ------------------------------------------------------


def _series(change: Callable[[dict[str, Any]], None]) -> Rewrite:
    def rewrite(body: dict[str, Any]) -> None:
        change(body["data"]["attributes"])

    return rewrite


def test_series_buckets_sent_in_utc_land_on_the_accounts_local_days(build) -> None:
    """The spec's example sends date_times in UTC: each is a local midnight of the account's zone."""

    def in_utc(attributes: dict[str, Any]) -> None:
        attributes["date_times"] = [
            datetime.fromisoformat(moment).astimezone(UTC).isoformat() for moment in attributes["date_times"]
        ]

    text, _ = build(FLOWS, "/api/flow-series-reports", _series(in_utc))

    assert text == test_flows.EXPECTED


def test_series_buckets_in_utc_east_of_utc_keep_their_local_days(simulator_factory, monkeypatch) -> None:
    """Kolkata's local midnight is 18:30 UTC the day before: the date part of the UTC text is wrong."""
    monkeypatch.setenv("KLAVIYO_ENABLE", "true")
    sim = simulator_factory(profiles=0, seed=3, flows=6, timezone="Asia/Kolkata", time_scale=0.0001)

    def flows_csv(transport: httpx.BaseTransport | None) -> str:
        with KlaviyoClient(
            DEFAULT_API_KEY, base_url=sim.base_url, transport=transport, time_scale=0.0001
        ) as c:
            out = io.StringIO(newline="")
            SyncSession(c, SyncOptions(days=5), sim.account.local_today() - timedelta(days=1)).write(
                FLOWS, out
            )
            return out.getvalue()

    def in_utc(body: dict[str, Any]) -> None:
        attributes = body["data"]["attributes"]
        attributes["date_times"] = [
            datetime.fromisoformat(m).astimezone(UTC).isoformat() for m in attributes["date_times"]
        ]

    as_sent = flows_csv(None)
    assert as_sent.count("\n") > 5  # activity to compare
    assert flows_csv(RewritingTransport("/api/flow-series-reports", in_utc)) == as_sent


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.update(date_times=[]), "with 3 values for 0 date_times"),
        (
            lambda a: a["results"][0]["statistics"]["delivered"].extend([5, 5, 5]),
            "values for 3 date_times",
        ),
        (
            lambda a: a.update(date_times=[a["date_times"][0]] * len(a["date_times"])),
            "two daily buckets on one local date",
        ),
        (lambda a: a["results"].append(a["results"][0]), "two rows for flow FLW001 message MSG01A"),
        (lambda a: a["results"][0]["groupings"].pop("flow_message_id"), "without its 'flow_message_id'"),
    ],
    ids=["no date_times", "longer array", "one day twice", "duplicate row", "no message id"],
)
def test_a_series_that_does_not_say_which_day_or_row_fails_flows_csv(build, change, message) -> None:
    with pytest.raises(SyncFailed) as failure:
        build(FLOWS, "/api/flow-series-reports", _series(change))

    assert failure.value.name == "FlowSyncFailed"
    assert message in str(failure.value)


def test_an_upper_case_email_channel_is_still_email(build) -> None:
    def upper(attributes: dict[str, Any]) -> None:
        for result in attributes["results"]:
            result["groupings"]["send_channel"] = "EMAIL"

    text, _ = build(FLOWS, "/api/flow-series-reports", _series(upper))

    assert text == test_flows.EXPECTED


def test_a_campaign_message_without_a_definition_still_carries_the_campaigns_metrics(build) -> None:
    def no_definition(body: dict[str, Any]) -> None:
        for resource in body.get("included", []):
            if resource["type"] == "campaign-message":
                resource["attributes"]["definition"] = None

    text, summary = build(CAMPAIGNS, "/api/campaigns", no_definition)

    camp01 = records(text)[0]
    assert (camp01["Campaign ID"], camp01["Successful Deliveries"], camp01["Subject"]) == (
        "CAMP01",
        "990",
        "",
    )
    assert summary.reconciliation["report_rows_left_out"] == {}


def test_duplicate_campaign_report_rows_fail_campaigns_csv(build) -> None:
    def duplicate(body: dict[str, Any]) -> None:
        results = body["data"]["attributes"]["results"]
        results.append({**results[0], "statistics": {**results[0]["statistics"], "delivered": 1}})

    with pytest.raises(SyncFailed, match="two rows for campaign CAMP01") as failure:
        build(CAMPAIGNS, "/api/campaign-values-reports", duplicate)
    assert failure.value.name == "CampaignSyncFailed"


def test_profiles_without_created_are_scanned_whole_not_lost(build) -> None:
    """The spec lets ``created`` be null; such a profile matches no created-time slice."""

    def no_created(body: dict[str, Any]) -> None:
        for profile in body["data"]:
            if profile["attributes"].get("email") == "ana@example.com":
                profile["attributes"]["created"] = None

    text, summary = build(SUBSCRIBERS, "/api/profiles", no_created, audience_schema="minimal")

    assert [(r["Email"], r["Created At"]) for r in records(text)] == [
        ("ana@example.com", ""),
        ("never@example.com", "2025-05-05T05:05:05+00:00"),
        ("anne.marie@example.com", "2025-07-07T07:07:07+00:00"),
    ]
    assert summary.reconciliation["profiles_seen"] == 6


class RepeatEveryPage(RewritingTransport):
    """Each profiles page also carries the previous page's last profile: the cursor moved back."""

    def __init__(self) -> None:
        super().__init__("/api/profiles", self._repeat)
        self.last: dict[str, Any] | None = None

    def _repeat(self, body: dict[str, Any]) -> None:
        page = body["data"]
        if self.last is not None and body["data"]:
            page.insert(0, self.last)
        if len(page) > 1 or (page and self.last is None):
            self.last = page[-1]


@pytest.mark.parametrize("schema", ["required", "minimal"])  # one scan, and parallel created slices
def test_a_profile_handed_out_twice_is_written_once_and_counted(tiny_sim, schema) -> None:
    transport = RepeatEveryPage()
    with KlaviyoClient(
        DEFAULT_API_KEY, base_url=tiny_sim.base_url, retry=FAST_RETRY, transport=transport
    ) as c:
        out = io.StringIO(newline="")
        options = SyncOptions(days=DAYS, audience_schema=schema, audience_page_size=2)
        summary = SyncSession(c, options, PARTITION_DATE).write(SUBSCRIBERS, out)

    ids = [r["Klaviyo ID"] for r in records(out.getvalue())]
    assert len(ids) == len(set(ids)) == 3  # P0, P2, P5 once each
    assert summary.reconciliation["profiles_repeated"] > 0
    assert summary.reconciliation["profiles_seen"] == 6 + summary.reconciliation["profiles_repeated"]


def test_files_a_killed_run_left_behind_are_removed_by_a_later_build(tiny_sim, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    folder = work_folder()
    left_behind, fresh = folder / "tmpdead-subscribers.csv", folder / "tmplive-flows.csv"
    for path in (left_behind, fresh):
        path.write_text("Email\nsomeone@example.com\n")
    day_old = time.time() - STALE_AFTER.total_seconds() - 60
    os.utime(left_behind, (day_old, day_old))

    with KlaviyoClient(DEFAULT_API_KEY, base_url=tiny_sim.base_url, retry=FAST_RETRY) as client:
        path, _ = SyncSession(client, SyncOptions(days=DAYS), PARTITION_DATE).write_to_temp(FLOWS)

    assert path.parent == folder
    assert not left_behind.exists() and fresh.exists()  # a running build's file is left alone
