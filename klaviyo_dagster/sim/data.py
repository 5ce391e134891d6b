"""A deterministic synthetic Klaviyo account: flows, messages, campaigns, metrics, lists, profiles.

Everything is derived from ``(seed, account_index)`` through string-seeded ``random.Random``
instances (sha512-based, so independent of ``PYTHONHASHSEED``): the same config always yields the
same account, byte for byte. The small collections (flows, campaigns, metrics, ...) are built
eagerly; profiles are computed lazily from their index, so a 5M-profile account costs nothing until
a page is read. Report activity (what a message did on a given day) is also computed on demand.

The account is as varied as the spec and real accounts (each kind below is in every account with a
few live flows and ~50 profiles, at seed-chosen places, so ordinary tests exercise them):

- flow definitions use every action type of the spec's ``FlowDefinition.actions`` (``FLOW_ACTION_TYPES``):
  A/B tests whose main action and variations are emails, emails behind boolean and multi-branch
  splits, SMS / push / WhatsApp sends with their own report activity;
- messages that are in reports but no longer in any definition (``Flow.removed_messages``);
- campaigns of every status of the spec's campaign ``status`` enum (``CAMPAIGN_STATUSES``);
- profiles without optional objects (``Account.profile_quirks``), names with half an emoji,
  right-to-left text, control characters and formula-like text (``ODD_TEXTS``);
- timezones with half-hour and 45-minute offsets and DST (``TIMEZONES``, ``timezone_for``).
"""

from __future__ import annotations

import bisect
import json
import random
import re
import threading
import zlib
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
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

# Text that breaks naive consumers, by kind. Every kind appears in flow names, flow message names
# and subjects, campaign names and subjects, tag and list names, and profile first/last names.
# "lone-surrogate" is half an emoji (a UTF-16 surrogate without its partner): it can only travel as
# the JSON escape "\ud83d", never as UTF-8 bytes.
ODD_TEXTS: dict[str, tuple[str, ...]] = {
    "lone-surrogate": ("Sale \ud83d", "\ud83d Deals", "Thumbs \udc4d up", "Zo\ud83d"),
    "right-to-left": ("تخفيضات الصيف", "מבצע קיץ", "عرض \u202bخاص\u202c 50%", "שלום, עולם"),  # noqa: RUF001
    "control": (
        "Null\x00byte",
        "Bell\x07ring",
        "Tab\tseparated",
        "Carriage\rreturn",
        "Line\nfeed",
        "Zero\u200bwidth",
    ),
    "formula": ("=SUM(A1)", "+1-555", "@cmd", "-2+3"),
}
ODD_KINDS = tuple(ODD_TEXTS)

# Account timezones a seed can choose (SimConfig(timezone=None)): west and east of UTC, half-hour
# (Kolkata, St John's, Adelaide) and 45-minute (Kathmandu, Chatham) offsets, and DST both ways.
TIMEZONES = (
    "America/Los_Angeles",
    "America/New_York",
    "UTC",
    "Europe/London",
    "Pacific/Auckland",
    "Asia/Kolkata",
    "America/St_Johns",
    "Asia/Kathmandu",
    "Australia/Adelaide",
    "Pacific/Chatham",
)
TIMEZONE_BY_SEED = "by-seed"

# The spec's FlowDefinition.actions oneOf, by each member's `type` enum.
FLOW_ACTION_TYPES = (
    "action-output-split",  # ActionOutputSplitAction
    "back-in-stock-delay",  # BackInStockDelayAction
    "conditional-split",  # ConditionalBranchAction
    "content-experiment",  # ContentExperimentAction
    "send-email",  # SendEmailAction
    "send-mobile-push",  # SendPushNotificationAction
    "send-sms",  # SendSmsAction
    "send-webhook",  # SendWebhookAction
    "send-internal-alert",  # SendInternalAlertAction
    "send-whatsapp",  # SendWhatsAppAction
    "time-delay",  # TimeDelayAction
    "trigger-split",  # TriggerBranchAction
    "update-profile",  # UpdateProfileAction
    "target-date",  # TargetDateAction
    "countdown-delay",  # CountdownDelayAction
    "ab-test",  # AbTestAction
    "internal-service",  # InternalServiceAction
    "code",  # CodeAction
    "multi-branch-split",  # MultiBranchSplitAction
    "list-update",  # ListUpdateAction
)
# Send actions and the channel of their message. The four report channels are the reports'
# `send_channel` values (FlowSeriesRequestDTO filter: email, sms, push-notification, whatsapp);
# webhooks and internal alerts are flow messages (FlowWebhook, FlowInternalAlert) without reports.
SEND_ACTION_CHANNELS = {
    "send-email": "email",
    "send-sms": "sms",
    "send-mobile-push": "push-notification",
    "send-whatsapp": "whatsapp",
    "send-webhook": "webhook",
    "send-internal-alert": "internal-alert",
}
CHANNEL_SEND_ACTIONS = {channel: kind for kind, channel in SEND_ACTION_CHANNELS.items()}
REPORT_CHANNELS = ("email", "sms", "push-notification", "whatsapp")
# Actions whose links are BooleanBranchLinks (next_if_true / next_if_false).
BOOLEAN_SPLITS = ("conditional-split", "trigger-split", "action-output-split")
# Experiments and the channels their main action and variations may use (AbTestAction.data:
# SendEmailAction | SendSmsAction; ContentExperimentAction.data: push | WhatsApp).
EXPERIMENT_CHANNELS = {"ab-test": ("email", "sms"), "content-experiment": ("push-notification", "whatsapp")}
DELAY_TYPES = ("time-delay", "countdown-delay", "target-date", "back-in-stock-delay")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

# What every account's live flows contain at least once (see Account._flow_features).
FLOW_FEATURES = (
    *FLOW_ACTION_TYPES,
    "ab-test:sms",  # an A/B test of SMS messages
    "email-behind-split",  # an email reachable only through a boolean split's false branch
    "email-behind-branches",  # emails in the branches of a multi-branch split
    "removed:deleted",  # an email deleted from the definition that sent until recently
    "removed:variation-ended",  # an A/B test email variation that ended recently
    *(f"odd-flow-name:{kind}" for kind in ODD_KINDS),
    *(f"odd-message-name:{kind}" for kind in ODD_KINDS),
)
STRUCTURAL_FEATURES = frozenset(
    {*FLOW_ACTION_TYPES, "ab-test:sms", "email-behind-split", "email-behind-branches"}
)

