"""One night of many accounts of different sizes through a real Dagster deployment.

    .venv/bin/python benchmarks/many_accounts.py [--accounts 20] [--scale 1.0] [--target-seconds 120]

What it measures: ``--accounts`` simulated accounts (2,000 to 250,000 profiles times ``--scale``,
sizes spread geometrically, 10 to 40 flows) served by one simulator process (each account its own
key and its own rate limits, as Klaviyo's are per account), seeded as the dashboard seeds them:
one ``account_integrations`` row per account with its key encrypted under INTEGRATIONS_ENC_KEY, in
the local ingest store. ``deployment.py`` starts the production deployment (deploy/dagster.yaml:
QueuedRunCoordinator, at most 8 runs and one per account, Postgres storage, DefaultRunLauncher) and
launches each account's newest complete date (anchor - 1) with default run config.

How: one asset backfill of that date over all accounts (one GraphQL mutation, as the UI would), not
20 RunRequests. The backfill daemon puts all the runs in the queue at once, which is the queue state
the schedule's tick leaves at night (one request per account whose day became complete), so the
coordinator's limits decide the order exactly as they would then; and it needs no code in the code
location (RunRequests come from a schedule or sensor). The difference: backfill runs carry the tag
``dagster/partition/klaviyo_account`` (limited to one per account by deploy/dagster.yaml's second limit)
instead of ``klaviyo/account``.

While it runs, every second the STARTING/STARTED runs are read through GraphQL: the per-account
limit is broken if two of them ever have the same account (with one date per account that can only
happen through a retry or a duplicate launch; ``--dates 2`` queues two runs per account and tests
the limit for real). Peak RSS and CPU seconds per run come from /proc (deployment.py's sampler).

It prints a table per run (account size, status, Klaviyo seconds, calls, peak RSS, CPU), runs
ok/failed, partitions materialized, the limit check, the most runs seen at once, wall time (real,
and in Klaviyo seconds against the largest account's floor). The last line is
``runs_ok=<n> runs_failed=<n> per_account_limit_broken=<yes|no> max_active=<n> rss_mb_max=<n>
rss_mb_median=<n> cpu_s_max=<r> cpu_s_median=<r> wall_s=<real seconds> wall/floor=<r>``.
"""

from __future__ import annotations

import argparse
import math
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
from deployment import (
    ACTIVE_STATUSES,
    RUNS_QUERY,
    GraphQL,
    RunFigures,
    RunState,
    WorkerRecord,
    deployment,
    expect,
    median,
    print_unclaimed,
    run_state,
)
from multi_account_simulator import account_key, multi_account_simulator
from nightly import ANCHOR, SEED, profile_group, steady_per_second

from klaviyo_dagster.accounts import encrypt_api_key
from klaviyo_dagster.defs.assets import INGEST_ASSET_KEYS
from klaviyo_dagster.defs.partitions import partition_key
from klaviyo_dagster.defs.resources import IngestStoreResource
from klaviyo_dagster.defs.snapshot import SNAPSHOT
from klaviyo_dagster.producers.options import SyncOptions

ASSETS = [*INGEST_ASSET_KEYS, SNAPSHOT]
ENCRYPTION_KEY = "many-accounts-benchmark-key"
SMALLEST, LARGEST = 2_000, 250_000
FEWEST_FLOWS, MOST_FLOWS = 10, 40
TIMEOUT_SECONDS = 3 * 3600


@dataclass(frozen=True)
class SimAccount:
    index: int
    account_id: str
    profiles: int
    flows: int


def accounts_for(count: int, scale: float) -> list[SimAccount]:
    """``count`` accounts from SMALLEST to LARGEST profiles (times ``scale``), geometrically spread."""
    accounts = []
    for index in range(count):
        position = index / max(count - 1, 1)
        profiles = max(100, round(SMALLEST * (LARGEST / SMALLEST) ** position * scale, -2))
        flows = round(FEWEST_FLOWS + (MOST_FLOWS - FEWEST_FLOWS) * position)
        account_id = str(uuid.UUID(f"0bead5a1-0000-4000-8000-{index + 1:012d}"))
        accounts.append(SimAccount(index, account_id, int(profiles), flows))
    return accounts


def account_floor(account: SimAccount) -> float:
    """The slowest group of one account's night: its audience scan (the reports need 1 call each)."""
    group = profile_group(SyncOptions().audience_schema)
    return math.ceil(account.profiles / 100) / steady_per_second(group)


