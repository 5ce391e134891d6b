"""A year's backfill of one account over simulated days: no run fails on the daily report quota.

    .venv/bin/python benchmarks/year_backfill.py [--dates 365] [--time-scale 0.0005] [--profiles 2000]

Klaviyo allows 225 report calls a day per account and endpoint (contracts/klaviyo-api.md, "Rate
limits"); a year of dates needs one campaign-values call per date, so the backfill must spread over
two Klaviyo days. The simulator (its own process) runs at ``--time-scale`` (a Klaviyo day lasts
86,400 x scale real seconds) and enforces the daily quota; every date is its own Dagster run, one
after another, as the queue runs one account's backfill, with the dates still to come waiting in the
instance like a catch-up's queued runs (``defs/batch.py``). The runs use the local store, so the
report call ledger is its SQLite file.

It prints runs ok and failed, report calls per endpoint, the most report calls of one endpoint in
one daily window as Klaviyo counts it (a fixed window that opens with the first call and lasts a
Klaviyo day; contracts/klaviyo-api.md, "Rate limits") and, stricter than Klaviyo, in any sliding
Klaviyo day (up to twice the limit is allowed across the boundary of two fixed windows). Each call
is dated by its row in the report call ledger (``klaviyo_report_calls`` in the local store's SQLite:
when it was sent), not by its run: a run that asks for the next dates' values ahead of time makes
those calls long before it ends.
Then 429s, how long runs waited for the quota, and Klaviyo days elapsed. The last line is
``failed_runs=<n> max_report_calls_per_day=<n> 429s=<n> klaviyo_days=<x>`` (the fixed-window figure).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import os
import sqlite3
import tempfile
import time
import uuid
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path

import dagster as dg
from nightly import ACCOUNT, ANCHOR, SEED
from simulator_process import simulator_process

from klaviyo_dagster.definitions import pipeline_resources
from klaviyo_dagster.defs.assets import INGEST_ASSETS
from klaviyo_dagster.defs.partitions import ACCOUNTS_PARTITIONS_NAME, partition_key
from klaviyo_dagster.defs.resources import IngestStoreResource, klaviyo_resource_from_env
from klaviyo_dagster.defs.snapshot import snapshot
from klaviyo_dagster.sim import DEFAULT_API_KEY

REPORT_OPERATIONS = ("query_flow_series", "query_campaign_values")
DAY_SECONDS = 86_400


def queue(instance: dg.DagsterInstance, dates: list[date]) -> dict[date, str]:
    """A waiting run per date, as the queue holds a backfill's or catch-up's runs of one account."""
    waiting = {}
    for day in dates:
        run = instance.add_run(
            dg.DagsterRun(
                job_name="klaviyo_ingest",
                run_id=str(uuid.uuid4()),
                status=dg.DagsterRunStatus.NOT_STARTED,
                tags={
                    "dagster/partition/klaviyo_account": ACCOUNT,
                    "dagster/partition/date": day.isoformat(),
                },
            )
        )
        waiting[day] = run.run_id
    return waiting


def most_in_a_day(moments: list[float], day_seconds: float) -> int:
    """The most calls in any window of one Klaviyo day (sliding)."""
    moments = sorted(moments)
    return max((bisect.bisect_right(moments, t + day_seconds) - i for i, t in enumerate(moments)), default=0)


def ledger_calls(database: Path) -> list[tuple[float, str]]:
    """(epoch seconds sent, report operation) of every call the report call ledger recorded."""
    with contextlib.closing(sqlite3.connect(database)) as connection:
        rows = connection.execute(
            "select sent_at, rate_limit_group from klaviyo_report_calls where account_id = ?", (ACCOUNT,)
        ).fetchall()
    return [(datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp(), group) for at, group in rows]


def most_in_a_daily_window(moments: list[float], day_seconds: float) -> int:
    """The most calls in one of Klaviyo's fixed daily windows: each opens with the first call after
    the previous one closed, and closes a Klaviyo day later."""
    most, opened, count = 0, None, 0
    for moment in sorted(moments):
        if opened is None or moment >= opened + day_seconds:
            opened, count = moment, 0
        count += 1
        most = max(most, count)
    return most


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dates", type=int, default=365)
    parser.add_argument("--time-scale", type=float, default=0.0005, help="real seconds per Klaviyo second")
    parser.add_argument("--profiles", type=int, default=2000)
    parser.add_argument("--flows", type=int, default=10)
    args = parser.parse_args()
    dates = [ANCHOR - timedelta(days=n) for n in range(1, args.dates + 1)]
    options = {"profiles": args.profiles, "flows": args.flows, "seed": SEED, "anchor": ANCHOR.isoformat()}
    with (
        simulator_process(**options, time_scale=args.time_scale) as (url, _),
        tempfile.TemporaryDirectory() as data,
    ):
        os.environ.update(
            KLAVIYO_ENABLE="true",
            KLAVIYO_BASE_URL=url,
            KLAVIYO_API_KEY=DEFAULT_API_KEY,
            KLAVIYO_ACCOUNT_ID=ACCOUNT,
        )
        resources = pipeline_resources(
            klaviyo_resource_from_env(time_scale=args.time_scale),
            IngestStoreResource(data_dir=str(Path(data))),
        )
        outcomes: Counter[str] = Counter()
        calls: list[tuple[float, str]] = []  # (real seconds since start, report operation) per call
        throttled = 0
        waited = 0.0
        started = time.monotonic()
        with dg.DagsterInstance.ephemeral() as instance:
            instance.add_dynamic_partitions(ACCOUNTS_PARTITIONS_NAME, [ACCOUNT])
            waiting = queue(instance, dates)
            for n, day in enumerate(dates, 1):
                run = instance.get_run_by_id(waiting[day])
                assert run is not None  # nosec B101  # added above
                instance.report_run_canceled(run)  # its turn: no longer waiting
                result = dg.materialize(
                    [*INGEST_ASSETS, snapshot],
                    partition_key=partition_key(ACCOUNT, day),
                    instance=instance,
                    resources=resources,
                    raise_on_error=False,
                )
                # Each call counted when its run ends: a run that waited for the quota made its
                # call at the end, and every other run lasts about a second.
                at = time.monotonic() - started
                outcomes["ok" if result.success else "failed"] += 1
                for event in result.get_asset_materialization_events():
                    metadata = event.materialization.metadata
                    by_group = (
                        metadata["klaviyo_calls_by_group"].value
                        if "klaviyo_calls_by_group" in metadata
                        else {}
                    )
                    for group, stats in by_group.items():  # type: ignore[union-attr]
                        throttled += int(stats.get("throttled", 0))
                        if group in REPORT_OPERATIONS:
                            calls += [(at, group)] * int(stats.get("calls", 0))
                            waited += float(stats.get("paced_seconds", 0))
                if n % 25 == 0:
                    elapsed = (time.monotonic() - started) / args.time_scale / DAY_SECONDS
                    print(f"{n} dates, {outcomes['failed']} failed, {elapsed:.2f} Klaviyo days", flush=True)
        wall = time.monotonic() - started
        sent = ledger_calls(Path(data) / "ingest.sqlite3")
    day = DAY_SECONDS * args.time_scale
    per_operation = Counter(group for _, group in calls)
    if sent:  # each call's own time; the run-end dating above is the fallback
        calls = sent
    by_operation = [[t for t, g in calls if g == op] for op in per_operation]
    most = max((most_in_a_daily_window(moments, day) for moments in by_operation), default=0)
    sliding = max((most_in_a_day(moments, day) for moments in by_operation), default=0)
    print(f"runs ok {outcomes['ok']}, failed {outcomes['failed']}; report calls {dict(per_operation)}")
    print(
        f"most report calls of one endpoint in one of Klaviyo's daily windows: {most} (limit 225); "
        f"in any sliding Klaviyo day: {sliding}; 429s {throttled}"
    )
    print(f"report calls waited {waited / args.time_scale / 3600:.1f} Klaviyo hours in all")
    klaviyo_days = wall / args.time_scale / DAY_SECONDS
    print(f"wall {wall:.0f} s real = {klaviyo_days:.2f} Klaviyo days")
    print(
        f"failed_runs={outcomes['failed']} max_report_calls_per_day={most} 429s={throttled} "
        f"klaviyo_days={klaviyo_days:.2f}"
    )


if __name__ == "__main__":
    main()
