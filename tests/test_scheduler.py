"""Scheduled jobs: the expiry sweep expires each stale message once, and every job runs once
per period across processes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from ledger.database import connect, create_pool
from ledger.events import MESSAGE_EXPIRED, STATUS_REPORTED, EventMeta, NewEvent
from ledger.store import Append, append
from ledger.system_events import mac_matches
from projections.expiry import expire_stale, expiry_dedup_key
from projections.locks import Lock, try_advisory_lock
from projections.runner import CatchUpRunner
from projections.scheduler import EXPIRE_JOB, ScheduledJobs
from projections.status import MessageStatusProjector
from tests.conftest import SYSTEM_KEY
from tests.test_runner import drain, eventually

Conn = psycopg.AsyncConnection[Any]
STATUS = MessageStatusProjector()
EXPIRE_AFTER = timedelta(hours=48)

#: name -> (last status reported, how long ago)
MESSAGES = {
    "sent_long_ago": ("sent", timedelta(days=3)),
    "queued_long_ago": ("queued", timedelta(days=3)),
    "unknown_status_long_ago": ("accepted", timedelta(days=3)),
    "delivered_long_ago": ("delivered", timedelta(days=3)),
    "sent_recently": ("sent", timedelta(hours=1)),
}
STALE = {"sent_long_ago", "queued_long_ago", "unknown_status_long_ago"}


@pytest.fixture
async def other_pool(database_url: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    """A second pool, standing for another process."""
    pool = create_pool(database_url, size=4, name="other")
    await pool.open(wait=True)
    try:
        yield pool
    finally:
        await pool.close()


def jobs(pool: AsyncConnectionPool[Any], every: timedelta = timedelta(minutes=5)) -> ScheduledJobs:
    return ScheduledJobs(
        pool,
        [STATUS],
        expire_after=EXPIRE_AFTER,
        system_key=SYSTEM_KEY,
        expire_every=every,
        catch_up_every=every,
    )


async def ingest_messages(conn: Conn) -> dict[str, UUID]:
    """One message per entry of MESSAGES, each with one callback; their UUIDs by name."""
    uuids = {name: uuid4() for name in MESSAGES}
    now = datetime.now(UTC)
    await append(
        conn,
        [
            Append(
                NewEvent(
                    message_uuid=uuids[name],
                    event_type=STATUS_REPORTED,
                    status=status,
                    occurred_at=now - ago,
                    dedup_key=uuids[name].bytes,
                    payload={"MessageUUID": str(uuids[name]), "Status": status},
                    meta=EventMeta("plivo", "unsigned"),
                )
            )
            for name, (status, ago) in MESSAGES.items()
        ],
    )
    return uuids


async def project(database_url: str) -> None:
    await drain(CatchUpRunner(database_url, [STATUS]), STATUS)


async def expired_messages(conn: Conn) -> list[UUID]:
    """The message of every expired event, repeats included."""
    cursor = await conn.execute(
        "SELECT message_uuid FROM events WHERE event_type = %s ORDER BY message_uuid",
        (MESSAGE_EXPIRED,),
    )
    return [row[0] for row in await cursor.fetchall()]


def named(uuids: dict[str, UUID], names: set[str]) -> list[UUID]:
    return sorted(uuids[name] for name in names)


async def test_expiry_appends_one_system_event_per_stale_unfinished_message(
    conn: Conn, database_url: str
) -> None:
    uuids = await ingest_messages(conn)
    await project(database_url)
    assert await expire_stale(conn, expire_after=EXPIRE_AFTER, system_key=SYSTEM_KEY) == len(STALE)
    assert await expired_messages(conn) == named(uuids, STALE)

    cursor = await conn.execute(
        "SELECT status, payload, meta, dedup_key, occurred_at FROM events"
        " WHERE message_uuid = %s AND event_type = %s",
        (uuids["sent_long_ago"], MESSAGE_EXPIRED),
    )
    row = await cursor.fetchone()
    assert row is not None
    status, payload, meta, dedup_key, occurred_at = row
    assert status == "expired"
    assert (payload["ExpiredAfter"], payload["LastStatus"]) == ("48h", "sent")
    assert {k: v for k, v in meta.items() if k != "mac"} == {
        "source": "system",
        "signature": "system",
        "reason": "no final status within 48h",
    }
    assert mac_matches(
        (SYSTEM_KEY,),
        message_uuid=uuids["sent_long_ago"],
        event_type=MESSAGE_EXPIRED,
        status=status,
        occurred_at=occurred_at,
        dedup_key=bytes(dedup_key),
        payload=payload,
        meta=meta,
    )
    assert bytes(dedup_key) == expiry_dedup_key(uuids["sent_long_ago"])


async def test_an_expired_message_is_never_expired_again(conn: Conn, database_url: str) -> None:
    uuids = await ingest_messages(conn)
    await project(database_url)
    assert await expire_stale(conn, expire_after=EXPIRE_AFTER, system_key=SYSTEM_KEY) == len(STALE)
    # The view has not caught up yet, so the same messages are selected: nothing is appended.
    assert await expire_stale(conn, expire_after=EXPIRE_AFTER, system_key=SYSTEM_KEY) == 0
    await project(database_url)
    assert (
        await expire_stale(
            conn,
            expire_after=EXPIRE_AFTER,
            system_key=SYSTEM_KEY,
            now=datetime.now(UTC) + EXPIRE_AFTER,
        )
        == 1
    )
    # ...that one being the recent message, now stale too; the others stay expired once.
    assert await expired_messages(conn) == named(uuids, {*STALE, "sent_recently"})


async def test_concurrent_sweeps_expire_each_message_once_even_without_the_gate(
    conn: Conn, database_url: str
) -> None:
    uuids = await ingest_messages(conn)
    await project(database_url)

    async def sweep() -> int:
        async with connect(database_url) as own:
            return await expire_stale(own, expire_after=EXPIRE_AFTER, system_key=SYSTEM_KEY)

    counts = await asyncio.gather(*(sweep() for _ in range(4)))
    assert sum(counts) == len(STALE)
    assert await expired_messages(conn) == named(uuids, STALE)


async def test_two_schedulers_racing_run_the_expiry_once(
    conn: Conn,
    database_url: str,
    pool: AsyncConnectionPool[Any],
    other_pool: AsyncConnectionPool[Any],
) -> None:
    uuids = await ingest_messages(conn)
    await project(database_url)
    ran = await asyncio.gather(jobs(pool).expire(), jobs(other_pool).expire())
    assert sorted(ran) == [False, True]
    assert await expired_messages(conn) == named(uuids, STALE)


async def test_a_job_runs_at_most_once_per_period_across_processes(
    conn: Conn, pool: AsyncConnectionPool[Any], other_pool: AsyncConnectionPool[Any]
) -> None:
    assert await jobs(pool).expire()
    assert not await jobs(other_pool).expire()  # same period, later, in another process
    await conn.execute(
        "UPDATE scheduled_job_runs SET last_run_at = last_run_at - interval '5 minutes'"
        " WHERE job = %s",
        (EXPIRE_JOB,),
    )
    assert await jobs(other_pool).expire()


async def test_the_catch_up_tick_applies_events_to_a_view_no_runner_holds(
    conn: Conn, pool: AsyncConnectionPool[Any]
) -> None:
    uuids = await ingest_messages(conn)
    assert await jobs(pool).catch_up()
    cursor = await conn.execute("SELECT message_uuid FROM message_status ORDER BY message_uuid")
    assert [row[0] for row in await cursor.fetchall()] == sorted(uuids.values())


async def test_the_catch_up_tick_leaves_a_view_its_runner_holds_alone(
    conn: Conn, database_url: str, pool: AsyncConnectionPool[Any]
) -> None:
    await ingest_messages(conn)
    async with connect(database_url) as runner_conn:
        assert await try_advisory_lock(runner_conn, Lock.RUNNER, STATUS.name)
        assert await jobs(pool).catch_up()
    cursor = await conn.execute("SELECT count(*) FROM message_status")
    assert await cursor.fetchone() == (0,)


async def test_started_jobs_project_and_expire_on_their_own(
    conn: Conn, pool: AsyncConnectionPool[Any]
) -> None:
    uuids = await ingest_messages(conn)
    scheduled = jobs(pool, every=timedelta(seconds=0.1))
    await scheduled.start()
    try:

        async def expired_in_view() -> bool:
            cursor = await conn.execute(
                "SELECT message_uuid FROM message_status WHERE status = 'expired'"
                " ORDER BY message_uuid"
            )
            return [row[0] for row in await cursor.fetchall()] == named(uuids, STALE)

        await eventually(expired_in_view)
    finally:
        await scheduled.stop()
    assert await expired_messages(conn) == named(uuids, STALE)
