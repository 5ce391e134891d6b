"""subscribers.csv against the tiny store, through the simulator over real HTTP.

The golden files below are written out by hand from ``tiny_store.PROFILES``:
- P1 (suppressed), P3 (no email) and P4 (unsubscribed) are dropped; P0, P2 (NEVER_SUBSCRIBED) and P5
  are kept, in the API's order (by profile id, i.e. P0, P2, P5).
- Klaviyo IDs are the simulator's ids for indexes 0, 2 and 5 of the account with seed 7
  (``01BH6J`` + the index in base 32, zero-padded).
- P0's "First Active" and "last_open" properties fill First Active and Last Open (two key styles);
  P5's "Last Click" fills Last Click; P2 has no properties, so those are empty.
- Numbers are JavaScript's: ``80`` not ``80.0``; P2/P5 predict nothing, so the value columns are empty.
- Quoting: P0's last name (a comma), P5's first name (a newline) and last name (inner quotes, doubled).
- ``extended`` also shows what tiny_store leaves to the synthetic generator (``updated`` of P2/P5,
  ``locale``, ``organization``, ``location``, the sms subscription, and ``ranked_channel_affinity``
  merged into predictive_analytics): those values are copied from ``sim.account.profile(i)``, and
  ``test_extended_golden_synthetic_parts_match_the_generator`` checks they still are.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

import httpx
import pytest

from klaviyo_dagster.klaviyo.client import KlaviyoClient
from klaviyo_dagster.klaviyo.errors import KlaviyoError, KlaviyoRequestError, KlaviyoUnavailableError
from klaviyo_dagster.producers.csvfile import CsvSummary
from klaviyo_dagster.producers.options import SyncOptions
from klaviyo_dagster.producers.subscribers import (
    SUBSCRIBER_HEADERS,
    can_receive_email_marketing,
    drop_reason,
    latest_suppression_timestamp,
    required_row,
    suppression_reasons,
    write_subscribers_csv,
)
from klaviyo_dagster.sim import DEFAULT_API_KEY, FaultSpec, SimConfig, SimulatorServer
from klaviyo_dagster_tests.klaviyo.conftest import FAST_RETRY
from klaviyo_dagster_tests.producers.tiny_store import TinyStore

REQUIRED_HEADER = (
    "Email,Klaviyo ID,First Name,Last Name,Email Marketing Consent,Email Suppressions,"
    "Email Suppressions Timestamp,First Active,Last Active,Profile Created On,Last Open,Last Click,"
    "Total Customer Lifetime Value,Predicted Customer Lifetime Value,Predicted Number Of Orders,"
    "Average Order Value,Average Days Between Orders,Historic Customer Lifetime Value,"
    "Historic Number Of Orders,Expected Date Of Next Order"
)
EXTENDED_HEADER = (
    "Email,Email Marketing Consent,Created At,Klaviyo ID,First Name,Last Name,Updated At,Last Event Date,"
    "External ID,Phone Number,Locale,Organization,Title,Image,Location,Email Subscription Status,"
    "Email Subscription Method,Email Subscription Timestamp,SMS Subscription Status,SMS Subscription Method,"
    "SMS Subscription Timestamp,Properties JSON,Predictive Analytics JSON"
)
MINIMAL_HEADER = "Email,Email Marketing Consent,Created At,Klaviyo ID,First Name,Last Name"

REQUIRED_P0 = (
    # Email, Klaviyo ID, First Name, Last Name, Consent, Suppressions (none: [], which the dashboard
    # reads as "can receive"), Suppressions Timestamp
    'ana@example.com,01BH6J00000000000000000000,Ana,"O\'Brien, Jr.",SUBSCRIBED,[],,'
    # First Active (property "First Active"), Last Active, Profile Created On
    "2025-01-03T00:00:00+00:00,2026-03-05T08:00:00+00:00,2025-01-02T03:04:05+00:00,"
    # Last Open (property "last_open"), Last Click (none)
    "2026-03-04T00:00:00+00:00,,"
    # total_clv, predicted_clv, predicted_number_of_orders, average_order_value,
    # average_days_between_orders, historic_clv, historic_number_of_orders, expected_date_of_next_order
    "200.5,80,1.25,40.166666666666664,45.5,120.5,3,2026-04-01T00:00:00+00:00"
)
REQUIRED_P2 = "never@example.com,01BH6J00000000000000000002,Zoë,Müller,NEVER_SUBSCRIBED,[],,,,2025-05-05T05:05:05+00:00,,,,,,,,,,"
REQUIRED_P5 = (
    'anne.marie@example.com,01BH6J00000000000000000005,"Anne\nMarie","Quote ""Q""",SUBSCRIBED,[],,'
    # First Active (none), Last Active, Created, Last Open (none), Last Click (property "Last Click")
    ",2026-03-08T18:00:00+00:00,2025-07-07T07:07:07+00:00,,2026-03-08T18:00:00+00:00,"
    ",,,,,,,"  # nothing predicted
)
REQUIRED_CSV = f"{REQUIRED_HEADER}\n{REQUIRED_P0}\n{REQUIRED_P2}\n{REQUIRED_P5}\n"

