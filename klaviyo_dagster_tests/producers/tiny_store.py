"""A tiny hand-made Klaviyo store, served by the simulator, whose CSVs are worked out by hand.

Partition date 2026-03-09, window of 3 days (2026-03-07..09) in America/New_York, across the DST
change of 2026-03-08. Every awkward case the contract names is here once:

Flows (email messages only, live and unarchived flows only):
- FLW001 'Welcome, New "Friends"' (live): MSG01A with activity on 03-06 (outside), 03-07, 03-08;
  MSG01B with no activity at all (zero-filled); MSG01C an SMS (never in flows.csv).
- FLW002 'Café ☕ Flow' (live): MSG02A named with a newline, activity on 03-07 only, and Klaviyo
  drops its trailing empty days (statistic arrays shorter than date_times).
- FLW003 draft and FLW004 live-but-archived: excluded, although FLW004 has activity.

Campaigns (email, sent in the window in the account's timezone):
- CAMP01 in the window, name with a comma and quotes, two audiences, two tags: kept.
- CAMP02 sent 2026-02-20 (outside the 3-day window, inside the 30-day metrics window): excluded.
- CAMP03 an SMS campaign in the window: excluded by the channel filter.
- CAMP04 a draft: excluded.
- CAMP05 sent 2026-03-07 04:30 UTC, which is 03-06 23:30 in New York: excluded.
- CAMP06 sent, no send_time, scheduled_at in the window: kept, through the scheduled_at fallback,
  and with no activity (all metrics 0).

Profiles: P0 subscribed with predictive analytics and custom "First Active"/"last_open"
properties; P1 suppressed (dropped); P2 NEVER_SUBSCRIBED (kept); P3 phone-only (dropped);
P4 unsubscribed (dropped); P5 with a newline in the first name and no predictive analytics.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from klaviyo_dagster.sim.data import Account, Action, Activity, Campaign, Counts, Flow, Message

ANCHOR = date(2026, 3, 10)
PARTITION_DATE = date(2026, 3, 9)
DAYS = 3
TIMEZONE = "America/New_York"
CREATED = datetime(2025, 1, 1, tzinfo=UTC)


def _counts(**values: int) -> Counts:
    return Counts(**values)


# (message id, local day) -> (local hour, counts)
FLOW_ACTIVITY: dict[tuple[str, date], tuple[int, Counts]] = {
    ("MSG01A", date(2026, 3, 6)): (23, _counts(recipients=7, delivered=7, opens_unique=7, opens=7)),
    ("MSG01A", date(2026, 3, 7)): (
        10,
        _counts(
            recipients=100,
            delivered=98,
            bounced=2,
            opens=60,
            opens_unique=49,
            clicks=9,
            clicks_unique=7,
            conversions=2,
            conversion_uniques=2,
            conversion_value_cents=12345,
            unsubscribes=1,
            unsubscribe_uniques=1,
        ),
    ),
    ("MSG01A", date(2026, 3, 8)): (
        9,
        _counts(recipients=50, delivered=50, opens=12, opens_unique=10, spam_complaints=1),
    ),
    ("MSG01C", date(2026, 3, 8)): (9, _counts(recipients=30, delivered=30, clicks=3, clicks_unique=3)),
    ("MSG02A", date(2026, 3, 7)): (
        18,
        _counts(
            recipients=8,
            delivered=8,
            opens=4,
            opens_unique=3,
            clicks=1,
            clicks_unique=1,
            conversions=1,
            conversion_uniques=1,
            conversion_value_cents=1999,
        ),
    ),
    ("MSG04A", date(2026, 3, 8)): (12, _counts(recipients=5, delivered=5)),
}

# campaign id -> [(local time, counts)]
CAMPAIGN_ACTIVITY: dict[str, list[tuple[datetime, Counts]]] = {
    "CAMP01": [
        (datetime(2026, 3, 8, 11, 30), _counts(recipients=1000, delivered=990, bounced=10)),
        (
            datetime(2026, 3, 8, 12, 0),
            _counts(
                opens=500,
                opens_unique=400,
                clicks=120,
                clicks_unique=100,
                conversions=12,
                conversion_uniques=10,
                conversion_value_cents=99900,
                unsubscribes=3,
                unsubscribe_uniques=3,
                spam_complaints=1,
            ),
        ),
    ],
    "CAMP02": [(datetime(2026, 2, 20, 9, 0), _counts(recipients=10, delivered=10, opens_unique=5, opens=5))],
}


class TinyStore(Account):
    """The store above, as a simulator account (``SimConfig(account_factory=TinyStore, ...)``)."""

    def __init__(self, seed: int, index: int, profiles: int, flows: int, anchor: date, timezone: str):
        super().__init__(seed, index, len(PROFILES), 0, ANCHOR, TIMEZONE)
        self.flows = _flows()
        self.flows_by_id = {f.id: f for f in self.flows}
        self.actions_by_id = {a.id: a for f in self.flows for a in f.actions}
        self.messages_by_id = {m.id: m for f in self.flows for m in f.messages}

    def _build_campaigns(self) -> list[Campaign]:
        newsletter, vip = self.lists[0].id, self.segments[2].id  # "Newsletter", "Repeat Buyers, 2+"
        promo, ete = self.tags[1].id, self.tags[4].id  # "Promo", "Été"

        def campaign(id_: str, name: str, *, send: str | None, scheduled: str | None, **kw: Any) -> Campaign:
            send_time = datetime.fromisoformat(send) if send else None
            scheduled_at = datetime.fromisoformat(scheduled) if scheduled else None
            return Campaign(
                id=id_,
                name=name,
                channel=kw.get("channel", "email"),
                status=kw.get("status", "Sent"),
                archived=False,
                created=CREATED,
                updated=(send_time or scheduled_at or CREATED) + timedelta(hours=1),
                scheduled_at=scheduled_at,
                send_time=send_time,
                included=kw.get("included", [newsletter]),
                excluded=[],
                tag_ids=kw.get("tags", []),
                message_id=f"{id_}-MSG",
                message_label=f"{name} message",
                subject=kw.get("subject", f"About {name}"),
                volume=0,
            )

        return [
            campaign(
                "CAMP01",
                'Spring Sale, "VIP" Edition',
                send="2026-03-08T15:30:00+00:00",
                scheduled="2026-03-08T10:00:00+00:00",
                included=[newsletter, vip],
                tags=[promo, ete],
                subject='Save 20%, today only - "really"',
            ),
            campaign("CAMP02", "February news", send="2026-02-20T14:00:00+00:00", scheduled=None),
            campaign("CAMP03", "SMS flash", send="2026-03-08T16:00:00+00:00", scheduled=None, channel="sms"),
            campaign("CAMP04", "Draft idea", send=None, scheduled=None, status="Draft"),
            campaign("CAMP05", "Late-night UTC", send="2026-03-07T04:30:00+00:00", scheduled=None),
            campaign("CAMP06", "Scheduled only", send=None, scheduled="2026-03-09T23:00:00+00:00"),
        ]

    def flow_activity(self, message: Message, day: date) -> Activity | None:
        found = FLOW_ACTIVITY.get((message.id, day))
        if found is None or self.flows_by_id[message.flow_id].status != "live":
            return None
        hour, counts = found
        return Activity(datetime(day.year, day.month, day.day, hour), counts)

    def campaign_activity(self, campaign: Campaign) -> list[Activity]:
        return [Activity(at, counts) for at, counts in CAMPAIGN_ACTIVITY.get(campaign.id, [])]

    def omits_trailing_buckets(self, groupings: dict[str, Any]) -> bool:
        return groupings.get("flow_message_id") == "MSG02A"

    def profile_created(self, index: int) -> datetime:
        """Fixed, increasing creation times (the simulator filters and slices the scan by them)."""
        return PROFILE_CREATED[index]

    def profile(self, index: int) -> dict[str, Any]:
        attributes = super().profile(index)  # a complete, spec-shaped profile to start from
        _deep_update(attributes, PROFILES[index])
        return attributes


def _flows() -> list[Flow]:
    def flow(id_: str, name: str, status: str, archived: bool, messages: list[tuple[str, str, str]]) -> Flow:
        made = Flow(id_, name, status, archived, "Metric", CREATED, CREATED)
        for number, (message_id, channel, message_name) in enumerate(messages):
            action = Action(f"{id_}-A{number}", id_, f"send-{channel}", CREATED, CREATED, status)
            action.message = Message(
                message_id,
                action.id,
                id_,
                channel,
                message_name,
                f"Subject {message_id}",
                CREATED,
                CREATED,
                0,
            )
            made.actions.append(action)
        return made

    return [
        flow(
            "FLW001",
            'Welcome, New "Friends"',
            "live",
            False,
            [
                ("MSG01A", "email", "Bienvenue à bord"),
                ("MSG01B", "email", "Second email, no activity"),
                ("MSG01C", "sms", "SMS nudge"),
            ],
        ),
        flow("FLW002", "Café ☕ Flow", "live", False, [("MSG02A", "email", "Line one\nline two")]),
        flow("FLW003", "Draft flow", "draft", False, [("MSG03A", "email", "Draft message")]),
        flow("FLW004", "Archived flow", "live", True, [("MSG04A", "email", "Archived message")]),
    ]


def _deep_update(target: dict[str, Any], changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict) and key != "properties":
            _deep_update(target[key], value)
        else:
            target[key] = value


def _marketing(consent: str, can_receive: bool, suppression: list[dict[str, str]] | None = None) -> dict:
    return {
        "email": {
            "marketing": {
                "can_receive_email_marketing": can_receive,
                "consent": consent,
                "consent_timestamp": "2025-02-01T10:00:00+00:00" if consent != "NEVER_SUBSCRIBED" else None,
                "method": "FORM" if consent == "SUBSCRIBED" else None,
                "suppression": suppression or [],
                "list_suppressions": [],
            }
        }
    }


PROFILE_CREATED = [
    datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
    datetime(2025, 3, 1, tzinfo=UTC),
    datetime(2025, 5, 5, 5, 5, 5, tzinfo=UTC),
    datetime(2025, 6, 1, tzinfo=UTC),
    datetime(2025, 6, 15, tzinfo=UTC),
    datetime(2025, 7, 7, 7, 7, 7, tzinfo=UTC),
]

NO_PREDICTIONS = dict.fromkeys(
    (
        "historic_clv",
        "predicted_clv",
        "total_clv",
        "historic_number_of_orders",
        "predicted_number_of_orders",
        "average_days_between_orders",
        "average_order_value",
        "churn_probability",
        "expected_date_of_next_order",
    )
)

PROFILES: list[dict[str, Any]] = [
    {  # P0: subscribed, predictive analytics, custom activity properties
        "email": "ana@example.com",
        "first_name": "Ana",
        "last_name": "O'Brien, Jr.",
        "created": "2025-01-02T03:04:05+00:00",
        "updated": "2026-03-01T00:00:00+00:00",
        "last_event_date": "2026-03-05T08:00:00+00:00",
        "properties": {"First Active": "2025-01-03T00:00:00+00:00", "last_open": "2026-03-04T00:00:00+00:00"},
        "subscriptions": _marketing("SUBSCRIBED", True),
        "predictive_analytics": {
            "historic_clv": 120.5,
            "predicted_clv": 80,
            "total_clv": 200.5,
            "historic_number_of_orders": 3,
            "predicted_number_of_orders": 1.25,
            "average_days_between_orders": 45.5,
            "average_order_value": 40.166666666666664,
            "churn_probability": 0.1,
            "expected_date_of_next_order": "2026-04-01T00:00:00+00:00",
        },
    },
    {  # P1: suppressed (hard bounce)
        "email": "bounced@example.com",
        "subscriptions": _marketing(
            "SUBSCRIBED", False, [{"reason": "HARD_BOUNCE", "timestamp": "2025-06-01T00:00:00+00:00"}]
        ),
    },
    {  # P2: never subscribed, but Klaviyo can still email them: kept
        "email": "never@example.com",
        "first_name": "Zoë",
        "last_name": "Müller",
        "created": "2025-05-05T05:05:05+00:00",
        "updated": "2022-06-07T09:44:19+00:00",
        "last_event_date": None,
        "properties": {},
        "subscriptions": _marketing("NEVER_SUBSCRIBED", True),
        "predictive_analytics": NO_PREDICTIONS,
    },
    {  # P3: phone only
        "email": None,
        "phone_number": "+15550000003",
        "subscriptions": _marketing("NEVER_SUBSCRIBED", False),
    },
    {  # P4: unsubscribed
        "email": "gone@example.com",
        "subscriptions": _marketing("UNSUBSCRIBED", False),
    },
    {  # P5: a newline in the name, nothing predicted
        "email": "anne.marie@example.com",
        "first_name": "Anne\nMarie",
        "last_name": 'Quote "Q"',
        "created": "2025-07-07T07:07:07+00:00",
        "updated": "2024-12-31T23:53:59+00:00",
        "last_event_date": "2026-03-08T18:00:00+00:00",
        "properties": {"Last Click": "2026-03-08T18:00:00+00:00"},
        "subscriptions": _marketing("SUBSCRIBED", True),
        "predictive_analytics": NO_PREDICTIONS,
    },
]
