"""``GET /v1/stream`` against the real server: every settled event exactly once, in fence
order, across disconnects and restarts; filters; the token; a slow client dropped.

Events are appended straight into the ledger, by several concurrent writers in small
transactions (so transactions commit out of position order, as under load); the stream is
read over HTTP as a client would, and compared with the ledger's own fence order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC, datetime
from uuid import UUID, uuid4

import httpx
import msgspec
import pytest

from ledger.database import connect
from ledger.events import EventMeta, NewEvent
from ledger.store import Append, append, notify_readers
from tests.reliability.conftest import AUTHORIZED, LedgerServer, ServerFleet

pytestmark = pytest.mark.reliability

READ_TIMEOUT = 20.0


class Message(msgspec.Struct, frozen=True):
    """One SSE message as a client parses it."""

    event: str | None
    id: str | None
    data: str


class Wanted(msgspec.Struct, frozen=True):
    """What the test appends for one event."""

    message_uuid: UUID
    status: str
    to_number: str


def _event(wanted: Wanted) -> Append:
    return Append(
        NewEvent(
            message_uuid=wanted.message_uuid,
            event_type="plivo.status_reported",
            status=wanted.status,
            occurred_at=datetime.now(UTC),
            dedup_key=os.urandom(16),
            payload={
                "MessageUUID": str(wanted.message_uuid),
                "Status": wanted.status,
                "To": wanted.to_number,
            },
            meta=EventMeta("plivo", "unsigned"),
        )
    )


def varied(count: int) -> list[Wanted]:
    """``count`` events over a few messages, statuses and recipients."""
    messages = [uuid4() for _ in range(7)]
    statuses = ("queued", "sent", "delivered", "undelivered")
    return [Wanted(messages[n % 7], statuses[n % 4], f"91987654321{n % 3}") for n in range(count)]


async def append_concurrently(
    database_url: str, events: Sequence[Wanted], *, writers: int = 4, batch: int = 5
) -> None:
    """Append ``events`` from ``writers`` connections at once, ``batch`` per transaction."""
    chunks = [events[n : n + batch] for n in range(0, len(events), batch)]

    async def write(share: Sequence[Sequence[Wanted]]) -> None:
        async with connect(database_url) as conn:
            for chunk in share:
                await append(conn, [_event(item) for item in chunk])
                await notify_readers(conn)

    await asyncio.gather(*(write(chunks[w::writers]) for w in range(writers)))


async def fence_order(database_url: str, where: str = "TRUE") -> list[str]:
    """The ids the stream must give, in the order it must give them."""
    async with connect(database_url) as conn:
        cursor = await conn.execute(
            "SELECT transaction_id::text || '-' || position FROM events"
            f" WHERE {where} ORDER BY transaction_id, position"
        )
        return [row[0] for row in await cursor.fetchall()]


class Stream:
    """An open stream, parsed into SSE messages as a client does."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def opening(self) -> None:
        """Wait for the stream's opening comment: a stream from now has joined the feed."""
        line = await asyncio.wait_for(anext(self._lines), READ_TIMEOUT)
        assert line.startswith(": ledger live feed"), line

    async def _messages(self) -> AsyncIterator[Message]:
        fields: dict[str, str] = {}
        async for line in self._lines:
            if not line:
                if "data" in fields or "event" in fields:
                    yield Message(fields.get("event"), fields.get("id"), fields.get("data", ""))
                fields = {}
                continue
            if line.startswith(":"):
                continue
            key, _, value = line.partition(":")
            value = value.removeprefix(" ")
            fields[key] = f"{fields[key]}\n{value}" if key == "data" and key in fields else value

    async def remainder(self) -> list[str]:
        """The non-empty lines the server sends from here until it ends the stream."""

        async def read() -> list[str]:
            return [line async for line in self._lines if line]

        return await asyncio.wait_for(read(), READ_TIMEOUT)

    async def take(self, count: int) -> list[Message]:
        """The next ``count`` ledger events (fails if they do not come in time)."""
        taken: list[Message] = []

        async def read() -> None:
            async for message in self._messages():
                assert message.event == "ledger_event", message
                taken.append(message)
                if len(taken) == count:
                    return

        await asyncio.wait_for(read(), READ_TIMEOUT)
        return taken


