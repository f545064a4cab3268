"""Where each projector has got to in the ledger, and which version of it built the view.

A checkpoint is a place in fence order, (transaction id, position), kept in
``projection_checkpoints`` and moved in the same statement or transaction as the view, so a
view and its checkpoint can never disagree.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
import psycopg

from ledger.store import Checkpoint, settled
from projections.base import Projector


class StoredCheckpoint(msgspec.Struct, frozen=True):
    """A projector's row in ``projection_checkpoints``."""

    checkpoint: Checkpoint
    version: int


class VersionMismatch(Exception):
    """The stored view was built by another version of its projector."""

    def __init__(self, name: str, stored: int | None, expected: int) -> None:
        super().__init__(
            f"the {name} view was built by version {stored}, this code projects version {expected}"
            if stored is not None
            else f"the {name} view has never been built (this code projects version {expected})"
        )
        self.name = name
        self.stored = stored
        self.expected = expected


async def stored_checkpoint(
    conn: psycopg.AsyncConnection[Any], name: str, *, for_update: bool = False
) -> StoredCheckpoint | None:
    """A projector's stored checkpoint and view version; None if it has never run.

    ``for_update`` locks the row until the transaction ends: that is how replay's swap, a
    batch that must isolate a failing event, and the scheduler's tick take turns on a view.
    """
    query = (
        "SELECT transaction_id::text::bigint, position, version FROM projection_checkpoints"
        " WHERE name = %s"
    )
    cursor = await conn.execute(query + (" FOR UPDATE" if for_update else ""), (name,))
    row = await cursor.fetchone()
    return None if row is None else StoredCheckpoint(Checkpoint(row[0], row[1]), row[2])


async def lock_checkpoint(
    conn: psycopg.AsyncConnection[Any], projector: Projector
) -> StoredCheckpoint:
    """Lock the projector's checkpoint row for this transaction, creating it if missing.

    A missing row means a view that has never been fed: empty, at the start of the ledger.
    """
    stored = await stored_checkpoint(conn, projector.name, for_update=True)
    if stored is None:
        await conn.execute(
            "INSERT INTO projection_checkpoints (name, version) VALUES (%s, %s)"
            " ON CONFLICT (name) DO NOTHING",
            (projector.name, projector.version),
        )
        stored = await stored_checkpoint(conn, projector.name, for_update=True)
        assert stored is not None  # inserted (or raced in) above; never deleted
    return stored


async def save_checkpoint(
    conn: psycopg.AsyncConnection[Any],
    name: str,
    checkpoint: Checkpoint,
    *,
    version: int | None = None,
) -> None:
    """Move a projector's checkpoint (and optionally its version) in the current transaction."""
    await conn.execute(
        "UPDATE projection_checkpoints SET transaction_id = %s::text::xid8, position = %s,"
        " version = coalesce(%s, version), updated_at = now() WHERE name = %s",
        (str(checkpoint.transaction_id), checkpoint.position, version, name),
    )


#: The idle poll's question, for a view's name. The next settled event after the checkpoint,
#: in fence order, is one probe of the (transaction_id, position) index. Asked as EXISTS, the
#: planner expects one of the many later events to turn up at once and scans the ledger in
#: heap order instead, to the end when there is none: 0.3 s per poll at 1M events, each view
#: polling every second while idle (EXISTS drops an ORDER BY that would steer it).
PENDING: Final = (
    "SELECT c.version, ahead.position IS NOT NULL"
    " FROM (SELECT) AS one LEFT JOIN projection_checkpoints AS c ON c.name = %s"
    " LEFT JOIN LATERAL (SELECT e.position FROM events AS e"
    "  WHERE (e.transaction_id, e.position)"
    "   > (coalesce(c.transaction_id, '0'::xid8), coalesce(c.position, 0))"
    f"  AND {settled('e')}"
    "  ORDER BY e.transaction_id, e.position LIMIT 1) AS ahead ON true"
)


async def pending(conn: psycopg.AsyncConnection[Any], projector: Projector) -> bool:
    """Whether settled events wait after the projector's checkpoint (after the start of the
    ledger for a view never fed, which :func:`~projections.catch_up.apply_next` feeds from
    the start).

    Read-only and without a row lock, so an idle poll takes no transaction id. Raises
    :class:`VersionMismatch` when the stored view is of another version.
    """
    cursor = await conn.execute(PENDING, (projector.name,))
    row = await cursor.fetchone()
    assert row is not None  # one row, with or without a checkpoint
    version, waiting = row
    if version is not None and version != projector.version:
        raise VersionMismatch(projector.name, version, projector.version)
    return bool(waiting)
