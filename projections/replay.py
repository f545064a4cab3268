"""Replay: rebuild views from the ledger in a shadow schema, catch them up, swap them in.

1. In one snapshot, find ``upto``: the last event in fence order among those whose
   transactions are all settled (``transaction_id < pg_snapshot_xmin``). Every event at or
   before it is visible to any later statement, and every event committed later comes after
   it, so a build up to ``upto`` followed by catch-up from ``upto`` misses nothing and
   repeats nothing.
2. Create the views' tables, from their projectors' DDL, in the schema ``ledger_shadow``
   (migration 005), without secondary indexes.
3. Fold the ledger once for every view being rebuilt: chunk by chunk of positions, each
   chunk one statement in a transaction of its own, so that no long transaction holds back
   the fence behind which the live views advance meanwhile, on several connections at once.
   Then each projector's :meth:`~projections.base.Projector.finish_build` statements, then
   its indexes, then fresh statistics, each phase on several connections. Concurrent chunks
   upsert the messages they share in the same (UUID) order, so they wait for each other at
   most, and never deadlock.
4. Catch the new tables up from ``upto`` (:func:`projections.catch_up.apply_after`).
5. One short transaction per view locks its live tables and checkpoint row (waiting for a
   live batch in flight), catches up the last few events, recomputes what is derived from
   the finished tables (:meth:`~projections.base.Projector.derived`: the delivery alerts),
   drops the live tables, moves the new ones into place with ``ALTER TABLE … SET SCHEMA``
   (their indexes and constraints keep their names), and sets the checkpoint and version.
   Readers see the old view until that commit.

Memory does not grow with the ledger: the work runs in the server, a chunk at a time. Each
statement runs without the connection's ``statement_timeout``. Grants on a live table to
roles other than its owner, and objects depending on it (a SQL view, a foreign key) do not
survive the swap; a dependent object makes the swap fail rather than silently go.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, Final

import msgspec
import psycopg
from psycopg import sql

from ledger.roles import give_to_owner_of
from ledger.store import Checkpoint
from projections.base import DDL, Projector
from projections.catch_up import DEFAULT_BATCH_SIZE, apply_after
from projections.checkpoints import lock_checkpoint, save_checkpoint
from projections.dead_letters import DeadLetter, is_the_events_fault, isolate, settle_dead_letters
from projections.locks import Lock, advisory_unlock, try_advisory_lock
from projections.statements import build_statements_for, parameters

log = logging.getLogger(__name__)

#: Where replay builds the new tables (created by migration 005).
SHADOW_SCHEMA: Final = "ledger_shadow"
#: Positions per chunk of a build: a chunk's transaction holds back the live views' fence
#: while it writes (about a second per 100,000 events on a small machine).
DEFAULT_CHUNK_SIZE: Final = 100_000
#: Connections a rebuild folds chunks and builds indexes on at once: PostgreSQL does not
#: run a data-modifying statement in parallel by itself, so this is how a rebuild keeps two
#: cores busy (and its floor, a parallel CREATE TABLE AS, uses three processes).
DEFAULT_JOBS: Final = 2
#: Sort memory for a chunk (100,000 events sort in about 20 MB).
_BUILD_WORK_MEM: Final = "128MB"
# The swap needs ACCESS EXCLUSIVE locks; while one waits, new readers queue behind it. Give
# up quickly when a long reader is in the way, and try again.
_SWAP_LOCK_TIMEOUT: Final = "2s"
_SWAP_ATTEMPTS: Final = 10

#: ``on_progress(done, total)``: events folded so far, and about how many there are to fold
#: (the total is estimated from positions, and grows when events arrive during the replay).
ProgressCallback = Callable[[int, int], None]
#: Opens one more connection for a rebuild's parallel work (an async context manager).
ConnectionFactory = Callable[
    [], contextlib.AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]
]
#: A piece of a rebuild, run on whichever connection is free.
_Job = Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]]


class ReplayInProgress(Exception):
    """Another replay of the same view is running (in this or another process)."""


class ReplayReport(msgspec.Struct, frozen=True):
    """What a replay did to one view: events folded, time taken, what became of dead letters."""

    projector: str
    events: int
    seconds: float
    events_per_second: float
    #: Events the rebuilt view could not apply (recorded as dead letters).
    dead_letters: int = 0
    #: Earlier dead letters the rebuilt view includes, now marked resolved.
    resolved: int = 0


class _Progress:
    def __init__(self, callback: ProgressCallback | None, total: int) -> None:
        self._callback = callback
        self.done = 0
        self.total = total
        self.advance(0)

    def advance(self, events: int) -> None:
        self.done += events
        self.total = max(self.total, self.done)
        if self._callback is not None:
            self._callback(self.done, self.total)

    def finish(self) -> None:
        self.total = self.done
        self.advance(0)


class _Head(msgspec.Struct, frozen=True):
    """Where a build stops (``upto``), and the range of positions its chunks cover."""

    upto: Checkpoint
    first_position: int
    last_position: int


class _Swapped(msgspec.Struct, frozen=True):
    events: int
    dead_letters: int
    resolved: int


async def replay(
    conn: psycopg.AsyncConnection[Any],
    projector: Projector,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    jobs: int = DEFAULT_JOBS,
    connect: ConnectionFactory | None = None,
    on_progress: ProgressCallback | None = None,
) -> ReplayReport:
    """Rebuild ``projector``'s view from the ledger and swap it in (see
    :func:`replay_views`)."""
    [report] = await replay_views(
        conn,
        [projector],
        batch_size=batch_size,
        chunk_size=chunk_size,
        jobs=jobs,
        connect=connect,
        on_progress=on_progress,
    )
    return report


async def replay_views(
    conn: psycopg.AsyncConnection[Any],
    projectors: Sequence[Projector],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    jobs: int = DEFAULT_JOBS,
    connect: ConnectionFactory | None = None,
    on_progress: ProgressCallback | None = None,
) -> list[ReplayReport]:
    """Rebuild the views of ``projectors`` from one pass over the ledger and swap each in
    (see the module doc).

    ``conn`` must be an autocommit connection. Chunks and indexes are built on ``jobs``
    connections at once: ``conn`` and others opened by ``connect`` (by default, like
    ``conn``). The service may keep ingesting and projecting meanwhile. Raises
    :class:`ReplayInProgress` if one of the views is already being replayed; on any error
    the live views not yet swapped are left as they were and the shadow tables are dropped.
    """
    if not conn.autocommit:
        raise ValueError("replay needs an autocommit connection: it runs its own transactions")
    started = time.perf_counter()
    async with _replay_locks(conn, projectors):
        log.info("replaying %s", ", ".join(projector.name for projector in projectors))
        cursor = await conn.execute("SELECT current_schema()")
        row = await cursor.fetchone()
        assert row is not None  # the ledger's own tables resolve there
        rebuild = _Rebuild(
            conn,
            str(row[0]),
            batch_size=batch_size,
            chunk_size=chunk_size,
            jobs=jobs,
            connect=connect,
        )
        # Tables left by an interrupted replay: ours to drop, since we hold the replay locks.
        await rebuild.drop(projectors)
        try:
            head = await _settled_head(conn)
            await rebuild.create(projectors)
            # About as many events as positions, until the chunks have counted them.
            progress = _Progress(on_progress, head.last_position - head.first_position + 1)
            built = await rebuild.build(projectors, head, progress)
            reports = []
            for projector in projectors:
                checkpoint, caught_up = await rebuild.catch_up(projector, head.upto, progress)
                swapped = await rebuild.swap(projector, checkpoint)
                progress.advance(swapped.events)
                reports.append(
                    _report(projector, built + caught_up + swapped.events, started, swapped)
                )
            progress.finish()
        finally:
            if not conn.broken:
                await rebuild.drop(projectors)
    return reports


def _report(projector: Projector, events: int, started: float, swapped: _Swapped) -> ReplayReport:
    seconds = time.perf_counter() - started
    report = ReplayReport(
        projector=projector.name,
        events=events,
        seconds=seconds,
        events_per_second=events / seconds if seconds > 0 else 0.0,
        dead_letters=swapped.dead_letters,
        resolved=swapped.resolved,
    )
    log.info(
        "replayed %s: %d events in %.2f s (%.0f events/s), %d dead letters, %d resolved",
        report.projector,
        report.events,
        report.seconds,
        report.events_per_second,
        report.dead_letters,
        report.resolved,
    )
    return report


@contextlib.asynccontextmanager
async def _replay_locks(
    conn: psycopg.AsyncConnection[Any], projectors: Sequence[Projector]
) -> AsyncIterator[None]:
    """Hold every view's replay lock for the block, or raise :class:`ReplayInProgress`."""
    held: list[Projector] = []
    try:
        for projector in projectors:
            if not await try_advisory_lock(conn, Lock.REPLAY, projector.name):
                raise ReplayInProgress(f"the {projector.name} view is already being replayed")
            held.append(projector)
        yield
    finally:
        if not conn.broken:
            for projector in held:
                await advisory_unlock(conn, Lock.REPLAY, projector.name)