# The spec's campaign `status` enum (CampaignResponseObjectResource.attributes.status), and the
# statuses of a campaign that has sent (the others have no send_time and no report activity).
CAMPAIGN_STATUSES = (
    "Adding Recipients",
    "Cancelled",
    "Cancelled: Account Disabled",
    "Cancelled: Billing Limit",
    "Cancelled: Internal Error",
    "Cancelled: Misconfigured",
    "Cancelled: No Recipients",
    "Cancelled: Smart Sending",
    "Draft",
    "Preparing to schedule",
    "Preparing to send",
    "Queued without Recipients",
    "Scheduled",
    "Sending",
    "Sending Segments",
    "Sent",
    "Unknown",
    "Variations Sent",
)
SENT_CAMPAIGN_STATUSES = ("Sent", "Variations Sent", "Sending", "Sending Segments")
# Not sent, but scheduled by a user at some point: their scheduled_at is set.
SCHEDULED_CAMPAIGN_STATUSES = frozenset(
    {
        "Scheduled",
        "Queued without Recipients",
        "Preparing to send",
        "Preparing to schedule",
        "Adding Recipients",
    }
    | {s for s in CAMPAIGN_STATUSES if s.startswith("Cancelled")}
)

# What a profile may lack or hold oddly, all valid against the spec's profile response: every
# attribute is optional, `properties` is a nullable object, ProfileLocation's fields are nullable and
# its latitude/longitude may be strings. (`subscriptions`, `predictive_analytics` and `location` are
# $refs, whose `nullable` sibling OpenAPI 3.0 ignores, so they are left out rather than null.)
# Real accounts omit `subscriptions` and `predictive_analytics` for some profiles even when the
# additional field was asked for.
PROFILE_QUIRKS = (
    "subscriptions-missing",
    "predictive-analytics-missing",
    "properties-empty",
    "properties-null",
    "properties-null-values",
    "location-missing",
    "location-empty",
    "location-all-null",
    "location-text-coordinates",
    *(f"name-{kind}" for kind in ODD_KINDS),
)
# Each quirk falls on one seed-chosen index of every PROFILE_QUIRK_PERIOD consecutive profiles, never
# on the first PLAIN_PROFILES (hand-made stores build on those: tests/producers/tiny_store.py).
PROFILE_QUIRK_PERIOD = 40
PLAIN_PROFILES = 8
# The get_profiles `sort` fields besides id/created (spec enum), in the order Klaviyo sorts them.
PROFILE_SORT_FIELDS = (
    "email",
    "updated",
    "subscriptions.email.marketing.suppression.timestamp",
    "subscriptions.email.marketing.list_suppressions.timestamp",
)
SUPPRESSION_REASON = "subscriptions.email.marketing.suppression.reason"
_LIST_SUPPRESSIONS = "subscriptions.email.marketing.list_suppressions."
PROFILE_QUERY_CACHE = 16  # profile index sequences kept per account (one per filter + sort)

PROFILE_SPAN_DAYS = 4 * 365  # profiles are created over the four years before the anchor
PROFILES_PER_SECOND = 3  # consecutive profiles share a creation second: boundary behaviour is testable
CAMPAIGN_MONTHS = 13
CAMPAIGNS_PER_MONTH = 26
CAMPAIGN_ACTIVITY_DAYS = 10
RECENT_DAYS = 6  # "recent": inside a typical 7-day window that ends yesterday


def timezone_for(seed: int, index: int) -> str:
    """The zone a seed chooses for account ``index`` (every zone of TIMEZONES over 10 seeds)."""
    return TIMEZONES[(seed + index) % len(TIMEZONES)]


def resolve_timezone(timezone: str | None, seed: int, index: int) -> str:
    """An explicit zone as is; None or ``"by-seed"`` → the zone the seed chooses."""
    return timezone_for(seed, index) if timezone in (None, TIMEZONE_BY_SEED) else timezone


def odd_text(kind: str, rng: random.Random) -> str:
    return rng.choice(ODD_TEXTS[kind])


def with_odd(base: str, kind: str, rng: random.Random) -> str:
    """``base`` with odd text of ``kind``; formula-like text leads, so it is what a spreadsheet sees."""
    text = odd_text(kind, rng)
    return f"{text} {base}" if kind == "formula" else f"{base} {text}"


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
    """A flow message: what a send action (or an experiment's main action or variation) sends.

    ``channel`` is a report ``send_channel`` (email, sms, push-notification, whatsapp) or, for
    messages without report activity, ``webhook`` / ``internal-alert``.
    """

    id: str
    action_id: str  # the action that holds it (for a variation: the ab-test/content-experiment action)
    flow_id: str
    channel: str
    name: str
    subject: str
    created: datetime  # activity starts on this local day
    updated: datetime
    volume: int  # typical daily recipients
    variation_of: str | None = None  # the main message's id when this is an experiment's variation
    removed: str | None = None  # None: in the definition; "deleted" | "variation-ended": reports only
    active_until: date | None = None  # the last local day with activity (removed messages)

    @property
    def reported(self) -> bool:
        """Whether the message has report activity (a send_channel of the reports)."""
        return self.channel in REPORT_CHANNELS


@dataclass
class Branch:
    """One branch of a multi-branch-split (spec: MultiBranchSplitBranch)."""

    id: str
    name: str
    order: int
    is_else: bool
    value: str | None = None  # the profile property value the branch selects (None for the else branch)
    next_id: str | None = None


@dataclass
class Action:
    """One entry of a flow definition's flat ``actions`` list (spec: FlowDefinition.actions)."""

    id: str
    flow_id: str
    type: str  # a FLOW_ACTION_TYPES value
    created: datetime
    updated: datetime
    status: str
    delay_days: int = 0
    message: Message | None = None  # send-*: its message; ab-test/content-experiment: the main action's
    next_id: str | None = None  # Link.next
    variations: list[Message] = field(default_factory=list)  # experiments: current variations
    next_if_true: str | None = None  # BooleanBranchLinks, for BOOLEAN_SPLITS
    next_if_false: str | None = None
    branches: list[Branch] = field(default_factory=list)  # multi-branch-split
    params: dict[str, Any] = field(default_factory=dict)  # type-specific settings (resources renders them)

    @property
    def messages(self) -> list[Message]:
        """Every message the action can send: its message, then the experiment's variations."""
        return ([self.message] if self.message is not None else []) + list(self.variations)

    @property
    def next_ids(self) -> list[str]:
        """Every action this one links to (Link, BooleanBranchLinks or the branches' links)."""
        ids = [self.next_id, self.next_if_true, self.next_if_false, *(b.next_id for b in self.branches)]
        return [i for i in ids if i is not None]


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
    trigger: dict[str, Any] = field(default_factory=dict)  # one FlowDefinition.triggers entry ({}: none)
    removed_messages: list[Message] = field(default_factory=list)  # in reports, not in the definition

    @property
    def messages(self) -> list[Message]:
        """Every message in the definition (main actions and variations), in definition order."""
        return [m for a in self.actions for m in a.messages]

    @property
    def email_messages(self) -> list[Message]:
        """The definition's email messages, wherever they sit (experiments, branches)."""
        return [m for m in self.messages if m.channel == "email"]

    @property
    def report_messages(self) -> list[Message]:
        """What the reports can show for this flow: reported messages of the definition, then removed ones."""
        return [m for m in self.messages if m.reported] + self.removed_messages


