"""The account facts every producer needs: timezone and the conversion metric."""

from __future__ import annotations

import httpx
import pytest

from klaviyo_dagster.klaviyo.client import KlaviyoClient
from klaviyo_dagster.klaviyo.errors import KlaviyoAuthError, KlaviyoDataError, KlaviyoUnavailableError
from klaviyo_dagster.producers.account import (
    AccountTimezone,
    ConversionMetricNotFound,
    account_timezone,
    conversion_metric_id,
)
from klaviyo_dagster.sim import DEFAULT_API_KEY, FaultSpec
from klaviyo_dagster.sim.data import Account
from klaviyo_dagster_tests.klaviyo.conftest import FAST_RETRY


class StoreWithoutOrders(Account):
    def _build_metrics(self):  # type: ignore[override]
        return [m for m in super()._build_metrics() if m.name != "Placed Order"]


def test_the_shopify_placed_order_metric_is_preferred(tiny_sim, tiny_client: KlaviyoClient) -> None:
    expected = tiny_sim.account.placed_order_metric
    assert expected.integration["name"] == "Shopify"
    assert conversion_metric_id(tiny_client) == expected.id
    assert [r.query.get("fields[metric]") for r in tiny_sim.requests] == ["name,integration"]


def test_a_configured_metric_id_skips_the_lookup(tiny_sim, tiny_client) -> None:
    assert conversion_metric_id(tiny_client, " CONFIGURED ") == "CONFIGURED"
    assert tiny_sim.requests == []


def test_a_store_without_placed_order_says_the_three_ways_to_fix_it(simulator_factory, monkeypatch) -> None:
    monkeypatch.setenv("KLAVIYO_ENABLE", "true")
    monkeypatch.delenv("SHOPIFY_PLACED_ORDER_METRIC_ID", raising=False)
    sim = simulator_factory(account_factory=StoreWithoutOrders)
    with (
        KlaviyoClient(DEFAULT_API_KEY, base_url=sim.base_url) as client,
        pytest.raises(ConversionMetricNotFound) as failure,
    ):
        conversion_metric_id(client)
    message = str(failure.value)
    assert "conversion_metric_id" in message
    assert "SHOPIFY_PLACED_ORDER_METRIC_ID" in message
    assert "integration" in message


class StoreWithTimezone(Account):
    """An account whose ``GET /api/accounts`` reports ``REPORTED`` as its timezone."""

    REPORTED = ""

    def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.timezone = self.REPORTED


class StoreWithoutTimezone(StoreWithTimezone):
    REPORTED = ""


class StoreInAnUnknownZone(StoreWithTimezone):
    REPORTED = "Mars/Olympus_Mons"


def _timezone_of(simulator_factory, monkeypatch, **config) -> AccountTimezone:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("KLAVIYO_ENABLE", "true")
    sim = simulator_factory(**config)
    with KlaviyoClient(DEFAULT_API_KEY, base_url=sim.base_url, retry=FAST_RETRY) as client:
        return account_timezone(client)


def test_the_timezone_is_the_accounts(tiny_client: KlaviyoClient) -> None:
    assert account_timezone(tiny_client) == AccountTimezone("America/New_York")


def test_a_key_without_the_accounts_scope_falls_back_to_utc_and_says_so(
    simulator_factory, monkeypatch
) -> None:
    found = _timezone_of(simulator_factory, monkeypatch, faults={"get_accounts": FaultSpec(status=403)})

    assert found == AccountTimezone("UTC", "the key lacks the accounts:read scope (403)")
    assert found.describe() == "UTC (fallback: the key lacks the accounts:read scope (403))"


def test_a_missing_timezone_falls_back_to_utc_and_says_so(simulator_factory, monkeypatch) -> None:
    found = _timezone_of(simulator_factory, monkeypatch, account_factory=StoreWithoutTimezone)

    assert found == AccountTimezone("UTC", "GET /api/accounts returned no timezone")


def test_one_failed_accounts_call_does_not_move_the_window_to_utc(simulator_factory, monkeypatch) -> None:
    found = _timezone_of(simulator_factory, monkeypatch, faults={"get_accounts": FaultSpec(fail_first_n=1)})

    assert found == AccountTimezone("America/New_York")


def test_an_accounts_call_that_keeps_failing_fails_rather_than_guess_utc(
    simulator_factory, monkeypatch
) -> None:
    with pytest.raises(KlaviyoUnavailableError, match="GET /api/accounts"):
        _timezone_of(simulator_factory, monkeypatch, faults={"get_accounts": FaultSpec(status=503)})


def test_a_wrong_key_is_an_auth_failure_not_a_utc_window(simulator_factory, monkeypatch) -> None:
    monkeypatch.setenv("KLAVIYO_ENABLE", "true")
    sim = simulator_factory()
    with (
        KlaviyoClient("pk_not_a_key_of_this_account", base_url=sim.base_url, retry=FAST_RETRY) as client,
        pytest.raises(KlaviyoAuthError) as failure,
    ):
        account_timezone(client)
    assert failure.value.status == 401


def test_a_zone_this_machine_does_not_know_fails_with_its_name(simulator_factory, monkeypatch) -> None:
    with pytest.raises(KlaviyoDataError, match="Mars/Olympus_Mons"):
        _timezone_of(simulator_factory, monkeypatch, account_factory=StoreInAnUnknownZone)


class StoreOnTheServersClock(StoreWithTimezone):
    REPORTED = "localtime"  # ZoneInfo accepts it (this machine's zone), but it is no IANA zone


class StoreWithANumericZone(StoreWithTimezone):
    REPORTED = 123  # type: ignore[assignment]


@pytest.mark.parametrize("store", [StoreOnTheServersClock, StoreWithANumericZone])
def test_a_zone_that_is_not_an_iana_name_fails_rather_than_guess(
    simulator_factory, monkeypatch, store
) -> None:
    with pytest.raises(KlaviyoDataError, match="not an IANA zone"):
        _timezone_of(simulator_factory, monkeypatch, account_factory=store)


def _answering(status: int, body: dict) -> KlaviyoClient:
    transport = httpx.MockTransport(lambda request: httpx.Response(status, json=body))
    return KlaviyoClient("pk_test", base_url="https://a.klaviyo.com", transport=transport, enabled=True)


def test_a_403_that_is_not_a_missing_scope_fails_the_file() -> None:
    disabled = {"errors": [{"status": 403, "code": "account_disabled", "title": "Account disabled."}]}
    with _answering(403, disabled) as client, pytest.raises(KlaviyoAuthError, match="403"):
        account_timezone(client)


def test_an_answer_without_the_account_fails_rather_than_read_utc() -> None:
    with _answering(200, {"data": []}) as client, pytest.raises(KlaviyoDataError, match="no account"):
        account_timezone(client)
