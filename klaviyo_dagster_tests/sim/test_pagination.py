"""Cursor pagination, created-boundary slicing, sorts and filters, and lazy profile generation."""

from __future__ import annotations

import tracemalloc
from datetime import UTC, date, timedelta
from urllib.parse import quote

import httpx
import pytest

from klaviyo_dagster.klaviyo.spec import load_operations
from klaviyo_dagster.sim import SimConfig, SimulatorServer, filters
from klaviyo_dagster.sim import resources as res
from klaviyo_dagster.sim.data import Account, profile_sort_value
from klaviyo_dagster_tests.producers.tiny_store import TinyStore
from klaviyo_dagster_tests.sim.conftest import client_for


def _all_ids(api: httpx.Client, url: str) -> list[str]:
    ids: list[str] = []
    next_url: str | None = url
    while next_url:
        doc = api.get(next_url).json()
        ids += [d["id"] for d in doc["data"]]
        next_url = doc["links"]["next"]
    return ids


def test_every_profile_exactly_once_following_next_verbatim(
    api: httpx.Client, simulator: SimulatorServer
) -> None:
    """links.next repeats every parameter; following it verbatim visits each profile once, in id order."""
    ids = _all_ids(api, "/api/profiles?page[size]=7&additional-fields[profile]=subscriptions")
    assert len(ids) == len(set(ids)) == simulator.account.profile_count
    assert ids == sorted(ids)
    first = api.get("/api/profiles?page[size]=7&additional-fields[profile]=subscriptions").json()
    assert "additional-fields%5Bprofile%5D=subscriptions" in first["links"]["next"]
    assert first["links"]["next"].startswith(simulator.base_url)


def test_last_page_has_null_next(api: httpx.Client) -> None:
    assert api.get("/api/flows?page[size]=50").json()["links"]["next"] is None


def test_tampered_or_foreign_cursor_is_400(api: httpx.Client) -> None:
    """Cursors are opaque and bound to their query."""
    next_url = api.get("/api/profiles?page[size]=5").json()["links"]["next"]
    cursor = httpx.URL(next_url).params["page[cursor]"]
    assert (
        api.get("/api/profiles", params={"page[size]": "5", "page[cursor]": cursor[:-2] + "xx"}).status_code
        == 400
    )
    assert api.get("/api/profiles", params={"page[size]": "6", "page[cursor]": cursor}).status_code == 400
    assert api.get("/api/flows", params={"page[cursor]": "garbage"}).status_code == 400


