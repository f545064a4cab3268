"""How far behind each view is, and what it could not apply: for /ready, /metrics and the CLI."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
import psycopg
from psycopg.rows import class_row


class ProjectorLag(msgspec.Struct, frozen=True):
    """One view's distance from the ledger's head."""

    projector: str
    #: The stored view's version; None if the projector has never run.
    version: int | None
    #: The checkpoint's position (0 if never run).
    position: int
    #: Committed events not yet applied: the newest position minus the checkpoint's (an
    #: estimate, as positions have gaps and fence order is not position order), 0 when
    #: nothing waits after the checkpoint.
    events_behind: int
    #: How long the oldest unapplied event has been in the ledger; 0 when caught up.
    seconds_behind: float
    #: Unresolved dead letters, counted up to :data:`DEAD_LETTERS_COUNTED` (a probe never
    #: counts more rows than that, however many there are).
    dead_letters: int
    updated_at: datetime | None


class DeadLetterRecord(msgspec.Struct, frozen=True):
    """An event a projector could not apply."""

    projector: str
    position: int
    error: str
    failed_at: datetime
    resolved_at: datetime | None


#: The most unresolved dead letters one lag report counts: any is a reason to look, and a
#: poison flood must not make every probe count them all.
DEAD_LETTERS_COUNTED = 1000

# Index lookups only, however far behind: the newest position, and the first event after
# the checkpoint in fence order; dead letters counted up to DEAD_LETTERS_COUNTED.
_LAG = """
SELECT n.name AS projector, c.version, coalesce(c.position, 0) AS position,
       CASE WHEN waiting.recorded_at IS NULL THEN 0
            ELSE greatest(head.position - coalesce(c.position, 0), 1) END AS events_behind,
       coalesce(extract(epoch FROM now() - waiting.recorded_at), 0)::float8 AS seconds_behind,
       (SELECT count(*) FROM (SELECT FROM dead_letters d
        WHERE d.projector = n.name AND d.resolved_at IS NULL
        LIMIT %(dead_letters_counted)s) AS counted) AS dead_letters,
       c.updated_at
FROM unnest(%(names)s::text[]) WITH ORDINALITY AS n(name, ord)
LEFT JOIN projection_checkpoints c ON c.name = n.name
CROSS JOIN (SELECT max(position) AS position FROM events) AS head
LEFT JOIN LATERAL (
    SELECT e.recorded_at FROM events e
    WHERE (e.transaction_id, e.position)
          > (coalesce(c.transaction_id, '0'::xid8), coalesce(c.position, 0))
    ORDER BY e.transaction_id, e.position LIMIT 1) AS waiting ON true
ORDER BY n.ord
"""


async def projector_lag(
    conn: psycopg.AsyncConnection[Any], names: Sequence[str] | None = None
) -> list[ProjectorLag]:
    """The lag of the named projectors (in that order), or of every one that has run.

    A named projector that has never run is reported from the start of the ledger.
    """
    if names is None:
        cursor = await conn.execute("SELECT name FROM projection_checkpoints ORDER BY name")
        names = [row[0] for row in await cursor.fetchall()]
    async with conn.cursor(row_factory=class_row(ProjectorLag)) as cursor:
        await cursor.execute(
            _LAG, {"names": list(names), "dead_letters_counted": DEAD_LETTERS_COUNTED}
        )
        return await cursor.fetchall()


async def has_applied(conn: psycopg.AsyncConnection[Any], projector: str, position: int) -> bool:
    """Whether ``projector``'s view includes the event at ``position`` (read-your-writes).

    Checkpoints advance in fence order, not position order, so this compares the event's
    (transaction id, position) with the checkpoint; an event not yet committed is not applied.
    """
    cursor = await conn.execute(
        "SELECT EXISTS (SELECT 1 FROM events e JOIN projection_checkpoints c ON c.name = %s"
        " WHERE e.position = %s"
        " AND (e.transaction_id, e.position) <= (c.transaction_id, c.position))",
        (projector, position),
    )
    row = await cursor.fetchone()
    return bool(row and row[0])


async def dead_letters(
    conn: psycopg.AsyncConnection[Any],
    projector: str | None = None,
    *,
    include_resolved: bool = False,
    limit: int = 100,
) -> list[DeadLetterRecord]:
    """Dead letters, oldest event first: of one projector or all, unresolved unless asked."""
    async with conn.cursor(row_factory=class_row(DeadLetterRecord)) as cursor:
        await cursor.execute(
            "SELECT projector, position, error, failed_at, resolved_at FROM dead_letters"
            " WHERE (%(projector)s::text IS NULL OR projector = %(projector)s)"
            " AND (%(all)s OR resolved_at IS NULL)"
            " ORDER BY position, projector LIMIT %(limit)s",
            {"projector": projector, "all": include_resolved, "limit": limit},
        )
        return await cursor.fetchall()
