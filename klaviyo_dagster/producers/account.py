"""Facts about the Klaviyo account that every producer needs: its timezone and conversion metric."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache
from zoneinfo import available_timezones

from klaviyo_dagster.klaviyo.client import KlaviyoClient
from klaviyo_dagster.klaviyo.errors import KlaviyoAuthError, KlaviyoConfigError, KlaviyoDataError
from klaviyo_dagster.klaviyo.jsonapi import attribute

log = logging.getLogger(__name__)

ACCOUNTS_PATH = "/api/accounts"
PLACED_ORDER = "Placed Order"
PREFERRED_INTEGRATION = "Shopify"


class ConversionMetricNotFound(KlaviyoConfigError):
    """No "Placed Order" metric to attribute conversions to: the reports cannot run."""


@dataclass(frozen=True)
class AccountTimezone:
    """The zone the account's windows are read in, and why it is UTC when it is a fallback."""

    name: str
    fallback_reason: str | None = None  # None: Klaviyo's own answer

    def describe(self) -> str:
        return (
            self.name if self.fallback_reason is None else f"{self.name} (fallback: {self.fallback_reason})"
        )


def account_timezone(client: KlaviyoClient) -> AccountTimezone:
    """``data[0].attributes.timezone`` of ``GET /api/accounts`` (contracts/csv.md, "Common rules").

    Klaviyo evaluates report timeframes in this zone, so a wrong one silently shifts every day. Only
    a permanent refusal (403 with Klaviyo's error document: the key lacks ``accounts:read``) or a
    missing field falls back to UTC, and the result says so. Any other failure raises the
    ``KlaviyoError`` (transient ones were already retried by the client); a zone name this machine
    does not know raises ``KlaviyoDataError`` rather than guess.
    """
    try:
        accounts = client.get(ACCOUNTS_PATH, {"fields[account]": "timezone"}).data
    except KlaviyoAuthError as exc:
        if not _lacks_scope(exc):
            raise
        log.warning("The Klaviyo key may not read the account (%s); reading windows in UTC", exc)
        return AccountTimezone("UTC", "the key lacks the accounts:read scope (403)")
    if not accounts:
        raise KlaviyoDataError(
            "Klaviyo's GET /api/accounts returned no account; cannot tell the account's timezone",
            endpoint=f"GET {ACCOUNTS_PATH}",
        )
    timezone = attribute(accounts[0], "timezone")
    if timezone is None or timezone == "":
        log.warning("Klaviyo's account has no timezone; reading windows in UTC")
        return AccountTimezone("UTC", "GET /api/accounts returned no timezone")
    if timezone not in _known_zones():
        raise KlaviyoDataError(
            f"Klaviyo's account timezone {timezone!r} is not an IANA zone this machine knows; update "
            "the tzdata package (pip install -U tzdata) rather than read the days in another zone",
            endpoint=f"GET {ACCOUNTS_PATH}",
        )
    return AccountTimezone(timezone)


def _lacks_scope(error: KlaviyoAuthError) -> bool:
    """A permanent refusal to read the account: 403 ``permission_denied`` (a missing scope), not
    e.g. a disabled account, which must fail the file."""
    return error.status == 403 and any(detail.code == "permission_denied" for detail in error.errors)


@cache
def _known_zones() -> frozenset[str]:
    """Every IANA zone name (not ``localtime`` or a file path, which ZoneInfo would also accept)."""
    return (frozenset(available_timezones()) | {"UTC"}) - {"localtime", "posixrules"}


def conversion_metric_id(client: KlaviyoClient, configured: str | None = None) -> str:
    """The metric Klaviyo attributes conversions to in reports: the store's "Placed Order".

    ``configured`` first (run config, else ``SHOPIFY_PLACED_ORDER_METRIC_ID``: the caller's), then the
    metric named exactly "Placed Order" (no name filter exists, so all metrics are listed),
    preferring the Shopify one.
    """
    if configured and configured.strip():
        return configured.strip()
    params = {"fields[metric]": "name,integration"}
    placed_order = [
        m for m in client.iter_resources("/api/metrics", params) if attribute(m, "name") == PLACED_ORDER
    ]
    placed_order.sort(key=lambda m: attribute(m, "integration.name") != PREFERRED_INTEGRATION)
    if not placed_order:
        raise ConversionMetricNotFound(
            f'No "{PLACED_ORDER}" metric in this Klaviyo account, so reports have no conversion metric. '
            f"Set it in run config (conversion_metric_id), or in the environment (SHOPIFY_PLACED_ORDER_METRIC_ID), "
            f'or connect the store integration that records "{PLACED_ORDER}".'
        )
    return placed_order[0]["id"]
