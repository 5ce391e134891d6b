"""``make demo``: the project end to end on the embedded defaults, no credentials needed.

For now "end to end" is the Klaviyo side: start the simulator, list the simulated store's flows,
campaigns and audience through the real client over real HTTP, print them, stop the simulator.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import TextIO

from klaviyo_dagster.klaviyo.client import KlaviyoClient
from klaviyo_dagster.klaviyo.jsonapi import attribute
from klaviyo_dagster.sim import DEFAULT_API_KEY, SimConfig, SimulatorServer

DEMO_PROFILES = 2_000
DEMO_SEED = 42


def run_demo(out: TextIO = sys.stdout, profiles: int = DEMO_PROFILES) -> dict[str, int]:
    """Runs the demo, prints a report to ``out`` and returns the counts it printed."""
    with (
        SimulatorServer(SimConfig(profiles=profiles, seed=DEMO_SEED)) as sim,
        KlaviyoClient(DEFAULT_API_KEY, base_url=sim.base_url, enabled=True) as client,
    ):
        print(f"Klaviyo simulator at {sim.base_url} ({profiles:,} profiles, seed {DEMO_SEED})", file=out)
        counts = {
            "flows": _print_flows(client, out),
            "campaigns": _print_campaigns(client, out),
            "profiles": _print_profile_count(client, out),
        }
        _print_calls(client, out)
    return counts


def _print_flows(client: KlaviyoClient, out: TextIO) -> int:
    flows = list(client.iter_resources("/api/flows", {"page[size]": "50"}))
    statuses = Counter(attribute(f, "status", "?") for f in flows)
    print(f"\nFlows: {len(flows)} ({', '.join(f'{n} {s}' for s, n in statuses.most_common())})", file=out)
    for flow in flows:
        print(f"  {flow['id']}  {attribute(flow, 'status', ''):<8} {attribute(flow, 'name', '')}", file=out)
    return len(flows)


def _print_campaigns(client: KlaviyoClient, out: TextIO) -> int:
    campaigns = list(client.iter_resources("/api/campaigns", {"filter": "equals(messages.channel,'email')"}))
    sent = sorted(
        (c for c in campaigns if attribute(c, "send_time")),
        key=lambda c: attribute(c, "send_time"),
        reverse=True,
    )
    print(f"\nEmail campaigns: {len(campaigns)}, {len(sent)} sent (the newest 10):", file=out)
    for campaign in sent[:10]:
        print(
            f"  {campaign['id']}  {attribute(campaign, 'send_time')}  {attribute(campaign, 'name', '')}",
            file=out,
        )
    return len(campaigns)


def _print_profile_count(client: KlaviyoClient, out: TextIO) -> int:
    params = {"page[size]": "100", "fields[profile]": "email"}
    count = sum(len(page.data) for page in client.iter_pages("/api/profiles", params))
    print(f"\nProfiles: {count:,}", file=out)
    return count


def _print_calls(client: KlaviyoClient, out: TextIO) -> None:
    print("\nKlaviyo calls by rate-limit group:", file=out)
    for group, stats in client.stats.snapshot().items():
        print(
            f"  {group:<34} calls={stats.calls:<4} 429s={stats.throttled} paced={stats.paced_seconds:.1f}s",
            file=out,
        )
