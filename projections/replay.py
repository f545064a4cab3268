"""Replay: rebuild a view from the ledger into copies, catch them up, and swap them in at once.

1. Create empty copies ``<table>_replay`` (``LIKE <table> INCLUDING ALL``).
2. In one statement, find ``upto``: the last event in fence order among those whose
   transactions are all settled (``transaction_id < pg_snapshot_xmin``). Every event at or
   before it is visible to any later statement, and every event committed later comes after
   it, so ``build(upto)`` followed by catch-up from ``upto`` misses nothing and repeats nothing.
3. ``projector.build`` fills the copies with set-based SQL; then the shared catch-up logic
   (:func:`projections.runner.catch_up`) folds what was appended meanwhile, batch by batch.
4. One short transaction locks the live checkpoint row (waiting for a runner batch in
   flight), catches up the last few events, renames the live tables to ``_old`` and the
   copies to the live names, drops the old ones, renames the copies' indexes (and so their
   constraints) back to the live names, and sets the checkpoint and version. Readers see the
   old view until that commit.

Memory does not grow with the ledger: the build runs in the server and catch-up is batched.
The build holds a transaction id while it runs, so live projection (not ingestion) of every
view waits for it: minutes on a very large ledger. Each statement runs with
``statement_timeout = 0`` (``SET LOCAL``), whatever the connection's default.

Only what ``LIKE … INCLUDING ALL`` copies survives the swap: grants, triggers, foreign keys,
and views or other objects depending on a live table do not (a dependent view makes the swap
fail rather than silently drop it). Indexes identical in shape to another on the same table
keep the copy's generated names.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Final

import msgspec
import psycopg
from psycopg import sql

from ledger.roles import give_to_owner_of
from ledger.store import Checkpoint
from projections.base import Projector
from projections.locks import Lock, lock_key, try_advisory_lock
from projections.runner import (
    DeadLetter,
    catch_up,
    lock_checkpoint,
    record_dead_letters,
    save_checkpoint,
)

log = logging.getLogger(__name__)

REPLAY_SUFFIX: Final = "_replay"
_OLD_SUFFIX: Final = "_old"
DEFAULT_BATCH_SIZE: Final = 5000
# The renames need ACCESS EXCLUSIVE locks; while one waits, new readers queue behind it. Give
# up quickly when a long reader is in the way, and try again.
_SWAP_LOCK_TIMEOUT: Final = "2s"
_SWAP_ATTEMPTS: Final = 10

#: ``on_progress(done, total)``: events folded so far, and the events to fold (which grows
#: when events arrive during the replay).
ProgressCallback = Callable[[int, int], None]


class ReplayInProgress(Exception):
    """Another replay of the same view is running (in this or another process)."""


class ReplayReport(msgspec.Struct, frozen=True):
    """What a replay did: events folded, time taken, and what became of dead letters."""

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


class _Swapped(msgspec.Struct, frozen=True):
    events: int
    dead_letters: int
    resolved: int


async def replay(
    conn: psycopg.AsyncConnection[Any],
    projector: Projector,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_progress: ProgressCallback | None = None,
) -> ReplayReport:
    """Rebuild ``projector``'s view from the ledger and swap it in (see the module doc).

    ``conn`` must be an autocommit connection. The service may keep ingesting and projecting
    meanwhile. Raises :class:`ReplayInProgress` if the view is already being replayed; on any
    error the live view is left as it was and the copies are dropped.
    """
    if not conn.autocommit:
        raise ValueError("replay needs an autocommit connection: it runs its own transactions")
    if not await try_advisory_lock(conn, Lock.REPLAY, projector.name):
        raise ReplayInProgress(f"the {projector.name} view is already being replayed")
    started = time.perf_counter()
    log.info("replaying %s", projector.name)
    try:
        # Copies left by an interrupted replay: ours to drop, since we hold the replay lock.
        await _drop_copies(conn, projector)
        try:
            folded, swapped = await _rebuild(conn, projector, batch_size, on_progress)
        finally:
            if not conn.broken:
                await _drop_copies(conn, projector)
    finally:
        if not conn.broken:
            await conn.execute(
                "SELECT pg_advisory_unlock(%s, %s)", (int(Lock.REPLAY), lock_key(projector.name))
            )
    seconds = time.perf_counter() - started
    events = folded
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
async def _unbounded(conn: psycopg.AsyncConnection[Any]) -> AsyncIterator[None]:
    """A transaction without the service's statement timeout: a build may take minutes."""
    async with conn.transaction():
        await conn.execute("SET LOCAL statement_timeout = 0")
        yield


