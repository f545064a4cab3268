"""Events a projector could not apply: isolated, recorded, skipped, and retried by replay.

The checkpoint moves past a dead letter, so the ledger is never blocked by one event; the
view simply does not include it until a replay (with fixed code) does.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import msgspec
import psycopg

log = logging.getLogger(__name__)

_NOT_THE_EVENTS_FAULT: Final = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    psycopg.ProgrammingError,
    psycopg.InternalError,
)


class DeadLetter(msgspec.Struct, frozen=True):
    """An event a projector could not apply, and why."""

    position: int
    error: str


async def record_dead_letters(
    conn: psycopg.AsyncConnection[Any], projector: str, dead_letters: Sequence[DeadLetter]
) -> None:
    """Record (or re-open) dead letters in the current transaction."""
    if not dead_letters:
        return
    await conn.execute(
        "INSERT INTO dead_letters (projector, position, error)"
        " SELECT %s, position, error FROM unnest(%s::bigint[], %s::text[]) AS d(position, error)"
        " ON CONFLICT (projector, position) DO UPDATE"
        " SET error = EXCLUDED.error, failed_at = now(), resolved_at = NULL",
        (projector, [d.position for d in dead_letters], [d.error for d in dead_letters]),
    )


async def settle_dead_letters(
    conn: psycopg.AsyncConnection[Any], projector: str, failures: Iterable[DeadLetter]
) -> int:
    """After a rebuild: resolve the dead letters it includes and record those it could not
    apply; how many were resolved.

    Every earlier dead letter lies at or before the rebuilt view's checkpoint (the live
    checkpoint never passes the rebuild's), so each was either applied or failed again.
    """
    failed = list(failures)
    cursor = await conn.execute(
        "UPDATE dead_letters SET resolved_at = now() WHERE projector = %s"
        " AND resolved_at IS NULL AND NOT (position = ANY(%s::bigint[]))",
        (projector, [d.position for d in failed]),
    )
    await record_dead_letters(conn, projector, failed)
    return cursor.rowcount


async def isolate(
    conn: psycopg.AsyncConnection[Any],
    projector: str,
    statement: str,
    parameters: Mapping[str, Any],
    positions: Sequence[int],
) -> list[DeadLetter]:
    """Apply ``statement`` to the events at ``positions``, leaving out those that fail; the
    dead letters, in the order given.

    Runs inside the caller's transaction, each attempt in a savepoint: bisecting finds k
    failing events among n in O(k log n) attempts. ``statement`` is a positions statement of
    :mod:`projections.statements`; errors that are not the events' fault (see
    :func:`is_the_events_fault`) are raised.
    """
    try:
        async with conn.transaction():
            await conn.execute(statement, {**parameters, "positions": list(positions)})
    except Exception as exc:
        if not is_the_events_fault(conn, exc):
            raise
        if len(positions) == 1:
            log.error(
                "projector %s cannot apply the event at position %d: recording a dead letter",
                projector,
                positions[0],
                exc_info=exc,
            )
            return [DeadLetter(positions[0], f"{type(exc).__name__}: {exc}")]
        half = len(positions) // 2
        return [
            *await isolate(conn, projector, statement, parameters, positions[:half]),
            *await isolate(conn, projector, statement, parameters, positions[half:]),
        ]
    return []


def is_the_events_fault(conn: psycopg.AsyncConnection[Any], exc: BaseException) -> bool:
    """Whether ``exc``, raised by a fold, may be the fault of the events it folded.

    Not when the database or connection is unavailable, a lock or serialisation conflict
    occurred, or the SQL or schema is broken: the batch is then retried later as a whole, as
    turning such errors into dead letters would dead-letter the whole ledger.
    """
    return isinstance(exc, Exception) and not (
        conn.broken or isinstance(exc, _NOT_THE_EVENTS_FAULT)
    )