@contextlib.asynccontextmanager
async def opened(
    server: LedgerServer, *, query: str = "", headers: dict[str, str] | None = None
) -> AsyncIterator[Stream]:
    """A stream from ``server``, open for the block, past its opening comment."""
    async with (
        httpx.AsyncClient(base_url=server.base_url, timeout=READ_TIMEOUT) as client,
        client.stream(
            "GET", f"/v1/stream{query}", headers={**AUTHORIZED, **(headers or {})}
        ) as response,
    ):
        assert response.status_code == 200, await response.aread()
        stream = Stream(response)
        await stream.opening()
        yield stream


def ids(taken: Sequence[Message]) -> list[str]:
    return [message.id or "" for message in taken]


@pytest.fixture(scope="module")
def shared_server(module_servers: ServerFleet, module_databases: Callable[[], str]) -> LedgerServer:
    """One server on its own database for the tests that do not restart or tune it."""
    return module_servers.create(module_databases(), name="stream")


async def test_each_event_once_in_fence_order_across_a_disconnect(
    servers: ServerFleet, module_databases: Callable[[], str]
) -> None:
    database_url = module_databases()
    server = servers.create(database_url, name="stream-once")
    async with opened(server, query="?last_event_id=0-0") as first:
        writing = asyncio.create_task(append_concurrently(database_url, varied(1000)))
        before = await first.take(500)
    # Reconnect while the writers are still going, as EventSource would.
    async with opened(server, headers={"Last-Event-ID": before[-1].id or ""}) as second:
        after = await second.take(500)
    await writing
    assert ids(before) + ids(after) == await fence_order(database_url)


async def test_events_carry_their_position_status_and_a_masked_recipient(
    shared_server: LedgerServer,
) -> None:
    async with opened(shared_server) as response:
        wanted = Wanted(uuid4(), "delivered", "919876543219")
        await append_concurrently(shared_server.database_url, [wanted])
        [message] = await response.take(1)
    data = msgspec.json.decode(message.data)
    assert message.id == f"{message.id.split('-')[0]}-{data['position']}"  # type: ignore[union-attr]
    assert data["message_uuid"] == str(wanted.message_uuid)
    assert (data["event_type"], data["status"]) == ("plivo.status_reported", "delivered")
    assert data["recipient"] == "91…19"
    assert data["occurred_at"]
    assert data["recorded_at"]


@pytest.mark.parametrize(
    ("query", "where"),
    [
        ("status=DELIVERED", "status = 'delivered'"),
        ("to=%2B91%209876%20543210", "payload->>'To' = '919876543210'"),
        ("to=919876543211", "payload->>'To' = '919876543211'"),
    ],
)
async def test_filters_give_exactly_the_matching_events(
    shared_server: LedgerServer, query: str, where: str
) -> None:
    await append_concurrently(shared_server.database_url, varied(120))
    expected = await fence_order(shared_server.database_url, where)
    async with opened(shared_server, query=f"?last_event_id=0-0&{query}") as response:
        assert ids(await response.take(len(expected))) == expected


async def test_message_filter_gives_one_messages_events(shared_server: LedgerServer) -> None:
    events = varied(70)
    await append_concurrently(shared_server.database_url, events)
    wanted = events[3].message_uuid
    expected = await fence_order(shared_server.database_url, f"message_uuid = '{wanted}'")
    async with opened(shared_server, query=f"?last_event_id=0-0&message_uuid={wanted}") as stream:
        assert ids(await stream.take(len(expected))) == expected


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}], ids=["no token", "wrong token"]
)
def test_the_stream_requires_a_read_token(
    shared_server: LedgerServer, headers: dict[str, str]
) -> None:
    response = httpx.get(f"{shared_server.base_url}/v1/stream", headers=headers, timeout=5)
    assert response.status_code == 401
    assert "Authorization: Bearer" in response.json()["detail"]