def _name(table: str, suffix: str = "") -> sql.Identifier:
    return sql.Identifier(table + suffix)


async def _drop_copies(conn: psycopg.AsyncConnection[Any], projector: Projector) -> None:
    copies = sql.SQL(", ").join(_name(t, REPLAY_SUFFIX) for t in projector.tables)
    await conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(copies))


async def _rebuild(
    conn: psycopg.AsyncConnection[Any],
    projector: Projector,
    batch_size: int,
    on_progress: ProgressCallback | None,
) -> tuple[int, _Swapped]:
    """Build, catch up and swap; returns the events folded in all, and what the swap did."""
    async with conn.transaction():
        for table in projector.tables:
            await conn.execute(
                sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
                    _name(table, REPLAY_SUFFIX), _name(table)
                )
            )
            await give_to_owner_of(conn, table + REPLAY_SUFFIX, like=table)
        index_renames = {table: await _index_renames(conn, table) for table in projector.tables}

    async with _unbounded(conn):
        upto, settled, total = await _settled_head(conn)
        progress = _Progress(on_progress, total)
        await projector.build(conn, suffix=REPLAY_SUFFIX, upto=upto)
        # Fresh statistics, so that the first queries on the swapped-in view plan well.
        for table in projector.tables:
            await conn.execute(sql.SQL("ANALYZE {}").format(_name(table, REPLAY_SUFFIX)))
    progress.advance(settled)

    # Catch up without holding anything the live runner needs, until close to the head.
    checkpoint = upto
    failures: dict[int, DeadLetter] = {}
    while True:
        async with _unbounded(conn):
            batch = await catch_up(
                conn, projector, suffix=REPLAY_SUFFIX, checkpoint=checkpoint, batch_size=batch_size
            )
        checkpoint = batch.checkpoint
        failures.update((d.position, d) for d in batch.dead_letters)
        progress.advance(batch.events)
        if batch.events < batch_size:
            break
    swapped = await _swap(
        conn,
        projector,
        index_renames=index_renames,
        checkpoint=checkpoint,
        failures=failures,
        batch_size=batch_size,
    )
    progress.advance(swapped.events)
    return progress.done, swapped


async def _settled_head(conn: psycopg.AsyncConnection[Any]) -> tuple[Checkpoint, int, int]:
    """``upto`` (the last settled event in fence order), how many events are settled, and how
    many are committed in all, from one snapshot."""
    cursor = await conn.execute(
        "SELECT head.transaction_id::text::bigint, head.position, counts.settled, counts.total"
        " FROM (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin) AS fence"
        " LEFT JOIN LATERAL (SELECT transaction_id, position FROM events"
        "   WHERE transaction_id < fence.xmin"
        "   ORDER BY transaction_id DESC, position DESC LIMIT 1) AS head ON true"
        " CROSS JOIN LATERAL (SELECT count(*) AS total,"
        "   count(*) FILTER (WHERE transaction_id < fence.xmin) AS settled FROM events) AS counts"
    )
    row = await cursor.fetchone()
    assert row is not None  # the query always returns one row
    upto = Checkpoint() if row[0] is None else Checkpoint(row[0], row[1])
    return upto, row[2], row[3]


