"""Rate limits (429 + Retry-After, RateLimit-* headers), latency and every fault kind, CDN pages included."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from klaviyo_dagster.klaviyo.spec import load_operations
from klaviyo_dagster.sim import FaultSpec, SimConfig, SimulatorServer
from klaviyo_dagster.sim import app as sim_app
from klaviyo_dagster.sim.faults import FaultInjector
from klaviyo_dagster.sim.ratelimit import RateLimiter
from klaviyo_dagster_tests.sim.conftest import HEADERS, client_for


def test_success_carries_steady_window_headers(api: httpx.Client) -> None:
    response = api.get("/api/flows")
    assert response.headers["RateLimit-Limit"] == "60"
    assert response.headers["RateLimit-Remaining"] == "59"
    assert 0 < int(response.headers["RateLimit-Reset"]) <= 60


def test_over_limit_is_429_with_retry_after_and_no_ratelimit_headers(simulator_factory: Any) -> None:
    """The 4th call in a second to a 3/s group is throttled, with Klaviyo's body and headers."""
    sim = simulator_factory(profiles=5)
    with client_for(sim) as api:
        statuses = [api.get("/api/flows").status_code for _ in range(3)]
        throttled = api.get("/api/flows")
    assert statuses == [200, 200, 200]
    assert throttled.status_code == 429
    assert throttled.json()["errors"][0]["code"] == "throttled"
    assert throttled.headers["Retry-After"] == "1"
    assert not any(name.lower().startswith("ratelimit-") for name in throttled.headers)
    assert sim.requests[-1].group == "get_flows" and sim.requests[-1].status == 429


def test_predictive_analytics_counts_against_its_own_group(simulator_factory: Any) -> None:
    """The simulator uses the spec's group names, e.g. get_profiles[predictive_analytics]."""
    sim = simulator_factory(
        profiles=5, rate_limit_overrides={"get_profiles[predictive_analytics]": {"burst": 1}}
    )
    with client_for(sim) as api:
        url = "/api/profiles?additional-fields[profile]=predictive_analytics"
        assert api.get(url).status_code == 200
        assert api.get(url).status_code == 429
        assert api.get("/api/profiles").status_code == 200
    assert [r.group for r in sim.requests] == ["get_profiles[predictive_analytics]"] * 2 + ["get_profiles"]


def test_daily_report_quota_retry_after_is_hours(simulator_factory: Any) -> None:
    """After the daily quota the Retry-After is nominal (unscaled) and tens of thousands of seconds."""
    sim = simulator_factory(
        profiles=5, time_scale=0.001, rate_limit_overrides={"query_flow_values": {"daily": 2}}
    )
    body = {
        "data": {
            "type": "flow-values-report",
            "attributes": {
                "statistics": ["delivered"],
                "timeframe": {"key": "yesterday"},
                "conversion_metric_id": sim.account.placed_order_metric.id,
            },
        }
    }
    with client_for(sim) as api:
        codes = []
        for _ in range(3):
            response = api.post("/api/flow-values-reports", json=body)
            codes.append(response.status_code)
            time.sleep(0.07)  # > the scaled steady window (60 s x 0.001)
    assert codes == [200, 200, 429]
    assert int(response.headers["Retry-After"]) > 80_000


def test_time_scale_shortens_windows_and_refusals_do_not_count() -> None:
    """A fake clock: windows last seconds x scale; a refused call does not extend the block."""
    now = [0.0]
    limiter = RateLimiter(time_scale=0.5, clock=lambda: now[0])
    group, limit = load_operations()["get_accounts"].rate_limit_for({})
    assert limiter.acquire("acct", group, limit).allowed
    refused = limiter.acquire("acct", group, limit)
    assert not refused.allowed and refused.retry_after == 1
    now[0] = 0.5  # one nominal second at scale 0.5
    assert limiter.acquire("acct", group, limit).allowed
    for _ in range(13):
        now[0] += 0.5
        assert limiter.acquire("acct", group, limit).allowed
    now[0] += 0.5
    steady = limiter.acquire("acct", group, limit)  # 15 per (scaled) minute used up
    assert not steady.allowed and 1 <= steady.retry_after <= 60


