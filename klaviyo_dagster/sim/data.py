"""A deterministic synthetic Klaviyo account: flows, messages, campaigns, metrics, lists, profiles.

Everything is derived from ``(seed, account_index)`` through string-seeded ``random.Random``
instances (sha512-based, so independent of ``PYTHONHASHSEED``): the same config always yields the
same account, byte for byte. The small collections (flows, campaigns, metrics, ...) are built
eagerly; profiles are computed lazily from their index, so a 5M-profile account costs nothing until
a page is read. Report activity (what a message did on a given day) is also computed on demand.
"""

from __future__ import annotations

import bisect
import json
import random
import zlib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import cached_property, lru_cache
from typing import Any
from zoneinfo import ZoneInfo

_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
# Crockford base32: its alphabet is in ascending ASCII order, so fixed-width encodings sort numerically.
_B32 = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PROFILE_INDEX_WIDTH = 20


def iso(moment: datetime) -> str:
    """Klaviyo's timestamp format: UTC with an explicit ``+00:00`` offset, second precision."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat()


def rng_for(*parts: object) -> random.Random:
    """A private RNG for one named thing; string seeds make it stable across processes."""
    return random.Random(":".join(str(p) for p in parts))  # jitter or simulated data, not security  # nosec B311


def b32(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, rem = divmod(number, 32)
        digits.append(_B32[rem])
    return "".join(reversed(digits))


def _short_id(rng: random.Random, used: set[str], length: int = 6) -> str:
    while True:
        candidate = "".join(rng.choices(_ALNUM, k=length))
        if candidate not in used:
            used.add(candidate)
            return candidate


def _ulid(rng: random.Random, moment: datetime, used: set[str]) -> str:
    while True:
        candidate = b32(int(moment.timestamp() * 1000), 10) + b32(rng.getrandbits(80), 16)
        if candidate not in used:
            used.add(candidate)
            return candidate


# Names deliberately include commas, quotes, newlines and non-ASCII text: CSV writers must cope.
FIRST_NAMES = (
    "Ana",
    "Björn",
    "Chloé",
    "Dmitri",
    "Émilie",
    "Fatima",
    "George",
    "Hana",
    "Ivan",
    "José",
    "Kai",
    "Léa",
    "Mohammed",
    "Nguyễn",
    "Olivia",
    "Priya",
    "Quentin",
    "Renée",
    "Søren",
    "Tomás",
    "李",
    "Zoë",
    'Bob "The Builder"',
    "Anne\nMarie",
    "Mary, Jr.",
)
LAST_NAMES = (
    "Smith",
    "O'Brien",
    "Müller",
    "García",
    "Kowalski",
    "Nakamura",
    "Dubois",
    "Rossi",
    "Johansson",
    "Öztürk",
    "Smith, Jr.",
    "van der Berg",
    'Quote "Q" Person',
    "Łukasiewicz",
    "王",
)
FLOW_NAMES = (
    "Welcome Series",
    "Abandoned Cart",
    "Browse Abandonment",
    "Post-Purchase Thank You",
    "Win-back, 90 days",
    'VIP "Gold" Tier',
    "Café Lovers \u2013 Réassort",
    "Birthday 🎂",
    "Sunset Flow",
    "Replenishment Reminder",
    "Back in Stock",
    "Price Drop",
    "Review Request",
    "Cross-sell",
    "Customer Anniversary",
    "Low Inventory",
    "Checkout Abandonment",
    "Sign-up, SMS",
    "Loyalty Points",
    "Re-engagement",
)
TRIGGER_TYPES = ("Metric", "Added to List", "Date Based", "Price Drop", "Low Inventory", "Unconfigured")
METRIC_NAMES = (
    "Received Email",
    "Opened Email",
    "Clicked Email",
    "Bounced Email",
    "Dropped Email",
    "Marked Email as Spam",
    "Unsubscribed",
    "Subscribed to List",
    "Unsubscribed from List",
    "Received SMS",
    "Clicked SMS",
    "Sent SMS",
    "Failed to Deliver SMS",
    "Subscribed to SMS Marketing",
    "Unsubscribed from SMS Marketing",
    "Active on Site",
    "Viewed Product",
    "Added to Cart",
    "Started Checkout",
    "Ordered Product",
    "Fulfilled Order",
    "Cancelled Order",
    "Refunded Order",
    "Checkout Started",
    "Viewed Collection",
    "Submitted Search",
    "Fulfilled Partial Order",
    "Opened Push",
    "Received Push",
    "Bounced Push",
    "Viewed Page",
    "Form submitted by profile",
    "Updated Email Address",
    "Merged Profile",
    "Clicked Form",
    "Viewed Form",
    "Redeemed Coupon",
    "Left Review",
    "Loyalty Points Earned",
    "Subscription Started",
    "Subscription Cancelled",
)
# Metrics that Klaviyo cannot use as a report's conversion metric (message events, not outcomes).
NON_CONVERSION_METRICS = frozenset(
    {
        "Received Email",
        "Bounced Email",
        "Dropped Email",
        "Received SMS",
        "Sent SMS",
        "Failed to Deliver SMS",
        "Received Push",
        "Bounced Push",
        "Merged Profile",
    }
)
INTEGRATIONS = (
    {"id": "0eMvjm", "key": "klaviyo", "name": "Klaviyo", "category": "Internal"},
    {"id": "0hzKMG", "key": "shopify", "name": "Shopify", "category": "eCommerce"},
    {"id": "7FtS4J", "key": "woocommerce", "name": "WooCommerce", "category": "eCommerce"},
    {"id": "4Ab1xz", "key": "api", "name": "API", "category": "API"},
)
TAG_NAMES = (
    "Newsletter",
    "Promo",
    "Black Friday, 2025",
    'Holiday "Gift" Guide',
    "Été",
    "VIP",
    "Launch",
    "Test",
)
LIST_NAMES = (
    "Newsletter",
    "VIP Customers",
    "Sign-ups, Footer",
    'Insiders "Early Access"',
    "Clientes España",
    "SMS Subscribers",
    "Wholesale",
    "Événements",
)
SEGMENT_NAMES = (
    "Engaged 30 days",
    "Engaged 90 days",
    "Repeat Buyers, 2+",
    "Lapsed Customers",
    "High CLV",
    "Never Opened",
    "Newsletter \u2013 Europe",
)
SUPPRESSION_REASONS = ("HARD_BOUNCE", "USER_SUPPRESSED", "UNSUBSCRIBE", "SPAM_COMPLAINT", "INVALID_EMAIL")

PROFILE_SPAN_DAYS = 4 * 365  # profiles are created over the four years before the anchor
PROFILES_PER_SECOND = 3  # consecutive profiles share a creation second: boundary behaviour is testable
CAMPAIGN_MONTHS = 13
CAMPAIGNS_PER_MONTH = 26
CAMPAIGN_ACTIVITY_DAYS = 10


@dataclass
class Counts:
    """Integer activity counters; report statistics are derived from (sums of) these, so exact."""

    recipients: int = 0
    delivered: int = 0
    bounced: int = 0
    failed: int = 0
    opens: int = 0
    opens_unique: int = 0
    clicks: int = 0
    clicks_unique: int = 0
    conversions: int = 0
    conversion_uniques: int = 0
    conversion_value_cents: int = 0
    unsubscribes: int = 0
    unsubscribe_uniques: int = 0
    spam_complaints: int = 0
    message_segment_count_sum: int = 0
    text_message_credit_usage_amount: int = 0
    text_message_spend_cents: int = 0

    def add(self, other: Counts) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def is_empty(self) -> bool:
        return not any(getattr(self, name) for name in self.__dataclass_fields__)


@dataclass(frozen=True)
class Activity:
    """What one message did at one moment (account-local, naive) for the default conversion metric."""

    at: datetime
    counts: Counts


@dataclass
class Message:
    """A flow message (one per send action)."""

    id: str
    action_id: str
    flow_id: str
    channel: str  # email | sms
    name: str
    subject: str
    created: datetime
    updated: datetime
    volume: int  # typical daily recipients


@dataclass
class Action:
    id: str
    flow_id: str
    type: str  # time-delay | send-email | send-sms
    created: datetime
    updated: datetime
    status: str
    delay_days: int = 0
    message: Message | None = None
    next_id: str | None = None


@dataclass
class Flow:
    id: str
    name: str
    status: str  # live | draft | manual
    archived: bool
    trigger_type: str
    created: datetime
    updated: datetime
    actions: list[Action] = field(default_factory=list)
    tag_ids: list[str] = field(default_factory=list)
    trigger: dict[str, Any] = field(default_factory=dict)

    @property
    def messages(self) -> list[Message]:
        return [a.message for a in self.actions if a.message is not None]


@dataclass
class Campaign:
    id: str
    name: str
    channel: str  # email | sms
    status: str
    archived: bool
    created: datetime
    updated: datetime
    scheduled_at: datetime | None
    send_time: datetime | None
    included: list[str]
    excluded: list[str]
    tag_ids: list[str]
    message_id: str
    message_label: str
    subject: str
    volume: int


@dataclass
class Metric:
    id: str
    name: str
    created: datetime
    updated: datetime
    integration: dict[str, Any]

    @property
    def supports_conversions(self) -> bool:
        return self.name not in NON_CONVERSION_METRICS


@dataclass
class Group:
    """A list or a segment."""

    id: str
    kind: str  # list | segment
    name: str
    created: datetime
    updated: datetime
    profile_count: int


@dataclass
class Tag:
    id: str
    name: str


class Account:
    """One synthetic Klaviyo account. Build is O(flows + campaigns + metrics), never O(profiles)."""

    def __init__(self, seed: int, index: int, profiles: int, flows: int, anchor: date, timezone: str):
        self.seed = seed
        self.index = index
        self.profile_count = profiles
        self.anchor = anchor
        self.timezone = timezone
        self.tz = ZoneInfo(timezone)
        self._used: set[str] = set()
        rng = rng_for(seed, index, "account")
        self.id = _short_id(rng, self._used)
        self.public_api_key = self.id
        self.name = rng.choice(
            ("Acme Outfitters, Inc.", 'The "Good" Store', "Café Crème Ltd", "Nordic Ståhl")
        )
        self._profile_tag = b32(zlib.crc32(f"{seed}:{index}".encode()) % (32**4), 4)
        self.tags = self._build_tags()
        self.lists = self._build_groups("list", LIST_NAMES)
        self.segments = self._build_groups("segment", SEGMENT_NAMES)
        self.metrics = self._build_metrics()
        self.flows = self._build_flows(flows)
        self.campaigns = self._build_campaigns()
        self.flows_by_id = {f.id: f for f in self.flows}
        self.actions_by_id = {a.id: a for f in self.flows for a in f.actions}
        self.messages_by_id = {m.id: m for f in self.flows for m in f.messages}
        self.campaigns_by_id = {c.id: c for c in self.campaigns}
        self.campaigns_by_message_id = {c.message_id: c for c in self.campaigns}
        self.metrics_by_id = {m.id: m for m in self.metrics}
        self.groups_by_id = {g.id: g for g in (*self.lists, *self.segments)}
        self.tags_by_id = {t.id: t for t in self.tags}

    # --- clock --------------------------------------------------------------------------------
    @property
    def now(self) -> datetime:
        """The account's "now": noon UTC on the anchor date (fixed, so data is reproducible)."""
        return datetime.combine(self.anchor, time(12), UTC)

    def local_today(self) -> date:
        return self.now.astimezone(self.tz).date()

    def _moment(self, rng: random.Random, days_ago_min: float, days_ago_max: float) -> datetime:
        seconds = rng.uniform(days_ago_min * 86400, days_ago_max * 86400)
        return (self.now - timedelta(seconds=seconds)).replace(microsecond=0)

    # --- small collections -----------------------------------------------------------------------
    def _build_tags(self) -> list[Tag]:
        rng = rng_for(self.seed, self.index, "tags")
        return [
            Tag(
                f"{rng.getrandbits(32):08x}-{rng.getrandbits(16):04x}-4{rng.getrandbits(12):03x}-"
                f"8{rng.getrandbits(12):03x}-{rng.getrandbits(48):012x}",
                name,
            )
            for name in TAG_NAMES
        ]

    def _build_groups(self, kind: str, names: tuple[str, ...]) -> list[Group]:
        rng = rng_for(self.seed, self.index, kind)
        groups = []
        for name in names:
            created = self._moment(rng, 400, 1500)
            groups.append(
                Group(
                    _short_id(rng, self._used),
                    kind,
                    name,
                    created,
                    created + timedelta(days=rng.randint(0, 300)),
                    rng.randint(0, max(1, self.profile_count)),
                )
            )
        return groups

    def _build_metrics(self) -> list[Metric]:
        rng = rng_for(self.seed, self.index, "metrics")
        klaviyo, shopify, woo, api = INTEGRATIONS
        specs: list[tuple[str, dict[str, Any]]] = [("Placed Order", shopify), ("Placed Order", woo)]
        for name in METRIC_NAMES:
            integration = (
                klaviyo if "Email" in name or "SMS" in name or "List" in name or "Push" in name else shopify
            )
            specs.append((name, integration))
        for name in METRIC_NAMES:
            if len(specs) >= 80:
                break
            specs.append((name, woo if rng.random() < 0.6 else api))
        rng.shuffle(specs)
        metrics = []
        for name, integration in specs:
            created = self._moment(rng, 300, 1500)
            metrics.append(
                Metric(
                    _short_id(rng, self._used),
                    name,
                    created,
                    created + timedelta(days=rng.randint(0, 200)),
                    dict(integration),
                )
            )
        return metrics

    @cached_property
    def placed_order_metric(self) -> Metric:
        """The Shopify "Placed Order" metric: the conversion metric the producers look for."""
        return next(
            m for m in self.metrics if m.name == "Placed Order" and m.integration["name"] == "Shopify"
        )

    def _build_flows(self, count: int) -> list[Flow]:
        rng = rng_for(self.seed, self.index, "flows")
        flows = []
        action_number = rng.randint(10_000_000, 90_000_000)
        for number in range(count):
            base = FLOW_NAMES[number % len(FLOW_NAMES)]
            name = base if number < len(FLOW_NAMES) else f"{base} #{number // len(FLOW_NAMES) + 1}"
            roll = number % 8
            status = "live" if roll < 5 else ("draft" if roll < 7 else "manual")
            archived = number % 11 == 10
            created = self._moment(rng, 200, 900)
            flow = Flow(
                id=_short_id(rng, self._used),
                name=name,
                status=status,
                archived=archived,
                trigger_type=TRIGGER_TYPES[number % len(TRIGGER_TYPES)],
                created=created,
                updated=created + timedelta(days=rng.randint(1, 150)),
                tag_ids=[t.id for t in rng.sample(self.tags, k=rng.randint(0, 2))],
            )
            flow.trigger = self._trigger(flow, rng)
            volume = rng.randint(20, 400)
            n_email = rng.randint(2, 6)
            with_sms = number % 3 == 0
            kinds = ["send-email"] * n_email + (["send-sms"] if with_sms else [])
            rng.shuffle(kinds)
            for step, kind in enumerate(kinds):
                if step:
                    action_number += rng.randint(1, 50)
                    flow.actions.append(
                        Action(
                            str(action_number),
                            flow.id,
                            "time-delay",
                            created,
                            flow.updated,
                            status,
                            delay_days=rng.randint(1, 7),
                        )
                    )
                action_number += rng.randint(1, 50)
                action = Action(str(action_number), flow.id, kind, created, flow.updated, status)
                channel = "email" if kind == "send-email" else "sms"
                label = f"{channel.upper()} {step + 1}"
                action.message = Message(
                    id=_short_id(rng, self._used),
                    action_id=action.id,
                    flow_id=flow.id,
                    channel=channel,
                    name=f"{name} \u2013 {label}" if step % 2 else f"{label}: {name}, part {step + 1}",
                    subject=f'{name}: "step {step + 1}" — ¡hola!',
                    created=created,
                    updated=flow.updated,
                    volume=max(5, volume // (step + 1)),
                )
                flow.actions.append(action)
            for earlier, later in zip(flow.actions, flow.actions[1:], strict=False):
                earlier.next_id = later.id
            flows.append(flow)
        return flows

    def _trigger(self, flow: Flow, rng: random.Random) -> dict[str, Any]:
        if flow.trigger_type == "Added to List":
            return {"type": "list", "id": rng.choice(self.lists).id}
        if flow.trigger_type == "Metric":
            return {"type": "metric", "id": rng.choice(self.metrics).id, "trigger_filter": None}
        return {"type": "segment", "id": rng.choice(self.segments).id}

    def _build_campaigns(self) -> list[Campaign]:
        rng = rng_for(self.seed, self.index, "campaigns")
        campaigns = []
        total = CAMPAIGN_MONTHS * CAMPAIGNS_PER_MONTH
        span_days = CAMPAIGN_MONTHS * 30.4
        audiences = [g.id for g in (*self.lists, *self.segments)]
        for number in range(total):
            days_ago = span_days - (number + rng.random()) * span_days / total
            send = (self.now - timedelta(days=days_ago)).replace(microsecond=0, second=0)
            channel = "sms" if number % 9 == 4 else "email"
            status, send_time, scheduled = "Sent", send, send - timedelta(hours=rng.randint(1, 72))
            if number % 37 == 5:
                status, send_time = "Cancelled", None
            elif number % 23 == 7:
                status, send_time, scheduled = "Draft", None, None
            future = number >= total - 6
            if future:  # the last few are scheduled into the next week
                send = (self.now + timedelta(days=(number - total + 7), hours=rng.randint(1, 20))).replace(
                    microsecond=0, second=0
                )
                status, send_time, scheduled = "Scheduled", None, send
            created = (scheduled or send) - timedelta(days=rng.randint(1, 20), minutes=rng.randint(0, 600))
            if created > self.now:
                created = self.now - timedelta(hours=1)
            included = rng.sample(audiences, k=rng.randint(1, 2))
            excluded = rng.sample([a for a in audiences if a not in included], k=rng.randint(0, 1))
            label = [
                "Spring Sale",
                "New Arrivals, Week",
                'The "Edit"',
                "Newsletter",
                "Flash Sale",
                "Café Culture",
                "Restock",
            ][number % 7]
            moment = scheduled or send
            campaigns.append(
                Campaign(
                    id=_ulid(rng, created, self._used),
                    name=f"{label} {moment.date().isoformat()}",
                    channel=channel,
                    status=status,
                    archived=number % 29 == 3,
                    created=created,
                    updated=min(self.now, (send_time or created) + timedelta(hours=rng.randint(0, 48))),
                    scheduled_at=scheduled,
                    send_time=send_time,
                    included=included,
                    excluded=excluded,
                    tag_ids=[t.id for t in rng.sample(self.tags, k=rng.randint(0, 3))],
                    message_id=_ulid(rng, created, self._used),
                    message_label=f"{label} message",
                    subject=f'{label}: up to 30% off, "today" only — ¡ya!',
                    volume=rng.randint(500, 20_000),
                )
            )
        return campaigns

    # --- profiles (lazy) ---------------------------------------------------------------------------
    @cached_property
    def _profile_base(self) -> datetime:
        return self.now - timedelta(days=PROFILE_SPAN_DAYS)

    @cached_property
    def _profile_step(self) -> int:
        groups = max(1, -(-self.profile_count // PROFILES_PER_SECOND))
        return max(1, (PROFILE_SPAN_DAYS - 1) * 86400 // groups)

    def profile_id(self, index: int) -> str:
        return "01" + self._profile_tag + b32(index, _PROFILE_INDEX_WIDTH)

    def profile_index(self, profile_id: str) -> int | None:
        """The index behind a profile id of this account, or None for anything else."""
        prefix = "01" + self._profile_tag
        if len(profile_id) != len(prefix) + _PROFILE_INDEX_WIDTH or not profile_id.startswith(prefix):
            return None
        value = 0
        for char in profile_id[len(prefix) :]:
            if char not in _B32:
                return None
            value = value * 32 + _B32.index(char)
        return value if value < self.profile_count else None

    def profile_created(self, index: int) -> datetime:
        """Non-decreasing in ``index``; PROFILES_PER_SECOND consecutive profiles share one second."""
        return self._profile_base + timedelta(seconds=(index // PROFILES_PER_SECOND) * self._profile_step)

    def first_profile_created_after(self, moment: datetime, strict: bool) -> int:
        """The smallest index whose ``created`` is > moment (strict) or >= moment (binary search)."""
        keys = _CreatedKeys(self)
        return (bisect.bisect_right if strict else bisect.bisect_left)(keys, moment)

    def profile(self, index: int) -> dict[str, Any]:
        """The full attribute dict of profile ``index`` (including the additional fields)."""
        return _profile(self, index)

    # --- report activity ---------------------------------------------------------------------------
    def omits_trailing_buckets(self, groupings: dict[str, Any]) -> bool:
        """Whether a series result drops its trailing empty buckets (Klaviyo does, for some)."""
        return zlib.crc32(json.dumps(groupings, sort_keys=True).encode()) % 5 == 0

    def metric_factor(self, metric_id: str) -> int:
        """Conversions attributed for a metric, in quarters of the Placed Order (Shopify) numbers."""
        if metric_id == self.placed_order_metric.id:
            return 4
        return 1 + zlib.crc32(metric_id.encode()) % 3

    def flow_activity(self, message: Message, day: date) -> Activity | None:
        """A flow message's activity on a local day (one event time per day), or None."""
        flow = self.flows_by_id[message.flow_id]
        if flow.status != "live" or day < flow.created.astimezone(self.tz).date() or day > self.local_today():
            return None
        return _flow_activity(
            self.seed, self.index, message.id, message.channel, message.volume, day.toordinal()
        )

    def campaign_activity(self, campaign: Campaign) -> list[Activity]:
        """A sent campaign's activity: the send at its send time, then opens/clicks on later days."""
        if campaign.send_time is None or campaign.send_time > self.now:
            return []
        local_send = campaign.send_time.astimezone(self.tz).replace(tzinfo=None)
        end = self.now.astimezone(self.tz).replace(tzinfo=None)
        return [
            a
            for a in _campaign_activity(
                self.seed, self.index, campaign.id, campaign.channel, campaign.volume, local_send
            )
            if a.at <= end
        ]


class _CreatedKeys:
    """A lazy sequence view of profile creation times, for ``bisect`` without materialising."""

    def __init__(self, account: Account):
        self.account = account

    def __len__(self) -> int:
        return self.account.profile_count

    def __getitem__(self, index: int) -> datetime:
        return self.account.profile_created(index)


def _split(rng: random.Random, total: int, low: float, high: float) -> int:
    return int(total * rng.uniform(low, high))


def _counts(rng: random.Random, channel: str, recipients: int) -> Counts:
    """Internally consistent counts for ``recipients`` sends (uniques ≤ totals, opens ≤ delivered...)."""
    bounced = _split(rng, recipients, 0.0, 0.03) if channel == "email" else 0
    failed = _split(rng, recipients, 0.0, 0.04) if channel == "sms" else 0
    delivered = recipients - bounced - failed
    opens_unique = _split(rng, delivered, 0.2, 0.6) if channel == "email" else 0
    clicks_unique = _split(rng, opens_unique if channel == "email" else delivered, 0.05, 0.3)
    conversion_uniques = _split(rng, clicks_unique, 0.05, 0.4)
    conversions = conversion_uniques + _split(rng, conversion_uniques, 0.0, 0.3)
    segments = delivered * rng.randint(1, 2) if channel == "sms" else 0
    return Counts(
        recipients=recipients,
        delivered=delivered,
        bounced=bounced,
        failed=failed,
        opens=opens_unique + _split(rng, opens_unique, 0.1, 0.8),
        opens_unique=opens_unique,
        clicks=clicks_unique + _split(rng, clicks_unique, 0.0, 0.5),
        clicks_unique=clicks_unique,
        conversions=conversions,
        conversion_uniques=conversion_uniques,
        conversion_value_cents=sum(rng.randint(1500, 25000) for _ in range(min(conversions, 50)))
        + max(0, conversions - 50) * 6123,
        unsubscribe_uniques=(unsub := _split(rng, delivered, 0.0, 0.01)),
        unsubscribes=unsub,
        spam_complaints=_split(rng, delivered, 0.0, 0.002),
        message_segment_count_sum=segments,
        text_message_credit_usage_amount=segments,
        text_message_spend_cents=segments,
    )


@lru_cache(maxsize=200_000)
def _flow_activity(
    seed: int, index: int, message_id: str, channel: str, volume: int, ordinal: int
) -> Activity | None:
    rng = rng_for(seed, index, "flow-activity", message_id, ordinal)
    if rng.random() < 0.2:
        return None
    recipients = max(1, int(volume * rng.uniform(0.4, 1.6)))
    at = datetime.combine(date.fromordinal(ordinal), time(rng.randrange(24), rng.randrange(60)))
    return Activity(at, _counts(rng, channel, recipients))


@lru_cache(maxsize=20_000)
def _campaign_activity(
    seed: int, index: int, campaign_id: str, channel: str, volume: int, local_send: datetime
) -> tuple[Activity, ...]:
    rng = rng_for(seed, index, "campaign-activity", campaign_id)
    total = _counts(rng, channel, volume)
    activities = [
        Activity(
            local_send,
            Counts(
                recipients=total.recipients,
                delivered=total.delivered,
                bounced=total.bounced,
                failed=total.failed,
                message_segment_count_sum=total.message_segment_count_sum,
                text_message_credit_usage_amount=total.text_message_credit_usage_amount,
                text_message_spend_cents=total.text_message_spend_cents,
            ),
        )
    ]
    engagement = (
        "opens",
        "opens_unique",
        "clicks",
        "clicks_unique",
        "conversions",
        "conversion_uniques",
        "conversion_value_cents",
        "unsubscribes",
        "unsubscribe_uniques",
        "spam_complaints",
    )
    remaining = {name: getattr(total, name) for name in engagement}
    for day in range(CAMPAIGN_ACTIVITY_DAYS):
        last = day == CAMPAIGN_ACTIVITY_DAYS - 1
        share = {name: value if last else int(value * 0.6) for name, value in remaining.items()}
        for name in engagement:
            remaining[name] -= share[name]
        counts = Counts(**share)
        if not counts.is_empty():
            activities.append(Activity(local_send + timedelta(days=day, minutes=30), counts))
    return tuple(activities)


def _profile(account: Account, index: int) -> dict[str, Any]:
    rng = rng_for(account.seed, account.index, "profile", index)
    created = account.profile_created(index)
    updated = min(account.now, created + timedelta(seconds=rng.randint(0, 400 * 86400)))
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    phone_only = rng.random() < 0.08
    email = None if phone_only else f"user{index}.{rng.choice(('a', 'b', 'c'))}@example.com"
    phone = f"+1555{index % 10_000_000:07d}" if phone_only or rng.random() < 0.3 else None
    roll = rng.random()
    consent = "SUBSCRIBED" if roll < 0.7 else ("NEVER_SUBSCRIBED" if roll < 0.85 else "UNSUBSCRIBED")
    suppression = []
    if email and rng.random() < 0.06:
        suppression.append(
            {
                "reason": rng.choice(SUPPRESSION_REASONS),
                "timestamp": iso(created + timedelta(days=rng.randint(1, 300))),
            }
        )
    can_receive = bool(email) and consent != "UNSUBSCRIBED" and not suppression
    consent_at = created + timedelta(minutes=rng.randint(0, 600))
    properties: dict[str, Any] = {}
    if rng.random() < 0.4:
        key_style = rng.random() < 0.5
        first_active = iso(created + timedelta(days=rng.randint(0, 30)))
        last_open = iso(updated - timedelta(days=rng.randint(0, 30)))
        properties = (
            {"First Active": first_active, "Last Open": last_open, "Last Click": last_open}
            if key_style
            else {"first_active": first_active, "last_open": last_open}
        )
    if rng.random() < 0.2:
        properties["Favourite, colour"] = rng.choice(("blue", 'deep "navy"', "vert d'eau"))
    predictive = {
        "historic_clv": None,
        "predicted_clv": None,
        "total_clv": None,
        "historic_number_of_orders": None,
        "predicted_number_of_orders": None,
        "average_days_between_orders": None,
        "average_order_value": None,
        "churn_probability": None,
        "expected_date_of_next_order": None,
        "ranked_channel_affinity": None,
    }
    if rng.random() < 0.85:
        orders = rng.randint(0, 12)
        historic = round(orders * rng.uniform(15, 180), 2)
        predicted = round(rng.uniform(0, 400), 2)
        predictive.update(
            historic_clv=historic,
            predicted_clv=predicted,
            total_clv=round(historic + predicted, 2),
            historic_number_of_orders=orders,
            predicted_number_of_orders=round(rng.uniform(0, 5), 2),
            average_days_between_orders=round(rng.uniform(10, 200), 1) if orders > 1 else None,
            average_order_value=round(historic / orders, 2) if orders else 0,
            churn_probability=round(rng.random(), 2),
            expected_date_of_next_order=iso(account.now + timedelta(days=rng.randint(1, 120)))
            if orders > 1
            else None,
            ranked_channel_affinity=["email", "sms", "push"],
        )
    return {
        "email": email,
        "phone_number": phone,
        "external_id": None if rng.random() < 0.7 else f"ext-{index}",
        "first_name": first,
        "last_name": last,
        "organization": rng.choice((None, None, "Acme, Inc.", "Ñandú S.A.")),
        "locale": rng.choice(("en-US", "fr-FR", None)),
        "title": None,
        "image": None,
        "created": iso(created),
        "updated": iso(updated),
        "last_event_date": iso(updated) if rng.random() < 0.9 else None,
        "location": {
            "address1": f"{rng.randint(1, 999)} Main St",
            "address2": None,
            "city": rng.choice(("Boston", "Montréal", "São Paulo", "Zürich")),
            "country": rng.choice(("United States", "Canada", "Brazil", "Switzerland")),
            "latitude": round(rng.uniform(-60, 60), 4),
            "longitude": round(rng.uniform(-120, 120), 4),
            "region": rng.choice(("MA", "QC", "SP", "ZH")),
            "zip": f"{rng.randint(1000, 99999):05d}",
            "timezone": account.timezone,
            "ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
        },
        "properties": properties,
        "subscriptions": {
            "email": {
                "marketing": {
                    "can_receive_email_marketing": can_receive,
                    "consent": consent,
                    "consent_timestamp": iso(consent_at) if consent != "NEVER_SUBSCRIBED" else None,
                    "last_updated": iso(updated),
                    "method": "FORM" if consent == "SUBSCRIBED" else None,
                    "method_detail": None,
                    "custom_method_detail": None,
                    "double_optin": None,
                    "suppression": suppression,
                    "list_suppressions": [],
                }
            },
            "sms": {
                "marketing": {
                    "can_receive_sms_marketing": bool(phone) and roll < 0.5,
                    "consent": "SUBSCRIBED" if phone and roll < 0.5 else "NEVER_SUBSCRIBED",
                    "consent_timestamp": iso(consent_at) if phone and roll < 0.5 else None,
                    "method": "TEXT" if phone and roll < 0.5 else None,
                    "method_detail": None,
                    "last_updated": iso(updated),
                }
            },
        },
        "predictive_analytics": predictive,
    }
