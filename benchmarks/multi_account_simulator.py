"""The Klaviyo simulator serving several accounts of different sizes, in a process of its own.

``python -m klaviyo_dagster.sim`` serves one key (or several accounts of one size); a night of many
accounts needs each account its own size. This starts the same ``SimulatorServer`` with one API key
per size and an account factory that gives account ``i`` its own profile and flow count, and prints
the same first line as the simulator (``... listening on http://127.0.0.1:<port> ...``), so
``simulator_process``-style callers can read the URL from it.

    .venv/bin/python benchmarks/multi_account_simulator.py --sizes 2000:10,250000:40 --time-scale 0.05

Account ``i`` answers to ``account_key(i)``; rate limits are per key (per account), as Klaviyo's.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path

from klaviyo_dagster.sim import SimConfig, SimulatorServer
from klaviyo_dagster.sim.data import Account

TIMEZONE = "America/New_York"


def account_key(index: int) -> str:
    """The simulated private key of account ``index`` (fake: ``pk_`` + 34 hex-ish characters)."""
    return f"pk_bench{index:04d}" + "0" * 25


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"2000:10,250000:40"`` -> [(profiles, flows), ...]."""
    sizes = []
    for item in text.split(","):
        profiles, _, flows = item.partition(":")
        sizes.append((int(profiles), int(flows or 40)))
    return sizes


def format_sizes(sizes: Sequence[tuple[int, int]]) -> str:
    return ",".join(f"{profiles}:{flows}" for profiles, flows in sizes)


def account_factory(sizes: Sequence[tuple[int, int]]) -> Callable[..., Account]:
    """Builds account ``index`` with its own (profiles, flows), ignoring the config's one size."""

    def build(
        seed: int, index: int, _profiles: int, _flows: int, anchor: date, timezone: str | None
    ) -> Account:
        profiles, flows = sizes[index]
        return Account(seed, index, profiles, flows, anchor, timezone)

    return build


def serve(
    sizes: Sequence[tuple[int, int]], seed: int, anchor: date, time_scale: float, latency_ms: int
) -> None:
    config = SimConfig(
        seed=seed,
        time_scale=time_scale,
        latency_ms=latency_ms,
        api_keys=tuple(account_key(i) for i in range(len(sizes))),
        timezone=TIMEZONE,
        anchor=anchor,
        account_factory=account_factory(sizes),
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with SimulatorServer(config, port=0) as sim:
        print(f"Klaviyo simulator listening on {sim.base_url} ({len(sizes)} accounts)", flush=True)
        stop.wait()


@contextmanager
def multi_account_simulator(
    sizes: Sequence[tuple[int, int]], seed: int, anchor: date, time_scale: float, latency_ms: int
) -> Iterator[str]:
    """The base URL of this module run as a subprocess (its CPU is not the benchmark's)."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        *("--sizes", format_sizes(sizes), "--seed", str(seed), "--anchor", anchor.isoformat()),
        *("--time-scale", str(time_scale), "--latency-ms", str(latency_ms)),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline() if process.stdout else ""
        yield next(word for word in line.split() if word.startswith("http://"))
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", required=True, help="profiles:flows per account, comma-separated")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--anchor", type=date.fromisoformat, required=True)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--latency-ms", type=int, default=0)
    args = parser.parse_args()
    serve(parse_sizes(args.sizes), args.seed, args.anchor, args.time_scale, args.latency_ms)


if __name__ == "__main__":
    main()