PREDICTED_NOTHING = (
    '"{""historic_clv"":null,""predicted_clv"":null,""total_clv"":null,""historic_number_of_orders"":null,'
    '""predicted_number_of_orders"":null,""average_days_between_orders"":null,""average_order_value"":null,'
    '""churn_probability"":null,""expected_date_of_next_order"":null,'
    '""ranked_channel_affinity"":[""email"",""sms"",""push""]}"'
)
EXTENDED_P0 = (
    'ana@example.com,SUBSCRIBED,2025-01-02T03:04:05+00:00,01BH6J00000000000000000000,Ana,"O\'Brien, Jr.",'
    # Updated At, Last Event Date, External ID, Phone, Locale, Organization, Title, Image
    '2026-03-01T00:00:00+00:00,2026-03-05T08:00:00+00:00,,,,"Acme, Inc.",,,'
    # Location (synthetic)
    '"{""address1"":""198 Main St"",""address2"":null,""city"":""Montréal"",""country"":""United States"",'
    '""latitude"":13.4156,""longitude"":103.0645,""region"":""SP"",""zip"":""36432"",'
    '""timezone"":""America/New_York"",""ip"":""10.141.126.19""}",'
    # email consent, method, timestamp; sms consent, method, timestamp
    "SUBSCRIBED,FORM,2025-02-01T10:00:00+00:00,NEVER_SUBSCRIBED,,,"
    # Properties JSON
    '"{""First Active"":""2025-01-03T00:00:00+00:00"",""last_open"":""2026-03-04T00:00:00+00:00""}",'
    # Predictive Analytics JSON (tiny_store's values, plus the generator's ranked_channel_affinity)
    '"{""historic_clv"":120.5,""predicted_clv"":80,""total_clv"":200.5,""historic_number_of_orders"":3,'
    '""predicted_number_of_orders"":1.25,""average_days_between_orders"":45.5,'
    '""average_order_value"":40.166666666666664,""churn_probability"":0.1,'
    '""expected_date_of_next_order"":""2026-04-01T00:00:00+00:00"",'
    '""ranked_channel_affinity"":[""email"",""sms"",""push""]}"'
)
EXTENDED_P2 = (
    "never@example.com,NEVER_SUBSCRIBED,2025-05-05T05:05:05+00:00,01BH6J00000000000000000002,Zoë,Müller,"
    # Updated At (synthetic), no Last Event Date, External ID, Phone; Locale, Organization; Title, Image
    '2022-06-07T09:44:19+00:00,,,,en-US,"Acme, Inc.",,,'
    '"{""address1"":""48 Main St"",""address2"":null,""city"":""São Paulo"",""country"":""Canada"",'
    '""latitude"":-17.7126,""longitude"":-96.5708,""region"":""SP"",""zip"":""49976"",'
    '""timezone"":""America/New_York"",""ip"":""10.65.58.189""}",'
    # never subscribed: no method, no timestamp; Properties JSON of {} is empty
    "NEVER_SUBSCRIBED,,,NEVER_SUBSCRIBED,,,,"
    f"{PREDICTED_NOTHING}"
)
EXTENDED_P5 = (
    'anne.marie@example.com,SUBSCRIBED,2025-07-07T07:07:07+00:00,01BH6J00000000000000000005,"Anne\nMarie",'
    '"Quote ""Q""",2024-12-31T23:53:59+00:00,2026-03-08T18:00:00+00:00,,,fr-FR,Ñandú S.A.,,,'
    '"{""address1"":""772 Main St"",""address2"":null,""city"":""São Paulo"",""country"":""Switzerland"",'
    '""latitude"":24.3313,""longitude"":-119.9618,""region"":""MA"",""zip"":""20309"",'
    '""timezone"":""America/New_York"",""ip"":""10.72.40.179""}",'
    "SUBSCRIBED,FORM,2025-02-01T10:00:00+00:00,NEVER_SUBSCRIBED,,,"
    '"{""Last Click"":""2026-03-08T18:00:00+00:00""}",'
    f"{PREDICTED_NOTHING}"
)
EXTENDED_CSV = f"{EXTENDED_HEADER}\n{EXTENDED_P0}\n{EXTENDED_P2}\n{EXTENDED_P5}\n"