@dataclass
class Campaign:
    id: str
    name: str
    channel: str  # email | sms
    status: str  # a CAMPAIGN_STATUSES value
    archived: bool
    created: datetime
    updated: datetime
    scheduled_at: datetime | None  # when a user scheduled it
    send_time: datetime | None  # when it sent (sent statuses only)
    included: list[str]
    excluded: list[str]
    tag_ids: list[str]
    message_id: str
    message_label: str
    subject: str
    volume: int
    planned_send: datetime | None = None  # a not-sent campaign's send strategy datetime

    @property
    def sent(self) -> bool:
        return self.status in SENT_CAMPAIGN_STATUSES


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


@dataclass(frozen=True)
class ProfileColumn:
    """Profile indices in the order of one ``sort`` field: without a value first (by index), then by
    (value, index). ``seconds`` holds the epoch seconds of ``order[missing:]`` for date-time fields."""

    order: Sequence[int]
    missing: int
    seconds: Sequence[int] | None

    def where(self, operator: str, moment: datetime) -> list[int]:
        """Indices (ascending) whose value compares to ``moment`` as ``operator`` (a date-time filter)."""
        assert self.seconds is not None
        x = moment.timestamp()
        lo, hi = 0, len(self.seconds)
        if operator == "greater-than":
            lo = bisect.bisect_right(self.seconds, x)
        elif operator == "greater-or-equal":
            lo = bisect.bisect_left(self.seconds, x)
        elif operator == "less-than":
            hi = bisect.bisect_left(self.seconds, x)
        elif operator == "less-or-equal":
            hi = bisect.bisect_right(self.seconds, x)
        else:
            raise ValueError(f"not a comparison: {operator}")
        return sorted(self.order[self.missing + lo : self.missing + hi])


