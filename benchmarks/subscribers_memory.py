"""Peak memory and CPU of building subscribers.csv (required schema) as the audience grows.

    .venv/bin/python benchmarks/subscribers_memory.py [--profiles 100000 --profiles 1000000]

For each size it starts the simulator in its own process (rate-limit windows shrunk 1000x, so pacing
costs almost nothing) and then builds the file into a temporary file in a *fresh* child process, so
the peak RSS printed is that size's own, not the largest so far. The producer streams page by page,
so the peak should be flat between 100k and 1M profiles (target: under 250 MB).

Printed per size: the child's peak RSS (``ru_maxrss``) and its growth over the baseline after imports
and client setup, the producer's CPU seconds per 100k profiles (the simulator's CPU is separate and
printed too, as it generates every profile on the fly), wall time, rows written and file size in MB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from simulator_process import simulator_process

TIME_SCALE = 0.001


@contextmanager
def simulator(profiles: int) -> Iterator[tuple[str, int]]:
    """(base URL, pid) of a simulator process with ``profiles`` profiles."""
    with simulator_process(profiles=profiles, time_scale=TIME_SCALE) as served:
        yield served


def cpu_seconds_of(pid: int) -> float | None:
    """User + system CPU seconds of a running process (Linux ``/proc``; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def max_rss_mb() -> float:
    """This process's peak RSS so far (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def worker(base_url: str, schema: str) -> None:
    """Build the file once in this process and print one JSON line of measurements."""
    from klaviyo_dagster.klaviyo.client import KlaviyoClient
    from klaviyo_dagster.producers.options import SyncOptions
    from klaviyo_dagster.producers.subscribers import write_subscribers_csv
    from klaviyo_dagster.sim import DEFAULT_API_KEY

    with (
        KlaviyoClient(DEFAULT_API_KEY, base_url=base_url, enabled=True, time_scale=TIME_SCALE) as client,
        tempfile.TemporaryDirectory(prefix="subscribers-bench-") as tmp,
    ):
        path = Path(tmp) / "subscribers.csv"
        baseline = max_rss_mb()
        started_cpu, started_wall = time.process_time(), time.monotonic()
        with path.open("w", encoding="utf-8", newline="") as out:
            summary = write_subscribers_csv(client, SyncOptions(audience_schema=schema), out)
        cpu, wall = time.process_time() - started_cpu, time.monotonic() - started_wall
        print(
            json.dumps(
                {
                    "baseline_mb": baseline,
                    "peak_mb": max_rss_mb(),
                    "cpu_s": cpu,
                    "wall_s": wall,
                    "rows": summary.rows,
                    "file_mb": path.stat().st_size / 1e6,
                    "calls": client.stats.snapshot()["get_profiles[predictive_analytics]"].calls
                    if schema != "minimal"
                    else None,
                }
            ),
            flush=True,
        )


def measure(profiles: int, schema: str) -> str:
    with simulator(profiles) as (base_url, sim_pid):
        sim_cpu_before = cpu_seconds_of(sim_pid)
        result = subprocess.run(
            [sys.executable, __file__, "--worker", base_url, "--schema", schema],
            capture_output=True,
            text=True,
            check=False,
        )
        sim_cpu_after = cpu_seconds_of(sim_pid)
    if result.returncode != 0:
        return f"{profiles:>9,} profiles: worker failed\n{result.stderr}"
    m = json.loads(result.stdout.strip().splitlines()[-1])
    per_100k = 100_000 / profiles
    sim_cpu = (
        f"{(sim_cpu_after - sim_cpu_before) * per_100k:6.1f} s"
        if sim_cpu_before is not None and sim_cpu_after is not None
        else "   n/a"
    )
    return (
        f"{profiles:>9,} profiles  peak RSS {m['peak_mb']:6.1f} MB (+{m['peak_mb'] - m['baseline_mb']:5.1f} MB "
        f"over {m['baseline_mb']:.1f} MB baseline)  producer CPU {m['cpu_s'] * per_100k:5.1f} s/100k  "
        f"simulator CPU {sim_cpu}/100k  wall {m['wall_s']:6.1f} s  rows {m['rows']:,}  "
        f"file {m['file_mb']:.1f} MB  calls {m['calls']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profiles", type=int, action="append", help="audience sizes (repeatable)")
    parser.add_argument("--schema", default="required", choices=("required", "extended", "minimal"))
    parser.add_argument("--worker", metavar="BASE_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.schema)
        return
    sizes = args.profiles or [100_000, 1_000_000]
    print(f"subscribers.csv, schema {args.schema}, simulator time scale {TIME_SCALE:g}", flush=True)
    for profiles in sizes:
        print(measure(profiles, args.schema), flush=True)


if __name__ == "__main__":
    main()
