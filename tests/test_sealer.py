"""The sealer daemon: blocks close by size or by age, one sealer is active across processes,
a clean stop seals what is waiting, and heads are published outside the database."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from uuid import uuid4

import psycopg
import pytest

from ledger.events import STATUS_REPORTED, EventMeta, NewEvent
from ledger.seals import Head, last_block
from ledger.store import Append, append
from projections.sealer import HeadPublisher, Sealer

Conn = psycopg.AsyncConnection[Any]


async def add_events(conn: Conn, count: int) -> None:
    await append(
        conn,
        [
            Append(
                NewEvent(
                    message_uuid=uuid4(),
                    event_type=STATUS_REPORTED,
                    status="queued",
                    occurred_at=None,
                    dedup_key=uuid4().bytes,
                    payload={"Status": "queued"},
                    meta=EventMeta("plivo", "unsigned"),
                )
            )
            for _ in range(count)
        ],
    )


async def sealed_events(conn: Conn) -> int:
    block = await last_block(conn)
    return block.total_events if block else 0


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> float:
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > within:
            pytest.fail(f"condition not met within {within} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


@pytest.fixture
async def sealers(database_url: str) -> AsyncIterator[Callable[..., Sealer]]:
    """Make sealers on this test's database; all are stopped at the end."""
    made: list[Sealer] = []

    def make(**options: Any) -> Sealer:
        sealer = Sealer(database_url, poll_interval=0.02, lock_retry_interval=0.05, **options)
        made.append(sealer)
        return sealer

    yield make
    for sealer in made:
        await sealer.stop()


async def test_a_block_closes_as_soon_as_enough_events_wait(
    conn: Conn, sealers: Callable[..., Sealer]
) -> None:
    sealer = sealers(block_events=3, block_seconds=3600)
    await sealer.start()
    await add_events(conn, 7)

    await eventually(lambda: _equals(sealed_events(conn), 6))
    await asyncio.sleep(0.2)
    assert await sealed_events(conn) == 6  # the 7th waits for company (or for its time)


async def test_a_block_closes_when_its_first_event_has_waited_long_enough(
    conn: Conn, sealers: Callable[..., Sealer]
) -> None:
    sealer = sealers(block_events=1000, block_seconds=1)
    await sealer.start()
    await add_events(conn, 2)

    waited = await eventually(lambda: _equals(sealed_events(conn), 2))
    assert 0.8 < waited < 5.0


async def test_a_clean_stop_seals_what_is_waiting(
    conn: Conn, sealers: Callable[..., Sealer]
) -> None:
    sealer = sealers(block_events=1000, block_seconds=3600)
    await sealer.start()
    await add_events(conn, 5)
    await asyncio.sleep(0.3)
    assert await sealed_events(conn) == 0

    await sealer.stop()

    assert await sealed_events(conn) == 5


async def test_one_sealer_is_active_and_another_takes_over_when_it_stops(
    conn: Conn, sealers: Callable[..., Sealer]
) -> None:
    first, second = (
        sealers(block_events=2, block_seconds=3600),
        sealers(block_events=2, block_seconds=3600),
    )
    await first.start()
    await eventually(lambda: _sealer_lock_held(conn))
    await second.start()
    await add_events(conn, 4)
    await eventually(lambda: _equals(sealed_events(conn), 4))

    await first.stop()
    await add_events(conn, 2)

    await eventually(lambda: _equals(sealed_events(conn), 6))
    cursor = await conn.execute("SELECT array_agg(block ORDER BY block) FROM seals")
    assert await cursor.fetchone() == ([1, 2, 3],)


@pytest.fixture
def witness_server() -> Iterator[tuple[str, list[bytes]]]:
    """A loopback HTTP server that keeps every body POSTed to it."""
    received: list[bytes] = []

    class Keep(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            return

    server = HTTPServer(("127.0.0.1", 0), Keep)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/heads", received
    server.shutdown()


async def test_each_new_head_is_published_to_the_file_and_the_url(
    conn: Conn,
    sealers: Callable[..., Sealer],
    tmp_path: Path,
    witness_server: tuple[str, list[bytes]],
) -> None:
    url, received = witness_server
    heads = tmp_path / "heads.log"
    publisher = HeadPublisher(file=heads, url=url, interval=0.0)
    sealer = sealers(block_events=2, block_seconds=3600, publisher=publisher)
    await sealer.start()
    await add_events(conn, 4)
    await eventually(lambda: _equals(sealed_events(conn), 4))
    await eventually(lambda: _true(len(received) == 2))

    newest = await last_block(conn)
    assert newest is not None
    lines = heads.read_text().splitlines()
    assert [Head.parse(line).block for line in lines] == [1, 2]
    assert lines[-1] == newest.head.line() == received[-1].decode()


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def _true(value: bool) -> bool:
    return value


async def _sealer_lock_held(conn: Conn) -> bool:
    cursor = await conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s::oid",
        (0x1ED60004,),
    )
    row = await cursor.fetchone()
    return bool(row and row[0])
