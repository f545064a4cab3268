"""The catch-up runner: every event applied exactly once, behind the fence, by one runner.

A small recording projector stands in for the real ones: it writes one row per applied
event, so that a skipped or doubly applied event shows up as a missing or repeated position.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg import sql

from ledger.database import connect
from ledger.events import STATUS_REPORTED, EventMeta, NewEvent
from ledger.store import Append, Checkpoint, append, notify_readers
from projections.base import DDL
from projections.catch_up import Batch
from projections.checkpoints import stored_checkpoint
from projections.fold import Reads
from projections.locks import Lock, lock_key
from projections.progress import dead_letters, has_applied, projector_lag
from projections.registry import PROJECTORS
from projections.replay import SHADOW_SCHEMA
from projections.runner import CatchUpRunner
from tests.conftest import ledger_head

Conn = psycopg.AsyncConnection[Any]

RECORDING_TABLES = """
CREATE TABLE recorded (
    position        bigint NOT NULL,
    transaction_id  bigint NOT NULL,
    message_uuid    uuid NOT NULL
);
CREATE TABLE recorded_totals (
    message_uuid  uuid NOT NULL,
    events        integer NOT NULL CONSTRAINT recorded_totals_positive CHECK (events > 0),
    CONSTRAINT recorded_totals_key PRIMARY KEY (message_uuid)
);
"""
RECORDING_INDEX = "CREATE INDEX recorded_by_message ON recorded (message_uuid, position)"
#: One row per rebuild of the recording view that reached its end (in the live schema).
REBUILDS_TABLE = "CREATE TABLE recording_rebuilds (finished_at timestamptz DEFAULT now())"
#: The advisory lock (two-key form) every chunk of a recording build waits on, shared: a
#: test holding it exclusively holds builds back (see BuildGate).
BUILD_GATE = (0x7E57, 1)

_RECORD = """
recording_rows AS (
    INSERT INTO recorded SELECT b.position, b.transaction_id::text::bigint, b.message_uuid
    FROM batch AS b {gate}
    -- A poisoned event fails the statement (not a constant 1/0: that fails when planned).
    WHERE 1 / CASE WHEN %(recording_poisoned)s AND b.payload ? 'Poison' THEN 0 ELSE 1 END = 1
    AND (NOT %(recording_crash)s OR pg_terminate_backend(pg_backend_pid()))),
recording_totals AS (
    INSERT INTO recorded_totals AS t SELECT message_uuid, count(*) FROM batch {gate}
    GROUP BY message_uuid
    ON CONFLICT (message_uuid) DO UPDATE SET events = t.events + EXCLUDED.events)
"""
# Evaluated before each write of a chunk, so that a held chunk has written nothing (and so
# holds no transaction id): wait at the gate, sleep, fail if told to (a regclass cast of a
# name that is no table: an error that is not the events' fault).
_GATE = sql.SQL(
    "CROSS JOIN (SELECT pg_advisory_xact_lock_shared({}, {}),"
    " pg_sleep(%(recording_build_sleep)s), %(recording_build_error)s::regclass) AS gate"
).format(*map(sql.Literal, BUILD_GATE))


class RecordingProjector:
    """Records each applied event in SQL, as the real projectors fold; optionally fails on
    events marked ``Poison`` (apply only, so a fixed projector is a rebuild away).

    ``crash`` makes the applying backend terminate itself mid-statement; ``build_sleep``
    slows each chunk of a rebuild, ``build_error`` fails it, and :class:`BuildGate` holds it.
    """

    tables = ("recorded", "recorded_totals")
    busy_interval = 0.02
    reads = Reads(())  # it records the batch's events themselves

    def __init__(self, *, version: int = 1, poisoned: bool = True) -> None:
        self.name = "recording"
        self.version = version
        self.poisoned = poisoned
        self.crash = False
        self.build_sleep = 0.0
        self.build_error: str | None = None

    def schema(self) -> Sequence[DDL]:
        return [sql.SQL(RECORDING_TABLES)]

    def indexes(self) -> Sequence[DDL]:
        return [sql.SQL(RECORDING_INDEX)]

    def apply(self) -> sql.Composable:
        return sql.SQL(_RECORD).format(gate=sql.SQL(""))

    def build(self) -> sql.Composable:
        return sql.SQL(_RECORD).format(gate=_GATE)

    def finish_build(self) -> Sequence[DDL]:
        return [sql.SQL("INSERT INTO recording_rebuilds DEFAULT VALUES")]

    def derived(self) -> Sequence[DDL]:
        return ()

    def parameters(self) -> Mapping[str, Any]:
        return {
            "recording_poisoned": self.poisoned,
            "recording_crash": self.crash,
            "recording_build_sleep": self.build_sleep,
            "recording_build_error": self.build_error,
        }


class BuildGate:
    """Holds every recording build at its first chunk until :meth:`open` (or the block's
    end), on a connection of its own."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def reached(self) -> None:
        """Wait until a build waits at the gate."""

        async def waiting() -> bool:
            cursor = await self._conn.execute(
                "SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory'"
                " AND NOT granted AND classid = %s AND objid = %s)",
                BUILD_GATE,
            )
            row = await cursor.fetchone()
            return bool(row and row[0])

        await eventually(waiting)

    async def open(self) -> None:
        await self._conn.execute("SELECT pg_advisory_unlock_all()")


