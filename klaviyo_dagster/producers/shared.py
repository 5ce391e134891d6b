"""Fetches shared by the partitions of one account built the same UTC day (a backfill, a catch-up).

A partition's files read two kinds of Klaviyo data:

- **As of the run**: the account (timezone), metrics, flow and campaign lists, flow definitions,
  list and segment names, and the whole audience. Any run of the account on the same UTC day would
  read the same thing, so the first run's answers serve the later runs of that day that share (a
  batch, the automation; the Dagster layer decides): its GET responses are kept by request
  (``SharedReads``), and later runs read its subscribers.csv back from where it was published.
- **A window of days**: reports. Flow series are daily, and a day's numbers do not depend on the
  timeframe asked for, so one flow-series call over the union of the batch's windows serves every
  partition whose window it covers (Klaviyo allows at most 60 days per daily series: the OpenAPI
  spec, ``POST /api/flow-series-reports``, "interval"). Each partition takes its own days from it and
  keeps the groupings active in them, exactly what a call for its own window returns ("groupings
  with no activity are absent", contracts/klaviyo-api.md "Reporting API"). Campaign values are one
  call per metrics window, as before, since each partition's window is its own.

Everything is kept in the ingest database (``storage/fetch_cache.py``), keyed by account, UTC day
and request, so runs in separate processes (or pods) share it, and a new UTC day starts afresh.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from klaviyo_dagster.klaviyo.client import KlaviyoClient
from klaviyo_dagster.producers.reports import ReportRow, query_report
from klaviyo_dagster.producers.window import Window

# GETs whose answer is "as of the run" (the audience is kept whole as a file, never page by page).
SHARED_GET_PATHS = (
    "/api/accounts",
    "/api/metrics",
    "/api/flows",
    "/api/campaigns",
    "/api/lists/",
    "/api/segments/",
)
# Values reports for a fixed timeframe: the same body asked again the same day gets the same answer.
SHARED_VALUES_REPORTS = ("/api/campaign-values-reports", "/api/flow-values-reports")
# OpenAPI spec, POST /api/flow-series-reports: "If daily is used, the timeframe cannot be longer than 60 days."
MAX_DAILY_SERIES_DAYS = 60


class ResponseStore(Protocol):
    """JSON documents kept for one account and UTC day (``storage/fetch_cache.FetchCache``)."""

    def get(self, key: str) -> dict[str, Any] | None: ...

    def put(self, key: str, value: Mapping[str, Any]) -> None: ...

    def keys(self, prefix: str) -> list[str]: ...


class FileStore(Protocol):
    """Where the day's first subscribers.csv is read back from (the ingest store's objects)."""

    def download(self, key: str, destination: Path) -> None: ...


@dataclass(frozen=True)
class SharedFetches:
    """What this partition may take from, and leave for, the account's other partitions of the day.

    ``batch_dates`` are the partition dates of the account requested together with this one (the
    rest of its backfill, queued catch-up runs): a report is asked for over the union of their
    windows, so that one call serves them all.
    """

    responses: ResponseStore
    files: FileStore
    # Where this partition's subscribers.csv will be published (``{uploadId}/subscribers.csv``): a
    # later run of the day reads it back from there instead of scanning the audience again.
    audience_key: str | None = None
    batch_dates: frozenset[date] = field(default_factory=frozenset)

    @property
    def reads(self) -> SharedReads:
        return SharedReads(self.responses)

    def report_window(self, window: Window) -> Window:
        """The window to ask a daily series for: the stretch of batch windows (≤ 60 days) holding
        ``window``, chunked from the oldest date so that every partition of the batch computes the
        same chunks."""
        days = (window.last_day - window.first_day).days + 1
        dates = sorted({*self.batch_dates, window.last_day})
        chunk_first = dates[0] - timedelta(days=days - 1)
        chunk_last = dates[0]
        for day in dates[1:]:
            if (day - chunk_first).days + 1 > MAX_DAILY_SERIES_DAYS:
                if chunk_first <= window.first_day and window.last_day <= chunk_last:
                    break
                chunk_first = day - timedelta(days=days - 1)
            chunk_last = day
        return Window(chunk_first, chunk_last, window.timezone)


@dataclass(frozen=True)
class SharedReads:
    """The client's hook (``KlaviyoClient.read_cache``): as-of-the-run GET answers and values
    reports, kept by request (path, query and body)."""

    responses: ResponseStore

    def lookup(self, method: str, path: str, query: str) -> dict[str, Any] | None:
        key = _key(method, path, query)
        return None if key is None else self.responses.get(key)

    def remember(self, method: str, path: str, query: str, document: Mapping[str, Any]) -> None:
        key = _key(method, path, query)
        if key is not None:
            self.responses.put(key, document)


def _key(method: str, path: str, query: str) -> str | None:
    if method == "GET" and path.startswith(SHARED_GET_PATHS):
        return f"get:{_digest(path + '?' + query)}"
    if method == "POST" and path in SHARED_VALUES_REPORTS:
        return f"post:{_digest(path + '?' + query)}"
    return None


@dataclass(frozen=True)
class Report:
    """A series report's rows and bucket starts, and the window they were asked for."""

    rows: list[ReportRow]
    date_times: list[str]
    window: Window