class Account:
    """One synthetic Klaviyo account. Build is O(flows + campaigns + metrics), never O(profiles).

    ``timezone`` None (or ``"by-seed"``) lets the seed choose the zone (``timezone_for``).
    """

    def __init__(self, seed: int, index: int, profiles: int, flows: int, anchor: date, timezone: str | None):
        self.seed = seed
        self.index = index
        self.profile_count = profiles
        self.anchor = anchor
        self.timezone = resolve_timezone(timezone, seed, index)
        self.tz = ZoneInfo(self.timezone)
        self._used: set[str] = set()
        self._lock = threading.Lock()
        self._columns: dict[str, ProfileColumn] = {}
        self._queries: OrderedDict[Any, Sequence[int]] = OrderedDict()
        self._reasons: dict[str, Sequence[int]] | None = None
        rng = rng_for(seed, index, "account")
        self.id = _short_id(rng, self._used)
        self.public_api_key = self.id
        self.name = rng.choice(
            ("Acme Outfitters, Inc.", 'The "Good" Store', "Café Crème Ltd", "Nordic Ståhl")
        )
        self._profile_tag = b32(zlib.crc32(f"{seed}:{index}".encode()) % (32**4), 4)
        self._quirk_slots = self._choose_quirk_slots()
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

    def existing_local(self, local: datetime) -> datetime:
        """A naive local time that exists: one skipped by a DST change moves forward past the gap."""
        return local.replace(tzinfo=self.tz).astimezone(UTC).astimezone(self.tz).replace(tzinfo=None)

    def local_midnight(self, day: date) -> datetime:
        """The UTC instant a local day starts."""
        return datetime.combine(day, time()).replace(tzinfo=self.tz).astimezone(UTC)

    # --- small collections -----------------------------------------------------------------------
    def _build_tags(self) -> list[Tag]:
        rng = rng_for(self.seed, self.index, "tags")
        names = [
            *TAG_NAMES,
            *(odd_text(kind, rng_for(self.seed, self.index, "odd-tag", kind)) for kind in ODD_KINDS),
        ]
        return [
            Tag(
                f"{rng.getrandbits(32):08x}-{rng.getrandbits(16):04x}-4{rng.getrandbits(12):03x}-"
                f"8{rng.getrandbits(12):03x}-{rng.getrandbits(48):012x}",
                name,
            )
            for name in names
        ]

    def _build_groups(self, kind: str, names: tuple[str, ...]) -> list[Group]:
        rng = rng_for(self.seed, self.index, kind)
        if kind == "list":  # odd list names come after the plain ones, which keep their places
            odd = rng_for(self.seed, self.index, "odd-list")
            names = (*names, *(with_odd("List", k, odd) for k in ODD_KINDS))
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

    # --- flows -------------------------------------------------------------------------------------
    @staticmethod
    def flow_status(number: int) -> tuple[str, bool]:
        """(status, archived) of the ``number``-th flow: 5 of 8 live, every 11th archived."""
        roll = number % 8
        return ("live" if roll < 5 else ("draft" if roll < 7 else "manual")), number % 11 == 10

    def _flow_features(self, count: int) -> dict[int, list[str]]:
        """FLOW_FEATURES dealt, in a seed-chosen order, over the live unarchived flows (each at least once)."""
        kept = [n for n in range(count) if self.flow_status(n) == ("live", False)]
        if not kept:
            return {}
        features = list(FLOW_FEATURES)
        rng_for(self.seed, self.index, "flow-features").shuffle(features)
        dealt: dict[int, list[str]] = {}
        for position, feature in enumerate(features):
            dealt.setdefault(kept[position % len(kept)], []).append(feature)
        return dealt

    def _build_flows(self, count: int) -> list[Flow]:
        rng = rng_for(self.seed, self.index, "flows")
        features = self._flow_features(count)
        flows = []
        action_number = rng.randint(10_000_000, 90_000_000)
        for number in range(count):
            base = FLOW_NAMES[number % len(FLOW_NAMES)]
            name = base if number < len(FLOW_NAMES) else f"{base} #{number // len(FLOW_NAMES) + 1}"
            status, archived = self.flow_status(number)
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
            builder = _FlowBuilder(self, flow, rng_for(self.seed, self.index, "flow", number), action_number)
            builder.build(number, features.get(number, []))
            action_number = builder.action_number + rng.randint(1, 50)
            flows.append(flow)
        return flows

    def _trigger(self, flow: Flow, rng: random.Random) -> dict[str, Any]:
        """One FlowDefinition.triggers entry for the flow's trigger type ({} for Unconfigured)."""
        kind = flow.trigger_type
        if kind == "Added to List":
            return {"type": "list", "id": rng.choice(self.lists).id}  # ListTrigger
        if kind == "Metric":
            return {"type": "metric", "id": rng.choice(self.metrics).id, "trigger_filter": None}
        if kind == "Date Based":  # ProfilePropertyDateTrigger
            return {
                "type": "date",
                "date_field_type": "profile-property",
                "date_profile_property": "Birthday",
                "timedelta_unit_before_date": "days",
                "timedelta_value_before_date": rng.randint(0, 7),
                "recurrence_frequency": "annually",
                "timezone": "profile",
                "trigger_time": "09:00:00",
                "trigger_days": None,
            }
        if kind == "Price Drop":  # PriceDropTrigger
            return {
                "type": "price-drop",
                "trigger_filter": None,
                "price_drop_amount_value": rng.choice((2.5, 5.5, 10.25)),
                "price_drop_amount_unit": "percent",
                "audience": ["viewed", "checkout-started"],
                "timeframe_days": 30,
                "currency_type": "usd",
            }
        if kind == "Low Inventory":  # LowInventoryTrigger
            return {
                "type": "low-inventory",
                "product_level": "variant",
                "trigger_filter": None,
                "inventory_count": rng.randint(1, 10),
                "audience": ["added-to-cart", "viewed"],
                "timeframe_days": 30,
            }
        return {}

    @property
    def removed_messages(self) -> list[Message]:
        """Messages with report activity that no definition holds (GET /api/flow-messages/{id}: 404)."""
        return [m for f in self.flows for m in f.removed_messages]

    # --- campaigns -----------------------------------------------------------------------------------
    def _build_campaigns(self) -> list[Campaign]:
        """Thirteen months of campaigns (mostly sent) plus one of every status in the recent days."""
        campaigns = self._campaign_series() + self._campaign_showcase()
        campaigns.sort(key=lambda c: (c.created, c.id))
        return campaigns

    def _campaign_series(self) -> list[Campaign]:
        rng = rng_for(self.seed, self.index, "campaigns")
        campaigns = []
        total = CAMPAIGN_MONTHS * CAMPAIGNS_PER_MONTH
        span_days = CAMPAIGN_MONTHS * 30.4
        cancelled = [s for s in CAMPAIGN_STATUSES if s.startswith("Cancelled")]
        for number in range(total):
            days_ago = span_days - (number + rng.random()) * span_days / total
            send = (self.now - timedelta(days=days_ago)).replace(microsecond=0, second=0)
            status = "Variations Sent" if number % 17 == 11 else "Sent"
            if number % 37 == 5:
                status = cancelled[number % len(cancelled)]
            elif number % 23 == 7:
                status = "Draft"
            if number >= total - 6:  # the last few are scheduled into the next week
                send = (self.now + timedelta(days=(number - total + 7), hours=rng.randint(1, 20))).replace(
                    microsecond=0, second=0
                )
                status = "Scheduled"
            label = CAMPAIGN_LABELS[number % len(CAMPAIGN_LABELS)]
            odd = ODD_KINDS[number % len(ODD_KINDS)] if rng.random() < 0.05 else None
            campaigns.append(
                self._campaign(rng, "sms" if number % 9 == 4 else "email", status, send, label, odd, odd)
            )
        return campaigns

    def _campaign_showcase(self) -> list[Campaign]:
        """One email campaign of every status, sent or scheduled in the last RECENT_DAYS - 1 days.

        Their names and subjects hold odd text: the sent ones (the only ones a campaigns file keeps)
        every kind of it.
        """
        rng = rng_for(self.seed, self.index, "campaign-showcase")
        offset = rng.randrange(len(ODD_KINDS))
        campaigns = []
        for number, status in enumerate(CAMPAIGN_STATUSES):
            if status in ("Sending", "Sending Segments"):  # started in the last day, still going
                send = self.now - timedelta(minutes=rng.randint(60, 20 * 60))
            else:
                send = self.now - timedelta(minutes=rng.randint(90, (RECENT_DAYS - 1) * 24 * 60))
            send = send.replace(second=0, microsecond=0)
            if status == "Scheduled":
                send = self.now + timedelta(hours=rng.randint(2, 72))
            rank = SENT_CAMPAIGN_STATUSES.index(status) if status in SENT_CAMPAIGN_STATUSES else number
            campaigns.append(
                self._campaign(
                    rng,
                    "email",
                    status,
                    send,
                    CAMPAIGN_LABELS[(number + offset) % len(CAMPAIGN_LABELS)],
                    ODD_KINDS[(rank + offset) % len(ODD_KINDS)],
                    ODD_KINDS[(rank + offset + 1) % len(ODD_KINDS)],
                    stale=status == "Sent",  # updated_at before the send's day: it need not move on sending
                    lead_hours=12,
                )
            )
            campaigns[-1].archived = False
        return campaigns

    def _campaign(
        self,
        rng: random.Random,
        channel: str,
        status: str,
        send: datetime,
        label: str,
        name_kind: str | None,
        subject_kind: str | None,
        stale: bool | None = None,
        lead_hours: int = 72,
    ) -> Campaign:
        """A campaign of ``status`` whose send is (or was planned) at ``send``.

        Sent statuses have ``send_time``; the others have none (and no activity). ``scheduled_at`` is
        when a user scheduled it (before the send), set for sent and SCHEDULED_CAMPAIGN_STATUSES.
        ``updated_at`` is not guaranteed to move when a campaign sends: a stale sent campaign was last
        edited days before its send (``stale`` None: one sent campaign in four).
        """
        sent = status in SENT_CAMPAIGN_STATUSES
        scheduled = (
            send - timedelta(hours=rng.randint(1, lead_hours))
            if sent or status in SCHEDULED_CAMPAIGN_STATUSES
            else None
        )
        if scheduled is not None and scheduled > self.now:
            scheduled = self.now - timedelta(hours=1)
        created = min(scheduled or send, self.now) - timedelta(
            days=rng.randint(2, 20), minutes=rng.randint(0, 600)
        )
        if stale is None:
            stale = sent and rng.random() < 0.25
        if stale:
            updated = created + timedelta(hours=rng.randint(0, 24))  # at least a day before the send
        elif sent:
            updated = min(self.now, send + timedelta(hours=rng.randint(0, 48)))
        else:
            updated = min(self.now, (scheduled or created) + timedelta(minutes=rng.randint(0, 600)))
        moment = scheduled or send
        name = f"{label} {moment.date().isoformat()}"
        subject = f'{label}: up to 30% off, "today" only — ¡ya!'
        included = rng.sample(self._audiences, k=rng.randint(1, 2))
        excluded = rng.sample([a for a in self._audiences if a not in included], k=rng.randint(0, 1))
        return Campaign(
            id=_ulid(rng, created, self._used),
            name=with_odd(name, name_kind, rng) if name_kind else name,
            channel=channel,
            status=status,
            archived=rng.random() < 0.03,
            created=created,
            updated=updated,
            scheduled_at=scheduled,
            send_time=send if sent else None,
            included=included,
            excluded=excluded,
            tag_ids=[t.id for t in rng.sample(self.tags, k=rng.randint(0, 3))],
            message_id=_ulid(rng, created, self._used),
            message_label=f"{label} message",
            subject=with_odd(subject, subject_kind, rng) if subject_kind else subject,
            volume=rng.randint(500, 20_000),
            planned_send=None if sent or status in ("Draft", "Unknown") else send,
        )

    @cached_property
    def _audiences(self) -> list[str]:
        return [g.id for g in (*self.lists, *self.segments)]

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

    def _choose_quirk_slots(self) -> dict[int, frozenset[str]]:
        rng = rng_for(self.seed, self.index, "profile-quirks")
        slots = rng.sample(range(PLAIN_PROFILES, PROFILE_QUIRK_PERIOD), len(PROFILE_QUIRKS))
        return {slot: frozenset({quirk}) for slot, quirk in zip(slots, PROFILE_QUIRKS, strict=True)}

    def profile_quirks(self, index: int) -> frozenset[str]:
        """The PROFILE_QUIRKS of profile ``index`` (each falls once in every PROFILE_QUIRK_PERIOD profiles)."""
        return self._quirk_slots.get(index % PROFILE_QUIRK_PERIOD, frozenset())

    def profile(self, index: int) -> dict[str, Any]:
        """The attribute dict of profile ``index`` as the API returns it with both additional fields.

        A quirk may leave out ``subscriptions`` / ``predictive_analytics`` (absent keys): the API omits
        them too, even when asked for.
        """
        return _apply_quirks(_profile(self, index), self.profile_quirks(index), self, index)

    @property
    def _generated_profiles(self) -> bool:
        """False when a subclass hand-makes profiles: the generator's shortcuts then do not apply."""
        cls = type(self)
        return cls.profile is Account.profile and cls.profile_created is Account.profile_created

    def profile_column(self, field_name: str) -> ProfileColumn:
        """The order of every profile by a PROFILE_SORT_FIELDS field, computed once per account.

        One pass over the profiles (only the draws the field needs); kept as an array of indices
        (4 bytes a profile) and, for date-time fields, an array of epoch seconds (8 bytes a profile).
        """
        with self._lock:
            column = self._columns.get(field_name)
            if column is None:
                column = self._columns[field_name] = self._build_column(field_name)
            return column

    def _build_column(self, field_name: str) -> ProfileColumn:
        if field_name not in PROFILE_SORT_FIELDS:
            raise ValueError(f"profiles do not sort by {field_name!r}")
        keys = list(self._profile_keys(field_name))
        missing = [i for i, key in enumerate(keys) if key is None]
        if len(missing) == len(keys):
            return ProfileColumn(range(len(keys)), len(keys), array("q"))
        present = [i for i, key in enumerate(keys) if key is not None]
        present.sort(key=keys.__getitem__)  # stable: ties stay in index order
        order = array("I", missing)
        order.extend(present)
        seconds = array("q", (keys[i] for i in present)) if field_name != "email" else None
        del keys
        return ProfileColumn(order, len(missing), seconds)

    def profile_order_key(self, index: int, field_name: str) -> tuple[Any, ...]:
        """Where profile ``index`` sorts by ``field_name`` (as in ``profile_column``), from its record."""
        key = _sort_key(field_name, profile_sort_value(self.profile(index), field_name))
        return (False, 0, index) if key is None else (True, key, index)

    def profile_suppression_reasons(self) -> dict[str, Sequence[int]]:
        """Indices (ascending) of the profiles whose email suppression has each reason, computed once."""
        with self._lock:
            if self._reasons is None:
                reasons: dict[str, array[int]] = {}
                for index, reason in enumerate(self._profile_keys(SUPPRESSION_REASON)):
                    if reason is not None:
                        reasons.setdefault(reason, array("I")).append(index)
                self._reasons = reasons
            return self._reasons

    def _profile_keys(self, field_name: str) -> Iterator[Any]:
        """Each profile's key for ``field_name``: epoch seconds of a date-time, else the text; None when
        unset. Generated profiles draw only what the field needs; hand-made ones are read whole."""
        if not self._generated_profiles:
            for index in range(self.profile_count):
                yield _sort_key(field_name, profile_sort_value(self.profile(index), field_name))
            return
        if field_name.startswith(_LIST_SUPPRESSIONS):  # the generator makes no list suppressions
            yield from (None for _ in range(self.profile_count))
        elif field_name == "updated":
            for index in range(self.profile_count):
                yield int(_profile_head(self, index)[2].timestamp())
        elif field_name == "email":
            for index in range(self.profile_count):
                yield _profile_core(self, index).email
        else:  # the email suppression's timestamp or reason
            key = field_name.rsplit(".", 1)[1]
            for index in range(self.profile_count):
                if "subscriptions-missing" in self.profile_quirks(index):
                    yield None
                    continue
                suppression = _profile_core(self, index).suppression
                yield _sort_key(field_name, suppression[0][key] if suppression else None)

    def profile_indices_with(self, field_name: str, value: str) -> list[int] | None:
        """The indices whose ``field_name`` (id, email, phone_number, external_id) could equal ``value``.

        Read from the value itself (the generator's formats), so O(1); None when that is not possible
        (hand-made profiles). The caller still checks each candidate's record.
        """
        if field_name == "id":
            found = self.profile_index(value)
            return [] if found is None else [found]
        if not self._generated_profiles:
            return None
        pattern = _PROFILE_VALUE_PATTERNS.get(field_name)
        match = pattern.fullmatch(value) if pattern else None
        if match is None:
            return []
        number = int(match.group(1))
        if field_name == "phone_number":
            return list(range(number, self.profile_count, _PHONE_MODULUS))
        return [number] if number < self.profile_count else []

    def remember_profile_query(self, key: Any, build: Callable[[], Sequence[int]]) -> Sequence[int]:
        """A profile index sequence for one query (filter + sort), built once and kept (LRU)."""
        with self._lock:
            found = self._queries.get(key)
            if found is not None:
                self._queries.move_to_end(key)
                return found
        built = build()
        with self._lock:
            self._queries[key] = built
            while len(self._queries) > PROFILE_QUERY_CACHE:
                self._queries.popitem(last=False)
        return built

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
        """A flow message's activity on a local day (one event time per day), or None.

        Only live flows send; a message sends from the day it was created (variations: the
        experiment's start) and, once removed, not after its ``active_until`` day (and then on every
        day before it, so a recent window always shows it).
        """
        flow = self.flows_by_id[message.flow_id]
        if not message.reported or flow.status != "live" or day > self.local_today():
            return None
        first = max(flow.created, message.created).astimezone(self.tz).date()
        if day < first or (message.active_until is not None and day > message.active_until):
            return None
        found = _flow_activity(
            self.seed,
            self.index,
            message.id,
            message.channel,
            message.volume,
            day.toordinal(),
            message.active_until is not None,
        )
        return None if found is None else Activity(self.existing_local(found.at), found.counts)

    def campaign_activity(self, campaign: Campaign) -> list[Activity]:
        """A sent campaign's activity: the send at its send time, then opens/clicks on later days."""
        if not campaign.sent or campaign.send_time is None or campaign.send_time > self.now:
            return []
        local_send = campaign.send_time.astimezone(self.tz).replace(tzinfo=None)
        end = self.now.astimezone(self.tz).replace(tzinfo=None)
        activities = _campaign_activity(
            self.seed, self.index, campaign.id, campaign.channel, campaign.volume, local_send
        )
        return [Activity(self.existing_local(a.at), a.counts) for a in activities if a.at <= end]


