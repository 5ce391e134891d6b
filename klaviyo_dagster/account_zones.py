"""Each account's timezone, kept in the ingest database where the schedules read it cheaply.

The zone comes from Klaviyo (``GET /api/accounts``, contracts/csv.md "Common rules"). It is read
once when the accounts sensor finds an account, and again by every live run (which reads it anyway
to build its window), and written to ``account_timezones``. The schedule and the catch-up sensor read
the whole table in one query per evaluation and never call Klaviyo. An account without a row yet is
treated as being where a day ends last (``readiness.UNKNOWN_ZONE``): later than needed, never early.
So is an account whose recorded zone is not a timezone (``"Mars/Olympus"``, ``""``, a trailing blank):
a warning names it, and every other account goes on as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from klaviyo_dagster.accounts import AccountDirectory
from klaviyo_dagster.klaviyo.client import KlaviyoClient
from klaviyo_dagster.klaviyo.errors import KlaviyoDisabledError, KlaviyoError
from klaviyo_dagster.producers.account import AccountTimezone, account_timezone
from klaviyo_dagster.readiness import UNKNOWN_ZONE, AccountZone, is_zone
from klaviyo_dagster.storage.tables import TIMEZONE_FROM_DISCOVERY, IngestTables, RecordedTimezone

# A sensor evaluation has a time limit (60 s by default): look up a few accounts per evaluation and
# stop early when the budget is spent; the rest are looked up on the next evaluation.
DISCOVERY_MAX_ACCOUNTS = 5
DISCOVERY_BUDGET_SECONDS = 30.0

log = logging.getLogger(__name__)


def zone_of(recorded: Mapping[str, RecordedTimezone], account_id: str | None) -> AccountZone:
    """The recorded zone of the account, else the assumed latest zone (also when the recorded value
    is not a timezone: then with a warning naming the account)."""
    found = recorded.get(account_id) if account_id else None
    if found is None:
        return UNKNOWN_ZONE
    if not is_zone(found.timezone):
        log.warning(
            "the recorded timezone of account %s, %r, is not a valid timezone: assuming %s",
            account_id,
            found.timezone,
            UNKNOWN_ZONE.name,
        )
        return AccountZone(UNKNOWN_ZONE.name, assumed=True, invalid=str(found.timezone))
    return AccountZone(found.timezone)


def zones_of(tables: IngestTables | None, account_ids: Iterable[str]) -> dict[str, AccountZone]:
    """The zone of each account, from one read of the table."""
    recorded = tables.account_timezones() if tables is not None else {}
    return {account: zone_of(recorded, account) for account in account_ids}


@dataclass(frozen=True)
class Discovery:
    """What looking up one account's timezone gave: the zone recorded, or why there is none."""

    account_id: str
    timezone: AccountTimezone | None
    error: str | None = None
    disabled: bool = False  # the Klaviyo source is switched off (KLAVIYO_ENABLE)

    def describe(self) -> str:
        if self.timezone is not None:
            return f"{self.account_id}: {self.timezone.describe()}"
        return f"{self.account_id}: not read ({self.error})"


def discover_timezones(
    account_ids: Iterable[str],
    directory: AccountDirectory,
    tables: IngestTables,
    client_for: Callable[[str], KlaviyoClient],
    *,
    max_accounts: int = DISCOVERY_MAX_ACCOUNTS,
    budget_seconds: float = DISCOVERY_BUDGET_SECONDS,
    after: str | None = None,
) -> list[Discovery]:
    """Reads from Klaviyo and records the zone of each account that has none recorded yet (or one
    that is not a timezone).

    One ``GET /api/accounts`` per account, at most ``max_accounts`` of them and none once
    ``budget_seconds`` have passed. An account whose key or Klaviyo fails is reported, not raised:
    the next evaluation tries again, and its runs read the zone themselves and record it.

    The accounts are taken in turn: sorted, starting after ``after`` (the last one the previous
    evaluation tried, kept by the caller) and wrapping round, so a few accounts that always fail
    (a broken key) cannot keep the others from ever being tried.
    """
    recorded = tables.account_timezones()
    unknown = sorted(  # a recorded value that is not a timezone is looked up again
        account
        for account in set(account_ids)
        if account not in recorded or not is_zone(recorded[account].timezone)
    )
    if after is not None:
        unknown = [a for a in unknown if a > after] + [a for a in unknown if a <= after]
    missing = unknown[:max_accounts]
    deadline = time.monotonic() + budget_seconds
    found: list[Discovery] = []
    for account in missing:
        if time.monotonic() > deadline:
            break
        found.append(_discover(account, directory, tables, client_for))
        if found[-1].disabled:  # KLAVIYO_ENABLE is off: every other lookup would fail the same way
            break
    return found


def _discover(
    account: str,
    directory: AccountDirectory,
    tables: IngestTables,
    client_for: Callable[[str], KlaviyoClient],
) -> Discovery:
    try:
        with client_for(directory.api_key_for(account)) as client:
            timezone = account_timezone(client)
    except KlaviyoError as exc:  # KlaviyoConfigError (no key, disabled) included; never holds the key
        return Discovery(
            account, None, f"{type(exc).__name__}: {exc}", disabled=isinstance(exc, KlaviyoDisabledError)
        )
    tables.record_account_timezone(account, timezone.name, timezone.fallback_reason, TIMEZONE_FROM_DISCOVERY)
    return Discovery(account, timezone)
