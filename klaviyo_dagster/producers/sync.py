"""One sync of one account for one partition date: the three files, built the same way everywhere.

The Dagster assets, the dry-run job and the ``dry-run`` command line all go through ``SyncSession``,
so a dry run builds exactly what a live run would. The account facts (timezone, conversion metric)
are looked up once per session and only by the files that need them.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any, TextIO

from klaviyo_dagster.klaviyo.client import KlaviyoClient
from klaviyo_dagster.klaviyo.errors import KlaviyoDataError, KlaviyoError
from klaviyo_dagster.producers import csvfile, profile_slices, seen, subscribers
from klaviyo_dagster.producers.account import AccountTimezone, account_timezone, conversion_metric_id
from klaviyo_dagster.producers.campaigns import (
    CAMPAIGNS_HEADER,
    prefetch_campaign_values,
    write_campaigns_csv,
)
from klaviyo_dagster.producers.csvfile import CsvSummary, csv_line, read_preview
from klaviyo_dagster.producers.flows import FLOWS_HEADER, write_flows_csv
from klaviyo_dagster.producers.options import SyncOptions
from klaviyo_dagster.producers.reconcile import (
    Verdict,
    reconcile_campaigns,
    reconcile_flows,
    reconcile_subscribers,
)
from klaviyo_dagster.producers.shared import SharedFetches, audience_record_key, file_digest, source_digest
from klaviyo_dagster.producers.subscribers import SUBSCRIBER_HEADERS, write_subscribers_csv
from klaviyo_dagster.producers.window import Window
from klaviyo_dagster.storage.objects import CAMPAIGNS_OBJECT, FLOWS_OBJECT, SUBSCRIBERS_OBJECT

log = logging.getLogger(__name__)

# The code that writes subscribers.csv: a day's audience written by another release (deployed since
# the day's first run) is not read back, its record key differs.
AUDIENCE_WRITER = source_digest(subscribers, csvfile, profile_slices, seen)


@dataclass(frozen=True)
class CsvFile:
    """One of the three files: its name, its failure name (kept from the old orchestrator), its writer."""

    kind: str  # flows | campaigns | subscribers
    filename: str
    failure: str
    write: Callable[[SyncSession, TextIO], CsvSummary]
    header: Callable[[SyncOptions], tuple[str, ...]]
    reconcile: Callable[[Path, Mapping[str, Any]], Verdict]  # the written file against its summary


class SyncFailed(Exception):
    """A file could not be built; ``name`` is FlowSyncFailed, CampaignSyncFailed or AudienceSyncFailed."""

    def __init__(self, file: CsvFile, cause: KlaviyoError) -> None:
        super().__init__(f"{file.failure}: {cause}")
        self.name = file.failure
        self.cause = cause

    def details(self) -> dict[str, Any]:
        return self.cause.as_dict()


class SyncSession:
    """Builds the files of one (account, partition date) with one Klaviyo client."""

    def __init__(
        self,
        client: KlaviyoClient,
        options: SyncOptions,
        partition_date: date,
        shared: SharedFetches | None = None,
    ) -> None:
        """``shared``: what the account's other partitions of the day fetched, and may reuse
        (``producers/shared.py``); None asks Klaviyo for everything."""
        self.client = client
        self.options = options.effective()
        self.partition_date = partition_date
        self.shared = shared
        self.audience_reused = False  # subscribers.csv came from the day's first run of the account
        self._audience_record: tuple[str, dict[str, Any]] | None = None  # kept once it reconciles
        if shared is not None:
            client.read_cache = shared.reads

    @cached_property
    def timezone(self) -> AccountTimezone:
        return account_timezone(self.client)

    @cached_property
    def window(self) -> Window:
        return Window.ending_on(self.partition_date, self.options.days, self.timezone.name)

    @cached_property
    def metrics_window(self) -> Window:
        return Window.ending_on(self.partition_date, self.options.campaign_metrics_days, self.timezone.name)

    @cached_property
    def metric_id(self) -> str:
        return conversion_metric_id(self.client, self.options.conversion_metric_id)

    def write(self, file: CsvFile, out: TextIO) -> CsvSummary:
        """Writes ``file`` to ``out``; every failure becomes SyncFailed, named for the file.

        Klaviyo's failures carry Klaviyo's details. Anything else a producer raises (a response
        shape no rule foresaw) is wrapped too, as a ``KlaviyoDataError`` naming the exception, so
        no raw exception reaches Dagster and the file's failure name still says which file it was.
        An ``OSError`` is this machine's (a data folder that is a file, a full disk), not Klaviyo's,
        and propagates as it is.
        """
        try:
            return file.write(self, out)
        except KlaviyoError as exc:
            raise SyncFailed(file, exc) from exc
        except OSError:
            raise
        except Exception as exc:
            unexpected = KlaviyoDataError(
                f"a Klaviyo response had a shape {file.filename} cannot be built from "
                f"({type(exc).__name__}: {exc}); nothing was written. If it persists, report it with "
                "this run's logs"
            )
            raise SyncFailed(file, unexpected) from exc

    def write_to_temp(self, file: CsvFile) -> tuple[Path, CsvSummary]:
        """Builds ``file`` into a new temporary file (streamed, never held in memory); caller owns it.

        The files go to one folder of their own (``work_folder()``), where files a killed run left
        behind (a partial audience holds email addresses) are removed once ``STALE_AFTER`` old.
        """
        if file is SUBSCRIBERS and self.shared is not None:
            return self._shared_audience(file, self.shared)
        built = self._build(file)
        if file is CAMPAIGNS and self.shared is not None and self.shared.batch_dates:
            self._prefetch_campaign_values(self.shared)
        return built

    def reconcile(self, file: CsvFile, path: Path, summary: CsvSummary) -> Verdict:
        """``file`` as written at ``path`` against what Klaviyo reported (``summary``). An audience
        read back is the first run's file byte for byte (SHA-256, ``_shared_audience``), which
        reconciled when that run built it: its records are taken from the record, not counted again.
        An audience built here is recorded for the day's later runs only once it reconciles."""
        if file is SUBSCRIBERS and self.audience_reused:
            return reconcile_subscribers(path, summary.reconciliation, records=summary.rows)
        verdict = file.reconcile(path, summary.reconciliation)
        if file is SUBSCRIBERS and verdict.passed and self.shared is not None and self._audience_record:
            self.shared.responses.put(*self._audience_record)
        return verdict

    def _prefetch_campaign_values(self, shared: SharedFetches) -> None:
        """The values reports of the batch's next dates (up to ``PREFETCH_DATES``), made while this
        run's audience scan keeps it busy anyway, and only while the daily quota has room: this run
        never waits for another date's call, and a failure is left for that date's own run."""
        dates = sorted(shared.batch_dates, key=lambda d: abs((d - self.partition_date).days))[:PREFETCH_DATES]
        windows = [
            (
                Window.ending_on(day, self.options.days, self.timezone.name),
                Window.ending_on(day, self.options.campaign_metrics_days, self.timezone.name),
            )
            for day in dates
        ]
        audience = audience_record_key(self.audience_options().items())
        try:
            with self.client.without_daily_waits():
                # Until this run's audience is built (its record written): after that, the calls
                # would only delay this run, while each date's own run makes them as cheaply.
                prefetch_campaign_values(
                    self.client, windows, self.metric_id, lambda: shared.responses.get(audience) is None
                )
        except KlaviyoError as exc:  # the date's own run asks again, and waits if it must
            log.info("values reports of the batch's other dates not all asked ahead: %s", exc)

    def _shared_audience(self, file: CsvFile, shared: SharedFetches) -> tuple[Path, CsvSummary]:
        """subscribers.csv as the account's first run of the day published it, else built here.

        The record (kept by ``reconcile`` once the file reconciles) names where the file is published
        and its SHA-256: a file that is missing (its run failed before publishing) or changed since (a
        rerun of that date) is built again.
        """
        key = audience_record_key(self.audience_options().items())
        kept = shared.responses.get(key)
        if kept is not None:
            path = work_folder() / f"{uuid.uuid4().hex}-{file.filename}"
            try:
                shared.files.download(kept["object"], path)
                if file_digest(path) == kept["sha256"]:
                    self.audience_reused = True
                    return path, CsvSummary(kept["rows"], read_preview(path), kept["reconciliation"])
            except Exception as exc:  # any storage failure: building the file again is always right
                log.info(
                    "the day's first %s is not readable (%s); building it", file.filename, type(exc).__name__
                )
            path.unlink(missing_ok=True)
        path, summary = self._build(file)
        if shared.audience_key is not None:
            record = {  # counts only: the preview (email addresses) is read back from the file
                "object": shared.audience_key,
                "sha256": file_digest(path),
                "rows": summary.rows,
                "reconciliation": dict(summary.reconciliation),
            }
            self._audience_record = (key, record)
        return path, summary

    def _build(self, file: CsvFile) -> tuple[Path, CsvSummary]:
        folder = work_folder()
        remove_stale_files(folder, older_than=STALE_AFTER)
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", newline="", suffix=f"-{file.filename}", delete=False, dir=folder
        ) as out:
            path = Path(out.name)
            try:
                return path, self.write(file, out)
            except BaseException:
                path.unlink(missing_ok=True)
                raise

    def audience_options(self) -> dict[str, object]:
        """What subscribers.csv depends on (the audience is as of the run, not of the date): its
        options and the code that writes it."""
        keys = ("audience_schema", "audience_page_size", "audience_max_pages")
        return {**{key: getattr(self.options, key) for key in keys}, "writer": AUDIENCE_WRITER}


