"""Soak: several accounts x a week of partitions against the simulator with faults on at a low rate.

Every partition (three files + snapshot) runs through ``dg.materialize`` on the local store, as the
nightly job would; a partition that fails is relaunched (like Dagster's run retries) up to
``--relaunches`` times. Prints partitions run, Klaviyo retries absorbed by the client, relaunches,
failures left, and peak RSS and open file handles at start and end (they must stay flat).

    .venv/bin/python benchmarks/soak.py --accounts 3 --days 7 --error-rate 0.02 --latency-ms 5
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg

from klaviyo_dagster.accounts import encrypt_api_key
from klaviyo_dagster.definitions import pipeline_resources
from klaviyo_dagster.defs.assets import INGEST_ASSETS
from klaviyo_dagster.defs.partitions import ACCOUNTS_PARTITIONS_NAME, partition_key
from klaviyo_dagster.defs.resources import (
    IngestStoreResource,
    klaviyo_resource_from_env,
)
from klaviyo_dagster.defs.snapshot import (
    snapshot,
)
from klaviyo_dagster.sim import FaultSpec, SimConfig, SimulatorServer
from klaviyo_dagster.storage.ids import nightly_upload_id

ENCRYPTION_KEY = "soak-encryption-key"


def rss_mb() -> float:
    """Current resident set size (Linux /proc), in MB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def client_retries(result: dg.ExecuteInProcessResult) -> int:
    total = 0
    for event in result.get_asset_materialization_events():
        metadata = event.event_specific_data.materialization.metadata
        by_group = metadata.get("klaviyo_calls_by_group")
        if by_group is not None:
            total += sum(group.get("retries", 0) for group in by_group.value.values())
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=3)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--profiles", type=int, default=300)
    parser.add_argument("--error-rate", type=float, default=0.02, help="5xx rate on every operation")
    parser.add_argument("--latency-ms", type=int, default=5)
    parser.add_argument("--time-scale", type=float, default=0.01)
    parser.add_argument("--relaunches", type=int, default=2, help="reruns of a failed partition")
    args = parser.parse_args()
    logging.getLogger("dagster").setLevel(logging.WARNING)
    logging.getLogger("klaviyo_dagster").setLevel(logging.ERROR)

    keys = tuple(f"pk_soak_{index:02d}_" + "0" * 24 for index in range(args.accounts))
    accounts = [str(uuid.UUID(int=index + 1, version=4)) for index in range(args.accounts)]
    config = SimConfig(
        profiles=args.profiles,
        seed=11,
        time_scale=args.time_scale,
        api_keys=keys,
        faults={"*": FaultSpec(error_rate=args.error_rate, latency_ms=args.latency_ms)},
    )
    with tempfile.TemporaryDirectory(prefix="klaviyo-soak-") as folder, SimulatorServer(config) as sim:
        os.environ.update(
            {
                "KLAVIYO_ENABLE": "true",
                "KLAVIYO_BASE_URL": sim.base_url,
                "INTEGRATIONS_ENC_KEY": ENCRYPTION_KEY,
            }
        )
        for name in ("KLAVIYO_ACCOUNT_ID", "KLAVIYO_API_KEY", "KLAVIYO_API_KEY_PRIVATE", "SUPABASE_URL"):
            os.environ.pop(name, None)
        store = IngestStoreResource(data_dir=str(Path(folder) / "data"))
        tables = store.get_store().tables
        for account, key in zip(accounts, keys, strict=True):
            tables.ensure_account(account, f"soak {account[-4:]}")
            with tables._transaction() as tx:
                tx.execute(
                    "insert into account_integrations (id, account_id, provider, encrypted_api_key) "
                    "values (?, ?, 'klaviyo', ?)",
                    (str(uuid.uuid4()), account, encrypt_api_key(key, ENCRYPTION_KEY)),
                )
        resources = pipeline_resources(klaviyo_resource_from_env(time_scale=args.time_scale), store)
        yesterday = datetime.now(UTC).date() - timedelta(days=1)
        dates = [yesterday - timedelta(days=offset) for offset in range(args.days)][::-1]

        start_rss, start_fds = rss_mb(), open_fds()
        started = time.monotonic()
        runs = retries = relaunches = 0
        failed: list[str] = []
        samples: list[tuple[float, int]] = []
        # A SQLite-backed instance, as deployed (the ephemeral one keeps every event in memory).
        (Path(folder) / "dagster_home").mkdir()
        with dg.DagsterInstance.local_temp(str(Path(folder) / "dagster_home")) as instance:
            instance.add_dynamic_partitions(ACCOUNTS_PARTITIONS_NAME, accounts)
            for day in dates:
                for account in accounts:
                    for attempt in range(args.relaunches + 1):
                        runs += 1
                        relaunches += attempt > 0
                        result = dg.materialize(
                            [*INGEST_ASSETS, snapshot],
                            partition_key=partition_key(account, day),
                            instance=instance,
                            resources=resources,
                            raise_on_error=False,
                            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
                        )
                        retries += client_retries(result)
                        if result.success:
                            break
                    else:
                        failed.append(f"{day}|{account}")
                    samples.append((rss_mb(), open_fds()))
        elapsed = time.monotonic() - started
        partitions = len(dates) * len(accounts)
        snapshots = sum(
            tables.snapshot_for_upload(nightly_upload_id(a, d)) is not None for a in accounts for d in dates
        )
        requests = sim.requests
        faults = sum(1 for r in requests if r.status in (500, 502, 503, 504))
        mid = samples[len(samples) // 2] if samples else (0.0, 0)
        print(
            f"soak: {args.accounts} accounts x {args.days} days, {args.profiles} profiles each, "
            f"5xx rate {args.error_rate:.0%} + {args.latency_ms} ms latency, simulator time scale {args.time_scale}"
        )
        print(
            f"partitions: {partitions} ({runs} runs, {relaunches} relaunched), snapshots ready: {snapshots}"
        )
        print(f"klaviyo calls: {len(requests)}, injected 5xx: {faults}, client retries: {retries}")
        print(f"failures left: {len(failed)} {failed if failed else ''}".rstrip())
        print(
            f"RSS MB start/middle/end: {start_rss:.1f} / {mid[0]:.1f} / {rss_mb():.1f}, peak {peak_rss_mb():.1f}"
        )
        print(f"open file handles start/middle/end: {start_fds} / {mid[1]} / {open_fds()}")
        print(f"elapsed: {elapsed:.1f} s ({elapsed / max(runs, 1):.2f} s per run)")


if __name__ == "__main__":
    main()