MINIMAL_CSV = (
    f"{MINIMAL_HEADER}\n"
    'ana@example.com,SUBSCRIBED,2025-01-02T03:04:05+00:00,01BH6J00000000000000000000,Ana,"O\'Brien, Jr."\n'
    "never@example.com,NEVER_SUBSCRIBED,2025-05-05T05:05:05+00:00,01BH6J00000000000000000002,Zoë,Müller\n"
    'anne.marie@example.com,SUBSCRIBED,2025-07-07T07:07:07+00:00,01BH6J00000000000000000005,"Anne\nMarie",'
    '"Quote ""Q"""\n'
)


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture
def sim(klaviyo_env: None) -> Iterator[SimulatorServer]:
    with SimulatorServer(SimConfig(account_factory=TinyStore, seed=7)) as server:
        yield server


def make_client(sim: SimulatorServer, transport: httpx.BaseTransport | None = None) -> KlaviyoClient:
    return KlaviyoClient(DEFAULT_API_KEY, base_url=sim.base_url, retry=FAST_RETRY, transport=transport)


@pytest.fixture
def client(sim: SimulatorServer) -> Iterator[KlaviyoClient]:
    with make_client(sim) as made:
        yield made


def build(client: KlaviyoClient, **options: object) -> tuple[str, CsvSummary]:
    out = io.StringIO(newline="")
    summary = write_subscribers_csv(client, SyncOptions(**options), out)
    return out.getvalue(), summary


def profile_calls(sim: SimulatorServer) -> list[dict[str, str]]:
    return [r.query for r in sim.requests if r.operation_id == "get_profiles"]


# --- golden files -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "expected"),
    [("required", REQUIRED_CSV), ("extended", EXTENDED_CSV), ("minimal", MINIMAL_CSV)],
    ids=["required", "extended", "minimal"],
)
def test_golden_file(client: KlaviyoClient, sim: SimulatorServer, schema: str, expected: str) -> None:
    text, summary = build(client, audience_schema=schema)

    assert text.encode() == expected.encode()
    assert text.endswith("\n")
    assert summary.rows == 3
    assert {r.status for r in sim.requests} == {200}


def test_headers_are_the_contracts(client: KlaviyoClient) -> None:
    assert ",".join(SUBSCRIBER_HEADERS["required"]) == REQUIRED_HEADER
    assert ",".join(SUBSCRIBER_HEADERS["extended"]) == EXTENDED_HEADER
    assert ",".join(SUBSCRIBER_HEADERS["minimal"]) == MINIMAL_HEADER
    assert [len(SUBSCRIBER_HEADERS[s]) for s in ("required", "extended", "minimal")] == [20, 23, 6]


def test_extended_golden_synthetic_parts_match_the_generator(sim: SimulatorServer) -> None:
    """The extended golden copies values tiny_store leaves to the generator; they must still hold."""
    account = sim.account
    profile = {i: account.profile(i) for i in (0, 2, 5)}
    assert [account.profile_id(i) for i in (0, 2, 5)] == [
        "01BH6J00000000000000000000",
        "01BH6J00000000000000000002",
        "01BH6J00000000000000000005",
    ]
    assert profile[0]["location"]["address1"] == "198 Main St"
    assert profile[2]["updated"] == "2022-06-07T09:44:19+00:00"
    assert profile[5]["organization"] == "Ñandú S.A."
    assert profile[2]["predictive_analytics"]["ranked_channel_affinity"] == ["email", "sms", "push"]