async def _settled_head(conn: psycopg.AsyncConnection[Any]) -> _Head:
    """The build's :class:`_Head`, from one snapshot (index lookups only)."""
    cursor = await conn.execute(
        "SELECT head.transaction_id::text::bigint, head.position, bounds.first, bounds.last"
        " FROM (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin) AS fence"
        " LEFT JOIN LATERAL (SELECT transaction_id, position FROM events"
        "   WHERE transaction_id < fence.xmin"
        "   ORDER BY transaction_id DESC, position DESC LIMIT 1) AS head ON true"
        " CROSS JOIN (SELECT min(position) AS first, max(position) AS last FROM events) AS bounds"
    )
    row = await cursor.fetchone()
    assert row is not None  # the query always returns one row
    if row[0] is None:
        return _Head(Checkpoint(), 1, 0)
    return _Head(Checkpoint(row[0], row[1]), row[2], row[3])


def _tables(schema: str, projectors: Iterable[Projector]) -> sql.Composed:
    return sql.SQL(", ").join(
        sql.Identifier(schema, table) for projector in projectors for table in projector.tables
    )


class _Rebuild:
    """One replay's work on the shadow tables: over its own connection, and for the
    set-shaped parts (chunks, indexes) over ``jobs`` connections at once."""

    def __init__(
        self,
        conn: psycopg.AsyncConnection[Any],
        live: str,
        *,
        batch_size: int,
        chunk_size: int,
        jobs: int,
        connect: ConnectionFactory | None,
    ) -> None:
        self._conn = conn
        self._live = live
        self._batch_size = batch_size
        self._chunk_size = chunk_size
        self._jobs = jobs
        self._connect = connect or functools.partial(_another_connection, conn)
        #: Per view, the events it could not apply, by position.
        self._failures: dict[str, dict[int, DeadLetter]] = {}

    @contextlib.asynccontextmanager
    async def _transaction(
        self, conn: psycopg.AsyncConnection[Any] | None = None, *, building: bool = False
    ) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A transaction on ``conn`` (else the replay's own) whose unqualified tables are the
        shadow ones (``events`` and the checkpoints resolve to the live schema), without the
        service's statement timeout: a build statement may take a while. ``building`` adds
        sort memory and turns JIT off (compiling the fold costs more than it saves)."""
        conn = conn or self._conn
        async with conn.transaction():
            path = sql.SQL("{}, {}").format(
                sql.Identifier(SHADOW_SCHEMA), sql.Identifier(self._live)
            )
            options = {"search_path": path.as_string(conn), "statement_timeout": "0"}
            if building:
                options |= {"jit": "off", "work_mem": _BUILD_WORK_MEM}
            await conn.execute(
                "SELECT set_config(name, value, true)"
                " FROM unnest(%s::text[], %s::text[]) AS option(name, value)",
                (list(options), list(options.values())),
            )
            yield conn

    async def drop(self, projectors: Sequence[Projector]) -> None:
        """Drop the shadow tables of ``projectors``, if any."""
        await self._conn.execute(
            sql.SQL("DROP TABLE IF EXISTS {}").format(_tables(SHADOW_SCHEMA, projectors))
        )

    async def create(self, projectors: Sequence[Projector]) -> None:
        """The new, empty tables, each belonging to whoever owns the live one (see
        :func:`ledger.roles.give_to_owner_of`)."""
        async with self._transaction() as conn:
            for projector in projectors:
                self._failures[projector.name] = {}
                for statement in projector.schema():
                    await conn.execute(statement)
                for table in projector.tables:
                    await give_to_owner_of(conn, table, schema=SHADOW_SCHEMA, like=self._live)

    async def build(self, projectors: Sequence[Projector], head: _Head, progress: _Progress) -> int:
        """Fill the shadow tables up to ``head.upto``, chunk by chunk, then finish them: the
        projectors' finishing statements, then their indexes (on the finished tables), then
        fresh statistics, so that the first queries on the swapped-in views plan well. Each
        statement is a transaction of its own, so that none holds back the live views' fence
        for long. The events built."""
        upto = {"upto_xid": str(head.upto.transaction_id), "upto_position": head.upto.position}
        lows = range(head.first_position, head.last_position + 1, self._chunk_size)
        group = tuple(projectors)

        built = 0

        def chunk(low: int) -> _Job:
            async def run(conn: psycopg.AsyncConnection[Any]) -> None:
                nonlocal built
                events = await self._chunk(
                    conn, group, {**upto, "low": low, "high": low + self._chunk_size}
                )
                built += events
                progress.advance(events)

            return run

        def statement(query: DDL, projector: Projector) -> _Job:
            async def run(conn: psycopg.AsyncConnection[Any]) -> None:
                async with self._transaction(conn, building=True):
                    await conn.execute(query, projector.parameters())

            return run

        await self._in_parallel([chunk(low) for low in lows])
        # A view's indexes wait for its own finishing statements (its keys and indexes are
        # built on finished tables), not for the other views'.
        finishes = [(p, p.finish_build()) for p in projectors]
        await self._in_parallel(
            [statement(q, p) for p, queries in finishes for q in queries]
            + [statement(q, p) for p, queries in finishes if not queries for q in p.indexes()]
        )
        await self._in_parallel(
            [statement(q, p) for p, queries in finishes if queries for q in p.indexes()]
        )
        await self._in_parallel(
            [
                statement(sql.SQL("ANALYZE {}").format(sql.Identifier(SHADOW_SCHEMA, t)), p)
                for p in projectors
                for t in p.tables
            ]
        )
        return built

    async def _in_parallel(self, jobs: Sequence[_Job]) -> None:
        """Run ``jobs`` on up to ``jobs`` connections (the replay's own and extra ones), in
        order as connections come free; at the first failure, cancel the others' work and
        raise it."""
        waiting = collections.deque(jobs)
        failure: BaseException | None = None
        async with contextlib.AsyncExitStack() as stack:
            conns = [self._conn]
            for _ in range(min(self._jobs, len(jobs)) - 1):
                conns.append(await stack.enter_async_context(self._connect()))

            async def work(conn: psycopg.AsyncConnection[Any]) -> None:
                nonlocal failure
                while waiting and failure is None:
                    job = waiting.popleft()
                    try:
                        await job(conn)
                    except BaseException as exc:
                        if failure is None:
                            failure = exc
                            for other in conns:
                                if other is not conn:
                                    with contextlib.suppress(psycopg.Error):
                                        await other.cancel_safe(timeout=2.0)
                        raise

            await asyncio.gather(*(work(conn) for conn in conns), return_exceptions=True)
        if failure is not None:
            raise failure

    async def _chunk(
        self,
        conn: psycopg.AsyncConnection[Any],
        projectors: tuple[Projector, ...],
        chunk: dict[str, Any],
    ) -> int:
        """One chunk for every view in one statement; if an event makes it fail, the chunk
        again view by view, isolating the failing events. The events in the chunk."""
        async with self._transaction(conn, building=True):
            try:
                async with conn.transaction():
                    return await _events(
                        await conn.execute(
                            build_statements_for(projectors).chunk, parameters(projectors, **chunk)
                        )
                    )
            except Exception as exc:
                if not is_the_events_fault(conn, exc):
                    raise
            return max([await self._isolate_chunk(conn, p, chunk) for p in projectors])

    async def _isolate_chunk(
        self, conn: psycopg.AsyncConnection[Any], projector: Projector, chunk: dict[str, Any]
    ) -> int:
        """One view's chunk, isolating the events it cannot apply; the events in the chunk."""
        own = build_statements_for((projector,))
        params = parameters([projector], **chunk)
        try:
            async with conn.transaction():
                return await _events(await conn.execute(own.chunk, params))
        except Exception as exc:
            if not is_the_events_fault(conn, exc):
                raise
        cursor = await conn.execute(
            "SELECT position FROM events WHERE position >= %(low)s AND position < %(high)s"
            " AND (transaction_id, position) <= (%(upto_xid)s::text::xid8, %(upto_position)s)"
            " ORDER BY position",
            chunk,
        )
        positions = [position for (position,) in await cursor.fetchall()]
        for letter in await isolate(conn, projector.name, own.positions, params, positions):
            self._failures[projector.name][letter.position] = letter
        return len(positions)

    async def catch_up(
        self, projector: Projector, checkpoint: Checkpoint, progress: _Progress
    ) -> tuple[Checkpoint, int]:
        """Fold what was appended since the build, without holding anything the live runner
        needs, until close to the head; where the shadow view has got to, and the events."""
        events = 0
        while True:
            async with self._transaction():
                batch = await apply_after(
                    self._conn, projector, checkpoint, batch_size=self._batch_size
                )
            checkpoint = batch.checkpoint
            self._failures[projector.name].update((d.position, d) for d in batch.dead_letters)
            events += batch.events
            progress.advance(batch.events)
            if batch.events < self._batch_size:
                return checkpoint, events

    async def swap(self, projector: Projector, checkpoint: Checkpoint) -> _Swapped:
        """Catch up the last events and swap the new tables in, in one transaction (retried
        when readers keep the live tables locked past the lock timeout)."""
        for attempt in range(1, _SWAP_ATTEMPTS + 1):
            try:
                return await self._swap_once(projector, checkpoint)
            except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected):
                if attempt == _SWAP_ATTEMPTS:
                    raise
                log.warning(
                    "replay of %s: readers kept the view locked; retrying the swap (%d/%d)",
                    projector.name,
                    attempt,
                    _SWAP_ATTEMPTS,
                )
                await asyncio.sleep(min(0.2 * attempt, 2.0))
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _swap_once(self, projector: Projector, checkpoint: Checkpoint) -> _Swapped:
        conn, live = self._conn, self._live
        # A failed attempt rolls back its catch-up too: each starts from the same place.
        failures, events = dict(self._failures[projector.name]), 0
        async with self._transaction():
            await conn.execute(
                sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(_SWAP_LOCK_TIMEOUT))
            )
            # The tables before the checkpoint row, in the order a live batch takes them
            # (its statement locks the tables when planned, the row when run).
            replaced = await _live_tables(conn, projector, live)
            if replaced:
                tables = sql.SQL(", ").join(sql.Identifier(live, t) for t in replaced)
                await conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(tables))
            await lock_checkpoint(conn, projector)
            while True:
                batch = await apply_after(conn, projector, checkpoint, batch_size=self._batch_size)
                checkpoint = batch.checkpoint
                failures.update((d.position, d) for d in batch.dead_letters)
                events += batch.events
                if batch.events < self._batch_size:
                    break
            for statement in projector.derived():
                await conn.execute(statement, projector.parameters())
            if replaced:
                await conn.execute(sql.SQL("DROP TABLE {}").format(tables))
            for table in projector.tables:
                await conn.execute(
                    sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(
                        sql.Identifier(SHADOW_SCHEMA, table), sql.Identifier(live)
                    )
                )
            await save_checkpoint(conn, projector.name, checkpoint, version=projector.version)
            resolved = await settle_dead_letters(conn, projector.name, failures.values())
        return _Swapped(events, len(failures), resolved)


async def _events(cursor: psycopg.AsyncCursor[Any]) -> int:
    row = await cursor.fetchone()
    assert row is not None  # a build statement returns one row: the events it folded
    return int(row[0])


@contextlib.asynccontextmanager
async def _another_connection(
    conn: psycopg.AsyncConnection[Any],
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A connection like ``conn``: same server, role and options (libpq keeps the password
    apart from the rest of the connection string)."""
    async with await psycopg.AsyncConnection.connect(
        conn.info.dsn, password=conn.info.password, autocommit=True
    ) as another:
        yield another


async def _live_tables(
    conn: psycopg.AsyncConnection[Any], projector: Projector, live: str
) -> list[str]:
    """The projector's tables that exist in the live schema."""
    cursor = await conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename = ANY(%s)",
        (live, list(projector.tables)),
    )
    return [name for (name,) in await cursor.fetchall()]