def series_report(
    client: KlaviyoClient,
    path: str,
    body_for: Callable[[Window], dict[str, Any]],
    window: Window,
    shared: SharedFetches | None,
) -> Report:
    """A daily series report covering ``window``: a kept one of the same request (whatever the
    timeframe, as long as it covers the window), else a new call over the batch's windows.

    The caller takes its own days from it (``Report.window`` may be wider than ``window``).
    """
    if shared is None:
        rows, date_times = query_report(client, path, body_for(window))
        return Report(rows, date_times, window)
    request = f"report:{_digest(path + json.dumps(_without_timeframe(body_for(window)), sort_keys=True))}"
    for key in shared.responses.keys(request):
        covered = _covered_window(key, window)
        kept = shared.responses.get(key) if covered else None
        if covered and kept is not None:
            rows = [ReportRow(r["groupings"], r["statistics"]) for r in kept["results"]]
            return Report(rows, list(kept["date_times"]), covered)
    asked = shared.report_window(window)
    rows, date_times = query_report(client, path, body_for(asked))
    results = [{"groupings": r.groupings, "statistics": r.statistics} for r in rows]
    key = f"{request}:{asked.first_day.isoformat()}:{asked.last_day.isoformat()}:{asked.timezone}"
    shared.responses.put(key, {"results": results, "date_times": date_times})
    return Report(rows, date_times, asked)


def _covered_window(key: str, window: Window) -> Window | None:
    """The window a kept report's key names, if it is in the same zone and covers ``window``."""
    first, last, timezone = key.rsplit(":", 3)[1:]
    kept = Window(date.fromisoformat(first), date.fromisoformat(last), timezone)
    if (
        kept.timezone == window.timezone
        and kept.first_day <= window.first_day
        and window.last_day <= kept.last_day
    ):
        return kept
    return None


def _without_timeframe(body: dict[str, Any]) -> dict[str, Any]:
    attributes = {k: v for k, v in body["data"]["attributes"].items() if k != "timeframe"}
    return {**body, "data": {**body["data"], "attributes": attributes}}


def audience_record_key(options: Iterable[tuple[str, Any]]) -> str:
    """The key of the record of the day's subscribers.csv, for the options that shape it."""
    return f"audience:{_digest(json.dumps(sorted(options), default=str))}"


def source_digest(*modules: ModuleType) -> str:
    """A digest of the source files of ``modules``: it changes with any release that edits them."""
    return _digest("".join(Path(str(module.__file__)).read_text(encoding="utf-8") for module in modules))


def file_digest(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]
