"""Shared pieces of the reliability suite: whole-partition runs, fast retries, transport faults.

What the simulator cannot inject (a connection reset, a single timeout or truncated body on the Nth
call, a page cursor that turns invalid mid-scan) is done by ``FaultyTransport``, an httpx transport
the Klaviyo client is built with for the test (see NOTES.md, "What the simulator lacks").
"""

from __future__ import annotations

import csv
import io
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import dagster as dg
import httpx
import pytest

from klaviyo_dagster.definitions import store_resources
from klaviyo_dagster.defs import resources as resources_module
from klaviyo_dagster.defs.assets import INGEST_ASSETS
from klaviyo_dagster.defs.resources import IngestStoreResource
from klaviyo_dagster.defs.snapshot import snapshot
from klaviyo_dagster.klaviyo.client import KlaviyoClient
from klaviyo_dagster_tests.conftest import SERVICE_KEY
from klaviyo_dagster_tests.defs import conftest as defs_fixtures
from klaviyo_dagster_tests.defs.conftest import TINY_PARTITION, TINY_UPLOAD_ID

# The Dagster layer's fixtures (ephemeral instance knowing the account, resources on the local store).
instance = defs_fixtures.instance
data_dir = defs_fixtures.data_dir
store_resource = defs_fixtures.store_resource
resources = defs_fixtures.resources

ALL_ASSETS = [*INGEST_ASSETS, snapshot]
FILE_NODES = ("flows_csv", "campaigns_csv", "subscribers_csv")
FILE_NAMES = {
    "flows_csv": "flows.csv",
    "campaigns_csv": "campaigns.csv",
    "subscribers_csv": "subscribers.csv",
}
# Two profiles per page: the tiny store's audience is read over several pages, so a fault can land
# in the middle of a scan.
RUN_CONFIG = {"ops": {n: {"config": {"days": 3, "audience_page_size": 2}} for n in FILE_NODES}}


def run_config(**extra: Any) -> dict[str, Any]:
    return {"ops": {n: {"config": {**RUN_CONFIG["ops"][n]["config"], **extra}} for n in FILE_NODES}}


def run_partition(
    instance: dg.DagsterInstance,
    resources: dict[str, Any],
    config: dict[str, Any] | None = None,
    partition: str | dg.MultiPartitionKey = TINY_PARTITION,
    assets: list[Any] | None = None,
    selection: list[dg.AssetKey] | None = None,
) -> dg.ExecuteInProcessResult:
    """One whole partition (three files + snapshot) as the nightly job runs it, failures kept."""
    return dg.materialize(
        assets or ALL_ASSETS,
        partition_key=partition,
        instance=instance,
        resources=resources,
        run_config=RUN_CONFIG if config is None else config,
        raise_on_error=False,
        selection=selection,
    )


def local_object(data_dir: Path, name: str, upload_id: str = TINY_UPLOAD_ID) -> Path:
    return data_dir / "objects" / "preauth-uploads" / upload_id / name


def step_events(result: dg.ExecuteInProcessResult, event_type: str) -> list[str]:
    return [e.step_key for e in result.all_events if e.event_type_value == event_type]


def materialized(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, Any]]:
    """node → its materialization's metadata values (only nodes that materialized)."""
    found = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        found[mat.asset_key.path[-1]] = {k: v.value for k, v in mat.metadata.items()}
    return found


def data_rows(data: bytes) -> int:
    """Data records of a CSV as the dashboard parses it (quoted newlines stay inside their field)."""
    return len(list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))) - 1


def assert_every_materialization_matches_its_file(
    result: dg.ExecuteInProcessResult, read: Callable[[str], bytes]
) -> None:
    """No file is recorded as a success unless the stored object holds exactly the rows recorded."""
    for node, metadata in materialized(result).items():
        if node in FILE_NAMES:
            data = read(FILE_NAMES[node])
            assert data.split(b"\n", 1)[0], f"{node}: no header"
            assert data_rows(data) == metadata["dagster/row_count"], node


