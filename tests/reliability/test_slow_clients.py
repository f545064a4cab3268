"""Connections that send nothing, or stall mid-headers or mid-body, are cut off by a real
server after LEDGER_CLIENT_TIMEOUT, while a client that finishes its request is served."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import httpx
import pytest

from tests.reliability.conftest import LedgerServer, ServerFleet, signed

TIMEOUT_SECONDS = 2
#: The reaper sweeps every TIMEOUT / 4 (at least 0.5 s); allow for a loaded machine.
CUT_OFF_WITHIN = TIMEOUT_SECONDS + 3.0

pytestmark = pytest.mark.reliability


@pytest.fixture(scope="module")
def server(module_servers: ServerFleet, module_databases: Callable[[], str]) -> LedgerServer:
    """One server for the module, stopped with the module's fleet."""
    return module_servers.create(
        module_databases(), name="slow", env={"LEDGER_CLIENT_TIMEOUT": f"{TIMEOUT_SECONDS}s"}
    )


def seconds_until_closed(server: LedgerServer, sent: bytes) -> float:
    """Connect, send ``sent``, then wait for the server to close the connection."""
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        if sent:
            sock.sendall(sent)
        sock.settimeout(CUT_OFF_WITHIN + 5)
        started = time.monotonic()
        while sock.recv(65536):
            pass  # an answer (the 408) may come before the close
        return time.monotonic() - started


def test_a_connection_that_sends_nothing_is_closed(server: LedgerServer) -> None:
    assert seconds_until_closed(server, b"") < CUT_OFF_WITHIN


def test_a_connection_stalled_mid_headers_is_closed(server: LedgerServer) -> None:
    assert seconds_until_closed(server, b"POST /plivo/status HTTP/1.1\r\nHost: x\r\n") < (
        CUT_OFF_WITHIN
    )


def test_a_connection_stalled_mid_body_is_answered_408_and_closed(server: LedgerServer) -> None:
    callback = signed([("MessageUUID", "83876bdb-2033-4876-bfaf-0ff8693705af")])
    head = (
        "POST /plivo/status HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in callback.headers.items())
        + f"Content-Length: {len(callback.body) + 100}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head + callback.body)
        sock.settimeout(CUT_OFF_WITHIN + 5)
        started = time.monotonic()
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert waited < CUT_OFF_WITHIN


def test_a_client_that_finishes_its_requests_is_served_past_the_timeout(
    server: LedgerServer,
) -> None:
    with httpx.Client(base_url=server.base_url) as client:
        assert client.get("/health").status_code == 200
        time.sleep(TIMEOUT_SECONDS / 2)
        assert client.get("/health").status_code == 200  # the same kept-alive connection
