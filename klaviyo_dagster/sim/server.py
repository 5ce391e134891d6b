"""Run the simulator in a background thread (uvicorn on its own event loop) for tests and tools."""

from __future__ import annotations

import asyncio
import socket
import threading
from types import TracebackType

import uvicorn

from klaviyo_dagster.sim.app import SimulatorState, build_app
from klaviyo_dagster.sim.config import RecordedRequest, SimConfig
from klaviyo_dagster.sim.data import Account
from klaviyo_dagster.sim.faults import FaultSpec

STARTUP_TIMEOUT_SECONDS = 10.0


class SimulatorServer:
    """A real HTTP Klaviyo simulator on 127.0.0.1; ``port=0`` picks a free port.

    Use as a context manager (or ``start()``/``stop()``). ``base_url`` is valid once started.
    """

    def __init__(self, config: SimConfig | None = None, host: str = "127.0.0.1", port: int = 0):
        self.config = config or SimConfig()
        self.state = SimulatorState.build(self.config)
        self.host = host
        self._requested_port = port
        self.port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> SimulatorServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted sockets inherit this; without it, Nagle + delayed ACK add ~40 ms to every response
        # (uvicorn writes headers and body separately).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((self.host, self._requested_port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            build_app(self.state),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._run, args=(sock,), name=f"klaviyo-sim-{self.port}", daemon=True
        )
        self._thread.start()
        self._wait_started()
        return self

    def _run(self, sock: socket.socket) -> None:
        assert self._server is not None

        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self.state.shutdown = asyncio.Event()
            assert self._server is not None
            await self._server.serve(sockets=[sock])

        try:
            asyncio.run(serve())
        except BaseException as err:  # surfaced by start()/stop()
            self._error = err
        finally:
            sock.close()

    def _wait_started(self) -> None:
        assert self._server is not None and self._thread is not None
        waited = 0.0
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"simulator failed to start: {self._error!r}")
            if waited > STARTUP_TIMEOUT_SECONDS:
                raise RuntimeError("simulator did not start in time")
            threading.Event().wait(0.01)
            waited += 0.01

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        loop, shutdown = self._loop, self.state.shutdown
        if loop is not None and shutdown is not None and not loop.is_closed():
            loop.call_soon_threadsafe(shutdown.set)  # releases requests hanging in a timeout fault
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

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