def test_latency_is_concurrent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Latency sleeps asynchronously: parallel calls overlap instead of queueing.

    Shown without a clock: each call's latency sleep waits until all four calls are sleeping at
    once. A server that served calls one after another would leave the first waiting alone, and
    it would fail after 5 s (an error answer) instead of reaching four in flight.
    """
    calls, in_flight, peak = 4, [0], [0]
    all_sleeping = asyncio.Event()
    real_sleep = asyncio.sleep

    async def sleep_until_all_sleep(delay: float, *args: object) -> None:
        if delay != 0.3:  # asyncio.sleep is patched for the whole process: only the latency counts
            await real_sleep(delay, *args)
            return
        in_flight[0] += 1
        peak[0] = max(peak[0], in_flight[0])
        if in_flight[0] == calls:
            all_sleeping.set()
        await asyncio.wait_for(all_sleeping.wait(), timeout=5)
        in_flight[0] -= 1

    monkeypatch.setattr(sim_app.asyncio, "sleep", sleep_until_all_sleep)
    app = sim_app.build_app(sim_app.SimulatorState.build(SimConfig(profiles=5, latency_ms=300)))

    async def serve_together() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sim", headers=HEADERS) as api:
            answers = await asyncio.gather(*(api.get("/api/profiles") for _ in range(calls)))
        return [answer.status_code for answer in answers]

    assert asyncio.run(serve_together()) == [200] * calls
    assert peak[0] == calls


def test_fail_first_n_then_success(simulator: SimulatorServer, api: httpx.Client) -> None:
    simulator.set_fault("get_metrics", FaultSpec(fail_first_n=2))
    assert [api.get("/api/metrics").status_code for _ in range(3)] == [503, 503, 200]


def test_retry_after_storm(simulator: SimulatorServer, api: httpx.Client) -> None:
    simulator.set_fault("get_metrics", FaultSpec(retry_after_storm=2))
    responses = [api.get("/api/metrics") for _ in range(3)]
    assert [r.status_code for r in responses] == [429, 429, 200]
    assert responses[0].headers["Retry-After"] == "1"


def test_forced_status_and_clear(simulator: SimulatorServer, api: httpx.Client) -> None:
    simulator.set_fault("get_flows", FaultSpec(status=501))
    assert api.get("/api/flows").status_code == 501
    simulator.clear_faults()
    assert api.get("/api/flows").status_code == 200


def test_error_rate_is_deterministic_5xx(simulator_factory: Any) -> None:
    """Same seed, same sequence of injected 5xx statuses."""
    sequences = []
    for _ in range(2):
        sim = simulator_factory(profiles=5, faults={"get_profiles": FaultSpec(error_rate=0.5)})
        with client_for(sim) as api:
            sequences.append([api.get("/api/profiles").status_code for _ in range(20)])
    assert sequences[0] == sequences[1]
    assert set(sequences[0]) - {200} <= {500, 502, 503, 504}
    assert 200 in sequences[0] and len(set(sequences[0])) > 1


def test_html_403(simulator: SimulatorServer, api: httpx.Client) -> None:
    simulator.set_fault("get_flows", FaultSpec(html_403_rate=1.0))
    response = api.get("/api/flows")
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/html")


def test_html_403_first_n_then_success(simulator: SimulatorServer, api: httpx.Client) -> None:
    """The CDN's HTML 403 page (not JSON:API) for the first n calls: retry tests know the count."""
    simulator.set_fault("get_flows", FaultSpec(html_403_first_n=2))
    responses = [api.get("/api/flows") for _ in range(3)]
    assert [r.status_code for r in responses] == [403, 403, 200]
    assert responses[0].headers["content-type"].startswith("text/html")
    assert "<title>403 Forbidden</title>" in responses[0].text


def test_html_5xx_first_n_is_a_502_gateway_page(simulator: SimulatorServer, api: httpx.Client) -> None:
    simulator.set_fault("get_flows", FaultSpec(html_5xx_first_n=1))
    first, second = api.get("/api/flows"), api.get("/api/flows")
    assert (first.status_code, second.status_code) == (502, 200)
    assert first.headers["content-type"].startswith("text/html")
    assert "<title>502 Bad Gateway</title>" in first.text


