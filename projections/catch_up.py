"""Catch-up: bringing a view up to the ledger, one fenced batch at a time.

A batch is one statement (:mod:`projections.statements`): the next settled events after the
view's checkpoint, folded into its tables and the checkpoint moved, so that a crash at any
point leaves the view and its checkpoint in agreement: nothing skipped, nothing applied
twice. Python sees only the batch's end and counts. A batch that fails because of an event
is applied again in a transaction that isolates the failing events as dead letters
(:func:`projections.dead_letters.isolate`) and moves past them, so the rest of the ledger is
never blocked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import msgspec
import psycopg
from psycopg import pq

from ledger.store import Checkpoint, settled_after
from projections.base import Projector
from projections.checkpoints import (
    VersionMismatch,
    lock_checkpoint,
    pending,
    save_checkpoint,
)
from projections.dead_letters import (
    DeadLetter,
    is_the_events_fault,
    isolate,
    record_dead_letters,
)
from projections.locks import Lock, try_advisory_lock
from projections.statements import live_statement, parameters, statements_for

DEFAULT_BATCH_SIZE: Final = 2000


class Batch(msgspec.Struct, frozen=True):
    """What one catch-up step did: the checkpoint after it, events read, events that failed."""

    checkpoint: Checkpoint
    events: int
    dead_letters: tuple[DeadLetter, ...] = ()


def _parameters(projector: Projector, batch_size: int, **own: Any) -> Mapping[str, Any]:
    return parameters(
        [projector], name=projector.name, version=projector.version, limit=batch_size, **own
    )


async def apply_next(
    conn: psycopg.AsyncConnection[Any],
    projector: Projector,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Batch:
    """Apply the next batch to the live view, in one statement with its checkpoint.

    On an autocommit connection the statement is its own transaction; inside a transaction
    it runs in a savepoint. The checkpoint is read under ``FOR UPDATE`` in the statement
    (never cached): replay may have moved it, and two appliers serialise on it. A view that
    has never been fed starts empty at the beginning of the ledger. Raises
    :class:`~projections.checkpoints.VersionMismatch` if the stored view is of another
    version.
    """
    try:
        cursor = await _execute(conn, live_statement(conn, projector, batch_size))
    except Exception as exc:
        if not is_the_events_fault(conn, exc):
            raise
        return await _apply_isolating(
            conn, projector, _parameters(projector, batch_size), batch_size
        )
    row = await cursor.fetchone()
    assert row is not None  # the statement always returns one row
    events, last_xid, last_position, version, stored_xid, stored_position = row
    if version is None:
        # No checkpoint row yet: create it (this view is fed from the start), and apply.
        async with conn.transaction():
            await lock_checkpoint(conn, projector)
        return await apply_next(conn, projector, batch_size=batch_size)
    if version != projector.version:
        raise VersionMismatch(projector.name, version, projector.version)
    if not events:
        return Batch(Checkpoint(stored_xid, stored_position), 0)
    return Batch(Checkpoint(last_xid, last_position), events)


async def _apply_isolating(
    conn: psycopg.AsyncConnection[Any],
    projector: Projector,
    params: Mapping[str, Any],
    batch_size: int,
) -> Batch:
    """The next batch again, isolating the events that make it fail, in one transaction
    with the checkpoint and the dead letters."""
    async with conn.transaction():
        stored = await lock_checkpoint(conn, projector)
        if stored.version != projector.version:
            raise VersionMismatch(projector.name, stored.version, projector.version)
        places = await settled_after(conn, stored.checkpoint, batch_size)
        if not places:
            return Batch(stored.checkpoint, 0)
        failed = await isolate(
            conn,
            projector.name,
            statements_for(projector).positions,
            params,
            [place.position for place in places],
        )
        await save_checkpoint(conn, projector.name, places[-1])
        await record_dead_letters(conn, projector.name, failed)
    return Batch(places[-1], len(places), tuple(failed))


async def apply_after(
    conn: psycopg.AsyncConnection[Any],
    projector: Projector,
    checkpoint: Checkpoint,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Batch:
    """Fold the next settled events after ``checkpoint`` into the tables on the search path,
    inside the caller's transaction, which also keeps the returned checkpoint: replay's
    catch-up of the view it is building. Failing events are returned as dead letters."""
    params = _parameters(
        projector,
        batch_size,
        after_xid=str(checkpoint.transaction_id),
        after_position=checkpoint.position,
    )
    try:
        cursor = await _execute(conn, statements_for(projector).after, params)
    except Exception as exc:
        if not is_the_events_fault(conn, exc):
            raise
        places = await settled_after(conn, checkpoint, batch_size)
        positions = [place.position for place in places]
        failed = await isolate(
            conn, projector.name, statements_for(projector).positions, params, positions
        )
        return Batch(places[-1], len(places), tuple(failed))
    row = await cursor.fetchone()
    assert row is not None  # the statement always returns one row
    events, last_xid, last_position = row
    return Batch(Checkpoint(last_xid, last_position), events) if events else Batch(checkpoint, 0)


async def catch_up_unclaimed(
    conn: psycopg.AsyncConnection[Any],
    projector: Projector,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_batches: int = 10,
) -> int:
    """Apply up to ``max_batches`` batches if no runner holds this projector; events applied.

    A safety net for when no runner is alive: each batch first tries the runner lock as a
    transaction lock, which fails while any runner holds it as a session lock. ``conn`` must
    be in autocommit mode.
    """
    if not conn.autocommit:
        raise ValueError("the connection must be in autocommit mode: each batch commits itself")
    applied = 0
    for _ in range(max_batches):
        if not await pending(conn, projector):
            break
        async with conn.transaction():
            if not await try_advisory_lock(conn, Lock.RUNNER, projector.name, scope="transaction"):
                break
            batch = await apply_next(conn, projector, batch_size=batch_size)
        applied += batch.events
        if batch.events < batch_size:
            break
    return applied


async def _execute(
    conn: psycopg.AsyncConnection[Any], statement: str, params: Mapping[str, Any] | None = None
) -> psycopg.AsyncCursor[Any]:
    """Run a fold statement: alone in autocommit mode (one round trip), else in a savepoint,
    so that a failing fold leaves the caller's transaction usable for isolating it."""
    if conn.info.transaction_status is pq.TransactionStatus.IDLE:
        if not conn.autocommit:
            # The statement would open a transaction that nobody commits.
            raise ValueError("the connection must be in autocommit mode: each batch commits itself")
        return await conn.execute(statement, params)
    async with conn.transaction():
        return await conn.execute(statement, params)
