"""How close the Klaviyo client gets to each rate-limit group's steady limit, and its CPU per page.

    .venv/bin/python benchmarks/client_throughput.py [--latency-ms 150] [--windows 2]

For each group it starts the simulator in its own process with windows shrunk so the group's
steady limit means ~40 calls/s of real time (the per-call latency shrinks by the same factor, so
the latency-to-window ratio stays Klaviyo's), fires ``(windows + 1) * limit`` calls from a thread
pool, and measures the steady-state rate: the calls after the first window's allowance, over the
time from the end of the last call of that allowance to the end of the last call. Printed in Klaviyo calls per minute
against the documented steady limit. Then it reads pages of 100 profiles with every additional field
and prints the client's CPU milliseconds per parsed page (the simulator's CPU is not counted).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from simulator_process import simulator_process

from klaviyo_dagster.klaviyo.client import KlaviyoClient
from klaviyo_dagster.klaviyo.spec import load_operations
from klaviyo_dagster.sim import DEFAULT_API_KEY

REAL_CALLS_PER_SECOND = 40  # what one machine serves comfortably with client and simulator on it


@dataclass(frozen=True)
class Group:
    name: str
    call: Callable[[KlaviyoClient, str], object]  # (client, conversion metric id)


def _metric_id(client: KlaviyoClient) -> str:
    metrics = client.iter_resources("/api/metrics", {"fields[metric]": "name,integration"})
    return next(m["id"] for m in metrics if m["attributes"]["name"] == "Placed Order")


def _flow_series(client: KlaviyoClient, metric_id: str) -> object:
    body = {
        "data": {
            "type": "flow-series-report",
            "attributes": {
                "statistics": ["delivered"],
                "timeframe": {"start": "2026-11-01T00:00:00", "end": "2026-11-07T23:59:59"},
                "interval": "daily",
                "conversion_metric_id": metric_id,
            },
        }
    }
    return client.post("/api/flow-series-reports", body)


GROUPS = (
    Group("get_flows", lambda c, _: c.get("/api/flows", {"page[size]": "5"})),
    Group(
        "get_campaigns", lambda c, _: c.get("/api/campaigns", {"filter": "equals(messages.channel,'email')"})
    ),
    Group(
        "get_profiles[predictive_analytics]",
        lambda c, _: c.get(
            "/api/profiles", {"page[size]": "100", "additional-fields[profile]": "predictive_analytics"}
        ),
    ),
    Group("get_profiles", lambda c, _: c.get("/api/profiles", {"page[size]": "100"})),
    Group("query_flow_series", _flow_series),
)


@contextmanager
def simulator(time_scale: float, latency_ms: int, profiles: int = 2_000) -> Iterator[str]:
    with simulator_process(profiles=profiles, time_scale=time_scale, latency_ms=latency_ms) as (url, _):
        yield url


def steady_limit(group: str) -> tuple[int, int, int]:
    """(steady limit per minute, burst per second, and the window seconds) of a group."""
    operation_id = group.split("[")[0]
    operation = load_operations()[operation_id]
    params = {"additional-fields[profile]": "predictive_analytics"} if "[" in group else {}
    _, limit = operation.rate_limit_for(params)
    steady, burst = limit.window("steady"), limit.window("burst")
    return steady.limit, burst.limit, steady.seconds


def measure_group(group: Group, latency_ms: int, windows: int) -> str:
    limit, burst, window_seconds = steady_limit(group.name)
    scale = max(0.01, limit / window_seconds / REAL_CALLS_PER_SECOND)
    calls = (windows + 1) * limit
    done: list[float] = []  # completion times: paced calls finish one latency after they are sent
    with (
        simulator(scale, round(latency_ms * scale)) as base_url,  # latency shrinks with the windows
        KlaviyoClient(DEFAULT_API_KEY, base_url=base_url, enabled=True, time_scale=scale) as client,
    ):
        metric_id = _metric_id(client)

        def one(_: int) -> None:
            group.call(client, metric_id)
            done.append(time.monotonic())

        with ThreadPoolExecutor(max_workers=min(burst, 16) + 1) as pool:
            list(pool.map(one, range(calls)))
        stats = client.stats.snapshot()[group.name]
    done.sort()
    elapsed_klaviyo = (done[-1] - done[limit - 1]) / scale
    achieved = (calls - limit) / elapsed_klaviyo * window_seconds
    return (
        f"{group.name:<36} steady {limit:>4}/min  achieved {achieved:7.1f}/min  "
        f"({achieved / limit:6.1%})  calls={stats.calls} 429s={stats.throttled} time_scale={scale:g}"
    )


def measure_cpu_per_page(latency_ms: int, pages: int = 200) -> str:
    with (
        simulator(0.01, latency_ms, profiles=pages * 100) as base_url,
        KlaviyoClient(DEFAULT_API_KEY, base_url=base_url, enabled=True, time_scale=0.01) as client,
    ):
        params = {"page[size]": "100", "additional-fields[profile]": "subscriptions,predictive_analytics"}
        started = time.process_time()
        read = sum(len(page.data) for page in client.iter_pages("/api/profiles", params))
        cpu = time.process_time() - started
    return f"client CPU per parsed 100-profile page: {cpu / (read / 100) * 1000:.2f} ms ({read} profiles)"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--latency-ms", type=int, default=150, help="simulated per-call latency")
    parser.add_argument("--windows", type=int, default=2, help="steady windows measured per group")
    parser.add_argument("--group", action="append", help="only these groups")
    args = parser.parse_args()
    os.environ.setdefault("KLAVIYO_ENABLE", "true")
    print(f"latency {args.latency_ms} ms, {args.windows} steady windows per group")
    for group in GROUPS:
        if not args.group or group.name in args.group:
            print(measure_group(group, args.latency_ms, args.windows), flush=True)
    print(measure_cpu_per_page(latency_ms=0))


if __name__ == "__main__":
    main()
