"""Properties over many generated, spec-valid Klaviyo accounts: what Klaviyo reported is what we wrote.

Hypothesis draws an account (seed, size, timezone east or west of UTC with half-hour and 45-minute
offsets, an anchor that may sit on a DST change) and sync options; the simulator serves it over real
HTTP and the three producers build their files as a run would. Each file is then compared with
ground truth taken from the account model itself, not from the producers' code:
- flows.csv holds one row per day for every email message of the kept flows, wherever it sits in
  the definition (A/B variations, branches), plus every removed email that still reports, and each
  row's Delivered and Revenue are that message's activity on that local day;
- campaigns.csv holds exactly the email campaigns with a sent status whose send time falls in the
  window, in send order, with the metrics window's deliveries and revenue;
- subscribers.csv holds exactly the profiles the contract keeps (those returned without
  ``subscriptions`` included, with an empty consent), in the API's order;
and every file reconciles (``reconcile_*``) and nothing raises. Run more examples with
``KLAVIYO_PROPERTY_EXAMPLES=500 .venv/bin/pytest klaviyo_dagster_tests/producers/test_properties.py``.
"""

from __future__ import annotations

import csv
import os
import re
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from klaviyo_dagster.klaviyo.client import KlaviyoClient
from klaviyo_dagster.producers.csvfile import CsvSummary
from klaviyo_dagster.producers.options import TIMEFRAME_DAYS, SyncOptions
from klaviyo_dagster.producers.sync import CAMPAIGNS, FLOWS, SUBSCRIBERS, CsvFile, SyncSession
from klaviyo_dagster.producers.window import Window
from klaviyo_dagster.sim import DEFAULT_API_KEY, SimConfig, SimulatorServer
from klaviyo_dagster.sim.data import TIMEZONES, Account
from klaviyo_dagster_tests.klaviyo.conftest import FAST_RETRY

EXAMPLES = int(os.environ.get("KLAVIYO_PROPERTY_EXAMPLES", "25"))
SCALE = 0.0001  # rate-limit windows 10,000x shorter: pacing costs nothing, the call pattern is real
SENT = {"Sent", "Variations Sent", "Sending", "Sending Segments"}  # contracts/csv.md, "campaigns.csv"
# Days around DST changes (both hemispheres) and a plain day; anchors are "today" for the account.
DST_ANCHORS = [
    date(2026, 3, 9),
    date(2026, 3, 30),
    date(2026, 4, 6),
    date(2026, 9, 28),
    date(2026, 10, 26),
    date(2026, 11, 2),
    date(2026, 7, 15),
]


@dataclass(frozen=True)
class Case:
    seed: int
    flows: int
    profiles: int
    timezone: str
    anchor: date
    options: SyncOptions

    @property
    def partition_date(self) -> date:
        return self.anchor - timedelta(days=1)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    options = SyncOptions(
        days=draw(st.integers(1, 30)),
        timeframe_key=draw(st.sampled_from(sorted(TIMEFRAME_DAYS))),
        limit_flows=draw(st.sampled_from([1, 3, 100])),
        enrich_message_names=draw(st.booleans()),
        audience_schema=draw(st.sampled_from(["required", "extended", "minimal"])),
        audience_page_size=draw(st.sampled_from([7, 100])),
    )
    return Case(
        seed=draw(st.integers(0, 100_000)),
        flows=draw(st.integers(0, 10)),
        profiles=draw(st.integers(0, 90)),
        timezone=draw(st.sampled_from(TIMEZONES)),
        anchor=draw(st.sampled_from(DST_ANCHORS) | st.dates(date(2025, 6, 1), date(2026, 12, 31))),
        options=options,
    )


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(case=cases())
def test_every_file_is_what_the_generated_account_reported(case: Case) -> None:
    config = SimConfig(
        seed=case.seed,
        flows=case.flows,
        profiles=case.profiles,
        timezone=case.timezone,
        anchor=case.anchor,
        time_scale=SCALE,
    )
    with (
        SimulatorServer(config) as sim,
        KlaviyoClient(
            DEFAULT_API_KEY, base_url=sim.base_url, retry=FAST_RETRY, time_scale=SCALE, enabled=True
        ) as client,
    ):
        session = SyncSession(client, case.options, case.partition_date)
        built = {file.kind: _build(session, file) for file in (FLOWS, CAMPAIGNS, SUBSCRIBERS)}
        account = sim.account
    window = Window.ending_on(case.partition_date, case.options.days, account.timezone)
    assert session.timezone.name == account.timezone

    _assert_flows(account, case.options, window, *built["flows"])
    metrics_window = Window.ending_on(
        case.partition_date, TIMEFRAME_DAYS[case.options.timeframe_key], account.timezone
    )
    _assert_campaigns(account, window, metrics_window, *built["campaigns"])
    _assert_subscribers(account, *built["subscribers"])


