"""How the trigger is served: uvicorn's h11 protocol with a header deadline and a connection limit.

uvicorn has no timeout for reading a request's headers: its keep-alive timer stops at the first byte,
so a client sending half a request line holds the connection (and a file descriptor) for ever. Here
every connection must complete a request's headers within ``header_timeout_seconds`` of connecting
(or of its previous response); otherwise it gets a JSON 408 and is closed. The deadline is not
extended by further bytes, so dripping one byte at a time does not help. At most
``max_connections`` are open at once: a connection beyond that gets a JSON 503 and is closed before
anything is read. Request line and headers are limited to ``max_header_bytes`` (h11's incomplete
event size: larger ones get 400). Bodies have their own limit and read timeout in the app.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from klaviyo_dagster.trigger.settings import TriggerSettings


def raw_response(status: int, reason: str, body: dict[str, Any]) -> bytes:
    """A complete HTTP/1.1 JSON response that closes the connection (written before any request)."""
    payload = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + payload


HEADERS_TOO_SLOW = raw_response(408, "Request Timeout", {"error": "Request headers not received in time"})
TOO_MANY_CONNECTIONS = raw_response(503, "Service Unavailable", {"error": "Too many connections"})


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's headers and a cap on connections.

    The class attributes are set by :func:`protocol_class` from the settings.
    """

    header_timeout_seconds: float = 10.0
    max_connections: int = 64

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        """Counts the connection; refuses it past the limit, else starts its header deadline."""
        super().connection_made(transport)  # type: ignore[arg-type]
        self._header_timer: asyncio.TimerHandle | None = None
        if len(self.connections) > self.max_connections:
            self.transport.write(TOO_MANY_CONNECTIONS)
            self.transport.close()
            return
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        """Feeds h11; a request whose headers are complete stops the deadline while the app runs."""
        super().data_received(data)
        self._follow_request()

    def on_response_complete(self) -> None:
        """After a response, the next request's headers get a fresh deadline."""
        super().on_response_complete()
        self._follow_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    # --- the deadline --------------------------------------------------------------------------------

    def _app_running(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _follow_request(self) -> None:
        if self._app_running():
            self._disarm_header_timer()
        elif self._header_timer is None:
            self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout_seconds, self._headers_too_slow)

    def _disarm_header_timer(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        """The deadline passed without complete headers: 408 when a request had begun, then close."""
        self._header_timer = None
        if self._app_running() or self.transport.is_closing():
            return
        if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
            self.transport.write(HEADERS_TOO_SLOW)
        self.transport.close()


def protocol_class(settings: TriggerSettings) -> type[GuardedH11Protocol]:
    """The protocol with the settings' header deadline and connection limit."""
    return type(
        "TriggerH11Protocol",
        (GuardedH11Protocol,),
        {
            "header_timeout_seconds": settings.header_timeout_seconds,
            "max_connections": settings.max_connections,
        },
    )


def server_config(
    app: Any, settings: TriggerSettings, *, host: str, port: int, **extra: Any
) -> uvicorn.Config:
    """uvicorn's configuration for the trigger: guarded h11, no access log (it would print the token)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol_class(settings),
        h11_max_incomplete_event_size=settings.max_header_bytes,
        timeout_keep_alive=int(max(1, settings.keep_alive_seconds)),
        access_log=False,
        timeout_graceful_shutdown=10,
        log_config=None,
        **extra,
    )
