"""A 30-date backfill of one account through a real Dagster deployment, against the contracts' floor.

    .venv/bin/python benchmarks/backfill.py [--size small|mid|large] [--dates 30] [--target-seconds S] [--busy-core]

What it measures: the simulator (its own process; seed and anchor as nightly.py) serves one account
of the chosen size; ``deployment.py`` starts the production deployment (deploy/dagster.yaml on a
fresh Postgres, webserver, daemon) and launches, through GraphQL as the UI does, an asset backfill
of flows_csv, campaigns_csv, subscribers_csv and snapshot over the ``--dates`` newest complete dates
(ending on anchor - 1) with the default run config (SyncConfig: 7-day window, last_30_days metrics).

It prints, as nightly.py does: per rate-limit group the calls made (summed from the
materializations' ``klaviyo_calls_by_group`` metadata in the instance), the minimum the contracts
allow for the whole range, 429s and seconds waited; then failed runs, wall time against the floor
(the slowest group's minimum calls / steady rate), per-run peak RSS and CPU seconds (from /proc),
and the client's CPU seconds per Klaviyo call (run CPU / calls).

Wall time runs from the backfill's launch to the end of its last run: then every date's files and
snapshot are published. Dagster marks the backfill complete at its backfill daemon's next pass (the
daemon loops every 30 s, a constant of Dagster's), 0 to 30 s later. That moment (as this script's
2 s poll sees it; until 2026-12-01 the wall time ended there) is printed too, with the ratio it
gives, and so is the first run's RUN_START: the same loop picks up a new backfill 0 to 30 s after
its launch, then the run waits in the queue and its worker starts, all part of the wall time.

The minimum for a range: the audience scanned once; accounts, metrics, flows and each live flow's
definition, the email campaign list (100 a page) fetched once; flow series ceil(days covered by
the union of the windows / 60) (a daily interval spans at most 60 days per call); campaign values
one call per partition (each partition's metrics window ends on its own date) times
ceil(campaigns the partition lists / 100); each list and segment a listed campaign targets, once.

Times are Klaviyo seconds (real / time scale). By default the simulator keeps Klaviyo's own pace
(time scale 1: the mid store's floor is 1,000 s, about 17 minutes), because what a backfill adds to
the floor is each later date's run, which takes real seconds (process start, Dagster's events, its
files) whatever the compression. ``--target-seconds`` compresses Klaviyo's time so the floor takes
that many real seconds, for a quicker look; the run overhead then counts for more.

The last lines also give, for the runs after the first, the median real seconds from the previous
run's end to this one's launch (the queue), to its RUN_START (process start, code load), to its
first step, in its steps (and each step) and to its end.

The summary line is ``wall/floor=<r> rss_mb=<n> calls/min_calls=<r> 429s=<n> failed_runs=<n>``:
wall time over the floor, the largest worker process's peak RSS, calls made over the minimum,
429s the client saw, runs that did not succeed.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from deployment import (
    RunFigures,
    WorkerRecord,
    add_group_stats,
    deployment,
    print_run_phases,
    print_run_table,
    print_unclaimed,
    run_phases,
)
from nightly import ACCOUNT, ANCHOR, SEED, busy_core, profile_group, steady_per_second
from simulator_process import simulator_process

from klaviyo_dagster.defs.assets import INGEST_ASSET_KEYS
from klaviyo_dagster.defs.partitions import partition_key
from klaviyo_dagster.defs.snapshot import SNAPSHOT
from klaviyo_dagster.producers.options import SyncOptions
from klaviyo_dagster.producers.window import Window
from klaviyo_dagster.sim import DEFAULT_API_KEY
from klaviyo_dagster.sim.data import Account, Campaign

SIZES = {
    "small": {"profiles": 20_000, "flows": 10},
    "mid": {"profiles": 250_000, "flows": 40},
    "large": {"profiles": 2_000_000, "flows": 150},
}
ASSETS = [*INGEST_ASSET_KEYS, SNAPSHOT]
DEFAULTS = SyncOptions()  # the run config a backfill launched without config gets
TIMEOUT_SECONDS = 4 * 3600


@dataclass(frozen=True)
class GroupFigures:
    calls: int
    min_calls: int
    throttled: int
    waited: float


def backfill_dates(count: int) -> list[date]:
    """The ``count`` newest complete dates: the account's today is the anchor, so they end on anchor - 1."""
    newest = ANCHOR - timedelta(days=1)
    return [newest - timedelta(days=offset) for offset in range(count - 1, -1, -1)]