@contextlib.asynccontextmanager
async def build_gate(database_url: str) -> AsyncIterator[BuildGate]:
    """A closed :class:`BuildGate`."""
    async with connect(database_url) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s, %s)", BUILD_GATE)
        yield BuildGate(conn)


async def rebuilds(conn: Conn) -> int:
    """How many rebuilds of the recording view have finished."""
    cursor = await conn.execute("SELECT count(*) FROM recording_rebuilds")
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
async def projector(conn: Conn) -> RecordingProjector:
    await conn.execute(RECORDING_TABLES)
    await conn.execute(RECORDING_INDEX)
    await conn.execute(REBUILDS_TABLE)
    return RecordingProjector()


@pytest.fixture
async def runners(database_url: str) -> AsyncIterator[Callable[..., CatchUpRunner]]:
    """Make runners on this test's database (fast timings unless overridden); stops them."""
    made: list[CatchUpRunner] = []

    def make(projectors: Sequence[Any], **options: Any) -> CatchUpRunner:
        options = {
            "poll_interval": 0.05,
            "lock_retry_interval": 0.05,
            "reconnect_delay": 0.05,
            **options,
        }
        runner = CatchUpRunner(database_url, projectors, **options)
        made.append(runner)
        return runner

    yield make
    await asyncio.gather(*(runner.stop() for runner in made))


def new_event(message: UUID | None = None, *, poison: bool = False, status: str = "sent") -> Append:
    message = message or uuid4()
    payload: dict[str, str | list[str]] = {"MessageUUID": str(message), "Status": status}
    if poison:
        payload["Poison"] = "yes"
    return Append(
        NewEvent(
            message_uuid=message,
            event_type=STATUS_REPORTED,
            status=status,
            occurred_at=datetime.now(UTC),
            dedup_key=os.urandom(16),
            payload=payload,
            meta=EventMeta("plivo", "unsigned"),
        )
    )


async def ingest(
    conn: Conn, count: int, *, messages: int = 3, poison_at: int | None = None
) -> list[int]:
    """Append ``count`` events spread over a few messages; their positions."""
    uuids = [uuid4() for _ in range(messages)]
    results = await append(
        conn, [new_event(uuids[n % messages], poison=n == poison_at) for n in range(count)]
    )
    await notify_readers(conn)  # as the group committer does after each commit
    return [r.position for r in results if r.position is not None]


async def applied(conn: Conn) -> list[int]:
    """Every recorded position, repeats included, in order."""
    cursor = await conn.execute("SELECT position FROM recorded ORDER BY position")
    return [row[0] for row in await cursor.fetchall()]


async def all_positions(conn: Conn) -> list[int]:
    cursor = await conn.execute("SELECT position FROM events ORDER BY position")
    return [row[0] for row in await cursor.fetchall()]


async def totals_match(conn: Conn) -> bool:
    """recorded_totals agrees with recorded (no partial batch left behind in either)."""
    cursor = await conn.execute(
        "SELECT count(*) FROM (SELECT message_uuid, count(*) AS events FROM recorded"
        " GROUP BY message_uuid) AS r FULL JOIN recorded_totals t USING (message_uuid)"
        " WHERE r.events IS DISTINCT FROM t.events"
    )
    row = await cursor.fetchone()
    return row == (0,)