def test_summary_counts_data_rows_and_previews_header_plus_two_records(client: KlaviyoClient) -> None:
    _, summary = build(client, audience_schema="required")

    assert (summary.rows, summary.preview) == (3, (REQUIRED_HEADER, REQUIRED_P0, REQUIRED_P2))
    assert summary.reconciliation == {
        "profiles_seen": 6,
        "profiles_written": 3,
        "profiles_dropped": {"no_email": 1, "suppressed": 1, "cannot_receive": 1},
        "profiles_kept_subscriptions_missing": 0,
        "profiles_repeated": 0,
    }


def test_rows_count_records_not_physical_lines(client: KlaviyoClient) -> None:
    """P5's quoted newline stays inside its record: 3 rows although the body has 4 line ends."""
    text, summary = build(client, audience_schema="minimal")

    assert summary.rows == 3
    assert text.count("\n") == 5  # header, 3 records, P5's inner newline
    assert len(list(csv.reader(io.StringIO(text, newline="")))) == 1 + summary.rows


# --- paging and the query -----------------------------------------------------------------------------


def test_max_pages_zero_is_header_only_without_any_call(client: KlaviyoClient, sim: SimulatorServer) -> None:
    text, summary = build(client, audience_max_pages=0)

    assert text == REQUIRED_HEADER + "\n"
    assert (summary.rows, summary.preview) == (0, (REQUIRED_HEADER,))
    assert summary.reconciliation["profiles_seen"] == 0
    assert sim.requests == []


def test_fast_mode_is_header_only_without_any_call(client: KlaviyoClient, sim: SimulatorServer) -> None:
    text, summary = build(client, fast=True, audience_schema="minimal")

    assert text == MINIMAL_HEADER + "\n"
    assert summary.rows == 0
    assert sim.requests == []


def test_max_pages_one_stops_after_one_page(client: KlaviyoClient, sim: SimulatorServer) -> None:
    text, summary = build(client, audience_schema="minimal", audience_page_size=2, audience_max_pages=1)

    # Page 1 holds P0 and P1; P1 is suppressed, so one row.
    assert text == (
        f"{MINIMAL_HEADER}\n"
        'ana@example.com,SUBSCRIBED,2025-01-02T03:04:05+00:00,01BH6J00000000000000000000,Ana,"O\'Brien, Jr."\n'
    )
    assert summary.rows == 1
    calls = profile_calls(sim)
    assert len(calls) == 1
    assert "page[cursor]" not in calls[0]


def test_page_size_is_respected_and_every_page_is_followed(
    client: KlaviyoClient, sim: SimulatorServer
) -> None:
    text, _ = build(client, audience_schema="required", audience_page_size=2)  # one sequential scan

    assert text == REQUIRED_CSV
    calls = profile_calls(sim)
    assert len(calls) == 3  # 6 profiles, 2 per page
    assert {c["page[size]"] for c in calls} == {"2"}
    assert ["page[cursor]" in c for c in calls] == [False, True, True]


def test_default_page_size_is_the_maximum(client: KlaviyoClient, sim: SimulatorServer) -> None:
    build(client)

    assert profile_calls(sim)[0]["page[size]"] == "100"


@pytest.mark.parametrize(
    ("schema", "additional", "group"),
    [
        ("required", "subscriptions,predictive_analytics", "get_profiles[predictive_analytics]"),
        ("extended", "subscriptions,predictive_analytics", "get_profiles[predictive_analytics]"),
        ("minimal", "subscriptions", "get_profiles"),
    ],
)
def test_predictive_analytics_only_where_columns_need_it(
    client: KlaviyoClient, sim: SimulatorServer, schema: str, additional: str, group: str
) -> None:
    build(client, audience_schema=schema)

    assert {r.query["additional-fields[profile]"] for r in sim.requests} == {additional}
    assert {r.group for r in sim.requests} == {group}  # minimal stays in the faster 75/s, 750/min group