CAMPAIGN_LABELS = (
    "Spring Sale",
    "New Arrivals, Week",
    'The "Edit"',
    "Newsletter",
    "Flash Sale",
    "Café Culture",
    "Restock",
)


class _CreatedKeys:
    """A lazy sequence view of profile creation times, for ``bisect`` without materialising."""

    def __init__(self, account: Account):
        self.account = account

    def __len__(self) -> int:
        return self.account.profile_count

    def __getitem__(self, index: int) -> datetime:
        return self.account.profile_created(index)


class _FlowBuilder:
    """Builds one flow's definition: a spine of steps linked by ids, with side branches after splits.

    The actions list is flat (spec: FlowDefinition.actions, "linked to each other by their ids"):
    linear actions link with ``links.next``, boolean splits with ``next_if_true`` (the spine goes on)
    and ``next_if_false`` (a side branch or the exit), multi-branch splits through their branches.
    """

    def __init__(self, account: Account, flow: Flow, rng: random.Random, action_number: int):
        self.account = account
        self.flow = flow
        self.rng = rng
        self.action_number = action_number
        self.volume = rng.randint(20, 400)
        self.sends: dict[str, int] = {}  # messages made so far, by channel (for names)
        self.ended_variation = False  # an email A/B test should carry an ended variation

    # --- plan ----------------------------------------------------------------------------------------
    def build(self, number: int, features: list[str]) -> None:
        """Emails (and an SMS in every third flow) with delays between, the features' steps inserted
        at seed-chosen places, sometimes one more random action type; then removed messages and odd
        names the features ask for."""
        rng, flow = self.rng, self.flow
        sends = ["send-email"] * rng.randint(2, 5) + (["send-sms"] if number % 3 == 0 else [])
        rng.shuffle(sends)
        spine: list[str] = []
        for position, kind in enumerate(sends):
            spine += ["time-delay", kind] if position else [kind]
        steps = [f for f in features if f in STRUCTURAL_FEATURES]
        if rng.random() < 0.35:
            steps.append(rng.choice(FLOW_ACTION_TYPES))
        self.ended_variation = "removed:variation-ended" in features
        if self.ended_variation and "ab-test" not in steps:
            steps.append("ab-test")
        for step in steps:
            spine.insert(rng.randint(0, len(spine)), step)
        self.emit(spine)
        if "removed:deleted" in features:
            self.removed_email(rng.randint(2, RECENT_DAYS - 1))
        elif flow.status == "live" and rng.random() < 0.1:
            self.removed_email(rng.randint(8, 120))  # deleted long ago: only older windows show it
        for feature in features:
            kind = feature.partition(":")[2]
            if feature.startswith("odd-flow-name:"):
                flow.name = with_odd(flow.name, kind, rng)
            elif feature.startswith("odd-message-name:") and flow.email_messages:
                message = flow.email_messages[0]
                message.name = with_odd(message.name, kind, rng)
                message.subject = with_odd(message.subject, kind, rng)

    # --- emit ----------------------------------------------------------------------------------------
    def emit(self, steps: list[str]) -> str | None:
        """Append the actions of ``steps`` in order, each linked to the next; the first one's id."""
        first: str | None = None
        pending: list[tuple[Any, str]] = []  # (action or branch, link attribute) waiting for the next id
        for kind in steps:
            action, continuation = self.step(kind)
            first = first or action.id
            for holder, attribute in pending:
                setattr(holder, attribute, action.id)
            pending = continuation
        return first

    def new_action(self, kind: str, **params: Any) -> Action:
        self.action_number += self.rng.randint(1, 50)
        flow = self.flow
        action = Action(str(self.action_number), flow.id, kind, flow.created, flow.updated, flow.status)
        action.params = params
        flow.actions.append(action)
        return action

    def step(self, kind: str) -> tuple[Action, list[tuple[Any, str]]]:
        """One spine step: its action, and where the next spine action's id goes."""
        rng = self.rng
        if kind in SEND_ACTION_CHANNELS:
            action = self.new_action(kind)
            action.message = self.message(action, SEND_ACTION_CHANNELS[kind])
        elif kind in ("ab-test", "ab-test:sms", "content-experiment"):
            action = self.experiment(kind)
        elif kind in (*BOOLEAN_SPLITS, "email-behind-split"):
            action = self.new_action(kind if kind in BOOLEAN_SPLITS else rng.choice(BOOLEAN_SPLITS))
            action.params = self.split_params(action.type)
            action.next_if_false = self.emit(self.side_branch(kind == "email-behind-split"))
            return action, [(action, "next_if_true")]
        elif kind in ("multi-branch-split", "email-behind-branches"):
            return self.multi_branch(kind == "email-behind-branches")
        else:
            action = self.new_action(kind, **self.params(kind))
            if kind == "time-delay" and action.params["unit"] == "days":
                action.delay_days = action.params["value"]
        return action, [(action, "next_id")]

    def side_branch(self, email: bool) -> list[str]:
        """The steps of a split's side branch (an email when ``email``; else maybe nothing: the exit)."""
        if email:
            return self.rng.choice((["send-email"], ["time-delay", "send-email"]))
        return self.rng.choice(
            ([], ["send-email"], ["send-sms"], ["time-delay", "send-email"], ["update-profile"])
        )

    def multi_branch(self, email: bool) -> tuple[Action, list[tuple[Any, str]]]:
        """A multi-branch-split: 1 to 3 conditional branches with their own sends, the else branch goes on."""
        rng = self.rng
        action = self.new_action(
            "multi-branch-split", name=rng.choice(("By tier", "By region", "By interest"))
        )
        values = rng.sample(("gold", "silver", "bronze", "EU", "US"), k=rng.randint(1, 3))
        for order, value in enumerate(values):
            branch = Branch(f"{action.id}-{order}", f"Tier: {value}", order, False, value)
            action.branches.append(branch)
            branch.next_id = self.emit(self.side_branch(email or rng.random() < 0.6))
        otherwise = Branch(f"{action.id}-else", "Everyone else", len(values), True)
        action.branches.append(otherwise)
        return action, [(otherwise, "next_id")]

    def message(self, action: Action, channel: str, **extra: Any) -> Message:
        """A new message of ``action`` (``extra``: Message fields such as created, variation_of, removed)."""
        rng, flow = self.rng, self.flow
        count = self.sends[channel] = self.sends.get(channel, 0) + 1
        label = f"{channel.replace('-', ' ').title()} {count}"
        total = sum(self.sends.values())
        return Message(
            id=_short_id(rng, self.account._used),
            action_id=action.id,
            flow_id=flow.id,
            channel=channel,
            name=f"{flow.name} \u2013 {label}" if count % 2 == 0 else f"{label}: {flow.name}, part {count}",
            subject=f'{flow.name}: "step {total}" — ¡hola!',
            created=extra.pop("created", flow.created),
            updated=flow.updated,
            volume=max(5, self.volume // total),
            **extra,
        )

    def experiment(self, kind: str) -> Action:
        """An ab-test (email, or SMS for "ab-test:sms") or a content-experiment (push or WhatsApp).

        Spec: AbTestAction / ContentExperimentAction ``data.main_action`` (a send action) and
        ``data.current_experiment.variations`` (send actions of the same channel), each variation its
        own message. With a pending ended variation, that one is a removed message of the action.
        """
        rng, account = self.rng, self.account
        action_type = "content-experiment" if kind == "content-experiment" else "ab-test"
        channels = EXPERIMENT_CHANNELS[action_type]
        channel = (
            "sms"
            if kind == "ab-test:sms"
            else (channels[0] if action_type == "ab-test" else rng.choice(channels))
        )
        action = self.new_action(action_type)
        action.message = main = self.message(action, channel)
        today = account.local_today()
        started = account.now - timedelta(days=rng.randint(1, 40), minutes=rng.randint(0, 1440))
        if self.ended_variation and channel == "email":
            self.ended_variation = False
            ended_on = today - timedelta(days=rng.randint(2, RECENT_DAYS - 1))
            began = datetime.combine(ended_on - timedelta(days=rng.randint(7, 30)), time(9), UTC)
            self.flow.removed_messages.append(
                self.message(
                    action,
                    channel,
                    created=max(began, self.flow.created),
                    variation_of=main.id,
                    removed="variation-ended",
                    active_until=ended_on,
                )
            )
            started = account.local_midnight(ended_on + timedelta(days=1)) + timedelta(
                hours=rng.randint(0, 20)
            )
        started = min(max(started, self.flow.created), account.now).replace(microsecond=0)
        for _ in range(rng.randint(1, 2)):
            action.variations.append(self.message(action, channel, created=started, variation_of=main.id))
        ids = [m.id for m in action.messages]
        share = 100 // len(ids)
        action.params = {
            "experiment_id": _short_id(rng, account._used, 10),
            "experiment_name": f"Test {rng.choice(('subject lines', 'send times', 'content', 'offers'))}",
            "experiment_status": "live",
            "started": started,
            "winner_metric": rng.choice(("unique-opens", "unique-clicks", "unique-placed-orders"))
            if action_type == "ab-test"
            else rng.choice(("click-rate", "open-rate")),
            "allocations": {i: share + (100 - share * len(ids) if n == 0 else 0) for n, i in enumerate(ids)},
        }
        return action

    def removed_email(self, days_ago: int) -> None:
        """An email deleted from the definition: it sent every day until ``days_ago`` days before today."""
        rng, flow = self.rng, self.flow
        self.action_number += rng.randint(1, 50)
        gone = Action(str(self.action_number), flow.id, "send-email", flow.created, flow.updated, flow.status)
        flow.removed_messages.append(
            self.message(
                gone,
                "email",
                removed="deleted",
                active_until=self.account.local_today() - timedelta(days=days_ago),
            )
        )

    # --- settings of the other action types ----------------------------------------------------------
    def split_params(self, kind: str) -> dict[str, Any]:
        rng = self.rng
        if kind == "conditional-split":
            return {"property": rng.choice(("VIP", "Accepts SMS")), "sample": rng.choice((None, 50))}
        if kind == "trigger-split":
            return {"trigger_id": rng.choice(self.account.metrics).id}
        return {"output_config_id": rng.randint(1, 9), "value": rng.choice(("success", "delivered"))}

    def params(self, kind: str) -> dict[str, Any]:
        """Settings for delays and utility actions (resources renders them in the spec's shapes)."""
        rng, account = self.rng, self.account
        zone = rng.choice(("profile", account.timezone))
        if kind == "time-delay":
            unit = rng.choice(("days", "days", "hours", "minutes"))
            return {
                "unit": unit,
                "value": rng.randint(1, 7 if unit == "days" else 48),
                "timezone": zone,
                "delay_until_time": rng.choice((None, "09:00:00", "18:30:00")),
                "delay_until_weekdays": rng.choice((None, ["monday", "wednesday", "friday"])),
            }
        if kind == "countdown-delay":
            return {
                "unit": rng.choice(("days", "weeks", "months")),
                "value": rng.randint(0, 4),
                "timezone": zone,
            }
        if kind == "target-date":
            days = rng.choice((None, sorted(rng.sample(WEEKDAYS, k=3), key=WEEKDAYS.index)))
            return {
                "timezone": zone,
                "target_time": rng.choice(("08:00:00", "10:30:00")),
                "target_days": days,
            }
        if kind == "update-profile":
            return {"property_key": rng.choice(("Last Flow", "Loyalty tier")), "property_value": "Welcome"}
        if kind == "list-update":
            return {"list_id": rng.choice(account.lists).id, "on_execution": rng.random() < 0.5}
        if kind == "internal-service":
            return {"event_key": rng.choice(("flow_step", "loyalty_sync"))}
        return {}


def _split(rng: random.Random, total: int, low: float, high: float) -> int:
    return int(total * rng.uniform(low, high))


def _counts(rng: random.Random, channel: str, recipients: int) -> Counts:
    """Internally consistent counts for ``recipients`` sends (uniques ≤ totals, opens ≤ delivered...).

    Email bounces and opens; the other channels fail instead, and only SMS counts segments and spend.
    """
    bounced = _split(rng, recipients, 0.0, 0.03) if channel == "email" else 0
    failed = _split(rng, recipients, 0.0, 0.04) if channel != "email" else 0
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
    seed: int, index: int, message_id: str, channel: str, volume: int, ordinal: int, every_day: bool = False
) -> Activity | None:
    rng = rng_for(seed, index, "flow-activity", message_id, ordinal)
    if rng.random() < 0.2 and not every_day:
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


