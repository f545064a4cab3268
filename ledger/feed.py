"""The live feed's reads: settled events in fence order, filtered, as light rows.

The feed (``GET /v1/stream``) emits every event that passes the transaction-id fence, so it
reads exactly as the projectors do (:func:`ledger.store.settled`), from a checkpoint, in
(transaction id, position) order. A row carries what a feed client sees, not the payload:
the recipient is the one payload field it needs, and the filters apply in SQL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final
from uuid import UUID

import msgspec
import psycopg
from psycopg import sql
from psycopg.rows import class_row

from ledger.store import Checkpoint, settled


class FeedFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Which events a feed client wants; every field given must match. ``status`` is lower
    case (as stored); ``to_number`` is in Plivo's form (E.164 digits, no ``+``)."""

    message_uuid: UUID | None = None
    status: str | None = None
    to_number: str | None = None

    @property
    def everything(self) -> bool:
        """Whether no filter is set (every event passes)."""
        return self.message_uuid is None and self.status is None and self.to_number is None

    def matches(self, event: FeedEvent) -> bool:
        """Whether ``event`` passes, exactly as :func:`read_feed`'s SQL decides."""
        return (
            (self.message_uuid is None or event.message_uuid == self.message_uuid)
            and (self.status is None or event.status == self.status)
            and (self.to_number is None or event.to_number == self.to_number)
        )


class FeedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One event as the feed sees it, with its place in fence order."""

    transaction_id: int
    position: int
    message_uuid: UUID
    event_type: str
    status: str | None
    occurred_at: datetime | None
    recorded_at: datetime
    to_number: str | None

    @property
    def checkpoint(self) -> Checkpoint:
        """The event's place in fence order: resuming after it reads what follows it."""
        return Checkpoint(self.transaction_id, self.position)


_SELECT: Final = sql.SQL(
    "SELECT transaction_id::text::bigint AS transaction_id, position, message_uuid, event_type,"
    " status, occurred_at, recorded_at, payload->>'To' AS to_number FROM events"
    " WHERE (transaction_id, position) > (%(xid)s::text::xid8, %(position)s)"
    f" AND {settled()}"
)
# The table's columns, not the bigint alias: the (transaction_id, position) index serves it.
_ORDER: Final = sql.SQL(" ORDER BY events.transaction_id, events.position LIMIT %(limit)s")
_CONDITIONS: Final = {
    "message_uuid": sql.SQL(" AND message_uuid = %(message_uuid)s"),
    "status": sql.SQL(" AND status = %(status)s"),
    "to_number": sql.SQL(" AND payload->>'To' = %(to_number)s"),
}


async def read_feed(
    conn: psycopg.AsyncConnection[Any],
    after: Checkpoint,
    limit: int,
    only: FeedFilter | None = None,
) -> list[FeedEvent]:
    """The next ``limit`` settled events after ``after`` that pass ``only``, in fence order.

    Fewer than ``limit`` means every settled event up to the fence, as of this read, has
    been looked at: what follows commits (or settles) later.
    """
    params: dict[str, Any] = {
        "xid": str(after.transaction_id),
        "position": after.position,
        "limit": limit,
    }
    conditions = []
    for name, value in msgspec.structs.asdict(only or FeedFilter()).items():
        if value is not None:
            conditions.append(_CONDITIONS[name])
            params[name] = value
    query = sql.Composed([_SELECT, *conditions, _ORDER])
    async with conn.cursor(row_factory=class_row(FeedEvent)) as cursor:
        await cursor.execute(query, params)
        return await cursor.fetchall()


async def feed_head(conn: psycopg.AsyncConnection[Any]) -> Checkpoint:
    """The last settled event's place in fence order (the zero checkpoint on an empty
    ledger): a reader starting here sees only what settles from now on."""
    cursor = await conn.execute(
        "SELECT transaction_id::text::bigint, position FROM events"
        f" WHERE {settled()} ORDER BY events.transaction_id DESC, events.position DESC LIMIT 1"
    )
    row = await cursor.fetchone()
    return Checkpoint(row[0], row[1]) if row else Checkpoint()
