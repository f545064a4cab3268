"""The event store: append events idempotently, read one stream, tail the ledger safely."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal
from uuid import UUID

import msgspec
import psycopg
from psycopg.rows import class_row

from ledger.database import EVENTS_CHANNEL
from ledger.events import EventMeta, NewEvent, Payload, RecordedEvent

_encode = msgspec.json.encode


class NonceGuard(msgspec.Struct, frozen=True):
    """A V2 nonce and the digest of the body it signed: a nonce may never sign two bodies."""

    nonce: str
    body_digest: bytes


class Append(msgspec.Struct, frozen=True):
    """One event to append, with the V2 nonce it must not reuse (if any)."""

    event: NewEvent
    nonce_guard: NonceGuard | None = None


class AppendResult(msgspec.Struct, frozen=True):
    """What became of one append: a new event, a retry of a stored one, or a replayed nonce."""

    outcome: Literal["appended", "duplicate", "nonce_reused"]
    position: int | None


class Checkpoint(msgspec.Struct, frozen=True, order=True):
    """A reader's place in the ledger, in fence order: (transaction id, position)."""

    transaction_id: int = 0
    position: int = 0


_INSERT = """
-- Binary parameters: the text array format would escape every quote of every payload.
INSERT INTO events (message_uuid, event_type, status, occurred_at, dedup_key, payload, meta)
SELECT m, t, s, o, d, p::jsonb, x::jsonb
FROM unnest(%b::uuid[], %b::text[], %b::text[], %b::timestamptz[], %b::bytea[],
            %b::text[], %b::text[]) AS incoming(m, t, s, o, d, p, x)
ON CONFLICT (dedup_key) DO NOTHING
RETURNING dedup_key, position
"""

_REMEMBER_NONCES = """
WITH incoming(nonce, body_digest) AS (SELECT * FROM unnest(%s::text[], %s::bytea[])),
remembered AS (
    INSERT INTO v2_nonces (nonce, body_digest) SELECT nonce, body_digest FROM incoming
    ON CONFLICT (nonce) DO NOTHING
)
SELECT incoming.nonce FROM incoming JOIN v2_nonces USING (nonce)
WHERE v2_nonces.body_digest <> incoming.body_digest
"""


async def append(conn: psycopg.AsyncConnection[Any], batch: Sequence[Append]) -> list[AppendResult]:
    """Append a batch in one short transaction; results are in the order of ``batch``.

    The transaction holds the inserts and one NOTIFY and nothing else, because every open
    transaction that holds an xid holds back the projectors' fence. Positions of duplicates
    are looked up after the commit.
    """
    reused = set()
    async with conn.transaction():
        # Nonces are locked in a fixed order so that two concurrent batches sharing nonces
        # cannot deadlock. Events keep their batch order: it is their ledger order.
        guarded = sorted(
            (item.nonce_guard for item in batch if item.nonce_guard is not None),
            key=lambda guard: guard.nonce,
        )
        if guarded:
            cursor = await conn.execute(
                _REMEMBER_NONCES,
                ([g.nonce for g in guarded], [g.body_digest for g in guarded]),
            )
            reused = {row[0] for row in await cursor.fetchall()}
        accepted = [
            item.event
            for item in batch
            if item.nonce_guard is None or item.nonce_guard.nonce not in reused
        ]
        inserted: dict[bytes, int] = {}
        if accepted:
            cursor = await conn.execute(
                _INSERT,
                (
                    [e.message_uuid for e in accepted],
                    [e.event_type for e in accepted],
                    [e.status for e in accepted],
                    [e.occurred_at for e in accepted],
                    [e.dedup_key for e in accepted],
                    [_encode(e.payload).decode() for e in accepted],
                    [_encode(e.meta).decode() for e in accepted],
                ),
            )
            inserted = {bytes(key): position for key, position in await cursor.fetchall()}
        if inserted:
            await conn.execute("SELECT pg_notify(%s, '')", (EVENTS_CHANNEL,))

    missing = [e.dedup_key for e in accepted if e.dedup_key not in inserted]
    existing = await positions_of(conn, missing) if missing else {}
    results = []
    claimed: set[bytes] = set()
    for item in batch:
        key = item.event.dedup_key
        if item.nonce_guard is not None and item.nonce_guard.nonce in reused:
            results.append(AppendResult("nonce_reused", None))
        elif key in inserted and key not in claimed:
            claimed.add(key)
            results.append(AppendResult("appended", inserted[key]))
        else:
            results.append(AppendResult("duplicate", inserted.get(key, existing.get(key))))
    return results