async def drain(runner: CatchUpRunner, projector: Any) -> None:
    while await runner.run_once(projector):
        pass


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> float:
    """Wait until ``check()`` holds; the seconds it took. Fails after ``within`` seconds."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > within:
            pytest.fail(f"condition not met within {within} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def lock_holders(conn: Conn, name: str, namespace: Lock = Lock.RUNNER) -> list[int]:
    """Backend pids holding the ``namespace`` lock (the runner's, by default) of ``name``."""
    cursor = await conn.execute(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 2",
        (int(namespace), lock_key(name) & 0xFFFFFFFF),
    )
    return [row[0] for row in await cursor.fetchall()]


async def listening(conn: Conn) -> bool:
    cursor = await conn.execute(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND query LIKE 'LISTEN %%'"
    )
    row = await cursor.fetchone()
    return row is not None and row[0] > 0


async def is_active(runner: CatchUpRunner) -> bool:
    return bool(runner.active)


async def is_standing_by(runner: CatchUpRunner) -> bool:
    return not runner.active


async def caught_up(conn: Conn) -> bool:
    return await applied(conn) == await all_positions(conn)


async def test_a_batch_applies_every_settled_event_once_with_its_checkpoint(
    conn: Conn, projector: RecordingProjector, runners: Callable[..., CatchUpRunner]
) -> None:
    positions = await ingest(conn, 7)
    runner = runners([projector], batch_size=5)
    assert await runner.run_once(projector) == 5
    assert await runner.run_once(projector) == 2
    assert await runner.run_once(projector) == 0
    assert await applied(conn) == positions
    stored = await stored_checkpoint(conn, projector.name)
    assert stored is not None
    assert stored.checkpoint == await ledger_head(conn)


async def test_an_event_committed_after_a_later_one_is_waited_for_not_skipped(
    conn: Conn,
    database_url: str,
    projector: RecordingProjector,
    runners: Callable[..., CatchUpRunner],
) -> None:
    runner = runners([projector])
    async with connect(database_url) as slow:
        async with slow.transaction():
            [early] = await append(slow, [new_event()])
            [late] = await append(conn, [new_event()])
            assert early.position is not None
            assert late.position is not None
            assert early.position < late.position
            # The later event has committed, the earlier one not yet: nothing is settled.
            assert await runner.run_once(projector) == 0
        assert await runner.run_once(projector) == 2
    assert await applied(conn) == [early.position, late.position]


async def test_a_crash_mid_batch_rolls_back_the_partial_batch_and_the_retry_applies_it_once(
    conn: Conn, projector: RecordingProjector, runners: Callable[..., CatchUpRunner]
) -> None:
    positions = await ingest(conn, 6)
    projector.crash = True
    runner = runners([projector])
    with pytest.raises(psycopg.OperationalError):
        await runner.run_once(projector)
    assert await applied(conn) == []
    stored = await stored_checkpoint(conn, projector.name)
    assert stored is None or stored.checkpoint == Checkpoint()

    projector.crash = False
    await drain(runner, projector)
    assert await applied(conn) == positions
    assert await totals_match(conn)


async def test_a_crash_between_batches_resumes_where_the_last_commit_left_off(
    conn: Conn, projector: RecordingProjector, runners: Callable[..., CatchUpRunner]
) -> None:
    positions = await ingest(conn, 10)
    assert await runners([projector], batch_size=3).run_once(projector) == 3
    # The first process is gone; another, with another batch size, carries on.
    await drain(runners([projector], batch_size=4), projector)
    assert await applied(conn) == positions


async def test_killing_a_running_runners_connections_repeatedly_never_doubles_or_skips(
    conn: Conn, projector: RecordingProjector, runners: Callable[..., CatchUpRunner]
) -> None:
    runner = runners([projector], batch_size=5)
    await runner.start()
    for _ in range(4):
        await ingest(conn, 40)
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'ledger-runner' AND datname = current_database()"
        )
    await eventually(lambda: caught_up(conn))
    assert len(await applied(conn)) == 160
    assert await totals_match(conn)


async def test_two_appliers_racing_on_one_view_apply_each_event_once(
    conn: Conn, projector: RecordingProjector, runners: Callable[..., CatchUpRunner]
) -> None:
    positions = await ingest(conn, 10)
    first, second = runners([projector]), runners([projector])
    counts = await asyncio.gather(first.run_once(projector), second.run_once(projector))
    assert sorted(counts) == [0, 10]
    assert await applied(conn) == positions


async def test_only_one_of_two_started_runners_is_active(
    conn: Conn, projector: RecordingProjector, runners: Callable[..., CatchUpRunner]
) -> None:
    first, second = runners([projector]), runners([projector])
    await asyncio.gather(first.start(), second.start())

    async def one_active() -> bool:
        return len(first.active) + len(second.active) == 1

    await eventually(one_active)
    await ingest(conn, 30)
    await eventually(lambda: caught_up(conn))
    assert await one_active()
    assert len(await lock_holders(conn, projector.name)) == 1