def seed_integrations(accounts: Sequence[SimAccount]) -> Callable[[Path], None]:
    """The dashboard's rows: each account with its simulated key, encrypted."""

    def seed(data_dir: Path) -> None:
        tables = IngestStoreResource(data_dir=str(data_dir)).get_store().tables
        for account in accounts:
            tables.ensure_account(account.account_id, f"bench {account.index:02d}")
            with tables._transaction() as tx:  # as benchmarks/soak.py seeds them
                tx.execute(
                    "insert into account_integrations (id, account_id, provider, encrypted_api_key) "
                    "values (?, ?, 'klaviyo', ?)",
                    (
                        str(uuid.uuid4()),
                        account.account_id,
                        encrypt_api_key(account_key(account.index), ENCRYPTION_KEY),
                    ),
                )

    return seed


@dataclass
class LimitWatcher:
    """Reads the STARTING/STARTED runs every second; remembers any account with two at once."""

    graphql: GraphQL
    interval: float = 1.0
    samples: int = 0
    max_active: int = 0
    broken: list[tuple[float, str, list[str]]] = field(default_factory=list)
    errors: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="limit-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.graphql.close()

    def _loop(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            try:
                self.check(active_runs(self.graphql), time.monotonic() - started)
            except Exception:  # a slow webserver: count it, the next sample goes on
                self.errors += 1
            self._stop.wait(self.interval)

    def check(self, runs: Sequence[RunState], elapsed: float) -> None:
        self.samples += 1
        self.max_active = max(self.max_active, len(runs))
        per_account = Counter(run.account for run in runs)
        for account, count in per_account.items():
            if count > 1:
                ids = [run.run_id for run in runs if run.account == account]
                self.broken.append((elapsed, account, ids))


def active_runs(graphql: GraphQL) -> list[RunState]:
    result = graphql(RUNS_QUERY, {"filter": {"statuses": list(ACTIVE_STATUSES)}})["runsOrError"]
    return [run_state(raw) for raw in expect(result, "Runs")["results"]]


def materialized_partitions(instance: dg.DagsterInstance, keys: Sequence[str]) -> int:
    found = instance.get_latest_storage_id_by_partition(
        SNAPSHOT, dg.DagsterEventType.ASSET_MATERIALIZATION, partitions=set(keys)
    )
    return len(found)


def print_table(figures: Sequence[RunFigures], sizes: dict[str, SimAccount], time_scale: float) -> None:
    print(f"{'account':<10}{'profiles':>10}{'flows':>6}{'date':>12}{'status':>9}{'wall s':>8}", end="")
    print(f"{'calls':>7}{'rss MB':>8}{'steps MB':>9}{'cpu s':>8}")
    for figure in sorted(figures, key=lambda f: sizes[f.run.account].index if f.run.account in sizes else -1):
        account = sizes.get(figure.run.account)
        worker = figure.run_worker
        steps = max((w.peak_rss_mb for w in figure.workers if w.role == "step worker"), default=0.0)
        day = figure.run.tags.get("dagster/partition/date", "")
        name = f"#{account.index:02d}" if account else figure.run.account[-6:]
        print(
            f"{name:<10}{account.profiles if account else 0:>10,}{account.flows if account else 0:>6}{day:>12}"
            f"{figure.run.status:>9}{figure.wall_seconds / time_scale:>8,.0f}{figure.calls:>7}"
            f"{worker.peak_rss_mb if worker else 0:>8.0f}{steps:>9.0f}{figure.cpu_seconds:>8.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every account's profiles")
    parser.add_argument("--dates", type=int, default=1, help="newest complete dates per account")
    parser.add_argument("--latency-ms", type=float, default=150, help="Klaviyo's per-call latency")
    parser.add_argument(
        "--target-seconds", type=float, default=120, help="real seconds the largest account's floor takes"
    )
    parser.add_argument("--timeout", type=float, default=TIMEOUT_SECONDS, help="real seconds to wait at most")
    args = parser.parse_args()
    for name in ("KLAVIYO_ACCOUNT_ID", "KLAVIYO_API_KEY", "KLAVIYO_API_KEY_PRIVATE", "SUPABASE_URL"):
        os.environ.pop(name, None)  # the accounts come from account_integrations only
    accounts = accounts_for(args.accounts, args.scale)
    floor = max(account_floor(a) for a in accounts)
    time_scale = args.target_seconds / floor
    dates = [ANCHOR - timedelta(days=offset) for offset in range(args.dates, 0, -1)]
    print(
        f"{len(accounts)} accounts, {accounts[0].profiles:,} to {accounts[-1].profiles:,} profiles "
        f"({sum(a.profiles for a in accounts):,} in all); dates {dates[0]}..{dates[-1]}; latency "
        f"{args.latency_ms:.0f} ms; time scale {time_scale:.5f}; largest account's floor {floor:,.0f} s "
        "(Klaviyo time)",
        flush=True,
    )
    run(args, accounts, dates, floor, time_scale)


def run(
    args: argparse.Namespace, accounts: list[SimAccount], dates: list[date], floor: float, time_scale: float
) -> None:
    sizes = [(a.profiles, a.flows) for a in accounts]
    latency = round(args.latency_ms * time_scale)
    with multi_account_simulator(sizes, SEED, ANCHOR, time_scale, latency) as base_url:
        run_env = {
            "KLAVIYO_ENABLE": "true",
            "KLAVIYO_BASE_URL": base_url,
            "INTEGRATIONS_ENC_KEY": ENCRYPTION_KEY,
            "KLAVIYO_TIME_SCALE": repr(time_scale),
        }
        ids = [a.account_id for a in accounts]
        with deployment(run_env, accounts=ids, seed_store=seed_integrations(accounts)) as dep:
            watcher = LimitWatcher(GraphQL(dep.graphql.url))
            keys = [str(partition_key(account, day)) for day in dates for account in ids]
            started = time.monotonic()
            watcher.start()
            try:
                backfill_id = dep.launch_backfill(keys, ASSETS)
                runs = dep.wait_for_backfill(backfill_id, args.timeout)
            finally:
                watcher.stop()
            wall = time.monotonic() - started
            figures, unclaimed = dep.run_figures(runs)
            materialized = materialized_partitions(dep.instance, keys)
    report(
        figures,
        unclaimed,
        {a.account_id: a for a in accounts},
        watcher,
        materialized,
        len(keys),
        wall,
        floor,
        time_scale,
    )


def report(
    figures: Sequence[RunFigures],
    unclaimed: Sequence[WorkerRecord],
    sizes: dict[str, SimAccount],
    watcher: LimitWatcher,
    materialized: int,
    partitions: int,
    wall: float,
    floor: float,
    time_scale: float,
) -> None:
    print_table(figures, sizes, time_scale)
    print_unclaimed(unclaimed)
    ok = sum(1 for f in figures if f.run.status == "SUCCESS")
    failed = len(figures) - ok
    rss = [f.peak_rss_mb for f in figures]
    cpu = [f.cpu_seconds for f in figures]
    calls = sum(f.calls for f in figures)
    print(f"runs: {ok} ok, {failed} failed; partitions materialized (snapshot): {materialized}/{partitions}")
    broken = "yes" if watcher.broken else "no"
    print(
        f"per-account limit broken: {broken} ({watcher.samples} samples, 1 s apart; at most "
        f"{watcher.max_active} runs STARTING/STARTED at once; {watcher.errors} samples failed)"
    )
    for elapsed, account, run_ids in watcher.broken[:10]:
        print(f"  at {elapsed:.0f} s: account {account} had runs {', '.join(run_ids)}")
    print(
        f"peak RSS per run: max {max(rss, default=0):.0f} MB, median {median(rss):.0f} MB; CPU per run: "
        f"max {max(cpu, default=0):.1f} s, median {median(cpu):.1f} s, all {sum(cpu):.1f} s "
        f"({1000 * sum(cpu) / max(calls, 1):.2f} ms per Klaviyo call, {calls} calls)"
    )
    wall_k = wall / time_scale
    print(f"wall {wall:,.0f} s real = {wall_k:,.0f} s Klaviyo vs the largest account's floor {floor:,.0f} s")
    print(
        f"runs_ok={ok} runs_failed={failed} per_account_limit_broken={broken} max_active={watcher.max_active} "
        f"rss_mb_max={max(rss, default=0):.0f} rss_mb_median={median(rss):.0f} "
        f"cpu_s_max={max(cpu, default=0):.1f} cpu_s_median={median(cpu):.1f} wall_s={wall:.0f} "
        f"wall/floor={wall_k / floor:.2f}"
    )


if __name__ == "__main__":
    main()
