"""Reconciliation: what Klaviyo reported is what we wrote (contracts/csv.md, "Reconciliation").

Each producer's summary records what Klaviyo returned and what the file left out, by reason. This
module checks a *written file* against that record, reading the file back rather than trusting the
writer's own counters:
- flows.csv and campaigns.csv: the file's delivered and revenue columns add up to the report's
  totals over the rows the file writes, and every left-out report row (or campaign) has a reason the
  contract allows;
- subscribers.csv: the file holds as many records as were written, every profile seen was written
  or dropped, and every drop has a reason the contract allows.

Plain Python, no Dagster: ``defs/assets.py`` turns a ``Verdict`` into a blocking asset check.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from klaviyo_dagster.producers.campaigns import ALLOWED_CAMPAIGNS_LEFT_OUT, ALLOWED_REPORT_ROWS_LEFT_OUT
from klaviyo_dagster.producers.csvfile import READ_FIELD_SIZE_LIMIT
from klaviyo_dagster.producers.flows import ALLOWED_LEFT_OUT as ALLOWED_FLOW_ROWS_LEFT_OUT
from klaviyo_dagster.producers.subscribers import DROP_REASONS

# Revenue is summed from the report and from the file in different orders: allow float noise only.
_REVENUE_TOLERANCE = 0.005


@dataclass(frozen=True)
class Verdict:
    """Whether a file reconciles with what Klaviyo returned, the problems found, and the figures."""

    passed: bool
    problems: tuple[str, ...] = ()
    figures: Mapping[str, Any] = field(default_factory=dict)
    # Allowed but worth a person's look (the run logs them as warnings), e.g. profiles kept without
    # their subscriptions object.
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        return "reconciles with Klaviyo's report" if self.passed else "; ".join(self.problems)


def reconcile_flows(path: Path, reconciliation: Mapping[str, Any]) -> Verdict:
    """flows.csv against its flow-series report: Delivered and Revenue totals, left-out reasons."""
    verdict = _reconcile_report_totals(
        path,
        reconciliation,
        delivered_column="Delivered",
        allowed_left_out=ALLOWED_FLOW_ROWS_LEFT_OUT,
    )
    removed = reconciliation.get("messages_not_in_definition") or 0
    notes = (
        (
            f"{removed} email message(s) reported in the window are no longer in their flow's "
            "definition (removed, or an A/B variation ended): written under their id",
        )
        if removed
        else ()
    )
    return Verdict(verdict.passed, verdict.problems, verdict.figures, notes)


def reconcile_campaigns(path: Path, reconciliation: Mapping[str, Any]) -> Verdict:
    """campaigns.csv against its values reports and campaign list: totals and left-out reasons."""
    verdict = _reconcile_report_totals(
        path,
        reconciliation,
        delivered_column="Successful Deliveries",
        allowed_left_out=ALLOWED_REPORT_ROWS_LEFT_OUT,
    )
    problems = list(verdict.problems)
    problems += _unexpected_reasons(
        "campaigns left out", reconciliation.get("campaigns_left_out", {}), ALLOWED_CAMPAIGNS_LEFT_OUT
    )
    return Verdict(not problems, tuple(problems), verdict.figures)


def reconcile_subscribers(
    path: Path, reconciliation: Mapping[str, Any], records: int | None = None
) -> Verdict:
    """subscribers.csv against the profiles seen: records in the file, written + dropped = seen.

    ``records`` is the file's record count when it is already known, for a copy whose SHA-256 is that
    of a file which reconciled (the audience a later run reads back, ``producers/shared.py``); by
    default the records are counted in the file.
    """
    records = _record_count(path) if records is None else records
    seen = reconciliation.get("profiles_seen", 0)
    written = reconciliation.get("profiles_written", 0)
    dropped = reconciliation.get("profiles_dropped", {})
    repeated = reconciliation.get("profiles_repeated", 0)
    problems = []
    if records != written:
        problems.append(f"the file holds {records} records but {written} were written")
    accounted = written + sum(dropped.values()) + repeated
    if seen != accounted:
        problems.append(
            f"{seen} profiles seen but {written} written, {sum(dropped.values())} dropped and "
            f"{repeated} repeated: {seen - accounted} unaccounted for"
        )
    problems += _unexpected_reasons("profiles dropped", dropped, DROP_REASONS)
    figures = {
        "file_records": records,
        "profiles_seen": seen,
        "profiles_written": written,
        "profiles_repeated": repeated,
        **dropped,
    }
    doubtful = reconciliation.get("profiles_kept_subscriptions_missing") or 0
    notes = (
        (
            f"{doubtful} profile(s) came without their subscriptions object: kept, with an empty "
            "consent, as Klaviyo did not say whether they can receive email",
        )
        if doubtful
        else ()
    )
    return Verdict(not problems, tuple(problems), figures, notes)


def _reconcile_report_totals(
    path: Path,
    reconciliation: Mapping[str, Any],
    *,
    delivered_column: str,
    allowed_left_out: frozenset[str] | tuple[str, ...],
) -> Verdict:
    file_delivered = file_revenue = 0.0
    for record in _records(path):
        file_delivered += float(record[delivered_column] or 0)
        file_revenue += float(record["Revenue"] or 0)
    report_delivered = float(reconciliation.get("report_delivered", 0))
    report_revenue = float(reconciliation.get("report_revenue", 0))
    problems = []
    if file_delivered != report_delivered:
        problems.append(
            f"the report's delivered total is {_exact(report_delivered)} but the file's "
            f"{delivered_column} adds up to {_exact(file_delivered)}"
        )
    if not math.isclose(file_revenue, report_revenue, abs_tol=_REVENUE_TOLERANCE):
        problems.append(
            f"the report's revenue total is {report_revenue:.2f} but the file's Revenue adds up to "
            f"{file_revenue:.2f}"
        )
    outside = reconciliation.get("report_days_outside_window") or []
    if outside:
        problems.append(f"the report returned days outside the window: {', '.join(outside)}")
    problems += _unexpected_reasons(
        "report rows left out", reconciliation.get("report_rows_left_out", {}), allowed_left_out
    )
    figures = {
        "report_delivered": report_delivered,
        "file_delivered": file_delivered,
        "report_revenue": round(report_revenue, 2),
        "file_revenue": round(file_revenue, 2),
    }
    return Verdict(not problems, tuple(problems), figures)


def _exact(number: float) -> str:
    """A total as a person reads it, every digit kept: ``1,234,567`` (not ``1.23457e+06``)."""
    return f"{number:,.0f}" if number.is_integer() else f"{number:,}"


def _unexpected_reasons(
    what: str, counts: Mapping[str, int], allowed: frozenset[str] | tuple[str, ...]
) -> list[str]:
    unexpected = {reason: count for reason, count in counts.items() if reason not in allowed and count}
    if not unexpected:
        return []
    listed = ", ".join(f"{count} for {reason!r}" for reason, count in sorted(unexpected.items()))
    return [f"{what} for a reason the contract does not allow: {listed}"]


def _record_count(path: Path) -> int:
    """The file's data records as ``_records`` reads them (the header and blank lines not counted),
    streamed without building a dict per record."""
    csv.field_size_limit(READ_FIELD_SIZE_LIMIT)
    with path.open(encoding="utf-8", newline="") as text:
        return max(sum(1 for record in csv.reader(text) if record) - 1, 0)


def _records(path: Path) -> Iterator[dict[str, str]]:
    """The file's data records, streamed (a subscribers file can be hundreds of MB)."""
    csv.field_size_limit(READ_FIELD_SIZE_LIMIT)
    with path.open(encoding="utf-8", newline="") as text:
        yield from csv.DictReader(text)