# --- profiles ---------------------------------------------------------------------------------------
# The generator's formats, shared by the generator and the filters that read an index back from a value.
_PHONE_MODULUS = 10_000_000
_PROFILE_VALUE_PATTERNS = {
    "email": re.compile(r"user(\d+)\.[abc]@example\.com"),
    "phone_number": re.compile(r"\+1555(\d{7})"),
    "external_id": re.compile(r"ext-(\d+)"),
}


def _email(index: int, letter: str) -> str:
    return f"user{index}.{letter}@example.com"


def _phone(index: int) -> str:
    return f"+1555{index % _PHONE_MODULUS:07d}"


@dataclass
class _ProfileCore:
    """The first draws of a profile's RNG: enough for the sort and filter fields."""

    rng: random.Random
    created: datetime
    updated: datetime
    first: str
    last: str
    email: str | None
    phone: str | None
    roll: float
    suppression: list[dict[str, str]]


def _profile_head(account: Account, index: int) -> tuple[random.Random, datetime, datetime]:
    """The profile's RNG, ``created`` and ``updated`` (its first draw)."""
    rng = rng_for(account.seed, account.index, "profile", index)
    created = account.profile_created(index)
    updated = min(account.now, created + timedelta(seconds=rng.randint(0, 400 * 86400)))
    return rng, created, updated


