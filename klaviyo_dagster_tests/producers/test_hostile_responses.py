"""Property: whatever odd value a Klaviyo response carries, a producer writes a valid file or fails
by name (contracts/csv.md, "Common rules"), never with a raw exception.

Hypothesis picks one response of the endpoints a file reads, one value inside it (an attribute of
one resource, a report grouping or statistic, or a whole ``attributes`` object), and replaces it
with an arbitrary JSON value: nulls, booleans, huge or non-finite numbers, nested objects, and text
with lone surrogates, NUL, control characters, right-to-left marks and formula-like strings. The
tiny store is served by the simulator over real HTTP; ``RewritingTransport`` makes the change.
"""

from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from klaviyo_dagster.klaviyo.client import KlaviyoClient
from klaviyo_dagster.producers.csvfile import CsvSummary
from klaviyo_dagster.producers.options import SyncOptions
from klaviyo_dagster.producers.sync import CAMPAIGNS, FLOWS, SUBSCRIBERS, CsvFile, SyncFailed, SyncSession
from klaviyo_dagster.sim import DEFAULT_API_KEY, SimConfig, SimulatorServer
from klaviyo_dagster_tests.klaviyo.conftest import FAST_RETRY
from klaviyo_dagster_tests.producers.test_odd_klaviyo_data import RewritingTransport
from klaviyo_dagster_tests.producers.tiny_store import DAYS, PARTITION_DATE, TinyStore

ODD_TEXT = st.sampled_from(
    ["\ud83d", "a\udc00b", "\x00", "\x07bell", "=SUM(A1)", "+1-555", "@cmd", "\u202eRTL", "مرحبا", "", " "]
)
TEXT = st.text(max_size=12) | ODD_TEXT
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | TEXT
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=5,
)
# The endpoints each file reads (path prefixes), as the producers call them.
ENDPOINTS = {
    "flows": ("/api/flows", "/api/flow-series-reports"),
    "campaigns": ("/api/campaigns", "/api/campaign-values-reports"),
    "subscribers": ("/api/profiles",),
}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    """One tiny store for the module: each example only reads it (limits 100x shorter)."""
    with SimulatorServer(SimConfig(account_factory=TinyStore, time_scale=0.0001)) as server:
        yield server


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Paths to every value under ``node`` (containers too: replacing a whole object is a case)."""
    if path:
        yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _leaves(value, (*path, index))


def _targets(body: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Where a value may change: inside ``data`` (resources, report results), not the paging links."""
    return [path for path in _leaves(body.get("data")) if path]


class OneChange:
    """Replaces the ``pick``-th value of the ``call``-th response under the chosen endpoint."""

    def __init__(self, call: int, pick: int, value: Any) -> None:
        self.call, self.pick, self.value = call, pick, value
        self.seen = 0
        self.changed: tuple[Any, ...] | None = None

    def __call__(self, body: dict[str, Any]) -> None:
        self.seen += 1
        targets = _targets(body)
        if self.seen - 1 != self.call or not targets:
            return
        path = targets[self.pick % len(targets)]
        node = body["data"]
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = self.value
        self.changed = path


def _build(sim: SimulatorServer, file: CsvFile, prefix: str, change: OneChange) -> tuple[CsvSummary, str]:
    transport = RewritingTransport(prefix, change)
    with KlaviyoClient(
        DEFAULT_API_KEY,
        base_url=sim.base_url,
        retry=FAST_RETRY,
        transport=transport,
        time_scale=0.0001,
        enabled=True,
    ) as client:
        session = SyncSession(client, SyncOptions(days=DAYS, audience_page_size=2), PARTITION_DATE)
        out = io.StringIO(newline="")
        summary = session.write(file, out)
        return summary, out.getvalue()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    file=st.sampled_from([FLOWS, CAMPAIGNS, SUBSCRIBERS]),
    endpoint=st.integers(min_value=0, max_value=1),
    call=st.sampled_from([0, 0, 0, 1, 2]),
    pick=st.integers(min_value=0, max_value=10_000),
    value=JSON_VALUES,
)
def test_any_odd_value_gives_a_valid_file_or_the_files_named_failure(
    sim: SimulatorServer, file: CsvFile, endpoint: int, call: int, pick: int, value: Any
) -> None:
    prefixes = ENDPOINTS[file.kind]
    change = OneChange(call, pick, value)
    try:
        summary, text = _build(sim, file, prefixes[endpoint % len(prefixes)], change)
    except SyncFailed as failure:
        event(f"{file.kind}: failed by name" if change.changed else f"{file.kind}: failed unchanged")
        assert failure.name == file.failure
        assert failure.details()["message"]
        return
    event(f"{file.kind}: written" if change.changed else f"{file.kind}: nothing changed")
    header = file.header(SyncOptions(days=DAYS))
    records = list(csv.reader(io.StringIO(text, newline="")))
    assert tuple(records[0]) == header
    assert all(len(record) == len(header) for record in records[1:])
    assert len(records) - 1 == summary.rows
    assert "\x00" not in text
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / file.filename
        path.write_text(text, encoding="utf-8", newline="")  # raises on a lone surrogate
        file.reconcile(path, summary.reconciliation)  # a verdict either way, never an exception