def test_sparse_fieldsets_name_only_what_the_schema_reads(
    client: KlaviyoClient, sim: SimulatorServer
) -> None:
    fields = []
    for schema in ("required", "extended", "minimal"):
        sim.reset()
        build(client, audience_schema=schema)
        (asked,) = {q["fields[profile]"] for q in profile_calls(sim)}  # every call of a scan asks the same
        fields.append(set(asked.split(",")))

    required, extended, minimal = fields
    assert minimal == {"email", "created", "first_name", "last_name", "subscriptions.email.marketing"}
    assert "location" not in required and "updated" not in required
    assert "predictive_analytics.total_clv" in required and "predictive_analytics" not in required
    assert {"location", "updated", "subscriptions.sms.marketing", "predictive_analytics"} <= extended
    assert all(r.status == 200 for r in sim.requests)  # the simulator checks the spec's enum


# --- errors -------------------------------------------------------------------------------------------


class FaultAfterFirstPage(httpx.HTTPTransport):
    """Arms a simulator fault on get_profiles once the first profile page has come back."""

    def __init__(self, sim: SimulatorServer, fault: FaultSpec) -> None:
        super().__init__()
        self._sim, self._fault, self._armed = sim, fault, False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.url.path == "/api/profiles" and not self._armed:
            self._sim.set_fault("get_profiles", self._fault)
            self._armed = True
        return response


@pytest.mark.parametrize(
    ("fault", "error"),
    [(FaultSpec(status=400), KlaviyoRequestError), (FaultSpec(error_rate=1.0), KlaviyoUnavailableError)],
    ids=["400", "5xx-after-retries"],
)
def test_an_error_mid_scan_raises_instead_of_returning_a_partial_file(
    sim: SimulatorServer, fault: FaultSpec, error: type[KlaviyoError]
) -> None:
    out = io.StringIO(newline="")
    with (
        make_client(sim, FaultAfterFirstPage(sim, fault)) as client,
        pytest.raises(error) as failure,
    ):
        write_subscribers_csv(client, SyncOptions(audience_schema="required", audience_page_size=2), out)

    assert failure.value.endpoint == "GET /api/profiles"
    statuses = [r.status for r in sim.requests]
    assert statuses[0] == 200 and all(s != 200 for s in statuses[1:])
    assert out.getvalue().count("\n") == 1  # header + P0 written, then the failure; no final newline


def test_a_minimal_scan_reads_parallel_created_slices_and_loses_no_one(
    simulator_factory, klaviyo_env
) -> None:
    """Without predictive analytics the scan runs in created-time slices; the file is the same."""
    sim = simulator_factory(profiles=1_000, seed=4)
    with make_client(sim) as client:
        sliced, summary = build(client, audience_schema="minimal")
        sequential, _ = build(client, audience_schema="minimal", audience_max_pages=1_000)

    assert sliced == sequential
    assert summary.rows == len(list(csv.reader(io.StringIO(sequential, newline="")))) - 1
    filters = [q.get("filter", "") for q in profile_calls(sim)]
    assert sum(f.startswith("and(greater-than(created,") for f in filters) >= 8
    assert filters.count("") >= 12  # the two probes and the sequential scan