def _profile_core(account: Account, index: int) -> _ProfileCore:
    rng, created, updated = _profile_head(account, index)
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    phone_only = rng.random() < 0.08
    email = None if phone_only else _email(index, rng.choice(("a", "b", "c")))
    phone = _phone(index) if phone_only or rng.random() < 0.3 else None
    roll = rng.random()
    suppression = []
    if email and rng.random() < 0.06:
        suppression.append(
            {
                "reason": rng.choice(SUPPRESSION_REASONS),
                "timestamp": iso(created + timedelta(days=rng.randint(1, 300))),
            }
        )
    return _ProfileCore(rng, created, updated, first, last, email, phone, roll, suppression)


def _profile(account: Account, index: int) -> dict[str, Any]:
    core = _profile_core(account, index)
    rng, created, updated, email, phone, roll = (
        core.rng,
        core.created,
        core.updated,
        core.email,
        core.phone,
        core.roll,
    )
    consent = "SUBSCRIBED" if roll < 0.7 else ("NEVER_SUBSCRIBED" if roll < 0.85 else "UNSUBSCRIBED")
    suppression = core.suppression
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
        "first_name": core.first,
        "last_name": core.last,
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


def _apply_quirks(
    attrs: dict[str, Any], quirks: frozenset[str], account: Account, index: int
) -> dict[str, Any]:
    """``attrs`` with the profile's PROFILE_QUIRKS applied (a separate RNG: other values do not move)."""
    if not quirks:
        return attrs
    rng = rng_for(account.seed, account.index, "profile-quirk", index)
    for quirk in sorted(quirks):
        target, _, how = quirk.partition("-")
        if target == "name":
            attrs["first_name"], attrs["last_name"] = odd_text(how, rng), odd_text(how, rng)
        elif quirk in ("subscriptions-missing", "predictive-analytics-missing", "location-missing"):
            attrs.pop(quirk.removesuffix("-missing").replace("-", "_"), None)
        elif quirk == "properties-null":
            attrs["properties"] = None
        elif quirk == "properties-empty":
            attrs["properties"] = {}
        elif quirk == "properties-null-values":
            attrs["properties"] = {
                "First Active": None,
                "last_open": "",
                "Last Click": None,
                "Nickname": None,
            }
        elif quirk == "location-empty":
            attrs["location"] = {}
        elif quirk == "location-all-null":  # latitude/longitude (oneOf string | number) are left out
            attrs["location"] = {
                k: None for k in attrs.get("location") or {} if k not in ("latitude", "longitude")
            }
        elif quirk == "location-text-coordinates" and isinstance(attrs.get("location"), dict):
            location = attrs["location"]
            location["latitude"], location["longitude"] = (
                str(location["latitude"]),
                str(location["longitude"]),
            )
    return attrs


def profile_sort_value(attrs: dict[str, Any], field_name: str) -> str | None:
    """A profile's value for a get_profiles sort/filter field (dotted as in x-klaviyo-filters).

    ``subscriptions.email.marketing.<list>.<key>`` reads the first entry of that list; a profile
    without ``subscriptions`` has no value.
    """
    if not field_name.startswith("subscriptions."):
        return attrs.get(field_name)
    _, _, _, listing, key = field_name.split(".")
    marketing = ((attrs.get("subscriptions") or {}).get("email") or {}).get("marketing") or {}
    entries = marketing.get(listing) or []
    return entries[0].get(key) if entries else None


def _sort_key(field_name: str, value: str | None) -> Any:
    """Epoch seconds of a date-time field's value (other text as is); None stays None."""
    if value is None or not (field_name == "updated" or field_name.endswith(".timestamp")):
        return value
    return int(datetime.fromisoformat(value).timestamp())
