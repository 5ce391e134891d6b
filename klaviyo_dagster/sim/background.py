"""Serve an ASGI app from a background thread (uvicorn on its own event loop) for tests and tools.

Shared by the Klaviyo simulator and the tests' Supabase Storage double.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Self

import uvicorn

STARTUP_TIMEOUT_SECONDS = 10.0


class BackgroundServer:
    """``app`` on ``host:port`` (port 0 = a free one) until ``stop()``.

    ``on_loop(shutdown)`` is called on the server's loop with an event that ``stop()`` sets first, so
    a handler that hangs on purpose (a timeout fault) can be released before the server exits.
    """

    def __init__(
        self,
        app: Any,
        *,
        name: str,
        host: str = "127.0.0.1",
        port: int = 0,
        on_loop: Callable[[asyncio.Event], None] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._app = app
        self._name = name
        self._on_loop = on_loop
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._shutdown: asyncio.Event | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted sockets inherit this; without it, Nagle + delayed ACK add ~40 ms to every response
        # (uvicorn writes headers and body separately).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._run, args=(sock,), name=f"{self._name}-{self.port}", daemon=True
        )
        self._thread.start()
        self._wait_started()

    def _run(self, sock: socket.socket) -> None:
        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._shutdown = asyncio.Event()
            if self._on_loop is not None:
                self._on_loop(self._shutdown)
            assert self._server is not None
            await self._server.serve(sockets=[sock])

        try:
            asyncio.run(serve())
        except BaseException as err:  # surfaced by start()
            self._error = err
        finally:
            sock.close()

    def _wait_started(self) -> None:
        assert self._server is not None and self._thread is not None
        waited = 0.0
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"{self._name} failed to start: {self._error!r}")
            if waited > STARTUP_TIMEOUT_SECONDS:
                raise RuntimeError(f"{self._name} did not start in time")
            threading.Event().wait(0.01)
            waited += 0.01

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        loop, shutdown = self._loop, self._shutdown
        if loop is not None and shutdown is not None and not loop.is_closed():
            loop.call_soon_threadsafe(shutdown.set)  # releases requests hanging in a timeout fault
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._server = None
        self._thread = None


class ServedApp(ABC):
    """A stateful test server's lifecycle: ``start()``/``stop()`` and ``with``.

    Subclasses set ``host``, ``port`` (0 = free) and ``state`` (whose ``shutdown`` event is set on the
    server's loop) and implement ``build_asgi_app()``; ``server_name`` names the thread.
    """

    server_name = "served-app"
    host: str
    port: int
    state: Any
    _server: BackgroundServer | None = None

    @abstractmethod
    def build_asgi_app(self) -> Any:
        """The ASGI app to serve, built on ``self.state``."""

    def start(self) -> Self:
        self._server = BackgroundServer(
            self.build_asgi_app(),
            name=self.server_name,
            host=self.host,
            port=self.port,
            on_loop=self._on_loop,
        )
        self._server.start()
        self.port = self._server.port
        return self

    def _on_loop(self, shutdown: asyncio.Event) -> None:
        self.state.shutdown = shutdown

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