async def positions_of(
    conn: psycopg.AsyncConnection[Any], keys: Sequence[bytes]
) -> dict[bytes, int]:
    """The positions of already stored events, by dedup key."""
    cursor = await conn.execute(
        "SELECT dedup_key, position FROM events WHERE dedup_key = ANY(%s::bytea[])", (list(keys),)
    )
    return {bytes(key): position for key, position in await cursor.fetchall()}


_COLUMNS = (
    "position, transaction_id::text::bigint AS transaction_id, message_uuid, event_type, status,"
    " occurred_at, recorded_at, payload, meta"
)


class _Row(msgspec.Struct):
    position: int
    transaction_id: int
    message_uuid: UUID
    event_type: str
    status: str | None
    occurred_at: Any
    recorded_at: Any
    payload: Payload
    meta: Any


def _recorded(row: _Row) -> RecordedEvent:
    return RecordedEvent(
        position=row.position,
        transaction_id=row.transaction_id,
        message_uuid=row.message_uuid,
        event_type=row.event_type,
        status=row.status,
        occurred_at=row.occurred_at,
        recorded_at=row.recorded_at,
        payload=row.payload,
        meta=msgspec.convert(row.meta, EventMeta),
    )


async def read_stream(
    conn: psycopg.AsyncConnection[Any], message_uuid: UUID
) -> list[RecordedEvent]:
    """Every event of one message, in ledger order (empty if the message is unknown)."""
    async with conn.cursor(row_factory=class_row(_Row)) as cursor:
        await cursor.execute(
            f"SELECT {_COLUMNS} FROM events WHERE message_uuid = %s ORDER BY position",
            (message_uuid,),
        )
        return [_recorded(row) for row in await cursor.fetchall()]


async def read_after(
    conn: psycopg.AsyncConnection[Any], checkpoint: Checkpoint, limit: int
) -> list[RecordedEvent]:
    """The next events after ``checkpoint`` whose transactions are all settled.

    This is the transaction-id fence: events are read in (transaction id, position) order and
    only below the oldest transaction still running, so an event whose transaction commits
    late is waited for instead of skipped, as a plain ``position > n`` tail would do.
    """
    async with conn.cursor(row_factory=class_row(_Row)) as cursor:
        await cursor.execute(
            f"SELECT {_COLUMNS} FROM events"
            " WHERE (transaction_id, position) > (%s::text::xid8, %s)"
            " AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())"
            # The table's columns, not the bigint aliases: the (transaction_id, position) index
            # then serves the order instead of a full scan and sort per batch.
            " ORDER BY events.transaction_id, events.position LIMIT %s",
            (str(checkpoint.transaction_id), checkpoint.position, limit),
        )
        return [_recorded(row) for row in await cursor.fetchall()]


async def head(conn: psycopg.AsyncConnection[Any]) -> Checkpoint:
    """The newest event's place in fence order (the zero checkpoint on an empty ledger)."""
    cursor = await conn.execute(
        "SELECT transaction_id::text::bigint, position FROM events"
        " ORDER BY transaction_id DESC, position DESC LIMIT 1"
    )
    row = await cursor.fetchone()
    return Checkpoint(row[0], row[1]) if row else Checkpoint()
