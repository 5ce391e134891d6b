"""``python -m klaviyo_dagster.sim --port 8787 [--profiles N] [--fault get_flows:error_rate=0.2] ...``"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from datetime import date

from klaviyo_dagster.sim.config import DEFAULT_API_KEY, SimConfig
from klaviyo_dagster.sim.faults import FaultSpec
from klaviyo_dagster.sim.server import SimulatorServer


def parse_args(argv: list[str]) -> tuple[SimConfig, int]:
    parser = argparse.ArgumentParser(prog="python -m klaviyo_dagster.sim", description=__doc__)
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument("--profiles", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--flows", type=int, default=40)
    parser.add_argument("--timezone", default="America/New_York")
    parser.add_argument(
        "--anchor", type=date.fromisoformat, default=None, help="the account's today (YYYY-MM-DD)"
    )
    parser.add_argument("--fault", action="append", default=[], metavar="OPERATION:field=value,...")
    args = parser.parse_args(argv)
    faults = {}
    for text in args.fault:
        operation, _, spec = text.partition(":")
        faults[operation] = FaultSpec.parse(spec)
    config = SimConfig(
        profiles=args.profiles,
        seed=args.seed,
        time_scale=args.time_scale,
        latency_ms=args.latency_ms,
        flows=args.flows,
        timezone=args.timezone,
        anchor=args.anchor,
        faults=faults,
    )
    return config, args.port


def main(argv: list[str]) -> int:
    config, port = parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with SimulatorServer(config, port=port) as sim:
        print(f"Klaviyo simulator listening on {sim.base_url} (api key: {DEFAULT_API_KEY})", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
