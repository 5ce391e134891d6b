"""Run the simulator in a background thread (uvicorn on its own event loop) for tests and tools."""

from __future__ import annotations

from typing import Any

from klaviyo_dagster.sim.app import SimulatorState, build_app
from klaviyo_dagster.sim.background import ServedApp
from klaviyo_dagster.sim.config import RecordedRequest, SimConfig
from klaviyo_dagster.sim.data import Account
from klaviyo_dagster.sim.faults import FaultSpec


class SimulatorServer(ServedApp):
    """A real HTTP Klaviyo simulator on 127.0.0.1; ``port=0`` picks a free port.

    Use as a context manager (or ``start()``/``stop()``). ``base_url`` is valid once started.
    """

    server_name = "klaviyo-sim"

    def __init__(self, config: SimConfig | None = None, host: str = "127.0.0.1", port: int = 0):
        self.config = config or SimConfig()
        self.state = SimulatorState.build(self.config)
        self.host = host
        self.port = port

    def build_asgi_app(self) -> Any:
        return build_app(self.state)

    # --- test API ------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the request log, in arrival order."""
        with self.state.lock:
            return list(self.state.requests)

    @property
    def account(self) -> Account:
        """The account behind the first API key."""
        return self.state.accounts[self.config.api_keys[0]]

    def account_for(self, api_key: str) -> Account:
        return self.state.accounts[api_key]

    def set_fault(self, operation_id: str, spec: FaultSpec) -> None:
        """Inject ``spec`` on ``operation_id`` (``"*"`` = every operation), replacing any previous one."""
        self.state.set_fault(operation_id, spec)

    def clear_faults(self) -> None:
        self.state.faults.clear()

    def reset(self) -> None:
        """Forget requests, rate-limit counters and fault state (config faults are re-armed)."""
        self.state.reset()
