"""Against a real server with two worker processes: a nonce signs one body even when many
bodies race for it at once, the URL verified is the raw one, and unsigned requests are
refused before their body is read."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable
from urllib.parse import urlencode

import httpx
import psycopg
import pytest

from ledger.signatures import sign_v2, sign_v3
from tests.conftest import CALLBACK_URL, PLIVO_TOKEN, PUBLIC_URL
from tests.reliability.conftest import LedgerServer, ServerFleet

pytestmark = pytest.mark.reliability

Params = list[tuple[str, str]]
FORM = "application/x-www-form-urlencoded"


@pytest.fixture(scope="module")
def server(module_servers: ServerFleet, module_databases: Callable[[], str]) -> LedgerServer:
    """One server with two HTTP worker processes, each with its two flushers."""
    return module_servers.create(module_databases(), name="race", env={"LEDGER_WORKERS": "2"})


def delivered(message: str) -> Params:
    return [
        ("ErrorCode", ""),
        ("From", "13342031111"),
        ("MCC", "405"),
        ("MNC", "803"),
        ("MessageUUID", message),
        ("PartInfo", "1 of 1"),
        ("Status", "delivered"),
        ("To", "918553651111"),
    ]


def resplits(params: Params) -> list[Params]:
    """``params`` and two bodies V3 signs the same way (key/value boundaries moved)."""
    rest = [(k, v) for k, v in params if k not in {"ErrorCode", "From", "MCC", "MNC"}]
    swallowed = [("ErrorCode", "From13342031111MCC405MNC803"), *rest]
    status_cut = [(k, v) for k, v in params if k not in {"Status", "To"}]
    return [params, swallowed, [*status_cut, ("Status", "d"), ("eliveredTo", "918553651111")]]


async def post_all(server: LedgerServer, requests: list[tuple[bytes, dict[str, str]]]) -> list[int]:
    """POST every request at once, each on a connection of its own (so that the kernel
    spreads them over both worker processes)."""
    limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=30) as client:
        answers = await asyncio.gather(
            *(
                client.post("/plivo/status", content=body, headers=headers)
                for body, headers in requests
            )
        )
    return [answer.status_code for answer in answers]


async def events_per_nonce(database_url: str) -> Counter[str]:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cursor = await conn.execute("SELECT meta->>'nonce', count(*) FROM events GROUP BY 1")
        return Counter({nonce: count for nonce, count in await cursor.fetchall()})


async def test_racing_bodies_for_one_nonce_store_exactly_one_body_per_nonce(
    server: LedgerServer,
) -> None:
    requests: list[tuple[bytes, dict[str, str]]] = []
    nonces: list[str] = []
    for n in range(30):  # V2: the body is not signed at all, so any body "verifies"
        nonce = f"race-v2-{n}-{uuid.uuid4().hex[:8]}"
        nonces.append(nonce)
        headers = {
            "content-type": FORM,
            "x-plivo-signature-v2": sign_v2(url=CALLBACK_URL, nonce=nonce, auth_token=PLIVO_TOKEN),
            "x-plivo-signature-v2-nonce": nonce,
        }
        for status in ("queued", "sent", "failed"):
            body = [*delivered(str(uuid.uuid4()))[:-2], ("Status", status)]
            requests.append((urlencode(body).encode(), headers))
    for n in range(20):  # V3: three bodies with the same signed string
        nonce = f"race-v3-{n}-{uuid.uuid4().hex[:8]}"
        nonces.append(nonce)
        original = delivered(str(uuid.uuid4()))
        signature = sign_v3(
            method="POST", url=CALLBACK_URL, params=original, nonce=nonce, auth_token=PLIVO_TOKEN
        )
        headers = {
            "content-type": FORM,
            "x-plivo-signature-v3": signature,
            "x-plivo-signature-v3-nonce": nonce,
        }
        requests += [(urlencode(body).encode(), headers) for body in resplits(original)]

    statuses = await post_all(server, requests)

    assert Counter(statuses) == Counter({200: len(nonces), 403: len(requests) - len(nonces)})
    stored = await events_per_nonce(server.database_url)
    assert {nonce: stored[nonce] for nonce in nonces} == dict.fromkeys(nonces, 1)


def raw_post(server: LedgerServer, target: str, body: bytes, headers: dict[str, str]) -> bytes:
    """A POST with ``target`` exactly as given (HTTP clients would normalise ``//``)."""
    head = f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    head += f"Content-Length: {len(body)}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head.encode() + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize(
    ("signed_for", "status"), [("//plivo/status", 200), ("/plivo/status", 403)]
)
def test_a_double_slash_path_is_verified_as_called(
    server: LedgerServer, signed_for: str, status: int
) -> None:
    params = delivered(str(uuid.uuid4()))
    nonce = uuid.uuid4().hex
    signature = sign_v3(
        method="POST",
        url=f"{PUBLIC_URL}{signed_for}",
        params=params,
        nonce=nonce,
        auth_token=PLIVO_TOKEN,
    )
    headers = {
        "Content-Type": FORM,
        "X-Plivo-Signature-V3": signature,
        "X-Plivo-Signature-V3-Nonce": nonce,
    }

    answer = raw_post(server, "//plivo/status", urlencode(params).encode(), headers)

    assert answer.startswith(f"HTTP/1.1 {status}".encode()), answer[:300]


def test_an_unsigned_request_is_refused_before_its_body_arrives(server: LedgerServer) -> None:
    head = (
        "POST /plivo/status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: {FORM}\r\nContent-Length: 60000\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head)  # and no body at all
        started = time.monotonic()
        answer = sock.recv(65536)
        waited = time.monotonic() - started

    assert answer.startswith(b"HTTP/1.1 403")
    assert waited < 1.0
