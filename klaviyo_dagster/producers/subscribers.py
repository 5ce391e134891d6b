"""subscribers.csv: one row per profile that can receive email marketing, streamed page by page.

Plain Python, no Dagster. Every profile seen is either written or dropped for a reason the contract
names, and the summary's reconciliation counts them. The dashboard parses this file, so the three headers (``required``,
``extended``, ``minimal``) and every column's format are a contract (``csv.md``, "subscribers.csv").

A large account has millions of profiles, so the file is written as a stream: each page's rows go to
``out`` as soon as the page arrives and the page is then dropped. Memory stays flat whatever the
audience size; the only thing kept is the writer's row count and two-row preview.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from itertools import islice
from typing import Any, TextIO

from klaviyo_dagster.klaviyo.client import KlaviyoClient
from klaviyo_dagster.klaviyo.jsonapi import Document, Resource, attribute
from klaviyo_dagster.producers.csvfile import CsvBlock, CsvSummary, CsvWriter
from klaviyo_dagster.producers.options import AudienceSchema, SyncOptions
from klaviyo_dagster.producers.profile_slices import PROFILES_PATH, RowWriter, write_sliced
from klaviyo_dagster.producers.seen import SeenIds

SUBSCRIBER_HEADERS: dict[str, tuple[str, ...]] = {
    "required": (
        "Email",
        "Klaviyo ID",
        "First Name",
        "Last Name",
        "Email Marketing Consent",
        "Email Suppressions",
        "Email Suppressions Timestamp",
        "First Active",
        "Last Active",
        "Profile Created On",
        "Last Open",
        "Last Click",
        "Total Customer Lifetime Value",
        "Predicted Customer Lifetime Value",
        "Predicted Number Of Orders",
        "Average Order Value",
        "Average Days Between Orders",
        "Historic Customer Lifetime Value",
        "Historic Number Of Orders",
        "Expected Date Of Next Order",
    ),
    "extended": (
        "Email",
        "Email Marketing Consent",
        "Created At",
        "Klaviyo ID",
        "First Name",
        "Last Name",
        "Updated At",
        "Last Event Date",
        "External ID",
        "Phone Number",
        "Locale",
        "Organization",
        "Title",
        "Image",
        "Location",
        "Email Subscription Status",
        "Email Subscription Method",
        "Email Subscription Timestamp",
        "SMS Subscription Status",
        "SMS Subscription Method",
        "SMS Subscription Timestamp",
        "Properties JSON",
        "Predictive Analytics JSON",
    ),
    "minimal": (
        "Email",
        "Email Marketing Consent",
        "Created At",
        "Klaviyo ID",
        "First Name",
        "Last Name",
    ),
}

# Schemas with predictive-analytics columns: asking for them moves the scan to 10/s, 150/min, which
# one sequential scan already saturates; the others can go five times faster in parallel slices.
PREDICTIVE_SCHEMAS = frozenset({"required", "extended"})
EMAIL_MARKETING = "subscriptions.email.marketing"
SMS_MARKETING = "subscriptions.sms.marketing"

# The predictive_analytics keys behind the `required` value columns, in header order.
REQUIRED_PREDICTIONS = (
    "total_clv",
    "predicted_clv",
    "predicted_number_of_orders",
    "average_order_value",
    "average_days_between_orders",
    "historic_clv",
    "historic_number_of_orders",
    "expected_date_of_next_order",
)

# Custom profile properties behind First Active / Last Open / Last Click. Stores set them in either
# key style (Klaviyo's own "First Active" or an integration's "first_active"); the first present wins.
FIRST_ACTIVE_KEYS = ("First Active", "first_active")
LAST_OPEN_KEYS = ("Last Open", "last_open")
LAST_CLICK_KEYS = ("Last Click", "last_click")

# Sparse fieldsets: only what each schema's columns and the drop rule read, so pages stay small.
# The additional fields are named here too: JSON:API sparse fieldsets may hide any attribute not
# listed, and every value is in the spec's `fields[profile]` enum (the simulator checks it).
_DROP_RULE_FIELDS = ("email", EMAIL_MARKETING)
PROFILE_FIELDS: dict[str, tuple[str, ...]] = {
    "required": (
        *_DROP_RULE_FIELDS,
        "first_name",
        "last_name",
        "created",
        "last_event_date",
        "properties",
        *(f"predictive_analytics.{key}" for key in REQUIRED_PREDICTIONS),
    ),
    "extended": (
        *_DROP_RULE_FIELDS,
        SMS_MARKETING,
        "first_name",
        "last_name",
        "created",
        "updated",
        "last_event_date",
        "external_id",
        "phone_number",
        "locale",
        "organization",
        "title",
        "image",
        "location",
        "properties",
        "predictive_analytics",
    ),
    "minimal": (*_DROP_RULE_FIELDS, "first_name", "last_name", "created"),
}


def write_subscribers_csv(client: KlaviyoClient, options: SyncOptions, out: TextIO) -> CsvSummary:
    """Write subscribers.csv to ``out`` and return its row count and preview.

    Fast mode (``options.effective()``) and ``audience_max_pages=0`` give a header-only file without
    any Klaviyo call. A Klaviyo error on any page propagates: a partial audience must never pass for
    a complete one, so no summary is returned and the caller discards what was written.
    """
    options = options.effective()
    schema = options.audience_schema
    writer = CsvWriter(out, SUBSCRIBER_HEADERS[schema], final_newline=True)
    to_row = ROW_MAPPERS[schema]
    with SeenIds() as seen:

        def write(profile: Resource, rows: CsvWriter | CsvBlock) -> None:
            rows.tally["profiles_seen"] += 1
            profile_id = profile.get("id")
            if profile_id is not None and not seen.add(str(profile_id)):
                rows.tally["repeated"] += 1  # Klaviyo's paging handed it out again: written once
                return
            _write_profile(profile, rows, to_row)

        _scan(client, options, write, writer)
    writer.close()
    return writer.summary(_reconciliation(writer))


def _scan(client: KlaviyoClient, options: SyncOptions, write: RowWriter, writer: CsvWriter) -> None:
    schema = options.audience_schema
    if options.audience_max_pages is None and schema not in PREDICTIVE_SCHEMAS:
        # Latency, not the rate limit, bounds a one-call-at-a-time scan here: fetch slices in parallel.
        write_sliced(client, profile_query(schema, options.audience_page_size), write, writer)
    elif options.audience_max_pages != 0:
        for page in _profile_pages(client, options):
            for profile in page.data:
                write(profile, writer)


def _write_profile(
    profile: Resource, rows: CsvWriter | CsvBlock, to_row: Callable[[Resource], list[Any]]
) -> None:
    reason = drop_reason(profile)
    if reason is not None:
        rows.tally[f"dropped_{reason}"] += 1
        return
    if not has_marketing_subscription(profile):
        rows.tally["kept_subscriptions_missing"] += 1
    rows.write_row(to_row(profile))


def _reconciliation(writer: CsvWriter) -> dict[str, Any]:
    """Profiles seen, written, dropped by reason and repeated by Klaviyo's paging (contracts/csv.md,
    "subscribers.csv"); seen must equal written plus dropped plus repeated, and every drop reason
    must be one the contract allows."""
    tally = writer.tally
    return {
        "profiles_seen": tally["profiles_seen"],
        "profiles_written": writer.rows,
        "profiles_dropped": {
            reason: tally[f"dropped_{reason}"] for reason in DROP_REASONS if tally[f"dropped_{reason}"]
        },
        "profiles_kept_subscriptions_missing": tally["kept_subscriptions_missing"],
        "profiles_repeated": tally["repeated"],
    }


def profile_query(schema: AudienceSchema, page_size: int) -> dict[str, str]:
    """The first page's query. ``predictive_analytics`` only where columns need it: asking for it
    moves the endpoint from 75/s 750/min to 10/s 150/min, five times slower for a full scan."""
    additional = "subscriptions,predictive_analytics" if schema in PREDICTIVE_SCHEMAS else "subscriptions"
    return {
        "page[size]": str(page_size),
        "additional-fields[profile]": additional,
        "fields[profile]": ",".join(PROFILE_FIELDS[schema]),
    }


def _profile_pages(client: KlaviyoClient, options: SyncOptions) -> Iterator[Document]:
    """The profile pages, at most ``audience_max_pages`` of them (None = until Klaviyo's last page).

    ``islice`` stops without asking the client for the page after the limit, so no extra call is made.
    """
    pages = client.iter_pages(
        PROFILES_PATH, profile_query(options.audience_schema, options.audience_page_size)
    )
    return islice(pages, options.audience_max_pages)


# Why a profile is left out of subscribers.csv (contracts/csv.md, "subscribers.csv"), in the order
# the rules are applied; a profile dropped for any other reason would be a bug.
DROP_REASONS = ("no_email", "suppressed", "cannot_receive")


def drop_reason(profile: Resource) -> str | None:
    """Why the profile is not a subscriber, or None to keep it.

    Dropped: no email; a non-empty email suppression list; ``can_receive_email_marketing`` false.
    ``NEVER_SUBSCRIBED`` profiles are kept (Klaviyo can still email them). A profile whose
    ``subscriptions`` (or its ``email.marketing`` part) is missing from the response is kept: we
    cannot tell, so we do not hide it; it is counted apart.
    """
    if not attribute(profile, "email"):
        return "no_email"
    if attribute(profile, f"{EMAIL_MARKETING}.suppression"):
        return "suppressed"
    if attribute(profile, f"{EMAIL_MARKETING}.can_receive_email_marketing") is False:
        return "cannot_receive"
    return None


def has_marketing_subscription(profile: Resource) -> bool:
    """Whether Klaviyo said if the profile can receive email marketing (the object was returned)."""
    return attribute(profile, f"{EMAIL_MARKETING}.can_receive_email_marketing") is not None


def can_receive_email_marketing(profile: Resource) -> bool:
    """The drop rule as a yes/no: True when ``drop_reason`` keeps the profile."""
    return drop_reason(profile) is None


# --- one mapping function per schema ----------------------------------------------------------------


def required_row(profile: Resource) -> list[Any]:
    """The ``required`` schema's 20 columns."""
    properties = attribute(profile, "properties", {})
    suppressions = attribute(profile, f"{EMAIL_MARKETING}.suppression", [])
    predictions = attribute(profile, "predictive_analytics", {})
    return [
        attribute(profile, "email"),
        profile.get("id"),
        attribute(profile, "first_name"),
        attribute(profile, "last_name"),
        attribute(profile, f"{EMAIL_MARKETING}.consent"),
        suppression_reasons(suppressions),
        latest_suppression_timestamp(suppressions),
        custom_property(properties, FIRST_ACTIVE_KEYS),
        attribute(profile, "last_event_date"),
        attribute(profile, "created"),
        custom_property(properties, LAST_OPEN_KEYS),
        custom_property(properties, LAST_CLICK_KEYS),
        *(_scalar(_get(predictions, key)) for key in REQUIRED_PREDICTIONS),
    ]


def extended_row(profile: Resource) -> list[Any]:
    """The ``extended`` schema's 23 columns: raw attributes, both marketing subscriptions, and the
    nested objects as compact JSON."""
    return [
        *minimal_row(profile),  # the extended header starts with the minimal one
        attribute(profile, "updated"),
        attribute(profile, "last_event_date"),
        attribute(profile, "external_id"),
        attribute(profile, "phone_number"),
        attribute(profile, "locale"),
        attribute(profile, "organization"),
        attribute(profile, "title"),
        attribute(profile, "image"),
        compact_json(attribute(profile, "location")),
        attribute(profile, f"{EMAIL_MARKETING}.consent"),
        attribute(profile, f"{EMAIL_MARKETING}.method"),
        attribute(profile, f"{EMAIL_MARKETING}.consent_timestamp"),
        attribute(profile, f"{SMS_MARKETING}.consent"),
        attribute(profile, f"{SMS_MARKETING}.method"),
        attribute(profile, f"{SMS_MARKETING}.consent_timestamp"),
        compact_json(attribute(profile, "properties")),
        compact_json(attribute(profile, "predictive_analytics")),
    ]


def minimal_row(profile: Resource) -> list[Any]:
    """The ``minimal`` schema's 6 columns."""
    return [
        attribute(profile, "email"),
        attribute(profile, f"{EMAIL_MARKETING}.consent"),
        attribute(profile, "created"),
        profile.get("id"),
        attribute(profile, "first_name"),
        attribute(profile, "last_name"),
    ]


ROW_MAPPERS: dict[str, Callable[[Resource], list[Any]]] = {
    "required": required_row,
    "extended": extended_row,
    "minimal": minimal_row,
}


# --- column helpers ---------------------------------------------------------------------------------


def suppression_reasons(suppressions: Any) -> str:
    """``["HARD_BOUNCE"]``: the reasons upper-cased, as a compact JSON array; ``[]`` when none.

    The dashboard's subscriber parser reads ``[]`` as "no suppression, can receive email" and an
    empty field as "cannot" (contracts/csv.md, "subscribers.csv"), so "none" is always ``[]``.
    """
    entries = suppressions if isinstance(suppressions, list) else []
    reasons = [str(entry.get("reason") or "").upper() for entry in entries if isinstance(entry, dict)]
    return json.dumps(reasons, separators=(",", ":"), ensure_ascii=False)


def latest_suppression_timestamp(suppressions: Any) -> str | None:
    """The most recent suppression's timestamp, exactly as Klaviyo wrote it.

    Compared as instants, not as text, so timestamps with different offsets order correctly.
    """
    entries = suppressions if isinstance(suppressions, list) else []
    stamps = [entry.get("timestamp") for entry in entries if isinstance(entry, dict)]
    present = [stamp for stamp in stamps if stamp]
    return max(present, key=_instant_key, default=None)


def custom_property(properties: dict[str, Any], keys: Sequence[str]) -> Any:
    """The first of ``keys`` with a non-empty value in the profile's custom properties, else None."""
    for key in keys:
        value = _scalar(properties.get(key)) if isinstance(properties, dict) else None
        if value is not None:
            return value
    return None


def compact_json(value: Any) -> str | None:
    """Compact JSON (no spaces, non-ASCII kept) of an object or list; None (empty field) when the
    value is missing or empty, as the contract wants for every empty value."""
    if value is None or value == {} or value == []:
        return None
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _scalar(value: Any) -> Any:
    """A cell for a scalar column: "" becomes None (empty), an object or list its compact JSON."""
    if isinstance(value, dict | list):
        return compact_json(value)
    return None if value == "" else value


def _get(mapping: Any, key: str) -> Any:
    return mapping.get(key) if isinstance(mapping, dict) else None


def _instant_key(stamp: Any) -> tuple[int, float, str]:
    """Sort key: parseable ISO timestamps by instant (naive ones read as UTC), after any unparseable text."""
    try:
        moment = datetime.fromisoformat(str(stamp))
    except ValueError:
        return (0, 0.0, str(stamp))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (1, moment.timestamp(), str(stamp))