async def test_a_standby_runner_takes_over_when_the_holders_connection_is_killed(
    conn: Conn, projector: RecordingProjector, runners: Callable[..., CatchUpRunner]
) -> None:
    # The holder reconnects after >= 0.25 s; the standby retries the lock every 0.05 s.
    first = runners([projector], reconnect_delay=0.5)
    await first.start()
    await eventually(lambda: is_active(first))
    second = runners([projector], reconnect_delay=0.5)
    await second.start()
    await ingest(conn, 10)
    await eventually(lambda: caught_up(conn))

    [holder] = await lock_holders(conn, projector.name)
    await conn.execute("SELECT pg_terminate_backend(%s)", (holder,))
    await eventually(lambda: is_active(second))
    await ingest(conn, 10)
    await eventually(lambda: caught_up(conn))
    # The former holder learns that its connection is gone on its next look (a poll or the
    # notification), which may come after the standby has caught up.
    await eventually(lambda: is_standing_by(first))
    assert len(await applied(conn)) == 20


async def test_one_callback_is_applied_soon_after_its_notification_however_long_idle(
    conn: Conn, projector: RecordingProjector, runners: Callable[..., CatchUpRunner]
) -> None:
    # Without the notification, the next look would come after the idle backoff (past a
    # second by now), or the hour-long poll interval.
    runner = runners([projector], poll_interval=3600.0)
    await runner.start()
    await eventually(lambda: is_active(runner))
    await eventually(lambda: listening(conn))
    await asyncio.sleep(1.5)
    positions = await ingest(conn, 1)
    await eventually(lambda: caught_up(conn), within=1.0)
    assert await applied(conn) == positions


@pytest.mark.parametrize("interval_of", ["runner", "view"])
async def test_callbacks_arriving_while_busy_are_applied_together_in_the_next_batch(
    conn: Conn,
    projector: RecordingProjector,
    runners: Callable[..., CatchUpRunner],
    interval_of: str,
) -> None:
    seen: list[int] = []
    # The runner's busy interval, when given, replaces each view's own.
    projector.busy_interval = 0.5 if interval_of == "view" else 0.02
    runner = runners(
        [projector],
        busy_interval=0.5 if interval_of == "runner" else None,
        on_applied=lambda _, batch: seen.append(batch.events),
    )
    await runner.run_once(projector)  # the view exists: no first build
    await runner.start()
    await eventually(lambda: is_active(runner))
    await ingest(conn, 1)
    await eventually(lambda: caught_up(conn))
    # The runner now pauses for the busy interval: ten commits, ten notifications, meanwhile.
    for _ in range(10):
        await ingest(conn, 1)
    await eventually(lambda: caught_up(conn))
    assert seen == [1, 10]


def test_views_read_by_analysts_gather_longer_than_the_status_view() -> None:
    views = {p.name: p.busy_interval for p in PROJECTORS}
    assert views["message_status"] <= 0.05  # the lag target: 500 ms p99 at 1,000/s
    assert views["daily_delivery_metrics"] > views["message_status"]
    assert views["delivery_analytics"] > views["message_status"]


async def test_polling_applies_events_whose_notification_never_came(
    conn: Conn, projector: RecordingProjector, runners: Callable[..., CatchUpRunner]
) -> None:
    runner = runners([projector], poll_interval=0.2)
    await runner.start()
    await eventually(lambda: is_active(runner))
    # Inserted directly, without the NOTIFY that append sends.
    await conn.execute(
        "INSERT INTO events (message_uuid, event_type, status, dedup_key, payload, meta)"
        ' VALUES (%s, %s, \'sent\', %s, \'{}\', \'{"source": "plivo", "signature": "unsigned"}\')',
        (uuid4(), STATUS_REPORTED, os.urandom(16)),
    )
    await eventually(lambda: caught_up(conn), within=5.0)


async def test_the_runner_reconnects_by_itself_after_its_connections_are_killed(
    conn: Conn, projector: RecordingProjector, runners: Callable[..., CatchUpRunner]
) -> None:
    # A long poll interval: after the kill, only a reconnected listener can wake it in time.
    runner = runners([projector], poll_interval=30.0)
    await runner.start()
    await eventually(lambda: is_active(runner))
    await eventually(lambda: listening(conn))
    await conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name = 'ledger-runner' AND datname = current_database()"
    )
    await eventually(lambda: listening(conn))
    await eventually(lambda: is_active(runner))
    await asyncio.sleep(0.1)
    await ingest(conn, 5)
    await eventually(lambda: caught_up(conn), within=5.0)


async def test_stop_returns_promptly_and_releases_the_lock(
    conn: Conn, projector: RecordingProjector, runners: Callable[..., CatchUpRunner]
) -> None:
    runner = runners([projector], poll_interval=30.0)
    await runner.start()
    await eventually(lambda: is_active(runner))
    await eventually(lambda: listening(conn))
    started = time.monotonic()
    await runner.stop()
    assert time.monotonic() - started < 2.0  # the poll interval is 30 s
    assert await lock_holders(conn, projector.name) == []
    assert not await listening(conn)


