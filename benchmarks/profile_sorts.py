"""What a sorted or filtered profile page costs the simulator, against a page in the default order.

    .venv/bin/python benchmarks/profile_sorts.py [--profiles 50000] [--pages 50]

Starts the simulator in-process (rate limits out of the way) and reads ``--pages`` pages of 100
profiles (with both additional fields) for each sort the spec allows and a few filters. Printed per
query: the first page (which pays the one-time per-account sort index), the median of the
following pages, the cost per page amortised over a whole scan of the account, and that amortised
cost as a ratio of the default order's.
"""

from __future__ import annotations

import argparse
import statistics
import time

import httpx

from klaviyo_dagster.klaviyo.spec import load_operations
from klaviyo_dagster.sim import DEFAULT_API_KEY, SimConfig, SimulatorServer

HEADERS = {"Authorization": f"Klaviyo-API-Key {DEFAULT_API_KEY}", "revision": "2026-07-15"}
FILTERS = (
    "greater-than(updated,2025-01-01T00:00:00Z)",
    "equals(subscriptions.email.marketing.suppression.reason,'HARD_BOUNCE')",
    "greater-than(subscriptions.email.marketing.suppression.timestamp,2024-01-01T00:00:00Z)",
)


def page_times(api: httpx.Client, url: str, pages: int) -> list[float]:
    """Seconds per page while following links.next (at most ``pages`` pages)."""
    times: list[float] = []
    next_url: str | None = url
    while next_url and len(times) < pages:
        started = time.perf_counter()
        response = api.get(next_url)
        times.append(time.perf_counter() - started)
        response.raise_for_status()
        next_url = response.json()["links"]["next"]
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=50_000)
    parser.add_argument("--pages", type=int, default=50)
    args = parser.parse_args()
    sorts = load_operations()["get_profiles"].parameters["sort"]["schema"]["enum"]
    base = "/api/profiles?page[size]=100&additional-fields[profile]=subscriptions,predictive_analytics"
    queries = [("id (default)", base)]
    queries += [(f"sort={s}", f"{base}&sort={s}") for s in sorts if s.lstrip("-") not in ("id", "created")]
    queries += [(f"filter={f}", f"{base}&filter={f}") for f in FILTERS]
    roomy = {"burst": 10**6, "steady": 10**6}
    groups = ("get_profiles", "get_profiles[predictive_analytics]")
    config = SimConfig(profiles=args.profiles, seed=7, rate_limit_overrides=dict.fromkeys(groups, roomy))
    scan_pages = -(-args.profiles // 100)
    print(f"{args.profiles} profiles, {args.pages} pages of 100 per query (a whole scan: {scan_pages} pages)")
    print(f"{'query':<72} {'first ms':>9} {'next ms':>8} {'amortised':>10} {'ratio':>6}")
    default = None
    with (
        SimulatorServer(config) as sim,
        httpx.Client(base_url=sim.base_url, headers=HEADERS, timeout=600) as api,
    ):
        for label, url in queries:
            times = page_times(api, url, args.pages)
            following = statistics.median(times[1:]) if len(times) > 1 else times[0]
            amortised = (times[0] + following * (scan_pages - 1)) / scan_pages
            default = default or amortised
            print(
                f"{label[:72]:<72} {times[0] * 1000:>9.1f} {following * 1000:>8.1f} "
                f"{amortised * 1000:>10.1f} {amortised / default:>6.2f}"
            )


if __name__ == "__main__":
    main()
