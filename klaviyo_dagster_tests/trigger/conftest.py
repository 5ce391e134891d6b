"""Fixtures for the trigger: its environment on the tiny store, a served app, a fake Dagster."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from klaviyo_dagster.sim import DEFAULT_API_KEY, SimulatorServer
from klaviyo_dagster.sim.background import BackgroundServer
from klaviyo_dagster.trigger import TriggerSettings, create_app
from klaviyo_dagster.trigger.claims import IdempotencyClaims
from klaviyo_dagster.trigger.dagster_api import DagsterApi, RunInfo
from klaviyo_dagster.trigger.server import server_config
from klaviyo_dagster_tests.conftest import ACCOUNT_ID

SECRET = "trigger-test-secret-" + "c0ffee" * 4


class FakeDagster(DagsterApi):
    """Dagster's GraphQL API in memory: runs stay queued until a test says otherwise.

    Thread-safe (two served apps may share one); ``launch_delay`` widens the window between a
    launch's start and its answer, ``fail_next_launch`` makes the next launch raise that error.
    """

    def __init__(self) -> None:
        super().__init__(url="http://fake", location="klaviyo_dagster.definitions")
        object.__setattr__(self, "runs", {})
        object.__setattr__(self, "launches", [])
        object.__setattr__(self, "partitions", set())
        object.__setattr__(self, "lock", threading.Lock())
        object.__setattr__(self, "launch_delay", 0.0)
        object.__setattr__(self, "fail_next_launch", None)

    def find_in_progress(self, tags: dict[str, str]) -> RunInfo | None:
        for run in reversed(self.runs.values()):
            if run.status in ("QUEUED", "STARTED") and tags.items() <= run.tags.items():
                return run
        return None

    def add_dynamic_partition(self, partitions_def_name: str, key: str) -> None:
        self.partitions.add((partitions_def_name, key))

    def launch(self, job_name: str, run_config: dict[str, Any], tags: dict[str, str]) -> str:
        time.sleep(self.launch_delay)
        with self.lock:
            failure = self.fail_next_launch
            object.__setattr__(self, "fail_next_launch", None)
            if failure is not None:
                raise failure
            run_id = str(uuid.uuid4())
            self.launches.append({"job": job_name, "run_config": run_config, "tags": tags})
            self.runs[run_id] = RunInfo(run_id, "QUEUED", job_name, dict(tags))
            return run_id

    def run(self, run_id: str) -> RunInfo | None:
        return self.runs.get(run_id)

    def set_status(self, run_id: str, status: str) -> None:
        run = self.runs[run_id]
        self.runs[run_id] = RunInfo(run.run_id, status, run.job_name, run.tags)


@pytest.fixture
def trigger_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A deployment of the tiny store's account (no simulator: nothing may call Klaviyo), the secret set."""
    for name in ("KLAVIYO_API_KEY_PRIVATE", "SHOPIFY_PLACED_ORDER_METRIC_ID", "KLAVIYO_API_REVISION"):
        monkeypatch.delenv(name, raising=False)
    for name in ("SUPABASE_URL", "NEXT_PUBLIC_SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_DB_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KLAVIYO_ENABLE", "true")
    monkeypatch.setenv("KLAVIYO_BASE_URL", "http://127.0.0.1:9")  # refused, should anything call it
    monkeypatch.setenv("KLAVIYO_API_KEY", DEFAULT_API_KEY)
    monkeypatch.setenv("KLAVIYO_ACCOUNT_ID", ACCOUNT_ID)
    monkeypatch.setenv("KLAVIYO_DAGSTER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ADMIN_JOB_SECRET", SECRET)


@pytest.fixture
def sim_env(trigger_env, tiny_store_env) -> SimulatorServer:
    """The same, with the tiny store's simulator behind KLAVIYO_BASE_URL (for dry runs)."""
    return tiny_store_env


@pytest.fixture
def serve() -> Iterator[Callable[..., httpx.Client]]:
    """``serve(settings=None, dagster=None)`` → an httpx client on the app served over real HTTP."""
    started: list[tuple[BackgroundServer, httpx.Client]] = []

    def start(settings: TriggerSettings | None = None, dagster: DagsterApi | None = None) -> httpx.Client:
        server = BackgroundServer(create_app(settings, dagster), name="trigger")
        server.start()
        client = httpx.Client(base_url=server.url, timeout=30)
        started.append((server, client))
        return client

    yield start
    for server, client in started:
        client.close()
        server.stop()


@pytest.fixture(scope="module")
def shared_trigger() -> Iterator[tuple[httpx.Client, FakeDagster]]:
    """One server per module (stopping uvicorn takes ~0.4 s): the app reads the environment per request."""
    dagster = FakeDagster()
    server = BackgroundServer(create_app(TriggerSettings(), dagster), name="trigger")
    server.start()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client, dagster
    server.stop()


@pytest.fixture
def fake_dagster(shared_trigger) -> FakeDagster:
    dagster = shared_trigger[1]
    dagster.runs.clear()
    dagster.launches.clear()
    dagster.partitions.clear()
    return dagster


@pytest.fixture
def trigger(trigger_env, shared_trigger, fake_dagster) -> httpx.Client:
    """The trigger on the tiny store's environment, launching into the fake Dagster."""
    return shared_trigger[0]


class GuardedServer:
    """The app served as ``python -m klaviyo_dagster.trigger`` serves it (server.server_config), in a thread."""

    def __init__(self, app: Any, settings: TriggerSettings) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        config = server_config(
            app, settings, host="127.0.0.1", port=self.port, lifespan="off", log_level="warning"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GuardedServer:
        self._thread.start()
        for _ in range(1000):  # up to ~10 s; a started server answers at once
            if self._server.started:
                return self
            if not self._thread.is_alive():
                raise RuntimeError("the trigger server exited while starting")
            time.sleep(0.01)
        raise RuntimeError("the trigger server did not start")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._sock.close()


@pytest.fixture
def serve_guarded() -> Iterator[Callable[..., tuple[GuardedServer, httpx.Client]]]:
    """``serve_guarded(settings, dagster, claims_factory=None)`` → (server, client), the production server."""
    started: list[tuple[GuardedServer, httpx.Client]] = []

    def start(
        settings: TriggerSettings,
        dagster: DagsterApi,
        claims_factory: Callable[[], IdempotencyClaims] | None = None,
    ) -> tuple[GuardedServer, httpx.Client]:
        server = GuardedServer(create_app(settings, dagster, claims_factory), settings).start()
        client = httpx.Client(base_url=server.url, timeout=60)
        started.append((server, client))
        return server, client

    yield start
    for server, client in started:
        client.close()
        server.stop()