async def test_a_browser_may_pass_the_token_in_the_query(shared_server: LedgerServer) -> None:
    token = AUTHORIZED["Authorization"].removeprefix("Bearer ")
    async with (
        httpx.AsyncClient(base_url=shared_server.base_url, timeout=5) as client,
        client.stream("GET", f"/v1/stream?token={token}") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")


def test_a_malformed_last_event_id_is_refused(shared_server: LedgerServer) -> None:
    response = httpx.get(
        f"{shared_server.base_url}/v1/stream",
        headers={**AUTHORIZED, "Last-Event-ID": "yesterday"},
        timeout=5,
    )
    assert response.status_code == 400
    assert "like 1234-5678" in response.json()["detail"]


async def test_resume_works_across_a_restart_of_the_server(
    servers: ServerFleet, module_databases: Callable[[], str]
) -> None:
    database_url = module_databases()
    server = servers.create(database_url, name="stream-restart")
    await append_concurrently(database_url, varied(300))
    async with opened(server, query="?last_event_id=0-0") as response:
        before = await response.take(150)
    server.stop()
    server.start()
    await append_concurrently(database_url, varied(300))
    async with opened(server, headers={"Last-Event-ID": before[-1].id or ""}) as response:
        after = await response.take(450)
    assert ids(before) + ids(after) == await fence_order(database_url)


async def test_a_stopping_server_ends_open_streams_so_its_workers_stop_without_a_kill(
    servers: ServerFleet, module_databases: Callable[[], str]
) -> None:
    server = servers.create(module_databases(), name="stream-stop")
    async with opened(server) as stream:
        stopping = asyncio.create_task(asyncio.to_thread(server.stop))
        farewell = await stream.remainder()
        assert await stopping == 0
    assert farewell[-1] == ": server stopping: reconnect with Last-Event-ID to resume"
    assert "refused to gracefully stop" not in server.stderr_tail()


async def test_a_stopping_server_ends_a_stream_in_the_middle_of_its_catch_up(
    servers: ServerFleet, module_databases: Callable[[], str]
) -> None:
    database_url = module_databases()
    await append_concurrently(database_url, varied(20_000), writers=1, batch=2500)
    server = servers.create(database_url, name="stream-stop-catch-up")
    # The catch-up (7 MB) waits on the client, page after page.
    with narrow_stream(server, "?last_event_id=0-0") as sock:
        first = received_until(sock, b"event: ledger_event")
        stopping = asyncio.create_task(asyncio.to_thread(server.stop))
        raw, ended = await asyncio.to_thread(_read_until_end, sock, 15.0)
        assert await stopping == 0
    assert ended
    body = _unchunked(first + raw).decode()
    events = body.count("event: ledger_event")
    assert 0 < events < 20_000  # what was left of the history was not sent
    assert body.rstrip().endswith(": server stopping: reconnect with Last-Event-ID to resume")
    assert "refused to gracefully stop" not in server.stderr_tail()


@contextlib.contextmanager
def narrow_stream(server: LedgerServer, query: str = "") -> Iterator[socket.socket]:
    """A raw connection to ``GET /v1/stream{query}`` with a 4 KB receive window, so that
    the server's writes soon wait on the client."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(
            f"GET /v1/stream{query} HTTP/1.1\r\nHost: x\r\nAuthorization: "
            f"{AUTHORIZED['Authorization']}\r\n\r\n".encode()
        )
        yield sock


def received_until(sock: socket.socket, marker: bytes) -> bytes:
    """What the server sends until ``marker`` has come."""
    received = b""
    while marker not in received:
        received += sock.recv(4096)
    return received


def _read_until_end(sock: socket.socket, within: float) -> tuple[bytes, bool]:
    """Everything the server sends until its response ends (the last chunk) or the
    connection closes; and whether it ended within ``within`` seconds."""
    sock.settimeout(within)
    received = b""
    deadline = time.monotonic() + within
    with contextlib.suppress(TimeoutError):
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                return received, True
            received += chunk
            if received.endswith(b"\r\n0\r\n\r\n"):
                return received, True
    return received, False


def _unchunked(raw: bytes) -> bytes:
    _head, _, body = raw.partition(b"\r\n\r\n")
    out = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out += body[:size]
        body = body[size + 2 :]
    return out


async def test_a_client_that_falls_behind_is_told_and_disconnected(
    servers: ServerFleet, module_databases: Callable[[], str]
) -> None:
    database_url = module_databases()
    server = servers.create(database_url, name="stream-slow", env={"LEDGER_STREAM_BUFFER": "50"})
    with narrow_stream(server) as sock:
        first = received_until(sock, b"ledger live feed")  # the stream has joined the feed
        # From here on the client reads nothing while the ledger grows.
        await append_concurrently(database_url, varied(5000), writers=1, batch=2500)
        raw, ended = await asyncio.to_thread(_read_until_end, sock, 15.0)
    assert ended, "the server kept the slow client's stream open"
    body = _unchunked(first + raw).decode()
    blocks = [block for block in body.split("\r\n\r\n") if "event:" in block]
    assert len(blocks) < 5000
    assert "event: error" in blocks[-1]
    farewell = msgspec.json.decode(blocks[-1].split("data: ", 1)[1])
    assert "fell 50 events behind" in farewell["error"]
    received = [block.split("id: ", 1)[1].split("\r\n", 1)[0] for block in blocks[:-1]]
    # Where to resume from: the last event it did receive (none, if it fell behind at once).
    assert farewell["last_event_id"] == (received[-1] if received else None)
