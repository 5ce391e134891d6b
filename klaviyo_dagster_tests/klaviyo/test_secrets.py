"""The Klaviyo key never shows up in an exception, a log line or anything printed."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable

import httpx
import pytest

from klaviyo_dagster.klaviyo.client import KlaviyoClient, RetryPolicy
from klaviyo_dagster.klaviyo.errors import KlaviyoError
from klaviyo_dagster.sim import FaultSpec

SENTINEL_KEY = "pk_SENTINEL_d1c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9"
WRONG_SENTINEL_KEY = "pk_WRONGSENTINEL_0a1b2c3d4e5f60718293a4b5c6d7e8f9"
RETRY = RetryPolicy(max_retries=1, backoff_base_seconds=0.001, max_wait_seconds=2)

FAULTS = {
    "get_flows": FaultSpec(error_rate=1.0),
    "get_campaigns": FaultSpec(html_403_rate=1.0),
    "get_metrics": FaultSpec(malformed_json_rate=1.0),
    "get_accounts": FaultSpec(timeout_rate=1.0),
}

SCENARIOS: dict[str, Callable[[KlaviyoClient], object]] = {
    "5xx after retries": lambda c: c.get("/api/flows"),
    "html 403": lambda c: c.get("/api/campaigns", {"filter": "equals(messages.channel,'email')"}),
    "malformed json": lambda c: c.get("/api/metrics"),
    "timeout": lambda c: c.get("/api/accounts"),
    "bad filter": lambda c: c.get("/api/profiles", {"filter": "equals(nope,1)"}),
    "unknown id": lambda c: c.get("/api/lists/doesnotexist"),
}


def everything_said(exc: BaseException) -> str:
    """Every string a user could see of an exception: message, repr, details, the whole chain."""
    parts = ["".join(traceback.format_exception(exc))]
    while exc is not None:
        parts += [str(exc), repr(exc)]
        if isinstance(exc, KlaviyoError):
            parts.append(repr(exc.as_dict()))
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_no_failure_reveals_the_key(scenario, simulator_factory, klaviyo_env, caplog, capfd) -> None:
    caplog.set_level(logging.DEBUG)
    sim = simulator_factory(profiles=10, api_keys=(SENTINEL_KEY,), faults=FAULTS)
    with KlaviyoClient(SENTINEL_KEY, base_url=sim.base_url, retry=RETRY, timeout_seconds=0.3) as client:
        with pytest.raises(KlaviyoError) as failure:
            SCENARIOS[scenario](client)
        seen = "\n".join(
            [everything_said(failure.value), caplog.text, repr(client), str(client.stats.as_dict())]
        )
    out, err = capfd.readouterr()
    assert caplog.records  # the failure was logged, so the check below looked at real log lines
    assert SENTINEL_KEY not in seen + out + err


def test_a_rejected_key_is_not_echoed(simulator_factory, klaviyo_env, caplog, capfd) -> None:
    caplog.set_level(logging.DEBUG)
    sim = simulator_factory(profiles=10, api_keys=(SENTINEL_KEY,))
    with KlaviyoClient(WRONG_SENTINEL_KEY, base_url=sim.base_url, retry=RETRY) as client:
        with pytest.raises(KlaviyoError) as failure:
            client.get("/api/flows")
        seen = everything_said(failure.value) + caplog.text
    out, err = capfd.readouterr()
    assert failure.value.status == 401
    assert WRONG_SENTINEL_KEY not in seen + out + err


def test_a_server_that_echoes_the_key_in_its_error_details_does_not_leak_it(klaviyo_env) -> None:
    """Klaviyo's errors[] travel into failure metadata and trigger answers: scrubbed like messages."""
    echo = {
        "errors": [
            {
                "status": 401,
                "code": "not_authenticated",
                "title": f"Bad header Klaviyo-API-Key {SENTINEL_KEY}",
                "detail": f"Authorization: Klaviyo-API-Key {SENTINEL_KEY} was not accepted",
                "source": {"parameter": f"Klaviyo-API-Key {SENTINEL_KEY}"},
            }
        ]
    }
    transport = httpx.MockTransport(lambda request: httpx.Response(401, json=echo))
    with (
        KlaviyoClient(SENTINEL_KEY, base_url="https://a.klaviyo.com", transport=transport) as client,
        pytest.raises(KlaviyoError) as failure,
    ):
        client.get("/api/flows")

    assert SENTINEL_KEY not in everything_said(failure.value)
    assert failure.value.as_dict()["errors"][0]["detail"] == (
        "Authorization: Klaviyo-API-Key [redacted] was not accepted"
    )