class BreakOneSlice(httpx.HTTPTransport):
    """Answers 400 to the first slice request; everything else goes to the simulator."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        is_slice = request.url.params.get("filter", "").startswith("and(greater-than(created,")
        if is_slice and not getattr(self, "_broke", False):
            self._broke = True
            error = {"status": 400, "code": "invalid", "title": "Invalid input.", "detail": "broken slice"}
            return httpx.Response(400, json={"errors": [error]})
        return super().handle_request(request)


def test_a_failing_slice_fails_the_whole_scan(simulator_factory, klaviyo_env) -> None:
    sim = simulator_factory(profiles=500, seed=4)
    out = io.StringIO(newline="")
    with make_client(sim, BreakOneSlice()) as client, pytest.raises(KlaviyoError, match="broken slice"):
        write_subscribers_csv(client, SyncOptions(audience_schema="minimal", audience_page_size=10), out)
    assert out.getvalue().count("\n") == 0  # the header only: no slice was joined


# --- the drop rule and mappings on the synthetic generator and edge cases ---------------------------


def test_the_drop_rule_on_a_synthetic_account(simulator_factory, klaviyo_env: None) -> None:
    """Every row of a 300-profile synthetic account is a receivable profile, and none is missing."""
    sim = simulator_factory(profiles=300, seed=3)
    account = sim.account
    # Kept: an email, no suppression, and Klaviyo did not say "cannot receive" (a profile returned
    # without subscriptions is kept).
    expected = []
    for i in range(300):
        attributes = account.profile(i)
        marketing = (attributes.get("subscriptions") or {}).get("email", {}).get("marketing", {})
        if (
            attributes.get("email")
            and not marketing.get("suppression")
            and marketing.get("can_receive_email_marketing") is not False
        ):
            expected.append(account.profile_id(i))
    with make_client(sim) as client:
        text, summary = build(client, audience_schema="minimal")
    ids = [record[3] for record in list(csv.reader(io.StringIO(text, newline="")))[1:]]

    assert ids == expected
    assert summary.rows == len(expected)
    assert 0 < len(expected) < 300


def profile(**attributes: object) -> dict:
    marketing = {"can_receive_email_marketing": True, "consent": "SUBSCRIBED", "suppression": []}
    marketing.update(attributes.pop("marketing", {}))  # type: ignore[arg-type]
    return {
        "type": "profile",
        "id": "P",
        "attributes": {"email": "x@example.com", "subscriptions": {"email": {"marketing": marketing}}}
        | attributes,
    }


@pytest.mark.parametrize(
    ("resource", "reason"),
    [
        (profile(), None),
        (profile(marketing={"consent": "NEVER_SUBSCRIBED"}), None),
        (profile(email=None), "no_email"),
        (profile(email=""), "no_email"),
        (profile(marketing={"can_receive_email_marketing": False}), "cannot_receive"),
        # Klaviyo did not say: kept (counted as doubtful), never hidden.
        (profile(marketing={"can_receive_email_marketing": None}), None),
        (
            profile(
                marketing={"suppression": [{"reason": "HARD_BOUNCE", "timestamp": "2025-01-01T00:00:00Z"}]}
            ),
            "suppressed",
        ),
        # Profiles returned without a `subscriptions` object (seen on real accounts): kept.
        ({"type": "profile", "id": "P", "attributes": {"email": "x@example.com"}}, None),
        (
            {"type": "profile", "id": "P", "attributes": {"email": "x@example.com", "subscriptions": None}},
            None,
        ),
    ],
)
def test_drop_rule(resource: dict, reason: str | None) -> None:
    assert drop_reason(resource) == reason
    assert can_receive_email_marketing(resource) is (reason is None)


def test_suppressions_are_upper_case_reasons_and_the_latest_instant() -> None:
    suppressions = [
        {"reason": "hard_bounce", "timestamp": "2025-06-01T12:00:00+00:00"},
        {"reason": "SPAM_COMPLAINT", "timestamp": "2025-06-01T10:00:00-05:00"},  # 15:00 UTC: later
        {"reason": "user_suppressed", "timestamp": None},
    ]

    assert suppression_reasons(suppressions) == '["HARD_BOUNCE","SPAM_COMPLAINT","USER_SUPPRESSED"]'
    assert latest_suppression_timestamp(suppressions) == "2025-06-01T10:00:00-05:00"
    assert suppression_reasons([]) == "[]"  # the dashboard reads an empty field as "cannot receive"
    assert suppression_reasons(None) == "[]"
    assert latest_suppression_timestamp([]) is None


def test_required_row_reads_snake_case_activity_keys_and_empty_values() -> None:
    resource = profile(
        properties={"first_active": "A", "last_open": "", "Last Open": None, "last_click": "C"},
        predictive_analytics={"total_clv": 0, "historic_number_of_orders": 12.0},
        marketing={"suppression": [{"reason": "invalid_email", "timestamp": "2025-01-01T00:00:00Z"}]},
    )
    row = dict(zip(SUBSCRIBER_HEADERS["required"], required_row(resource), strict=True))

    assert row["First Active"] == "A"
    assert row["Last Open"] is None
    assert row["Last Click"] == "C"
    assert row["Email Suppressions"] == '["INVALID_EMAIL"]'
    assert row["Email Suppressions Timestamp"] == "2025-01-01T00:00:00Z"
    assert row["Total Customer Lifetime Value"] == 0
    assert row["Historic Number Of Orders"] == 12.0  # written "12" by the CSV writer
    assert json.loads(row["Email Suppressions"]) == ["INVALID_EMAIL"]
