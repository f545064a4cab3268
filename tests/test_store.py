"""The event store: immutable, idempotent, and safe to tail."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from ledger.database import DatabaseUnavailable
from ledger.events import STATUS_REPORTED, EventMeta, NewEvent
from ledger.group_commit import GroupCommitter
from ledger.store import Append, NonceGuard, append, read_stream
from tests.conftest import count_events


def event(message: UUID, status: str, sequence: int) -> NewEvent:
    return NewEvent(
        message_uuid=message,
        event_type=STATUS_REPORTED,
        status=status,
        occurred_at=datetime(2026, 11, 23, 10, sequence, tzinfo=UTC),
        dedup_key=hashlib.sha256(f"{message}/{status}/{sequence}".encode()).digest(),
        payload={"MessageUUID": str(message), "Status": status, "Sequence": str(sequence)},
        meta=EventMeta("plivo", "v3", nonce=f"n{sequence}"),
    )


@pytest.mark.parametrize(
    "statement",
    ["UPDATE events SET status = 'delivered'", "DELETE FROM events", "TRUNCATE events"],
)
async def test_stored_events_cannot_be_changed_or_removed(
    conn: psycopg.AsyncConnection[Any], statement: str
) -> None:
    await append(conn, [Append(event(uuid4(), "queued", 1))])
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        await conn.execute(statement.encode())
    row = await (await conn.execute("SELECT count(*) FROM events")).fetchone()
    assert row == (1,)


async def test_a_retried_event_is_not_appended_twice(conn: psycopg.AsyncConnection[Any]) -> None:
    original = event(uuid4(), "sent", 2)
    [first] = await append(conn, [Append(original)])
    [retry] = await append(conn, [Append(original)])
    assert (first.outcome, retry.outcome) == ("appended", "duplicate")
    assert retry.position == first.position
    assert len(await read_stream(conn, original.message_uuid)) == 1


async def test_a_batch_holding_the_same_event_twice_stores_it_once(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    twice = event(uuid4(), "queued", 1)
    results = await append(conn, [Append(twice), Append(twice)])
    assert [r.outcome for r in results] == ["appended", "duplicate"]
    assert results[0].position == results[1].position


async def test_a_v2_nonce_reused_for_another_body_is_refused(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    message = uuid4()
    [first] = await append(
        conn, [Append(event(message, "queued", 1), NonceGuard("v2", "n", b"body-1"))]
    )
    [replay] = await append(
        conn, [Append(event(message, "failed", 9), NonceGuard("v2", "n", b"body-2"))]
    )
    assert (first.outcome, replay.outcome) == ("appended", "nonce_reused")
    assert [e.status for e in await read_stream(conn, message)] == ["queued"]


async def test_a_v2_nonce_retried_with_the_same_body_is_a_duplicate(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    same = Append(event(uuid4(), "queued", 1), NonceGuard("v2", "n", b"body"))
    await append(conn, [same])
    [retry] = await append(conn, [same])
    assert retry.outcome == "duplicate"


async def test_a_stream_reads_back_in_ledger_order_with_payload_and_meta(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    message = uuid4()
    written = [event(message, s, n) for n, s in enumerate(["queued", "sent", "delivered"], 1)]
    await append(conn, [Append(e) for e in written])
    stream = await read_stream(conn, message)
    assert [e.status for e in stream] == ["queued", "sent", "delivered"]
    assert [e.payload for e in stream] == [e.payload for e in written]
    assert [e.meta for e in stream] == [e.meta for e in written]
    assert stream[0].position < stream[1].position < stream[2].position


async def test_concurrent_group_commits_store_every_event_exactly_once(
    pool: AsyncConnectionPool[Any], database_url: str
) -> None:
    messages = [uuid4() for _ in range(200)]
    batch_sizes: list[int] = []
    committer = GroupCommitter(pool, max_batch=32, flushers=2, on_batch=batch_sizes.append)
    await committer.start()
    events = [Append(event(m, "queued", 1)) for m in messages]
    results = await asyncio.gather(*(committer.append(e) for e in events + events))
    await committer.close()
    assert sorted(r.outcome for r in results).count("appended") == 200
    assert len({r.position for r in results}) == 200
    assert await count_events(database_url) == 200
    assert max(batch_sizes) > 1, "concurrent appends should share transactions"


async def test_appends_queued_behind_a_pool_timeout_all_fail_at_once(database_url: str) -> None:
    """A flusher that waited a whole pool timeout fails everything queued meanwhile too: one
    at a time, ten callers would wait ten timeouts, far past the 8 s Plivo waits."""
    timeout = 1.0
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        database_url, min_size=1, max_size=1, timeout=timeout, open=False
    )
    await pool.open(wait=True)
    committer = GroupCommitter(pool, max_batch=1, flushers=1)
    await committer.start()
    try:
        async with pool.connection():  # the only connection: no flusher can get one
            started = asyncio.get_running_loop().time()
            results = await asyncio.gather(
                *(committer.append(Append(event(uuid4(), "queued", 1))) for _ in range(10)),
                return_exceptions=True,
            )
            elapsed = asyncio.get_running_loop().time() - started
    finally:
        await committer.close()
        await pool.close()
    assert all(isinstance(result, DatabaseUnavailable) for result in results), results
    assert elapsed < 3 * timeout
    assert await count_events(database_url) == 0


async def test_an_append_no_flusher_takes_within_the_queue_timeout_is_refused_unsent(
    database_url: str,
) -> None:
    """Past the queue timeout a request still waiting for a flusher hears DatabaseUnavailable
    and is never stored, while the one already sent waits for its own statement and commits."""
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        database_url, min_size=1, max_size=1, timeout=10.0, open=False
    )
    await pool.open(wait=True)
    committer = GroupCommitter(pool, max_batch=1, flushers=1, queue_timeout=0.3)
    await committer.start()
    try:
        async with pool.connection():  # the flusher takes the first request and waits here
            sent = asyncio.ensure_future(committer.append(Append(event(uuid4(), "queued", 1))))
            await asyncio.sleep(0.1)
            started = asyncio.get_running_loop().time()
            with pytest.raises(DatabaseUnavailable, match="queue timeout"):
                await committer.append(Append(event(uuid4(), "queued", 1)))
            waited = asyncio.get_running_loop().time() - started
            assert not sent.done()
        result = await sent
    finally:
        await committer.close()
        await pool.close()
    assert 0.25 < waited < 2.0
    assert result.outcome == "appended"
    assert await count_events(database_url) == 1
