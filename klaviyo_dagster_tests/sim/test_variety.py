"""The synthetic accounts are as varied as the spec and real accounts, and still spec-valid.

Over many seeds, every account (40 flows, a few hundred profiles) holds each kind at least once:
every flow action type of the spec's FlowDefinition, emails inside A/B tests and behind splits,
non-email sends, messages gone from definitions that still report, every campaign status, profiles
without optional objects, odd text (half an emoji, right-to-left, control characters, formulas) and
timezones with odd offsets and DST. Over HTTP: lone surrogates travel as JSON escapes, removed
messages report but 404, A/B variations report under their own ids, and DST days have 23/25 hours.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from openapi_schema_validator import OAS30Validator

from klaviyo_dagster.klaviyo.spec import load_operations
from klaviyo_dagster.sim import SimConfig, SimulatorServer
from klaviyo_dagster.sim import resources as res
from klaviyo_dagster.sim.data import (
    BOOLEAN_SPLITS,
    CAMPAIGN_STATUSES,
    FLOW_ACTION_TYPES,
    ODD_KINDS,
    ODD_TEXTS,
    PROFILE_QUIRKS,
    REPORT_CHANNELS,
    SENT_CAMPAIGN_STATUSES,
    TIMEZONES,
    Account,
    Action,
    Flow,
    Message,
    timezone_for,
)
from klaviyo_dagster_tests.sim.conftest import client_for, report_body
from klaviyo_dagster_tests.sim.test_conformance import SPEC_PATH

SEEDS = range(30)
ANCHOR = date(2026, 7, 1)


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return json.loads(SPEC_PATH.read_text())


@pytest.fixture(scope="module")
def accounts() -> list[Account]:
    """One default-sized account per seed (zone chosen by the seed); profiles stay lazy."""
    return [Account(seed, 0, 300, 40, ANCHOR, None) for seed in SEEDS]


def _validator(spec: dict[str, Any], name: str) -> OAS30Validator:
    """A strict validator for one component schema (``oneOf`` means exactly one, as written)."""
    return OAS30Validator({"$ref": f"#/components/schemas/{name}", "components": spec["components"]})


def kept(account: Account) -> list[Flow]:
    """The flows the producers read: live and not archived."""
    return [f for f in account.flows if f.status == "live" and not f.archived]


def recent_days(account: Account) -> list[date]:
    """The days of a 7-day window ending yesterday (the nightly partition's window)."""
    today = account.local_today()
    return [today - timedelta(days=n) for n in range(7, 0, -1)]


def reports_recently(account: Account, message: Message) -> bool:
    return any(account.flow_activity(message, day) for day in recent_days(account))


def _spine_ids(flow: Flow) -> set[str]:
    """Actions reachable from the entry through next, next_if_true and else branches only."""
    by_id = {a.id: a for a in flow.actions}
    seen: set[str] = set()
    todo = [flow.actions[0].id] if flow.actions else []
    while todo:
        action = by_id[todo.pop()]
        if action.id in seen:
            continue
        seen.add(action.id)
        todo += [i for i in (action.next_id, action.next_if_true) if i]
        todo += [b.next_id for b in action.branches if b.is_else and b.next_id]
    return seen


def _every_seed(check: Callable[[Account], bool], accounts: list[Account]) -> None:
    missing = [a.seed for a in accounts if not check(a)]
    assert not missing, f"seeds without it: {missing}"


# --- flows ------------------------------------------------------------------------------------------


def test_every_flow_action_type_of_the_spec_is_in_every_account(
    spec: dict[str, Any], accounts: list[Account]
) -> None:
    """The spec's FlowDefinition.actions oneOf, by `type`, is exactly FLOW_ACTION_TYPES; each is live."""
    schemas = spec["components"]["schemas"]
    members = [
        r["$ref"].split("/")[-1] for r in schemas["FlowDefinition"]["properties"]["actions"]["items"]["oneOf"]
    ]
    assert sorted(schemas[m]["properties"]["type"]["enum"][0] for m in members) == sorted(FLOW_ACTION_TYPES)
    for account in accounts:
        types = {a.type for f in kept(account) for a in f.actions}
        assert types >= set(FLOW_ACTION_TYPES), (account.seed, set(FLOW_ACTION_TYPES) - types)


def test_definitions_validate_against_the_spec(spec: dict[str, Any], accounts: list[Account]) -> None:
    """Each action type (one of each per seed) against its own schema; seed 7's definitions whole."""
    schemas = spec["components"]["schemas"]
    members = [
        r["$ref"].split("/")[-1] for r in schemas["FlowDefinition"]["properties"]["actions"]["items"]["oneOf"]
    ]
    by_type = {schemas[m]["properties"]["type"]["enum"][0]: _validator(spec, m) for m in members}
    for account in accounts:
        sampled: dict[str, dict[str, Any]] = {}
        for flow in account.flows:
            definition = res.flow_resource("http://x", flow, account, set(), True)["attributes"]["definition"]
            for action in definition["actions"]:
                sampled.setdefault(action["type"], action)
        for kind, action in sampled.items():
            by_type[kind].validate(action)
    whole = _validator(spec, "FlowDefinition")
    account = Account(7, 0, 0, 40, ANCHOR, "America/New_York")
    for flow in account.flows:
        whole.validate(res.flow_resource("http://x", flow, account, set(), True)["attributes"]["definition"])


def test_actions_link_into_one_flat_list(accounts: list[Account]) -> None:
    """Every link names an action of the same flow; boolean splits use next_if_true/false only."""
    for account in accounts:
        for flow in account.flows:
            ids = {a.id for a in flow.actions}
            for action in flow.actions:
                assert set(action.next_ids) <= ids
                if action.type in BOOLEAN_SPLITS:
                    assert action.next_id is None
                if action.type == "multi-branch-split":
                    assert sum(b.is_else for b in action.branches) == 1


def _ab_email_tests(account: Account) -> list[Action]:
    return [
        a
        for f in kept(account)
        for a in f.actions
        if a.type == "ab-test" and a.message and a.message.channel == "email"
    ]


def test_ab_tests_send_email_variations_with_their_own_ids_and_activity(accounts: list[Account]) -> None:
    """An ab-test's main action and variations are emails, each its own message, each reporting."""

    def check(account: Account) -> bool:
        for action in _ab_email_tests(account):
            variations = action.variations
            assert variations and all(
                v.channel == "email" and v.variation_of == action.message.id for v in variations
            )  # type: ignore[union-attr]
            assert (
                len({m.id for m in action.messages})
                == len({m.name for m in action.messages})
                == 1 + len(variations)
            )
            assert all(account.messages_by_id[m.id] is m for m in action.messages)
            flow = account.flows_by_id[action.flow_id]
            assert all(m in flow.messages and m in flow.email_messages for m in action.messages)
            if all(reports_recently(account, v) for v in variations):
                return True
        return False

    _every_seed(check, accounts)


def test_emails_sit_behind_boolean_splits_and_multi_branch_splits(accounts: list[Account]) -> None:
    """Some emails are reachable only through next_if_false or a conditional branch."""

    def behind(account: Account, kind: tuple[str, ...]) -> bool:
        for flow in kept(account):
            spine = _spine_ids(flow)
            by_id = {a.id: a for a in flow.actions}
            for action in flow.actions:
                if action.type not in kind:
                    continue
                starts = [action.next_if_false] + [b.next_id for b in action.branches if not b.is_else]
                for start in filter(None, starts):
                    target = by_id[start]
                    while target.type == "time-delay" and target.next_id:
                        target = by_id[target.next_id]
                    if target.type == "send-email" and target.id not in spine:
                        return True
        return False

    _every_seed(lambda a: behind(a, BOOLEAN_SPLITS), accounts)
    _every_seed(lambda a: behind(a, ("multi-branch-split",)), accounts)


def test_non_email_sends_report_on_their_own_channel(accounts: list[Account]) -> None:
    """SMS, push and WhatsApp messages report under send_channel sms/push-notification/whatsapp."""
    for channel in ("sms", "push-notification", "whatsapp"):
        _every_seed(
            lambda a, c=channel: any(
                m.channel == c and reports_recently(a, m) for f in kept(a) for m in f.messages
            ),
            accounts,
        )
    for account in accounts:
        for flow in account.flows:
            for message in flow.messages:
                assert message.reported == (message.channel in REPORT_CHANNELS)
                if not message.reported:  # webhooks and internal alerts
                    assert account.flow_activity(message, account.local_today()) is None


def test_removed_messages_report_recently_but_are_in_no_definition(accounts: list[Account]) -> None:
    """Deleted emails and ended variations: activity inside the 7 days before today, no definition."""
    for kind in ("deleted", "variation-ended"):
        _every_seed(
            lambda a, k=kind: any(
                m.removed == k and reports_recently(a, m) for f in kept(a) for m in f.removed_messages
            ),
            accounts,
        )
    for account in accounts:
        in_definitions = {m.id for f in account.flows for m in f.messages}
        for message in account.removed_messages:
            assert message.id not in in_definitions and message.id not in account.messages_by_id
            assert message.channel == "email" and message.active_until is not None
            assert account.flow_activity(message, message.active_until + timedelta(days=1)) is None
            if message.removed == "variation-ended":
                assert account.actions_by_id[message.action_id].type == "ab-test"
            else:
                assert message.action_id not in account.actions_by_id


# --- campaigns -------------------------------------------------------------------------------------


def test_every_campaign_status_of_the_spec(spec: dict[str, Any], accounts: list[Account]) -> None:
    """The spec's status enum, each status in every account; send_time only for sent statuses."""
    enum = spec["components"]["schemas"]["CampaignResponseObjectResource"]["properties"]["attributes"][
        "properties"
    ]["status"]["enum"]
    assert sorted(enum) == sorted(CAMPAIGN_STATUSES)
    for account in accounts:
        assert {c.status for c in account.campaigns} == set(CAMPAIGN_STATUSES)
        for campaign in account.campaigns:
            assert (
                (campaign.send_time is not None)
                == campaign.sent
                == (campaign.status in SENT_CAMPAIGN_STATUSES)
            )
            if not campaign.sent:
                assert account.campaign_activity(campaign) == []


def test_campaign_times_are_realistic(accounts: list[Account]) -> None:
    """Not-sent campaigns scheduled in the recent window; sent ones whose updated_at is older than
    their send day (updated_at does not move on sending); sent ones in the window report."""
    for account in accounts:
        start = account.local_midnight(recent_days(account)[0])
        for status in ("Scheduled", "Queued without Recipients"):
            assert any(
                c.status == status and c.scheduled_at and start <= c.scheduled_at <= account.now
                for c in account.campaigns
            ), (account.seed, status)
        stale = [
            c
            for c in account.campaigns
            if c.sent
            and c.send_time
            and c.updated < account.local_midnight(c.send_time.astimezone(account.tz).date())
        ]
        assert any(start <= c.send_time <= account.now for c in stale if c.send_time), account.seed
        for status in SENT_CAMPAIGN_STATUSES:
            assert any(
                c.status == status
                and c.send_time
                and start <= c.send_time <= account.now
                and account.campaign_activity(c)
                for c in account.campaigns
            ), (account.seed, status)


# --- profiles and text -----------------------------------------------------------------------------


def test_every_profile_quirk_is_in_the_first_fifty_profiles(accounts: list[Account]) -> None:
    """Quirks fall on seed-chosen indexes (never the first 8): every 50-profile account has each."""
    for account in accounts:
        found = {q for i in range(50) for q in account.profile_quirks(i)}
        assert found == set(PROFILE_QUIRKS), account.seed
        assert not any(account.profile_quirks(i) for i in range(8))
        for index in range(50):
            profile, quirks = account.profile(index), account.profile_quirks(index)
            assert ("subscriptions" in profile) == ("subscriptions-missing" not in quirks)
            assert ("predictive_analytics" in profile) == ("predictive-analytics-missing" not in quirks)
            assert ("location" in profile) == ("location-missing" not in quirks)
            if "properties-null" in quirks:
                assert profile["properties"] is None


def _odd_kinds(texts: list[str]) -> set[str]:
    return {kind for kind, samples in ODD_TEXTS.items() for text in texts if any(s in text for s in samples)}


def test_names_hold_every_kind_of_odd_text(accounts: list[Account]) -> None:
    """Half an emoji, right-to-left, control characters, formula-like: in every kind of name."""
    for account in accounts:
        live = kept(account)
        sent = [c for c in account.campaigns if c.sent]
        places = {
            "flow names": [f.name for f in live],
            "message names": [m.name for f in live for m in f.email_messages],
            "subjects": [m.subject for f in live for m in f.email_messages],
            "campaign names": [c.name for c in sent],
            "campaign subjects": [c.subject for c in sent],
            "tag names": [t.name for t in account.tags],
            "list names": [g.name for g in account.lists],
            "profile names": [
                f"{p['first_name']} {p['last_name']}" for p in (account.profile(i) for i in range(50))
            ],
        }
        for place, texts in places.items():
            assert _odd_kinds(texts) == set(ODD_KINDS), (account.seed, place)
    assert "\ud83d" in "".join(ODD_TEXTS["lone-surrogate"])
    assert {"\x00", "\x07", "\t", "\r", "\n", "\u200b"} <= set("".join(ODD_TEXTS["control"]))
    assert {"=SUM(A1)", "+1-555", "@cmd", "-2+3"} <= set(ODD_TEXTS["formula"])


def test_the_seed_chooses_every_timezone() -> None:
    """SimConfig(timezone=None) (or "by-seed"): west/east of UTC, :30 and :45 offsets, DST."""
    assert {timezone_for(seed, 0) for seed in range(len(TIMEZONES))} == set(TIMEZONES)
    assert {"Asia/Kathmandu", "Pacific/Chatham", "America/St_Johns", "Asia/Kolkata"} <= set(TIMEZONES)
    assert SimConfig().timezone_for(0) == "America/New_York"
    for zone in (None, "by-seed"):
        config = SimConfig(seed=9, timezone=zone)
        assert config.timezone_for(0) == timezone_for(9, 0) == Account(9, 0, 0, 0, ANCHOR, zone).timezone


def test_same_seed_same_account_and_profiles_stay_lazy() -> None:
    """Determinism of everything new; building a 2M-profile account materialises no profile."""
    first, second = (Account(5, 0, 2_000_000, 40, ANCHOR, None) for _ in range(2))
    assert [(f.name, [vars(a) for a in f.actions]) for f in first.flows] == [
        (f.name, [vars(a) for a in f.actions]) for f in second.flows
    ]
    assert [vars(c) for c in first.campaigns] == [vars(c) for c in second.campaigns]
    assert first.profile(1_999_999) == second.profile(1_999_999)
    assert not first._columns and not first._queries


# --- over HTTP ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    roomy = {op: {"burst": 10_000, "steady": 10_000} for op in load_operations()}
    with SimulatorServer(
        SimConfig(profiles=300, seed=7, anchor=ANCHOR, rate_limit_overrides=roomy)
    ) as server:
        yield server


def _post_report(
    api: httpx.Client, sim: SimulatorServer, path: str, body: dict[str, Any]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    url: str | None = path
    while url:
        sim.reset()
        response = api.post(url, json=body)
        assert response.status_code == 200, response.text
        rows += response.json()["data"]["attributes"]["results"]
        url = response.json()["links"]["next"]
    return rows


def _window(account: Account) -> tuple[str, str]:
    days = recent_days(account)
    return f"{days[0]}T00:00:00", f"{days[-1]}T23:59:59"


def test_lone_surrogates_travel_as_json_escapes(sim: SimulatorServer) -> None:
    """The bytes are valid UTF-8 and JSON; half an emoji arrives as the escape "\\ud83d"."""
    account = sim.account
    flow = next(f for f in account.flows if any(s in f.name for s in ODD_TEXTS["lone-surrogate"]))
    index = next(i for i in range(300) if "name-lone-surrogate" in account.profile_quirks(i))
    with client_for(sim) as api:
        for url in (
            f"/api/flows/{flow.id}?additional-fields[flow]=definition",
            f"/api/profiles?filter=equals(id,'{account.profile_id(index)}')",
            "/api/flows?page[size]=50",
        ):
            response = api.get(url)
            assert response.status_code == 200
            response.content.decode("utf-8", errors="strict")
            assert b"\\ud83d" in response.content or b"\\udc4d" in response.content
            json.loads(response.content)
        doc = api.get(f"/api/profiles?filter=equals(id,'{account.profile_id(index)}')").json()
        names = doc["data"][0]["attributes"]["first_name"] + doc["data"][0]["attributes"]["last_name"]
        profile = account.profile(index)
        assert names == profile["first_name"] + profile["last_name"]
        assert any(0xD800 <= ord(c) <= 0xDFFF for c in names)


def test_removed_messages_report_under_their_ids_but_404(sim: SimulatorServer) -> None:
    account = sim.account
    removed = [m for f in kept(account) for m in f.removed_messages if reports_recently(account, m)]
    assert {m.removed for m in removed} == {"deleted", "variation-ended"}
    start, end = _window(account)
    body = report_body("flow-series-report", account.placed_order_metric.id, start, end, interval="daily")
    with client_for(sim) as api:
        rows = _post_report(api, sim, "/api/flow-series-reports", body)
        reported = {r["groupings"]["flow_message_id"] for r in rows}
        for message in removed:
            assert message.id in reported
            response = api.get(f"/api/flow-messages/{message.id}")
            assert response.status_code == 404, response.text
            definition = api.get(f"/api/flows/{message.flow_id}?additional-fields[flow]=definition").text
            assert message.id not in definition


def test_variations_report_and_resolve_to_their_ab_test(sim: SimulatorServer) -> None:
    account = sim.account
    action = next(
        a for a in _ab_email_tests(account) if all(reports_recently(account, v) for v in a.variations)
    )
    start, end = _window(account)
    body = report_body(
        "flow-series-report",
        account.placed_order_metric.id,
        start,
        end,
        interval="daily",
        filter=f'equals(flow_id,"{action.flow_id}")',
    )
    with client_for(sim) as api:
        rows = _post_report(api, sim, "/api/flow-series-reports", body)
        reported = {(r["groupings"]["flow_message_id"], r["groupings"]["send_channel"]) for r in rows}
        assert {(m.id, "email") for m in action.messages} <= reported
        listed = api.get(f"/api/flow-actions/{action.id}/flow-messages").json()["data"]
        assert [d["id"] for d in listed] == [m.id for m in action.messages]
        for variation in action.variations:
            doc = api.get(f"/api/flow-messages/{variation.id}?include=flow-action").json()
            assert doc["data"]["attributes"]["definition"]["name"] == variation.name
            assert doc["data"]["relationships"]["flow-action"]["data"]["id"] == action.id
            assert doc["included"][0]["attributes"]["definition"]["type"] == "ab-test"


def test_profiles_without_subscriptions_even_when_asked(sim: SimulatorServer) -> None:
    account = sim.account
    with client_for(sim) as api:
        url: str | None = (
            "/api/profiles?page[size]=100&additional-fields[profile]=subscriptions,predictive_analytics"
        )
        seen = 0
        while url:
            doc = api.get(url).json()
            for item in doc["data"]:
                quirks = account.profile_quirks(account.profile_index(item["id"]) or 0)
                assert ("subscriptions" in item["attributes"]) == ("subscriptions-missing" not in quirks)
                assert ("predictive_analytics" in item["attributes"]) == (
                    "predictive-analytics-missing" not in quirks
                )
                seen += "subscriptions-missing" in quirks
            url = doc["links"]["next"]
        assert seen >= 5


@pytest.mark.parametrize(
    ("zone", "day", "hours"),
    [
        ("America/New_York", date(2026, 3, 8), 23),
        ("America/New_York", date(2026, 11, 1), 25),
        ("Pacific/Chatham", date(2026, 4, 5), 25),
        ("Australia/Adelaide", date(2026, 10, 4), 23),
    ],
)
def test_dst_days_have_23_or_25_hourly_buckets(
    simulator_factory: Any, zone: str, day: date, hours: int
) -> None:
    """Hourly buckets are real hours; daily buckets start at each local midnight; sums still agree."""
    sim = simulator_factory(profiles=0, flows=10, seed=4, timezone=zone, anchor=day + timedelta(days=3))
    metric = sim.account.placed_order_metric.id
    start, end = f"{day}T00:00:00", f"{day}T23:59:59"
    with client_for(sim) as api:
        hourly = api.post(
            "/api/flow-series-reports",
            json=report_body("flow-series-report", metric, start, end, interval="hourly"),
        ).json()["data"]["attributes"]
        moments = [datetime.fromisoformat(t) for t in hourly["date_times"]]
        assert len(moments) == hours
        assert all(
            b.astimezone(UTC) - a.astimezone(UTC) == timedelta(hours=1)
            for a, b in itertools.pairwise(moments)
        )
        sim.reset()
        window = f"{day - timedelta(days=1)}T00:00:00", f"{day + timedelta(days=1)}T23:59:59"
        daily = api.post(
            "/api/flow-series-reports",
            json=report_body("flow-series-report", metric, *window, interval="daily"),
        ).json()["data"]["attributes"]
        starts = [datetime.fromisoformat(t) for t in daily["date_times"]]
        lengths = [
            (b.astimezone(UTC) - a.astimezone(UTC)) / timedelta(hours=1)
            for a, b in itertools.pairwise(starts)
        ]
        assert lengths == [24, hours]
        sim.reset()
        values = api.post(
            "/api/flow-values-reports", json=report_body("flow-values-report", metric, start, end)
        ).json()["data"]["attributes"]["results"]
    totals = {r["groupings"]["flow_message_id"]: r["statistics"]["recipients"] for r in values}
    assert totals
    assert {
        r["groupings"]["flow_message_id"]: sum(r["statistics"]["recipients"]) for r in hourly["results"]
    } == totals
