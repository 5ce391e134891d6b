"""The account facts every producer needs: timezone and the conversion metric."""

from __future__ import annotations

import pytest

from klaviyo_dagster.klaviyo.client import KlaviyoClient
from klaviyo_dagster.producers.account import (
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


def test_configured_and_env_metric_ids_skip_the_lookup(tiny_sim, tiny_client, monkeypatch) -> None:
    assert conversion_metric_id(tiny_client, "CONFIGURED") == "CONFIGURED"
    monkeypatch.setenv("SHOPIFY_PLACED_ORDER_METRIC_ID", "FROM_ENV")
    assert conversion_metric_id(tiny_client) == "FROM_ENV"
    assert conversion_metric_id(tiny_client, "CONFIGURED") == "CONFIGURED"
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


def test_the_timezone_is_the_accounts(tiny_client: KlaviyoClient) -> None:
    assert account_timezone(tiny_client) == "America/New_York"


def test_the_timezone_falls_back_to_utc_when_the_call_fails(simulator_factory, monkeypatch) -> None:
    monkeypatch.setenv("KLAVIYO_ENABLE", "true")
    sim = simulator_factory(faults={"get_accounts": FaultSpec(status=403)})
    with KlaviyoClient(DEFAULT_API_KEY, base_url=sim.base_url, retry=FAST_RETRY) as client:
        assert account_timezone(client) == "UTC"