async def _swap(
    conn: psycopg.AsyncConnection[Any],
    projector: Projector,
    *,
    index_renames: dict[str, list[tuple[str, str]]],
    checkpoint: Checkpoint,
    failures: dict[int, DeadLetter],
    batch_size: int,
) -> _Swapped:
    """Catch up the last events and swap the copies in, in one transaction (retried when
    readers keep the live tables locked past the lock timeout)."""
    attempt = 0
    while True:
        attempt += 1
        # A failed attempt rolls back its catch-up too: start each from the same place.
        tail, tail_failures, tail_events = checkpoint, dict(failures), 0
        try:
            async with _unbounded(conn):
                await lock_checkpoint(conn, projector)
                while True:
                    batch = await catch_up(
                        conn,
                        projector,
                        suffix=REPLAY_SUFFIX,
                        checkpoint=tail,
                        batch_size=batch_size,
                    )
                    tail = batch.checkpoint
                    tail_failures.update((d.position, d) for d in batch.dead_letters)
                    tail_events += batch.events
                    if batch.events < batch_size:
                        break
                await conn.execute(
                    sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(_SWAP_LOCK_TIMEOUT))
                )
                for table in projector.tables:
                    await _swap_table(conn, table, index_renames[table])
                await save_checkpoint(conn, projector.name, tail, version=projector.version)
                resolved = await _settle_dead_letters(conn, projector.name, tail_failures.values())
        except psycopg.errors.LockNotAvailable:
            if attempt >= _SWAP_ATTEMPTS:
                raise
            log.warning(
                "replay of %s: readers kept the view locked; retrying the swap (%d/%d)",
                projector.name,
                attempt,
                _SWAP_ATTEMPTS,
            )
            await asyncio.sleep(min(0.2 * attempt, 2.0))
            continue
        return _Swapped(tail_events, len(tail_failures), resolved)


async def _swap_table(
    conn: psycopg.AsyncConnection[Any], table: str, index_renames: list[tuple[str, str]]
) -> None:
    live, copy, old = _name(table), _name(table, REPLAY_SUFFIX), _name(table, _OLD_SUFFIX)
    await conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(live, old))
    await conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(copy, live))
    await conn.execute(sql.SQL("DROP TABLE {}").format(old))
    # Renaming an index that backs a constraint renames the constraint too.
    for copy_index, live_index in index_renames:
        await conn.execute(
            sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                sql.Identifier(copy_index), sql.Identifier(live_index)
            )
        )


async def _settle_dead_letters(
    conn: psycopg.AsyncConnection[Any], projector: str, failures: Iterable[DeadLetter]
) -> int:
    """Resolve the dead letters the rebuilt view includes; record those it could not apply.

    Every earlier dead letter lies at or before the new checkpoint (the live checkpoint never
    passes the copy's), so each was either built or caught up by this replay.
    """
    failed = list(failures)
    cursor = await conn.execute(
        "UPDATE dead_letters SET resolved_at = now() WHERE projector = %s"
        " AND resolved_at IS NULL AND NOT (position = ANY(%s::bigint[]))",
        (projector, [d.position for d in failed]),
    )
    await record_dead_letters(conn, projector, failed)
    return cursor.rowcount


_INDEXES = """
SELECT index.relname, i.indisprimary, i.indisunique,
       substr(pg_get_indexdef(i.indexrelid), position(' USING ' IN pg_get_indexdef(i.indexrelid)))
FROM pg_index AS i JOIN pg_class AS index ON index.oid = i.indexrelid
WHERE i.indrelid = %s::regclass
"""


async def _indexes_by_shape(
    conn: psycopg.AsyncConnection[Any], table: str
) -> dict[tuple[bool, bool, str], str]:
    """A table's indexes by shape (primary, unique, method, columns, predicate), ignoring
    names. Shapes shared by several indexes are left out: they cannot be told apart."""
    cursor = await conn.execute(_INDEXES, (sql.Identifier(table).as_string(conn),))
    rows = await cursor.fetchall()
    by_shape = [((primary, unique, shape), name) for name, primary, unique, shape in rows]
    counts = Counter(shape for shape, _ in by_shape)
    return {shape: name for shape, name in by_shape if counts[shape] == 1}


async def _index_renames(conn: psycopg.AsyncConnection[Any], table: str) -> list[tuple[str, str]]:
    """(copy's index, live index) name pairs, to give the swapped-in copy the live names."""
    live = await _indexes_by_shape(conn, table)
    copy = await _indexes_by_shape(conn, table + REPLAY_SUFFIX)
    return [(copy[shape], name) for shape, name in live.items() if shape in copy]