def sent_in(account: Account, window: Window) -> list[Campaign]:
    """Email campaigns a partition's campaigns.csv lists: sent, with a send (else scheduled) time on
    a window day."""
    listed = []
    for campaign in account.campaigns:
        moment = campaign.send_time or campaign.scheduled_at
        if campaign.channel == "email" and campaign.sent and moment and window.contains(moment):
            listed.append(campaign)
    return listed


def minimum_calls(account: Account, dates: Sequence[date], schema: str) -> dict[str, int]:
    """What the contracts need at the least for the whole range, from the account's own data."""
    live = [f for f in account.flows if f.status == "live" and not f.archived]
    windows = [Window.ending_on(day, DEFAULTS.days, account.timezone) for day in dates]
    covered = {day for window in windows for day in window.days}
    per_partition = [sent_in(account, window) for window in windows]
    audiences = {a for sent in per_partition for c in sent for a in c.included}
    return {
        "get_accounts": 1,
        "get_metrics": math.ceil(len(account.metrics) / 200),
        "get_flows": max(1, math.ceil(len(live) / 50)),
        "get_flow": len(live),
        "query_flow_series": math.ceil(len(covered) / 60),
        "get_campaigns": math.ceil(len([c for c in account.campaigns if c.channel == "email"]) / 100),
        "query_campaign_values": sum(math.ceil(len(sent) / 100) for sent in per_partition),
        "get_list": len([a for a in audiences if a in {g.id for g in account.lists}]),
        "get_segment": len([a for a in audiences if a in {g.id for g in account.segments}]),
        profile_group(schema): math.ceil(account.profile_count / 100),
    }


def floor_seconds(minimum: dict[str, int]) -> float:
    return max(calls / steady_per_second(group) for group, calls in minimum.items())


def group_figures(figures: Sequence[RunFigures], minimum: dict[str, int]) -> dict[str, GroupFigures]:
    total: dict[str, dict[str, float]] = {}
    for figure in figures:
        add_group_stats(total, figure.calls_by_group)
    result = {}
    for group in sorted(set(total) | set(minimum)):
        stats = total.get(group, {})
        waited = sum(
            stats.get(name, 0) for name in ("paced_seconds", "retry_after_seconds", "backoff_seconds")
        )
        result[group] = GroupFigures(
            int(stats.get("calls", 0)), minimum.get(group, 0), int(stats.get("throttled", 0)), waited
        )
    return result


