"""Replay: a rebuilt view equals the live one, is swapped in at once, and misses nothing
ingested meanwhile."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import psycopg
import pytest

from ledger.database import connect
from ledger.events import STATUS_REPORTED, EventMeta, NewEvent
from ledger.settings import Settings
from ledger.store import Append, append
from projections.base import Projector
from projections.checkpoints import stored_checkpoint
from projections.locks import Lock
from projections.progress import dead_letters, projector_lag
from projections.registry import build_projectors
from projections.replay import SHADOW_SCHEMA, ReplayInProgress, replay, replay_views
from projections.runner import CatchUpRunner
from tests.conftest import ledger_head
from tests.test_runner import (
    Conn,
    RecordingProjector,
    all_positions,
    applied,
    build_gate,
    caught_up,
    drain,
    eventually,
    ingest,
    lock_holders,
    new_event,
    totals_match,
)
from tests.test_runner import projector as projector_fixture
from tests.test_runner import runners as runners_fixture
from tests.test_status_projection import table_rows

# The recording projector's fixtures, shared with the runner's tests.
projector = projector_fixture
runners = runners_fixture


async def views(conn: Conn, projectors: Sequence[Projector]) -> dict[str, list[str]]:
    """Every row of every table of ``projectors``, comparable across rebuilds."""
    return {table: await table_rows(conn, table) for p in projectors for table in p.tables}


async def test_replay_rebuilds_a_view_equal_to_the_live_one(
    conn: Conn, projector: RecordingProjector, runners: Callable[..., CatchUpRunner]
) -> None:
    await ingest(conn, 40, messages=6)
    await drain(runners([projector], batch_size=7), projector)
    live = await views(conn, [projector])
    await replay(conn, projector)
    assert await views(conn, [projector]) == live
    stored = await stored_checkpoint(conn, projector.name)
    assert stored is not None
    assert stored.checkpoint == await ledger_head(conn)


async def test_readers_see_the_old_view_until_the_swap(
    conn: Conn,
    database_url: str,
    projector: RecordingProjector,
    runners: Callable[..., CatchUpRunner],
) -> None:
    runner = runners([projector])
    await ingest(conn, 10)
    await drain(runner, projector)
    async with build_gate(database_url) as gate, connect(database_url) as reader:
        replaying = asyncio.create_task(replay(conn, projector))
        await gate.reached()
        before = await views(reader, [projector])
        # The live view keeps moving while the copy is being built.
        await ingest(reader, 5)
        await drain(runner, projector)
        during = await views(reader, [projector])
        assert len(during["recorded"]) == 15
        assert set(before["recorded"]) <= set(during["recorded"])
        await gate.open()
        await replaying
        assert await caught_up(reader)
        assert await totals_match(reader)


async def test_replay_during_concurrent_ingest_loses_nothing_and_doubles_nothing(
    conn: Conn,
    database_url: str,
    projector: RecordingProjector,
    runners: Callable[..., CatchUpRunner],
) -> None:
    runner = runners([projector], batch_size=20)
    await runner.start()

    async def first_build_done() -> bool:
        # Its checkpoint is stored a moment before its replay lock is released.
        return await stored_checkpoint(conn, projector.name) is not None and not (
            await lock_holders(conn, projector.name, Lock.REPLAY)
        )

    # The runner builds a never-fed view first; a replay meanwhile is refused (tested apart).
    await eventually(first_build_done)
    done = asyncio.Event()

    async def write() -> None:
        async with connect(database_url) as writer, connect(database_url) as slow:
            for round_ in range(30):
                if round_ % 5 == 0:
                    # An earlier position committed after later ones, across the replay.
                    async with slow.transaction():
                        await append(slow, [new_event()])
                        await ingest(writer, 3)
                        await asyncio.sleep(0.01)
                await ingest(writer, random.randint(1, 15))
                await asyncio.sleep(0)
        done.set()

    writing = asyncio.create_task(write())
    replays = 0
    while not done.is_set():
        await replay(conn, projector, batch_size=16)
        replays += 1
    await writing
    assert replays > 1
    await eventually(lambda: caught_up(conn))
    assert await applied(conn) == await all_positions(conn)
    assert await totals_match(conn)


async def test_replay_resolves_the_dead_letters_the_rebuilt_view_includes(
    conn: Conn, projector: RecordingProjector, runners: Callable[..., CatchUpRunner]
) -> None:
    positions = await ingest(conn, 6, poison_at=2)
    await drain(runners([projector]), projector)
    assert len(await dead_letters(conn, projector.name)) == 1
    projector.poisoned = False  # the bug is fixed
    report = await replay(conn, projector)
    assert report.resolved == 1
    assert await dead_letters(conn, projector.name) == []
    [resolved] = await dead_letters(conn, projector.name, include_resolved=True)
    assert resolved.resolved_at is not None
    assert await applied(conn) == positions


async def test_events_still_failing_during_replay_stay_dead_letters(
    conn: Conn, database_url: str, projector: RecordingProjector
) -> None:
    # Built events are included by the build, which skips the poison check; those arriving
    # after it are caught up with apply, which still fails on the poison event.
    built = await ingest(conn, 2)
    async with build_gate(database_url) as gate, connect(database_url) as writer:
        replaying = asyncio.create_task(replay(conn, projector))
        await gate.reached()
        arrived = await ingest(writer, 4, poison_at=3)
        await gate.open()
        report = await replaying
    assert report.dead_letters == 1
    [letter] = await dead_letters(conn, projector.name)
    assert letter.position == arrived[3]
    assert await applied(conn) == built + arrived[:3]


async def test_replay_keeps_the_live_index_and_constraint_names(
    conn: Conn, projector: RecordingProjector
) -> None:
    async def names() -> list[tuple[str, str]]:
        cursor = await conn.execute(
            "SELECT 'index', indexname FROM pg_indexes WHERE tablename LIKE 'recorded%%'"
            " UNION ALL SELECT 'constraint', conname FROM pg_constraint"
            " WHERE conrelid::regclass::text LIKE 'recorded%%' ORDER BY 1, 2"
        )
        return [(row[0], row[1]) for row in await cursor.fetchall()]

    before = await names()
    await ingest(conn, 3)
    await replay(conn, projector)
    assert await names() == before


async def test_the_swap_gives_way_to_a_long_reader_and_retries(
    conn: Conn,
    database_url: str,
    projector: RecordingProjector,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr("projections.replay._SWAP_LOCK_TIMEOUT", "50ms")
    positions = await ingest(conn, 3)
    async with build_gate(database_url) as gate, connect(database_url) as reader:
        replaying = asyncio.create_task(replay(conn, projector))
        await gate.reached()
        async with reader.transaction():
            await reader.execute("SELECT count(*) FROM recorded")  # holds ACCESS SHARE

            async def swap_retried() -> bool:
                return "retrying the swap" in caplog.text

            await gate.open()
            await eventually(swap_retried)
        await replaying
    assert await applied(conn) == positions


async def test_a_second_replay_of_the_same_view_is_refused(
    conn: Conn, database_url: str, projector: RecordingProjector
) -> None:
    await ingest(conn, 1)
    async with build_gate(database_url) as gate, connect(database_url) as other:
        first = asyncio.create_task(replay(conn, projector))
        await gate.reached()
        with pytest.raises(ReplayInProgress):
            await replay(other, projector)
        await gate.open()
        await first


async def test_a_failed_replay_leaves_the_live_view_and_drops_its_copies(
    conn: Conn, projector: RecordingProjector, runners: Callable[..., CatchUpRunner]
) -> None:
    await ingest(conn, 5)
    await drain(runners([projector]), projector)
    live = await views(conn, [projector])
    projector.build_error = "build_failed"
    with pytest.raises(psycopg.errors.UndefinedTable, match="build_failed"):
        await replay(conn, projector, chunk_size=1, jobs=3)
    assert await views(conn, [projector]) == live
    cursor = await conn.execute(
        "SELECT count(*) FROM pg_tables WHERE schemaname = %s", (SHADOW_SCHEMA,)
    )
    assert await cursor.fetchone() == (0,)
    projector.build_error = None
    await replay(conn, projector)  # the replay lock was released


async def test_replay_ignores_the_connections_statement_timeout(
    conn: Conn, projector: RecordingProjector
) -> None:
    await ingest(conn, 3)
    await conn.execute("SET statement_timeout = '50ms'")
    projector.build_sleep = 0.2
    await replay(conn, projector)
    cursor = await conn.execute("SHOW statement_timeout")
    assert await cursor.fetchone() == ("50ms",)


async def test_replay_reports_progress_and_throughput(
    conn: Conn, projector: RecordingProjector
) -> None:
    await ingest(conn, 12)
    progress: list[tuple[int, int]] = []
    report = await replay(
        conn, projector, on_progress=lambda done, total: progress.append((done, total))
    )
    assert progress[0] == (0, 12)
    assert progress[-1] == (12, 12)
    assert all(done <= total for done, total in progress)
    assert (report.projector, report.events) == ("recording", 12)
    assert report.events_per_second > 0


def lifecycle(message: Any, day: datetime, rng: random.Random) -> list[Append]:
    """A realistic message: queued, sent, then a final status, some with error codes."""
    outcome = rng.choice(["delivered", "delivered", "delivered", "undelivered", "failed", "sent"])
    statuses = ["queued", "sent"] + ([] if outcome == "sent" else [outcome])
    events = []
    for sequence, status in enumerate(statuses, start=1):
        payload: dict[str, str | list[str]] = {
            "MessageUUID": str(message),
            "Status": status,
            "Sequence": str(sequence),
            "From": "14155550100",
            "To": f"1415555{rng.randint(1000, 9999)}",
            "Type": "sms",
            "Units": "1" if status == "queued" else str(rng.randint(1, 3)),
            "TotalAmount": "0.00000" if status == "queued" else "0.00650",
        }
        if status in {"undelivered", "failed"}:
            payload["ErrorCode"] = rng.choice(["30", "200", "450"])
        occurred = day + timedelta(seconds=sequence * rng.randint(1, 400))
        key = hashlib.sha256(f"{message}/{status}/{sequence}".encode()).digest()
        events.append(
            Append(
                NewEvent(
                    message_uuid=message,
                    event_type=STATUS_REPORTED,
                    status=status,
                    occurred_at=occurred,
                    dedup_key=key,
                    payload=payload,
                    meta=EventMeta("plivo", "v3"),
                )
            )
        )
    return events


async def test_the_real_views_kept_live_during_a_replay_equal_a_fresh_replay(
    conn: Conn, database_url: str, runners: Callable[..., CatchUpRunner]
) -> None:
    registry = pytest.importorskip("projections.registry")
    projectors: tuple[Projector, ...] = registry.PROJECTORS
    runner = runners(projectors, batch_size=50)
    await runner.start()

    async def current() -> bool:
        for p in projectors:
            stored = await stored_checkpoint(conn, p.name)
            if stored is None or stored.version != p.version:
                return False
        return True

    await eventually(current)  # the runner's own first build is done
    rng = random.Random(7)
    events = [
        event
        for n in range(150)
        for event in lifecycle(uuid4(), datetime(2026, 3, 1 + n % 3, tzinfo=UTC), rng)
    ]
    rng.shuffle(events)  # callbacks arrive out of order
    events += events[:40]  # and some are retried
    done = asyncio.Event()

    async def write() -> None:
        async with connect(database_url) as writer:
            for start in range(0, len(events), 25):
                await append(writer, events[start : start + 25])
                await asyncio.sleep(0.005)
        done.set()

    writing = asyncio.create_task(write())
    for projector_ in projectors:
        await replay(conn, projector_, batch_size=30)
    await writing

    async def all_caught_up() -> bool:
        lags = await projector_lag(conn, [p.name for p in projectors])
        return all(lag.events_behind == 0 for lag in lags)

    await eventually(all_caught_up)
    await runner.stop()
    live = await views(conn, projectors)
    assert live["message_status"]
    await replay_views(conn, projectors)  # both views from one pass over the ledger
    assert await views(conn, projectors) == live
    assert await dead_letters(conn) == []


async def test_a_rebuild_in_many_chunks_over_several_connections_equals_the_live_views(
    conn: Conn, runners: Callable[..., CatchUpRunner]
) -> None:
    projectors = build_projectors(Settings())
    rng = random.Random(11)
    events = [
        e
        for n in range(40)
        for e in lifecycle(uuid4(), datetime(2026, 3, 1 + n % 2, tzinfo=UTC), rng)
    ]
    rng.shuffle(events)  # a message's events land in different chunks
    for start in range(0, len(events), 10):
        await append(conn, events[start : start + 10])
    runner = runners(projectors)
    for projector_ in projectors:
        await drain(runner, projector_)
    live = await views(conn, projectors)
    reports = await replay_views(conn, projectors, chunk_size=7, jobs=3)
    assert await views(conn, projectors) == live
    assert {report.events for report in reports} == {len(events)}


async def test_replay_refuses_a_connection_not_in_autocommit_mode(
    database_url: str, projector: RecordingProjector
) -> None:
    async with await psycopg.AsyncConnection.connect(database_url) as manual:
        with pytest.raises(ValueError, match="autocommit"):
            await replay(manual, projector)


async def shape(conn: Conn, projectors: Sequence[Projector]) -> set[tuple[Any, ...]]:
    """The projectors' tables as a reader's queries depend on them: each column's type,
    collation and nullability, each index, each constraint (not the order of columns)."""
    tables = [table for projector in projectors for table in projector.tables]
    cursor = await conn.execute(
        "SELECT 'column', c.relname, a.attname, format_type(a.atttypid, a.atttypmod),"
        "  coalesce(co.collname, ''), a.attnotnull::text"
        " FROM pg_attribute AS a JOIN pg_class AS c ON c.oid = a.attrelid"
        " LEFT JOIN pg_collation AS co ON co.oid = a.attcollation AND co.collname <> 'default'"
        " WHERE c.relname = ANY(%(tables)s) AND c.relnamespace = 'public'::regnamespace"
        "  AND a.attnum > 0 AND NOT a.attisdropped"
        " UNION ALL SELECT 'index', tablename, indexname, indexdef, '', ''"
        " FROM pg_indexes WHERE schemaname = 'public' AND tablename = ANY(%(tables)s)"
        " UNION ALL SELECT 'constraint', conrelid::regclass::text, conname,"
        "  pg_get_constraintdef(oid), '', '' FROM pg_constraint"
        " WHERE conrelid::regclass::text = ANY(%(tables)s)",
        {"tables": tables},
    )
    return set(await cursor.fetchall())


async def test_a_rebuilt_view_has_the_shape_the_migrations_give_a_fresh_database(
    conn: Conn,
) -> None:
    # Until the service's first build, readers query the tables the migrations created.
    projectors = build_projectors(Settings())
    migrated = await shape(conn, projectors)
    assert {kind for kind, *_ in migrated} == {"column", "index", "constraint"}
    await replay_views(conn, projectors)
    assert await shape(conn, projectors) == migrated
