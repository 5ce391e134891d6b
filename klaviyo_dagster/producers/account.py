"""Facts about the Klaviyo account that every producer needs: its timezone and conversion metric."""

from __future__ import annotations

import logging
import os
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from klaviyo_dagster.klaviyo.client import KlaviyoClient
from klaviyo_dagster.klaviyo.errors import KlaviyoConfigError, KlaviyoError
from klaviyo_dagster.klaviyo.jsonapi import attribute

log = logging.getLogger(__name__)

PLACED_ORDER = "Placed Order"
PREFERRED_INTEGRATION = "Shopify"
METRIC_ENV_VAR = "SHOPIFY_PLACED_ORDER_METRIC_ID"


class ConversionMetricNotFound(KlaviyoConfigError):
    """No "Placed Order" metric to attribute conversions to: the reports cannot run."""


def account_timezone(client: KlaviyoClient) -> str:
    """``data[0].attributes.timezone`` of ``GET /api/accounts``; UTC when the call fails or it is missing.

    Klaviyo evaluates report timeframes in this timezone, so the windows are built in it too.
    """
    try:
        accounts = client.get("/api/accounts", {"fields[account]": "timezone"}).data
    except KlaviyoError as exc:
        log.warning("Could not read the account timezone (%s); using UTC", exc)
        return "UTC"
    timezone = attribute(accounts[0], "timezone") if accounts else None
    try:
        ZoneInfo(timezone or "")
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("Account timezone %r is not a known zone; using UTC", timezone)
        return "UTC"
    return timezone


def conversion_metric_id(client: KlaviyoClient, configured: str | None = None) -> str:
    """The metric Klaviyo attributes conversions to in reports: the store's "Placed Order".

    Run config first, then ``SHOPIFY_PLACED_ORDER_METRIC_ID``, then the metric named exactly
    "Placed Order" (no name filter exists, so all metrics are listed), preferring the Shopify one.
    """
    for candidate in (configured, os.environ.get(METRIC_ENV_VAR)):
        if candidate and candidate.strip():
            return candidate.strip()
    params = {"fields[metric]": "name,integration"}
    placed_order = [
        m for m in client.iter_resources("/api/metrics", params) if attribute(m, "name") == PLACED_ORDER
    ]
    placed_order.sort(key=lambda m: attribute(m, "integration.name") != PREFERRED_INTEGRATION)
    if not placed_order:
        raise ConversionMetricNotFound(
            f'No "{PLACED_ORDER}" metric in this Klaviyo account, so reports have no conversion metric. '
            f"Set it in run config (conversion_metric_id), or in the environment ({METRIC_ENV_VAR}), "
            f'or connect the store integration that records "{PLACED_ORDER}".'
        )
    return placed_order[0]["id"]