def print_groups(groups: dict[str, GroupFigures], time_scale: float) -> None:
    print(f"{'group':<36}{'calls':>8}{'min':>8}{'429s':>6}{'waited s':>10}")
    for group, g in groups.items():
        print(f"{group:<36}{g.calls:>8}{g.min_calls:>8}{g.throttled:>6}{g.waited / time_scale:>10.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=sorted(SIZES), default="mid")
    parser.add_argument("--dates", type=int, default=30, help="newest complete dates to backfill")
    parser.add_argument(
        "--latency-ms", type=float, default=150, help="Klaviyo's per-call latency to simulate"
    )
    parser.add_argument(
        "--target-seconds",
        type=float,
        default=None,
        help="real seconds the floor should take (default: the floor itself, Klaviyo's own pace; each "
        "run's start-up is real time, so compressing Klaviyo's time inflates its share)",
    )
    parser.add_argument("--timeout", type=float, default=TIMEOUT_SECONDS, help="real seconds to wait at most")
    parser.add_argument(
        "--busy-core",
        action="store_true",
        help="keep one core busy meanwhile, as other work on the machine would",
    )
    args = parser.parse_args()
    size = SIZES[args.size]
    dates = backfill_dates(args.dates)
    account = Account(SEED, 0, size["profiles"], size["flows"], ANCHOR, "America/New_York")
    schema = DEFAULTS.audience_schema
    minimum = minimum_calls(account, dates, schema)
    floor = floor_seconds(minimum)
    time_scale = (args.target_seconds or floor) / floor
    print(
        f"{args.size}: {size['profiles']:,} profiles, {len(account.flows)} flows; {len(dates)} dates "
        f"{dates[0]}..{dates[-1]} (window {DEFAULTS.days} days, metrics {DEFAULTS.timeframe_key}); "
        f"latency {args.latency_ms:.0f} ms; time scale {time_scale:.5f}; floor {floor:,.0f} s (Klaviyo time)",
        flush=True,
    )
    options = {
        "profiles": size["profiles"],
        "flows": size["flows"],
        "seed": SEED,
        "anchor": ANCHOR.isoformat(),
    }
    latency = round(args.latency_ms * time_scale)
    with (
        busy_core(args.busy_core),
        simulator_process(**options, time_scale=time_scale, latency_ms=latency) as (
            base_url,
            _,
        ),
    ):
        run_env = {
            "KLAVIYO_ENABLE": "true",
            "KLAVIYO_BASE_URL": base_url,
            "KLAVIYO_API_KEY": DEFAULT_API_KEY,
            "KLAVIYO_ACCOUNT_ID": ACCOUNT,
            "KLAVIYO_TIME_SCALE": repr(time_scale),
        }
        with deployment(run_env, accounts=[ACCOUNT]) as dep:
            keys = [str(partition_key(ACCOUNT, day)) for day in dates]
            launched_at = time.time()  # epoch seconds, as Dagster's run start and end times
            backfill_id = dep.launch_backfill(keys, ASSETS)
            runs = dep.wait_for_backfill(backfill_id, args.timeout)
            seen_complete = time.time() - launched_at
            wall = max((run.end or launched_at for run in runs), default=launched_at) - launched_at
            first_start = min((run.start or launched_at for run in runs), default=launched_at) - launched_at
            figures, unclaimed = dep.run_figures(runs)
            phases = run_phases(dep.instance, runs)
    report(figures, unclaimed, minimum, floor, wall, time_scale, len(keys))
    print(
        f"backfill (real s after its launch): first run's RUN_START {first_start:.0f}, last run's end "
        f"{wall:.0f}, seen complete in Dagster {seen_complete:.0f} (polled every 2 s; wall/floor to then "
        f"{seen_complete / time_scale / floor:.2f}, as this benchmark measured before 2026-12-01)"
    )
    print_run_phases(phases)


def report(
    figures: Sequence[RunFigures],
    unclaimed: Sequence[WorkerRecord],
    minimum: dict[str, int],
    floor: float,
    wall: float,
    time_scale: float,
    partitions: int,
) -> None:
    groups = group_figures(figures, minimum)
    print_groups(groups, time_scale)
    print_run_table(figures, time_scale)
    print_unclaimed(unclaimed)
    failed = [f for f in figures if f.run.status != "SUCCESS"]
    calls = sum(g.calls for g in groups.values())
    min_calls = sum(g.min_calls for g in groups.values())
    throttled = sum(g.throttled for g in groups.values())
    rss = max((f.peak_rss_mb for f in figures), default=0.0)
    cpu = sum(f.cpu_seconds for f in figures)
    missing = sum(1 for f in figures if SNAPSHOT.to_user_string() not in f.materialized)
    wall_k = wall / time_scale
    print(
        f"runs: {len(figures)} for {partitions} partitions, {len(failed)} not successful, "
        f"{missing} without a snapshot"
    )
    print(
        f"wall {wall_k:,.0f} s vs floor {floor:,.0f} s ({wall:,.0f} s real); CPU {cpu:.1f} s (real, all runs; "
        f"max {max((f.cpu_seconds for f in figures), default=0):.1f} s per run); peak RSS {rss:.0f} MB"
    )
    print(f"client CPU per Klaviyo call: {1000 * cpu / max(calls, 1):.2f} ms ({cpu:.1f} s / {calls} calls)")
    print(
        f"wall/floor={wall_k / floor:.2f} rss_mb={rss:.0f} calls/min_calls={calls / max(min_calls, 1):.2f} "
        f"429s={throttled} failed_runs={len(failed)}"
    )


if __name__ == "__main__":
    main()