def _build(session: SyncSession, file: CsvFile) -> tuple[list[dict[str, str]], CsvSummary]:
    """The file's records and summary; the file must also reconcile with what Klaviyo returned."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / file.filename
        with path.open("w", encoding="utf-8", newline="") as out:
            summary = session.write(file, out)
        verdict = file.reconcile(path, summary.reconciliation)
        assert verdict.passed, (file.filename, verdict.problems)
        with path.open(encoding="utf-8", newline="") as text:  # keep a CR inside a quoted field
            records = list(csv.DictReader(text))
    assert len(records) == summary.rows
    return records, summary


# --- flows.csv ------------------------------------------------------------------------------------------


def _assert_flows(
    account: Account, options: SyncOptions, window: Window, records: list[dict[str, str]], summary: Any
) -> None:
    kept = [f for f in account.flows if f.status == "live" and not f.archived][: options.limit_flows]
    activity = _flow_activity(account, kept, window)
    reported = {key for key, per_day in activity.items() if per_day}
    expected: set[tuple[str, str]] = set(reported)
    if options.enrich_message_names:
        expected |= {(f.id, m.id) for f in kept for m in f.email_messages}
    written = {(r["Flow ID"], r["Flow Message ID"]) for r in records}
    assert written == expected
    assert len(records) == len(expected) * len(window.days)  # every day of every message
    names = {m.id: m.name for f in kept for m in f.email_messages}
    for record in records:
        key = (record["Flow ID"], record["Flow Message ID"])
        delivered, cents = activity.get(key, {}).get(date.fromisoformat(record["Day"]), (0, 0))
        assert float(record["Delivered"]) == delivered, record
        assert round(float(record["Revenue"]) * 100) == cents, record
        if options.enrich_message_names:
            assert record["Flow Message Name"] == _as_written(names.get(key[1]) or key[1])
    removed = {(f.id, m.id) for f in kept for m in f.removed_messages}
    if options.enrich_message_names:
        assert summary.reconciliation["messages_not_in_definition"] == len(written & removed)


def _flow_activity(
    account: Account, flows: list[Any], window: Window
) -> dict[tuple[str, str], dict[date, tuple[int, int]]]:
    """(flow, message) → local day → (delivered, revenue in cents), email messages with activity."""
    found: dict[tuple[str, str], dict[date, tuple[int, int]]] = defaultdict(dict)
    for flow in flows:
        for message in flow.report_messages:
            if message.channel != "email":
                continue
            for day in window.days:
                happened = account.flow_activity(message, day)
                if happened is not None and not happened.counts.is_empty():
                    counts = happened.counts
                    found[(flow.id, message.id)][day] = (counts.delivered, counts.conversion_value_cents)
    return found


# --- campaigns.csv --------------------------------------------------------------------------------------


def _assert_campaigns(
    account: Account, window: Window, metrics_window: Window, records: list[dict[str, str]], summary: Any
) -> None:
    expected = sorted(
        (
            (moment, c.id)
            for c in account.campaigns
            if c.channel == "email"
            and c.status in SENT
            and (moment := c.send_time or c.scheduled_at) is not None
            and window.contains(moment)
        ),
    )
    assert [r["Campaign ID"] for r in records] == [campaign_id for _, campaign_id in expected]
    start = datetime.combine(metrics_window.first_day, time())
    end = datetime.combine(metrics_window.last_day, time(23, 59, 59))
    for record in records:
        campaign = account.campaigns_by_id[record["Campaign ID"]]
        inside = [a.counts for a in account.campaign_activity(campaign) if start <= a.at <= end]
        assert float(record["Successful Deliveries"]) == sum(c.delivered for c in inside), record
        assert round(float(record["Revenue"]) * 100) == sum(c.conversion_value_cents for c in inside)
    seen = summary.reconciliation["campaigns_seen_by_status"]
    assert sum(seen.values()) == sum(1 for c in account.campaigns if c.channel == "email")


# --- subscribers.csv ------------------------------------------------------------------------------------


def _assert_subscribers(account: Account, records: list[dict[str, str]], summary: Any) -> None:
    expected, without_subscriptions = [], 0
    for index in range(account.profile_count):
        attributes = account.profile(index)
        marketing = ((attributes.get("subscriptions") or {}).get("email") or {}).get("marketing") or {}
        if (
            attributes.get("email")
            and not marketing.get("suppression")
            and marketing.get("can_receive_email_marketing") is not False
        ):
            expected.append((account.profile_id(index), marketing.get("consent") or ""))
            without_subscriptions += "can_receive_email_marketing" not in marketing
    assert [(r["Klaviyo ID"], r["Email Marketing Consent"]) for r in records] == expected
    if records and "Email Suppressions" in records[0]:
        assert {r["Email Suppressions"] for r in records} == {"[]"}
    assert summary.reconciliation["profiles_seen"] == account.profile_count
    assert summary.reconciliation["profiles_kept_subscriptions_missing"] == without_subscriptions


_NOT_TEXT = re.compile("[\ud800-\udfff]")


def _as_written(text: str) -> str:
    """Text as the contract says it is written: lone surrogates as U+FFFD, NUL dropped."""
    return _NOT_TEXT.sub("\ufffd", text).replace("\x00", "")