def test_html_5xx_rate_serves_gateway_pages(simulator: SimulatorServer, api: httpx.Client) -> None:
    simulator.set_fault("get_flows", FaultSpec(html_5xx_rate=1.0))
    responses = [api.get("/api/flows") for _ in range(12)]
    assert {r.status_code for r in responses} <= {502, 503, 504}
    assert len({r.status_code for r in responses}) > 1
    for response in responses:
        assert response.headers["content-type"].startswith("text/html")
        assert f"<title>{response.status_code} " in response.text


def test_throttle_body_only_has_no_retry_after(simulator: SimulatorServer, api: httpx.Client) -> None:
    """A 429 whose only statement of the wait is Klaviyo's throttled detail."""
    simulator.set_fault("get_flows", FaultSpec(throttle_body_only_first_n=2, throttle_body_seconds=37))
    responses = [api.get("/api/flows") for _ in range(3)]
    assert [r.status_code for r in responses] == [429, 429, 200]
    throttled = responses[0]
    assert "retry-after" not in throttled.headers
    error = throttled.json()["errors"][0]
    assert error["code"] == "throttled"
    assert error["detail"] == "Request was throttled. Expected available in 37 seconds."


def test_new_fault_kinds_parse_like_the_old_ones() -> None:
    text = (
        "html_5xx_rate=0.25,html_403_first_n=2,html_5xx_first_n=1,"
        "throttle_body_only_first_n=3,throttle_body_seconds=86400"
    )
    assert FaultSpec.parse(text) == FaultSpec(
        html_5xx_rate=0.25,
        html_403_first_n=2,
        html_5xx_first_n=1,
        throttle_body_only_first_n=3,
        throttle_body_seconds=86400.0,
    )


def test_edge_pages_leave_the_older_fault_sequences_as_they_were() -> None:
    """Every probability is drawn on every call: adding html_5xx_rate moves no 5xx of error_rate."""
    plain = FaultInjector(seed=3, faults={"get_flows": FaultSpec(error_rate=0.4)})
    edged = FaultInjector(seed=3, faults={"get_flows": FaultSpec(error_rate=0.4, html_5xx_rate=0.5)})
    pairs = [(plain.decide("get_flows"), edged.decide("get_flows")) for _ in range(60)]
    for before, after in pairs:
        if before.kind == "error":
            assert (after.kind, after.status) == ("error", before.status)
        else:
            assert after.kind in (None, "html")
    assert any(after.kind == "html" for _, after in pairs)


def test_malformed_json(simulator: SimulatorServer, api: httpx.Client) -> None:
    simulator.set_fault("get_flows", FaultSpec(malformed_json_rate=1.0))
    response = api.get("/api/flows")
    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()


def test_timeout_hangs_until_client_gives_up(simulator: SimulatorServer) -> None:
    """The server hangs past the client's timeout; shutdown still ends promptly (fixture teardown)."""
    simulator.set_fault("get_flows", FaultSpec(timeout_rate=1.0))
    with client_for(simulator) as api, pytest.raises(httpx.ReadTimeout):
        api.get("/api/flows", timeout=0.3)


def test_reset_clears_log_limits_and_faults(simulator: SimulatorServer, api: httpx.Client) -> None:
    simulator.set_fault("get_accounts", FaultSpec(fail_first_n=5))
    api.get("/api/accounts")
    simulator.reset()
    assert simulator.requests == []
    assert api.get("/api/accounts").status_code == 200
    assert api.get("/api/accounts").status_code == 429  # the 1/s counter starts fresh, so it is real


def test_cli_prints_listening_line_and_stops_on_sigterm() -> None:
    """``python -m klaviyo_dagster.sim`` serves until SIGTERM."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "klaviyo_dagster.sim",
            "--port",
            "0",
            "--profiles",
            "10",
            "--fault",
            "get_flows:fail_first_n=1,latency_ms=5",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("Klaviyo simulator listening on http://127.0.0.1:")
        url = line.split(" ")[4]
        key = line.split("api key: ")[1].strip().rstrip(")")
        headers = {"Authorization": f"Klaviyo-API-Key {key}", "revision": "2026-07-15"}
        assert httpx.get(f"{url}/api/flows", headers=headers).status_code == 503
        assert httpx.get(f"{url}/api/flows", headers=headers).status_code == 200
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
