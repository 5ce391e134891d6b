"""The production server (server.py) against half-sent requests, over raw sockets on 127.0.0.1.

No test asserts how long anything took: each waits (with a generous socket timeout as a safety net)
for what the server sends, then checks what it was.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from klaviyo_dagster.trigger import TriggerSettings
from klaviyo_dagster.trigger.app import STATUS_PATH, UPDATE_PATH
from klaviyo_dagster_tests.trigger.conftest import SECRET

PARTIAL = f"GET {UPDATE_PATH}?accountId=x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: ".encode()
SAFETY_TIMEOUT = 30.0  # only so a broken server fails the test instead of hanging it
UNKNOWN_RUN = "00000000-0000-4000-8000-000000000000"


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=SAFETY_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def status_and_body(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body) if body else {}


@pytest.fixture
def settings(trigger_env) -> TriggerSettings:
    settings = TriggerSettings.from_env()
    settings.header_timeout_seconds = 0.3
    settings.max_connections = 8
    return settings


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def test_partial_headers_get_408_and_the_connection_is_closed(settings, serve_guarded, fake_dagster, sockets):
    server, _ = serve_guarded(settings, fake_dagster)
    for _ in range(6):
        sockets.append(connect(server.port))
        sockets[-1].sendall(PARTIAL)

    for sock in sockets:
        status, body = status_and_body(read_until_closed(sock))
        assert status == 408
        assert body == {"error": "Request headers not received in time"}
    assert not fake_dagster.launches


def test_dripping_bytes_does_not_extend_the_deadline(settings, serve_guarded, fake_dagster, sockets):
    server, _ = serve_guarded(settings, fake_dagster)
    sock = connect(server.port)
    sockets.append(sock)
    closed = False
    for index in range(400):  # far more bytes than the deadline allows at this pace
        try:
            sock.sendall(PARTIAL[index % len(PARTIAL) : index % len(PARTIAL) + 1] or b"a")
        except OSError:
            closed = True
            break
        time.sleep(0.02)
        sock.settimeout(0)
        try:
            if sock.recv(65536) is not None:
                closed = True
                break
        except BlockingIOError:
            pass
        finally:
            sock.settimeout(SAFETY_TIMEOUT)
    assert closed, "the server kept a connection dripping its headers open"


def test_a_connection_that_sends_nothing_is_closed_silently(settings, serve_guarded, fake_dagster, sockets):
    server, _ = serve_guarded(settings, fake_dagster)
    sockets.append(connect(server.port))
    assert read_until_closed(sockets[0]) == b""


def test_past_the_connection_limit_new_connections_get_503_and_the_service_recovers(
    settings, serve_guarded, fake_dagster, sockets
):
    settings.header_timeout_seconds = 3.0  # the idle connections outlive the checks below
    server, client = serve_guarded(settings, fake_dagster)
    for _ in range(settings.max_connections):
        sockets.append(connect(server.port))
        sockets[-1].sendall(PARTIAL)

    extra = connect(server.port)
    sockets.append(extra)
    status, body = status_and_body(read_until_closed(extra))
    assert (status, body) == (503, {"error": "Too many connections"})

    for sock in sockets[:-1]:  # the half-sent requests are closed at their deadline ...
        assert status_and_body(read_until_closed(sock))[0] == 408
    # ... and a legitimate request is served again
    response = client.get(STATUS_PATH, params={"runId": UNKNOWN_RUN}, headers={"x-admin-job-secret": SECRET})
    assert response.status_code == 404, response.text


def test_many_half_sent_requests_below_the_limit_do_not_block_a_legitimate_one(
    settings, serve_guarded, fake_dagster, sockets
):
    settings.header_timeout_seconds = 3.0
    server, client = serve_guarded(settings, fake_dagster)
    for _ in range(settings.max_connections - 2):  # the client's own connection needs a slot
        sockets.append(connect(server.port))
        sockets[-1].sendall(PARTIAL)

    response = client.get(STATUS_PATH, params={"runId": UNKNOWN_RUN}, headers={"x-admin-job-secret": SECRET})
    assert response.status_code == 404, response.text


def test_oversized_headers_get_400(settings, serve_guarded, fake_dagster, sockets):
    server, _ = serve_guarded(settings, fake_dagster)
    sock = connect(server.port)
    sockets.append(sock)
    sock.sendall(PARTIAL + b"x" * (settings.max_header_bytes + 1024))
    raw = read_until_closed(sock)
    assert raw.startswith(b"HTTP/1.1 400")


def test_after_a_response_the_next_half_sent_request_gets_408(settings, serve_guarded, fake_dagster, sockets):
    server, _ = serve_guarded(settings, fake_dagster)
    sock = connect(server.port)
    sockets.append(sock)
    sock.sendall(
        f"GET {STATUS_PATH}?runId={UNKNOWN_RUN}&token={SECRET} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    )
    first = b""
    while b'"runId"' not in first:  # the 404's body names the run
        first += sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 404")
    sock.sendall(PARTIAL)
    assert status_and_body(read_until_closed(sock))[0] == 408