# Values reports a run asks ahead for its batch: at 2 a minute, 29 take about as long as a mid
# store's audience scan (contracts/klaviyo-api.md, "Rate limits"), which the run waits for anyway.
PREFETCH_DATES = 29

# A file being built is never this old: the longest sync is hours, not a day.
STALE_AFTER = timedelta(hours=24)


def work_folder() -> Path:
    """``<system temp>/klaviyo-dagster-files``, private to this user (0700)."""
    folder = Path(tempfile.gettempdir()) / "klaviyo-dagster-files"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def remove_stale_files(folder: Path, older_than: timedelta) -> list[Path]:
    """Removes files in ``folder`` last modified more than ``older_than`` ago; returns them."""
    cutoff = time.time() - older_than.total_seconds()
    removed = []
    for path in folder.glob("*.csv"):
        with contextlib.suppress(FileNotFoundError):  # another run removed it first
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed.append(path)
    return removed


FLOWS = CsvFile(
    "flows",
    FLOWS_OBJECT,
    "FlowSyncFailed",
    lambda s, out: write_flows_csv(s.client, s.options, s.window, s.metric_id, out, s.shared),
    lambda options: FLOWS_HEADER,
    reconcile_flows,
)
CAMPAIGNS = CsvFile(
    "campaigns",
    CAMPAIGNS_OBJECT,
    "CampaignSyncFailed",
    lambda s, out: write_campaigns_csv(s.client, s.options, s.window, s.metrics_window, s.metric_id, out),
    lambda options: CAMPAIGNS_HEADER,
    reconcile_campaigns,
)
SUBSCRIBERS = CsvFile(
    "subscribers",
    SUBSCRIBERS_OBJECT,
    "AudienceSyncFailed",
    lambda s, out: write_subscribers_csv(s.client, s.options, out),
    lambda options: SUBSCRIBER_HEADERS[options.audience_schema],
    reconcile_subscribers,
)
FILES = (FLOWS, CAMPAIGNS, SUBSCRIBERS)


def dry_run(client: KlaviyoClient, options: SyncOptions, partition_date: date) -> dict[str, Any]:
    """Builds the three files exactly as live, writes nothing, and reports the contract's JSON.

    ``{"mode": "dry-run", "rows": {...}, "previews": {...}, "ms": N}``. In fast mode campaigns and
    subscribers are skipped: rows 0 and a header-only preview.
    """
    started = time.monotonic()
    session = SyncSession(client, options, partition_date)
    rows: dict[str, int] = {}
    previews: dict[str, list[str]] = {}
    for file in FILES:
        if session.options.fast and file is not FLOWS:
            summary = CsvSummary(0, (csv_line(file.header(session.options)),))
        else:
            path, summary = session.write_to_temp(file)
            path.unlink()
        rows[file.kind] = summary.rows
        previews[file.kind] = list(summary.preview)
    return {
        "mode": "dry-run",
        "rows": rows,
        "previews": previews,
        "ms": round((time.monotonic() - started) * 1000),
    }
