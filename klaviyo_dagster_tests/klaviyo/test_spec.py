"""The spec extract the client and simulator run on is exactly what Klaviyo's official spec says."""

from __future__ import annotations

import json

from klaviyo_dagster.klaviyo.spec import OPERATIONS_FILE, build_extract, load_operations, match_operation
from klaviyo_dagster_tests.paths import OPENAPI_SPEC


def test_the_committed_extract_matches_the_official_spec() -> None:
    regenerated = build_extract(json.loads(OPENAPI_SPEC.read_text()))
    assert json.loads(OPERATIONS_FILE.read_text()) == regenerated, (
        "operations.json is stale: run python -m klaviyo_dagster.klaviyo.spec " + str(OPENAPI_SPEC)
    )


def test_paths_resolve_to_their_operations() -> None:
    assert match_operation("GET", "/api/flows").operation_id == "get_flows"
    assert match_operation("GET", "/api/flows/XyZ12").operation_id == "get_flow"
    assert match_operation("GET", "/api/flows/XyZ12/flow-actions/").operation_id == "get_actions_for_flow"
    assert match_operation("POST", "/api/flows") is None
    assert match_operation("GET", "/api/events") is None


def test_predictive_analytics_moves_profiles_to_the_slower_group() -> None:
    profiles = load_operations()["get_profiles"]

    group, limit = profiles.rate_limit_for(
        {"additional-fields[profile]": "subscriptions,predictive_analytics"}
    )
    assert group == "get_profiles[predictive_analytics]"
    assert (limit.window("burst").limit, limit.window("steady").limit) == (10, 150)

    group, limit = profiles.rate_limit_for({"additional-fields[profile]": "subscriptions"})
    assert group == "get_profiles"
    assert limit.window("steady").limit == 750


def test_report_operations_carry_the_daily_quota() -> None:
    for operation_id in ("query_flow_series", "query_flow_values", "query_campaign_values"):
        limit = load_operations()[operation_id].rate_limit
        assert limit.window("daily").limit == 225
        assert limit.window("steady").limit == 2