def test_boundary_profile_lands_in_exactly_one_slice(api: httpx.Client, simulator: SimulatorServer) -> None:
    """Slices (a, b) and (b - 1 s, c): a profile created exactly at second b is in one slice only."""
    account = simulator.account
    boundary = account.profile_created(90)
    assert account.profile_created(91) == boundary  # several profiles share the boundary second
    stamp = boundary.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    before = (boundary - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    left = _all_ids(api, f"/api/profiles?page[size]=100&filter=less-than(created,{stamp})")
    right = _all_ids(api, f"/api/profiles?page[size]=100&filter=greater-than(created,{before})")
    on_boundary = {
        account.profile_id(i) for i in range(account.profile_count) if account.profile_created(i) == boundary
    }
    assert not on_boundary & set(left)
    assert on_boundary <= set(right)
    assert sorted(left + right) == sorted({account.profile_id(i) for i in range(account.profile_count)})


def test_sort_descending(api: httpx.Client) -> None:
    ids = [d["id"] for d in api.get("/api/profiles?sort=-created&page[size]=10").json()["data"]]
    assert ids == sorted(ids, reverse=True)


def test_million_profile_account_is_lazy() -> None:
    """Building a 1M-profile account allocates nothing per profile, and a filtered page builds only
    the profiles it returns (a binary search on ``created``, not a scan)."""
    tracemalloc.start()
    account = Account(
        seed=1, index=0, profiles=1_000_000, flows=40, anchor=date(2026, 7, 1), timezone="America/New_York"
    )
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 20_000_000  # a million dicts would be gigabytes
    assert account.profile_index(account.profile_id(999_999)) == 999_999
    with SimulatorServer(SimConfig(profiles=1_000_000, seed=1)) as sim, client_for(sim) as api:
        middle = sim.account.profile_created(500_000).strftime("%Y-%m-%dT%H:%M:%SZ")
        built: list[int] = []
        profile = sim.account.profile
        sim.account.profile = lambda index: built.append(index) or profile(index)  # type: ignore[method-assign]
        doc = api.get(
            f"/api/profiles?page[size]=100&filter=greater-than(created,{middle})"
            "&additional-fields[profile]=subscriptions,predictive_analytics"
        ).json()
        assert len(built) == 100  # the page built its own 100 profiles, not the 500k before them
        assert len(doc["data"]) == 100 and doc["links"]["next"]
        assert sim.account.profile_index(doc["data"][0]["id"]) == 500_001  # strictly after the shared second


def _expected_order(account: Account, indices: list[int], sort: str) -> list[str]:
    """Brute force: without a value first, then by (value, index); a leading '-' reverses it all."""
    field_name = sort.lstrip("-")

    def key(index: int) -> tuple[bool, str, int]:
        if field_name in ("id", "created"):
            return (True, "", index)
        value = profile_sort_value(account.profile(index), field_name)
        return (value is not None, value or "", index)

    ordered = sorted(indices, key=key)
    return [account.profile_id(i) for i in (ordered[::-1] if sort.startswith("-") else ordered)]


SORTS = load_operations()["get_profiles"].parameters["sort"]["schema"]["enum"]


@pytest.mark.parametrize("sort", SORTS)
def test_a_sorted_scan_gives_every_profile_once_in_order(simulator_factory, sort: str) -> None:
    """Every sort the spec allows: following links.next visits each profile once, in sort order."""
    sim = simulator_factory(profiles=257, seed=3, anchor=date(2026, 7, 1))
    account = sim.account
    with client_for(sim) as api:
        ids = _all_ids(api, f"/api/profiles?page[size]=40&sort={sort}")
    assert ids == _expected_order(account, list(range(account.profile_count)), sort)


@pytest.mark.parametrize(
    ("expression", "sort"),
    [
        ("greater-than(updated,2025-06-01T00:00:00Z)", "email"),
        ("less-than(updated,2025-06-01T00:00:00Z)", "-id"),
        ("equals(subscriptions.email.marketing.suppression.reason,'{reason}')", "-updated"),
        (
            "greater-or-equal(subscriptions.email.marketing.suppression.timestamp,2024-01-01T00:00:00Z)",
            "created",
        ),
        ("less-or-equal(subscriptions.email.marketing.suppression.timestamp,2025-01-01T00:00:00Z)", "-email"),
        ("any(email,['{email}','nobody@example.com'])", "updated"),
        ("any(external_id,['{external}','ext-9999'])", "-created"),
        ("equals(phone_number,'{phone}')", "id"),
        ("equals(subscriptions.email.marketing.list_suppressions.list_id,'x')", "id"),
        (
            "and(greater-than(created,2024-01-01T00:00:00Z),greater-than(updated,2025-01-01T00:00:00Z))",
            "-updated",
        ),
    ],
)
def test_filters_select_exactly_the_matching_profiles(simulator_factory, expression: str, sort: str) -> None:
    """Every filter the spec allows on profiles, fast-pathed or not, returns exactly the matches."""
    sim = simulator_factory(profiles=257, seed=3, anchor=date(2026, 7, 1))
    account = sim.account
    profiles = {i: account.profile(i) for i in range(account.profile_count)}
    suppressed = next(
        p
        for p in profiles.values()
        if (p.get("subscriptions") or {}).get("email", {}).get("marketing", {}).get("suppression")
    )
    phone = next(p["phone_number"] for p in profiles.values() if p["phone_number"])
    external = next(p["external_id"] for p in profiles.values() if p["external_id"])
    text = expression.format(
        external=external,
        reason=suppressed["subscriptions"]["email"]["marketing"]["suppression"][0]["reason"],
        email=profiles[42]["email"] or "user42.a@example.com",
        phone=phone,
    )
    conditions = filters.parse(text)
    matching = [
        i
        for i, p in profiles.items()
        if filters.matches_all(conditions, res.profile_record(account.profile_id(i), p))
    ]
    with client_for(sim) as api:
        ids = _all_ids(api, f"/api/profiles?page[size]=25&sort={sort}&filter={quote(text)}")
    assert ids == _expected_order(account, matching, sort)
    if "list_suppressions" not in text:
        assert matching


def test_a_hand_made_store_sorts_by_its_own_values(simulator_factory) -> None:
    """A store that overrides profile() (tests/producers/tiny_store) sorts by what it returns."""
    sim = simulator_factory(account_factory=TinyStore)
    with client_for(sim) as api:
        ids = _all_ids(api, "/api/profiles?sort=-updated")
    assert ids == _expected_order(sim.account, list(range(sim.account.profile_count)), "-updated")