# KlaviyoResource fields: the client keeps its retry counts but backs off in milliseconds.
FAST_RETRIES = {"backoff_base_seconds": 0.005, "backoff_cap_seconds": 0.02}
# IngestStoreResource fields: Storage calls time out after 0.5 s and back off in milliseconds.
FAST_STORAGE = {
    "storage_timeout_seconds": 0.5,
    "storage_backoff_base_seconds": 0.005,
    "storage_backoff_max_seconds": 0.02,
}


# --- the production store -------------------------------------------------------------------------------


def closed_port_dsn(password: str = "pw-not-a-real-one") -> str:  # noqa: S107 - a fake
    """A Postgres DSN to a local port nothing listens on: the database is unreachable."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres"


def supabase_resources(resources: dict, double_url: str, db_url: str, service_key: str = SERVICE_KEY) -> dict:
    """The resources with the Supabase store on the double, its retries at ``FAST_STORAGE``."""
    store = IngestStoreResource(
        supabase_url=double_url, service_role_key=service_key, db_url=db_url, **FAST_STORAGE
    )
    return {**resources, **store_resources(store)}


# --- transport-level faults -------------------------------------------------------------------------


@dataclass
class Rule:
    """Apply ``action`` to calls of ``method path`` number ``first``..``first+times-1`` (1-based)."""

    method: str
    path: str
    action: str  # reset | timeout | truncate | bad_cursor | shift_days
    first: int = 1
    times: int = 1
    seen: int = 0


@dataclass
class FaultyTransport(httpx.BaseTransport):
    """A real HTTP transport that breaks chosen calls the way networks and proxies do."""

    rules: list[Rule] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)
    _inner: httpx.HTTPTransport = field(default_factory=httpx.HTTPTransport)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        action = self._action_for(request)
        if action == "reset":
            raise httpx.ReadError("[Errno 104] Connection reset by peer", request=request)
        if action == "timeout":
            raise httpx.ReadTimeout("timed out", request=request)
        response = self._inner.handle_request(request)
        if action is None:
            return response
        body = response.read()
        response.close()
        if action == "truncate":
            body = body[: len(body) // 2]
        elif action == "bad_cursor":
            body = _tamper_next_cursor(body)
        elif action == "shift_days":
            body = _shift_series_days(body)
        headers = [(k, v) for k, v in response.headers.items() if k.lower() != "content-length"]
        return httpx.Response(response.status_code, headers=headers, content=body, request=request)

    def _action_for(self, request: httpx.Request) -> str | None:
        with self._lock:
            for rule in self.rules:
                if request.method == rule.method and request.url.path == rule.path:
                    rule.seen += 1
                    if rule.first <= rule.seen < rule.first + rule.times:
                        self.applied.append(f"{rule.action} {rule.method} {rule.path} #{rule.seen}")
                        return rule.action
        return None

    def close(self) -> None:
        """Each client closes its transport; this one is shared by every client of the test."""

    def shutdown(self) -> None:
        self._inner.close()


def _tamper_next_cursor(body: bytes) -> bytes:
    """The page's ``links.next`` with its cursor replaced: Klaviyo expired or rotated the cursor."""
    document = json.loads(body)
    link = document["links"]["next"]
    assert link, "the fault needs a page with a next link"
    parts = urlsplit(link)
    query = [
        (k, "ZXhwaXJlZA.expired-cursor" if k == "page[cursor]" else v) for k, v in parse_qsl(parts.query)
    ]
    document["links"]["next"] = urlunsplit(parts._replace(query=urlencode(query)))
    return json.dumps(document).encode()


def _shift_series_days(body: bytes) -> bytes:
    """A series report whose buckets start a day late: Klaviyo read the timeframe in another zone."""
    document = json.loads(body)
    attributes = document["data"]["attributes"]
    attributes["date_times"] = [
        (datetime.fromisoformat(moment) + timedelta(days=1)).isoformat()
        for moment in attributes["date_times"]
    ]
    return json.dumps(document).encode()


@pytest.fixture
def faulty_transport(monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultyTransport]:
    """Every Klaviyo client the assets build goes through this transport."""
    transport = FaultyTransport()
    real = KlaviyoClient

    def client_with_transport(*args: Any, **kwargs: Any) -> KlaviyoClient:
        return real(*args, transport=transport, **kwargs)

    monkeypatch.setattr(resources_module, "KlaviyoClient", client_with_transport)
    yield transport
    transport.shutdown()