async def test_stop_cancels_a_long_rebuild_and_leaves_nothing_behind(
    conn: Conn, projector: RecordingProjector, runners: Callable[..., CatchUpRunner]
) -> None:
    await ingest(conn, 3)
    projector.build_sleep = 30.0
    runner = runners([projector], stop_grace=0.2)
    await runner.start()

    async def building() -> bool:
        cursor = await conn.execute(
            "SELECT EXISTS (SELECT FROM pg_stat_activity"
            " WHERE wait_event = 'PgSleep' AND datname = current_database())"
        )
        row = await cursor.fetchone()
        return bool(row and row[0])

    await eventually(building)
    started = time.monotonic()
    await runner.stop()
    assert time.monotonic() - started < 2.0
    cursor = await conn.execute(
        "SELECT count(*) FROM pg_tables WHERE schemaname = %s", (SHADOW_SCHEMA,)
    )
    assert await cursor.fetchone() == (0,)
    assert await lock_holders(conn, projector.name) == []
    cursor = await conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid::bigint = %s",
        (int(Lock.REPLAY),),
    )
    assert await cursor.fetchone() == (0,)


async def test_a_poison_event_is_dead_lettered_and_the_rest_of_its_batch_applied(
    conn: Conn, projector: RecordingProjector, runners: Callable[..., CatchUpRunner]
) -> None:
    positions = await ingest(conn, 9, poison_at=4)
    runner = runners([projector])
    assert await runner.run_once(projector) == 9
    assert await applied(conn) == positions[:4] + positions[5:]
    assert await totals_match(conn)
    [letter] = await dead_letters(conn, projector.name)
    assert letter.position == positions[4]
    assert letter.error.startswith("DivisionByZero: division by zero")
    stored = await stored_checkpoint(conn, projector.name)
    assert stored is not None
    assert stored.checkpoint.position == positions[-1]


async def test_a_dead_letter_does_not_hold_back_the_events_after_it(
    conn: Conn, projector: RecordingProjector, runners: Callable[..., CatchUpRunner]
) -> None:
    seen: list[Batch] = []
    runner = runners([projector], batch_size=2, on_applied=lambda _, batch: seen.append(batch))
    positions = await ingest(conn, 5, poison_at=0)
    await drain(runner, projector)
    assert await applied(conn) == positions[1:]
    assert [len(b.dead_letters) for b in seen] == [1, 0, 0]


async def test_a_runner_rebuilds_a_view_of_another_version_when_it_becomes_active(
    conn: Conn, projector: RecordingProjector, runners: Callable[..., CatchUpRunner]
) -> None:
    positions = await ingest(conn, 8)
    await drain(runners([projector]), projector)
    upgraded = RecordingProjector(version=2)
    runner = runners([upgraded])
    await runner.start()

    async def rebuilt() -> bool:
        stored = await stored_checkpoint(conn, projector.name)
        return stored is not None and stored.version == 2

    await eventually(rebuilt)
    assert await rebuilds(conn) == 1
    assert await applied(conn) == positions


async def test_lag_counts_unapplied_events_and_open_dead_letters(
    conn: Conn, projector: RecordingProjector, runners: Callable[..., CatchUpRunner]
) -> None:
    await ingest(conn, 4, poison_at=1)
    await runners([projector]).run_once(projector)
    await ingest(conn, 3)
    [lag, never_run] = await projector_lag(conn, [projector.name, "not_yet"])
    assert (lag.projector, lag.version, lag.events_behind, lag.dead_letters) == (
        "recording",
        1,
        3,
        1,
    )
    assert lag.seconds_behind >= 0
    assert (never_run.version, never_run.events_behind, never_run.position) == (None, 7, 0)
    # Without names: every view with a checkpoint (the service's, built with the database).
    every = sorted([p.name for p in PROJECTORS] + [projector.name])
    assert [entry.projector for entry in await projector_lag(conn)] == every


async def test_has_applied_follows_the_checkpoint_in_fence_order(
    conn: Conn, projector: RecordingProjector, runners: Callable[..., CatchUpRunner]
) -> None:
    runner = runners([projector], batch_size=1)
    first, second = await ingest(conn, 2)
    assert not await has_applied(conn, projector.name, first)
    await runner.run_once(projector)
    assert await has_applied(conn, projector.name, first)
    assert not await has_applied(conn, projector.name, second)
    assert not await has_applied(conn, projector.name, second + 1000)
