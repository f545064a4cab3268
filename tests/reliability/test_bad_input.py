"""Bad input, sent over HTTP to the real server: every request that is not a valid callback
or read is answered 4xx with an RFC 9457 problem-details body (never 500), appends nothing,
and a long run of them leaves the server's memory flat.

The server here runs with ``LEDGER_MAX_BODY_BYTES=262144`` (256 KiB, four times the default)
so that a callback with 50,000 fields fits under the limit and reaches the parser; the 10 MB
bodies are far above it either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import secrets
import select
import socket
import string
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode

import httpx
import pytest

from ledger.signatures import sign_v2, sign_v3
from tests.conftest import CALLBACK_URL, PLIVO_TOKEN, PUBLIC_URL
from tests.reliability.conftest import (
    AUTHORIZED,
    LedgerServer,
    Params,
    ServerFleet,
    assert_problem,
    client_for,
    event_count,
    remember_numbers,
)

pytestmark = pytest.mark.reliability

MAX_BODY_BYTES = 256 * 1024
TEN_MB = 10 * 1024 * 1024
MEMORY_ROUNDS = 5
MEMORY_GROWTH_LIMIT = 50 * 1024 * 1024
MESSAGE_UUID = "3f1c2b9a-5d7e-4c1a-9b2f-6e8d0a4c7b13"
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


def delivered(message_uuid: str = MESSAGE_UUID, **overrides: str) -> Params:
    params = {
        "MessageUUID": message_uuid,
        "Status": "delivered",
        "From": "14155550100",
        "To": "919800000100",
        "Sequence": "3",
        "Units": "1",
        "TotalAmount": "0.0035",
        "ErrorCode": "",
        "DeliveryReportTime": "2026-11-23 10:00:05.123456",
        **overrides,
    }
    remember_numbers(list(params.items()))
    return list(params.items())


def v3(
    params: Params,
    *,
    method: str = "POST",
    url: str = CALLBACK_URL,
    token: str = PLIVO_TOKEN,
    nonce: str | None = None,
) -> dict[str, str]:
    """The V3 signature headers Plivo would send for ``params``."""
    nonce = nonce or secrets.token_hex(10)
    signature = sign_v3(method=method, url=url, params=params, nonce=nonce, auth_token=token)
    return {"X-Plivo-Signature-V3": signature, "X-Plivo-Signature-V3-Nonce": nonce}


def form(params: Params) -> bytes:
    return urlencode(params).encode()


@dataclass(frozen=True)
class Bad:
    """One bad request and the status it must get."""

    name: str
    status: int
    content: Callable[[], bytes] = lambda: b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    method: str = "POST"
    path: str = "/plivo/status"
    params: dict[str, str] | None = None
    #: Refused before the server has read it all: sent by a client that reads while sending.
    oversized: bool = False
    chunked: bool = False
    #: The request target as raw bytes, for what httpx would percent-encode.
    raw_target: bytes | None = None

    def __str__(self) -> str:
        return self.name


def bad_requests() -> list[Bad]:
    """Every hand-written bad request: malformed, oversized, unauthenticated or forged."""
    good = delivered()
    good_signed = v3(good)
    # 50,000 distinct three-character names without values: "aaa&aab&…", 200 kB.
    names = ["".join(letters) for letters in itertools.product(string.ascii_letters, repeat=3)]
    fifty_thousand = [(name, "") for name in names[:50_000]]
    fifty_thousand_body = "&".join(name for name, _ in fifty_thousand).encode()
    assert len(fifty_thousand_body) < MAX_BODY_BYTES
    as_json = json.dumps({"MessageUUID": MESSAGE_UUID, "Status": "delivered"}).encode()
    return [
        # Bodies that cannot be read.
        Bad("empty body, signed", 400, headers=[("content-type", FORM), *v3([]).items()]),
        Bad("empty body, unsigned", 403, headers=[("content-type", FORM)]),
        Bad(
            "invalid UTF-8",
            400,
            lambda: b"MessageUUID=\xff\xfe&Status=sent",
            [("content-type", FORM), *good_signed.items()],
        ),
        Bad(
            "percent-encoded invalid UTF-8",
            400,
            lambda: b"MessageUUID=%ff%fe",
            [("content-type", FORM), *good_signed.items()],
        ),
        Bad(
            "raw NUL byte",
            400,
            lambda: form(good) + b"&Note=a\x00b",
            [("content-type", FORM), *good_signed.items()],
        ),
        Bad(
            "percent-encoded NUL byte",
            400,
            lambda: form(good) + b"&Note=a%00b",
            [("content-type", FORM), *good_signed.items()],
        ),
        Bad(
            "JSON sent as form",
            403,
            lambda: as_json,
            [("content-type", FORM), *good_signed.items()],
        ),
        Bad(
            "form sent as JSON",
            400,
            lambda: form(good),
            [("content-type", JSON), *good_signed.items()],
        ),
        Bad(
            "JSON nested object",
            400,
            lambda: b'{"MessageUUID": {"$ne": null}}',
            [("content-type", JSON), *good_signed.items()],
        ),
        Bad(
            "JSON top level array",
            400,
            lambda: b"[1, 2, 3]",
            [("content-type", JSON), *good_signed.items()],
        ),
        Bad(
            "JSON nested 100,000 deep",
            400,
            lambda: b"[" * 100_000 + b"]" * 100_000,
            [("content-type", JSON), *good_signed.items()],
        ),
        Bad("no content type", 415, lambda: form(good), list(good_signed.items())),
        Bad(
            "text/plain",
            415,
            lambda: form(good),
            [("content-type", "text/plain"), *good_signed.items()],
        ),
        Bad(
            "multipart",
            415,
            lambda: b"--x\r\n\r\n--x--\r\n",
            [("content-type", "multipart/form-data; boundary=x"), *good_signed.items()],
        ),
        # Too big.
        Bad(
            "10 MB body with a length",
            413,
            lambda: b"a" * TEN_MB,
            [("content-type", FORM)],
            oversized=True,
        ),
        Bad(
            "10 MB body, chunked",
            413,
            lambda: b"a" * TEN_MB,
            [("content-type", FORM), *good_signed.items()],
            oversized=True,
            chunked=True,
        ),
        # Unsigned: refused before a byte of the body is read.
        Bad(
            "10 MB body, chunked, unsigned",
            403,
            lambda: b"a" * TEN_MB,
            [("content-type", FORM)],
            oversized=True,
            chunked=True,
        ),
        Bad("50,000 fields, unsigned", 403, lambda: fifty_thousand_body, [("content-type", FORM)]),
        # More fields than LEDGER_MAX_FIELDS: refused before decoding or signature work.
        Bad(
            "50,000 fields, forged signature",
            400,
            lambda: fifty_thousand_body,
            [("content-type", FORM), *v3(fifty_thousand, token="not-the-token").items()],
        ),
        # Data that looks like an attack, in the field that must be a UUID.
        Bad(
            "SQL as MessageUUID",
            400,
            lambda: form(delivered("'; DROP TABLE events; --")),
            [("content-type", FORM), *v3(delivered("'; DROP TABLE events; --")).items()],
        ),
        Bad(
            "script as MessageUUID",
            400,
            lambda: form(delivered("<script>alert(1)</script>")),
            [("content-type", FORM), *v3(delivered("<script>alert(1)</script>")).items()],
        ),
        Bad(
            "two different MessageUUIDs",
            400,
            lambda: form([*good, ("MessageUUID", "83876bdb-2033-4876-bfaf-0ff8693705af")]),
            [
                ("content-type", FORM),
                *v3([*good, ("MessageUUID", "83876bdb-2033-4876-bfaf-0ff8693705af")]).items(),
            ],
        ),
        # Missing, duplicated, forged and truncated signatures.
        Bad("no signature headers", 403, lambda: form(good), [("content-type", FORM)]),
        Bad(
            "signature without nonce",
            403,
            lambda: form(good),
            [("content-type", FORM), ("X-Plivo-Signature-V3", good_signed["X-Plivo-Signature-V3"])],
        ),
        Bad(
            "nonce without signature",
            403,
            lambda: form(good),
            [
                ("content-type", FORM),
                ("X-Plivo-Signature-V3-Nonce", good_signed["X-Plivo-Signature-V3-Nonce"]),
            ],
        ),
        Bad(
            "signature made with another token",
            403,
            lambda: form(good),
            [("content-type", FORM), *v3(good, token="not-the-token").items()],
        ),
        Bad(
            "truncated signature",
            403,
            lambda: form(good),
            [
                ("content-type", FORM),
                ("X-Plivo-Signature-V3", good_signed["X-Plivo-Signature-V3"][:-4]),
                ("X-Plivo-Signature-V3-Nonce", good_signed["X-Plivo-Signature-V3-Nonce"]),
            ],
        ),
        Bad(
            "empty signature",
            403,
            lambda: form(good),
            [
                ("content-type", FORM),
                ("X-Plivo-Signature-V3", ""),
                ("X-Plivo-Signature-V3-Nonce", good_signed["X-Plivo-Signature-V3-Nonce"]),
            ],
        ),
        Bad(
            "signature of another URL",
            403,
            lambda: form(good),
            [("content-type", FORM), *v3(good, url=f"{PUBLIC_URL}/other").items()],
        ),
        Bad(
            "signature of another body",
            403,
            lambda: form(delivered(Status="failed")),
            [("content-type", FORM), *good_signed.items()],
        ),
        Bad(
            "two forged signature headers",
            403,
            lambda: form(good),
            [
                ("content-type", FORM),
                ("X-Plivo-Signature-V3", "Zm9yZ2VkLW9uZQ=="),
                ("X-Plivo-Signature-V3", "Zm9yZ2VkLXR3bw=="),
                ("X-Plivo-Signature-V3-Nonce", good_signed["X-Plivo-Signature-V3-Nonce"]),
            ],
        ),
        Bad(
            "invalid V3 with a valid V2 (no downgrade)",
            403,
            lambda: form(good),
            [
                ("content-type", FORM),
                ("X-Plivo-Signature-V3", "Zm9yZ2Vk"),
                ("X-Plivo-Signature-V3-Nonce", "n"),
                (
                    "X-Plivo-Signature-V2",
                    sign_v2(url=CALLBACK_URL, nonce="n2", auth_token=PLIVO_TOKEN),
                ),
                ("X-Plivo-Signature-V2-Nonce", "n2"),
            ],
        ),
        Bad("GET without parameters", 403, method="GET"),
        Bad(
            "raw UTF-8 in the query string, V3 headers",
            403,
            method="GET",
            raw_target="/plivo/status?MessageUUID=é".encode(),
            headers=list(v3([]).items()),
        ),
        Bad(
            "raw UTF-8 in the query string of a POST",
            403,
            lambda: form(good),
            [("content-type", FORM), *good_signed.items()],
            raw_target="/plivo/status?Note=é".encode(),
        ),
        Bad(
            "GET signed, without MessageUUID",
            400,
            method="GET",
            params={"Status": "sent"},
            headers=list(
                v3([("Status", "sent")], method="GET", url=f"{CALLBACK_URL}?Status=sent").items()
            ),
        ),
        Bad(
            "PUT",
            405,
            lambda: form(good),
            [("content-type", FORM), *good_signed.items()],
            method="PUT",
        ),
        Bad("unknown path", 404, path="/plivo/status/../../etc/passwd"),
        # Read endpoints.
        Bad(
            "status of a malformed UUID",
            400,
            method="GET",
            path="/v1/messages/not-a-uuid",
            headers=list(AUTHORIZED.items()),
        ),
        Bad(
            "status of an SQL-looking UUID",
            400,
            method="GET",
            path="/v1/messages/1'%20OR%20'1'='1",
            headers=list(AUTHORIZED.items()),
        ),
        Bad(
            "audit trail of an unknown message",
            404,
            method="GET",
            path=f"/v1/messages/{MESSAGE_UUID}/events",
            headers=list(AUTHORIZED.items()),
        ),
        Bad(
            "metrics without dates",
            400,
            method="GET",
            path="/v1/metrics/daily",
            headers=list(AUTHORIZED.items()),
        ),
        Bad(
            "metrics with a malformed date",
            400,
            method="GET",
            path="/v1/metrics/daily",
            params={"start": "2026-13-45", "end": "2026-11-23"},
            headers=list(AUTHORIZED.items()),
        ),
        Bad(
            "metrics with a reversed range",
            400,
            method="GET",
            path="/v1/metrics/daily",
            params={"start": "2026-11-23", "end": "2026-11-01"},
            headers=list(AUTHORIZED.items()),
        ),
        Bad(
            "metrics in an unknown format",
            400,
            method="GET",
            path="/v1/metrics/daily",
            params={"start": "2026-11-01", "end": "2026-11-23", "format": "xml"},
            headers=list(AUTHORIZED.items()),
        ),
        *(
            Bad(
                f"search with a NUL in the {name} filter",
                400,
                method="GET",
                path="/v1/messages",
                params={name: "a\x00b"},
                headers=list(AUTHORIZED.items()),
            )
            for name in ("status", "from", "to")
        ),
        Bad(
            "search with a forged cursor",
            400,
            method="GET",
            path="/v1/messages",
            params={"cursor": "' OR 1=1 --"},
            headers=list(AUTHORIZED.items()),
        ),
    ]


BAD_REQUESTS = bad_requests()


async def send(client: httpx.AsyncClient, bad: Bad) -> httpx.Response:
    if bad.oversized or bad.raw_target is not None:
        return await asyncio.to_thread(
            raw_request,
            str(client.base_url),
            bad.method,
            bad.raw_target or bad.path.encode(),
            bad.headers,
            bad.content(),
            chunked=bad.chunked,
        )
    return await client.request(
        bad.method, bad.path, content=bad.content(), headers=bad.headers, params=bad.params
    )


def raw_request(
    base_url: str,
    method: str,
    target: bytes,
    headers: list[tuple[str, str]],
    body: bytes,
    *,
    chunked: bool = False,
) -> httpx.Response:
    """Send a request byte for byte over a plain socket; stop sending the body as soon as an
    answer arrives, and read the answer (blocking: run it in a thread).

    For what httpx will not send (raw non-ASCII bytes in the request target), and for bodies
    the server refuses part-way: curl, Go's net/http and browsers read the answer while
    sending, as this does. httpx (and asyncio streams) give up on the answer once a write
    fails: the server has closed the connection, the rest of the body makes its kernel reset
    it, and the reset drops the answer (see the test of a client that sends it all first).
    """
    url = httpx.URL(base_url)
    head = [
        f"Host: {url.host}:{url.port}",
        *(f"{name}: {value}" for name, value in headers),
        "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    request_line = method.encode() + b" " + target + b" HTTP/1.1\r\n"
    with socket.create_connection((url.host, url.port or 80), timeout=30) as sock:
        sock.sendall(request_line + ("\r\n".join(head) + "\r\n\r\n").encode())
        for start in range(0, len(body), 64 * 1024):
            if select.select([sock], [], [], 0)[0]:
                break  # the answer is here: stop sending
            piece = body[start : start + 64 * 1024]
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            except (BrokenPipeError, ConnectionResetError):
                break
        else:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(b"0\r\n\r\n" if chunked else b"")
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(64 * 1024):
                answer += chunk
    head_part, _, content = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head_part.decode("latin-1").split("\r\n")
    answer_headers = [
        (name.strip(), value.strip())
        for name, _, value in (line.partition(":") for line in header_lines)
    ]
    return httpx.Response(int(status_line.split()[1]), headers=answer_headers, content=content)


@pytest.fixture(scope="module")
def server(module_servers: ServerFleet, module_databases: Callable[[], str]) -> LedgerServer:
    return module_servers.create(
        module_databases(), name="bad-input", env={"LEDGER_MAX_BODY_BYTES": str(MAX_BODY_BYTES)}
    )


@pytest.fixture
async def client(server: LedgerServer) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(server.base_url) as client:
        yield client


@pytest.mark.parametrize("bad", BAD_REQUESTS, ids=str)
async def test_a_bad_request_gets_a_problem_and_appends_nothing(
    bad: Bad, server: LedgerServer, client: httpx.AsyncClient
) -> None:
    before = await event_count(server.database_url)
    assert_problem(await send(client, bad), bad.status)
    assert await event_count(server.database_url) == before


async def test_a_v2_nonce_replayed_with_an_altered_body_is_refused(
    server: LedgerServer, client: httpx.AsyncClient
) -> None:
    message = "8b0f3a52-1c7e-4d2a-b6f1-0e9c3d5a7f24"
    nonce = secrets.token_hex(10)
    headers = {
        "content-type": FORM,
        "X-Plivo-Signature-V2": sign_v2(url=CALLBACK_URL, nonce=nonce, auth_token=PLIVO_TOKEN),
        "X-Plivo-Signature-V2-Nonce": nonce,
    }
    before = await event_count(server.database_url)
    original = form(delivered(message))
    assert (
        await client.post("/plivo/status", content=original, headers=headers)
    ).status_code == 200

    for altered in (
        delivered(message, Status="failed", ErrorCode="900"),
        delivered("0d6a1f3c-9e2b-4b7d-8c5a-1f0e2d3c4b5a"),
    ):
        response = await client.post("/plivo/status", content=form(altered), headers=headers)
        assert_problem(response, 403)
    retry = await client.post("/plivo/status", content=original, headers=headers)
    assert retry.status_code == 200
    assert retry.json()["result"] == "duplicate"
    assert await event_count(server.database_url) == before + 1


@pytest.mark.parametrize(
    "value",
    [
        "'; DROP TABLE events; --",
        "1' OR '1'='1",
        "<script>alert(document.cookie)</script>",
        '"><img src=x onerror=alert(1)>',
        "{{7*7}} ${7*7} %s%s%n",
        "\u202egnp.exe",
    ],
)
async def test_sql_and_script_looking_values_are_stored_as_plain_data(
    value: str, server: LedgerServer, client: httpx.AsyncClient
) -> None:
    message = f"5e1d2c3b-4a59-4687-9a0b-{secrets.token_hex(6)}"
    params = delivered(message, Status=value, ErrorCode=value, Note=value)
    response = await client.post(
        "/plivo/status", content=form(params), headers={"content-type": FORM, **v3(params)}
    )
    assert response.status_code == 200
    trail = await client.get(f"/v1/messages/{message}/events", headers=AUTHORIZED)
    assert trail.status_code == 200
    [event] = trail.json()["events"]
    assert event["payload"] == dict(params)
    assert event["status"] == value.strip().lower()


def bad_request(name: str) -> Bad:
    [bad] = (bad for bad in BAD_REQUESTS if bad.name == name)
    return bad


async def test_a_refusal_on_the_headers_alone_closes_the_connection(
    server: LedgerServer, client: httpx.AsyncClient
) -> None:
    """The body was never read, so the connection cannot carry another request: saying so
    every time keeps a client from sending its next request on a connection being closed."""
    for _ in range(200):  # granian on its own kept some of these alive and cut some off
        assert (await client.get("/health")).status_code == 200  # a kept-alive connection
        response = await send(client, bad_request("50,000 fields, unsigned"))
        assert response.status_code == 403
        assert response.headers["connection"] == "close"


async def test_a_refusal_after_the_body_was_read_keeps_the_connection_alive(
    server: LedgerServer, client: httpx.AsyncClient
) -> None:
    response = await send(client, bad_request("signature of another body"))
    assert response.status_code == 403
    assert "connection" not in response.headers


async def test_memory_stays_flat_under_repeated_bad_input(
    server: LedgerServer, client: httpx.AsyncClient
) -> None:
    async def one_round() -> None:
        for bad in BAD_REQUESTS:  # their answers are the other tests' business
            await send(client, bad)

    for _ in range(2):  # warm-up: caches, pools, allocator arenas
        await one_round()
    warm = server.rss_bytes()
    for _ in range(MEMORY_ROUNDS):
        await one_round()
    growth = server.rss_bytes() - warm
    assert growth < MEMORY_GROWTH_LIMIT, f"RSS grew by {growth / 2**20:.1f} MiB"


async def test_an_oversized_body_is_answered_413_even_to_a_client_that_sends_it_all_first(
    server: LedgerServer, client: httpx.AsyncClient
) -> None:
    """RFC 9112 section 9.6: a server that closes with the request body still arriving should
    read (and discard) it first, or the client's TCP stack may throw the answer away."""
    response = await client.post(
        "/plivo/status", content=b"a" * TEN_MB, headers={"content-type": FORM}
    )
    assert_problem(response, 413)
