"""The event store: append events idempotently, read one stream, tail the ledger safely."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import msgspec
import psycopg
from psycopg.rows import class_row

from ledger.database import EVENTS_CHANNEL
from ledger.events import EventMeta, NewEvent, Payload, RecordedEvent


class NonceGuard(msgspec.Struct, frozen=True):
    """A signature nonce and the digest of the body it signed: a nonce may never sign two
    bodies. ``scheme`` is the family (``v3`` or ``v2``): each family's nonces are separate."""

    scheme: Literal["v3", "v2"]
    nonce: str
    body_digest: bytes


class Append(msgspec.Struct, frozen=True):
    """One event to append, with the nonce it must not reuse for another body (if signed)."""

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


class _Incoming(msgspec.Struct, frozen=True):
    """One row of the append's JSON parameter (bytes travel as base64)."""

    i: int
    message_uuid: UUID
    event_type: str
    status: str | None
    occurred_at: datetime | None
    dedup_key: bytes
    payload: Payload
    meta: EventMeta
    scheme: str | None
    nonce: str | None
    body_digest: bytes | None


_encode_batch = msgspec.json.Encoder().encode

# One statement, one round trip: the batch travels as a single JSON parameter. Every nonce
# is pinned before any event is inserted (ARRAY(SELECT … FROM pinned) is an InitPlan: it
# reads the whole CTE, so all nonce inserts run first), in key order, so that concurrent
# batches never wait on each other's nonces in a cycle. Events keep the batch's order (it is
# their ledger order); two batches holding the same two new events in opposite orders can
# still deadlock, which PostgreSQL resolves by failing one, and the committer retries it.
# An event goes in only if it has no nonce or its nonce was pinned, now, to its own body.
# The final SELECT answers duplicates committed before this statement began from the same
# snapshot; what it cannot answer (a concurrent transaction committed meanwhile) is looked up
# after it, by _SETTLE, whose own snapshot sees those. Its lookups are correlated subqueries
# behind a CASE: they run only for rows that were not inserted (rare), and always by their
# unique index, whatever plan was cached while the tables were small; as joins, a generic
# plan made on a near-empty ledger kept scanning the whole table on every batch.
_APPEND = """
WITH incoming AS (
    SELECT * FROM jsonb_to_recordset(%s::jsonb) AS i(
        i integer, message_uuid uuid, event_type text, status text, occurred_at timestamptz,
        dedup_key text, payload jsonb, meta jsonb, scheme text, nonce text, body_digest text)
),
pinned AS (
    INSERT INTO callback_nonces (scheme, nonce, body_digest)
    SELECT scheme, nonce, decode(body_digest, 'base64') FROM incoming
    WHERE nonce IS NOT NULL
    ORDER BY scheme, nonce, i
    ON CONFLICT DO NOTHING
    RETURNING scheme || E'\\n' || nonce || E'\\n' || encode(body_digest, 'base64') AS key
),
inserted AS (
    INSERT INTO events (message_uuid, event_type, status, occurred_at, dedup_key, payload, meta)
    SELECT message_uuid, event_type, status, occurred_at, decode(dedup_key, 'base64'),
           payload, meta
    FROM incoming
    WHERE nonce IS NULL
       OR scheme || E'\\n' || nonce || E'\\n' || body_digest
          = ANY (ARRAY(SELECT key FROM pinned))
    ORDER BY i
    ON CONFLICT DO NOTHING
    RETURNING dedup_key, position
)
SELECT i.i, inserted.position,
       CASE WHEN inserted.position IS NULL THEN
           (SELECT position FROM events WHERE dedup_key = decode(i.dedup_key, 'base64')) END,
       CASE WHEN inserted.position IS NULL AND i.nonce IS NOT NULL THEN
           (SELECT body_digest = decode(i.body_digest, 'base64') FROM callback_nonces
            WHERE (scheme, nonce) = (i.scheme, i.nonce)) END
FROM incoming AS i
LEFT JOIN inserted ON inserted.dedup_key = decode(i.dedup_key, 'base64')
ORDER BY i.i
"""

_SETTLE = """
SELECT i.i,
       (SELECT position FROM events WHERE dedup_key = i.dedup_key),
       (SELECT body_digest = i.body_digest FROM callback_nonces
        WHERE (scheme, nonce) = (i.scheme, i.nonce))
FROM unnest(%s::integer[], %s::bytea[], %s::text[], %s::text[], %s::bytea[])
     AS i(i, dedup_key, scheme, nonce, body_digest)
"""


class _Answer(msgspec.Struct, frozen=True):
    """What the database said about one append: its new position, a stored event with the
    same dedup key, and whether the nonce's pinned body is this body (None: unknown)."""

    position: int | None
    stored: int | None
    same_body: bool | None


async def append(conn: psycopg.AsyncConnection[Any], batch: Sequence[Append]) -> list[AppendResult]:
    """Append a batch in one statement (one round trip); results are in the order of ``batch``.

    ``conn`` must be in autocommit mode: the statement is its own transaction, holding the
    inserts and nothing else, because every open transaction that holds an xid holds back the
    projectors' fence. A nonce already pinned to another body refuses its event
    (``nonce_reused``); the same nonce with the same body is a retry (``duplicate``).
    """
    if not batch:
        return []
    rows = [
        _Incoming(
            i=index,
            message_uuid=item.event.message_uuid,
            event_type=item.event.event_type,
            status=item.event.status,
            occurred_at=item.event.occurred_at,
            dedup_key=item.event.dedup_key,
            payload=item.event.payload,
            meta=item.event.meta,
            scheme=item.nonce_guard.scheme if item.nonce_guard else None,
            nonce=item.nonce_guard.nonce if item.nonce_guard else None,
            body_digest=item.nonce_guard.body_digest if item.nonce_guard else None,
        )
        for index, item in enumerate(batch)
    ]
    cursor = await conn.execute(_APPEND, (_encode_batch(rows).decode(),))
    answers = [_Answer(*row[1:]) for row in await cursor.fetchall()]
    unsettled = [
        index
        for index, (item, answer) in enumerate(zip(batch, answers, strict=True))
        if answer.position is None
        and (answer.stored is None or (item.nonce_guard is not None and answer.same_body is None))
    ]
    if unsettled:
        answers = await _settle(conn, batch, answers, unsettled)
    return _results(batch, answers)


async def _settle(
    conn: psycopg.AsyncConnection[Any],
    batch: Sequence[Append],
    answers: Sequence[_Answer],
    unsettled: Sequence[int],
) -> list[_Answer]:
    """Answer what the append's own snapshot could not: rows a concurrent transaction
    committed while the append waited for it."""
    guards = [batch[index].nonce_guard for index in unsettled]
    cursor = await conn.execute(
        _SETTLE,
        (
            list(unsettled),
            [batch[index].event.dedup_key for index in unsettled],
            [guard.scheme if guard else None for guard in guards],
            [guard.nonce if guard else None for guard in guards],
            [guard.body_digest if guard else None for guard in guards],
        ),
    )
    settled = list(answers)
    for index, stored, same_body in await cursor.fetchall():
        settled[index] = _Answer(None, stored, same_body)
    return settled


def _results(batch: Sequence[Append], answers: Sequence[_Answer]) -> list[AppendResult]:
    results = []
    claimed: set[int] = set()
    for item, answer in zip(batch, answers, strict=True):
        if answer.position is not None:
            # The same event twice in one batch: the first is appended, the second a retry.
            outcome: Literal["appended", "duplicate"] = (
                "duplicate" if answer.position in claimed else "appended"
            )
            claimed.add(answer.position)
            results.append(AppendResult(outcome, answer.position))
        elif item.nonce_guard is not None and answer.same_body is False:
            results.append(AppendResult("nonce_reused", None))
        elif answer.stored is not None:
            results.append(AppendResult("duplicate", answer.stored))
        else:
            # A nonce pinned to this very body commits with its event (or with the stored
            # event that event duplicated), and a dedup conflict is with a committed event.
            raise RuntimeError(
                f"append: no stored event for dedup key {item.event.dedup_key.hex()}"
            )
    return results


async def notify_readers(conn: psycopg.AsyncConnection[Any]) -> None:
    """Wake the ledger's tailing readers. Never inside an append: a transaction that has
    notified takes a database-wide lock at commit, which would serialise every append."""
    await conn.execute("SELECT pg_notify(%s, '')", (EVENTS_CHANNEL,))


_COLUMNS = (
    "position, transaction_id::text::bigint AS transaction_id, message_uuid, event_type, status,"
    " occurred_at, recorded_at, dedup_key, payload, meta"
)


class _Row(msgspec.Struct):
    position: int
    transaction_id: int
    message_uuid: UUID
    event_type: str
    status: str | None
    occurred_at: Any
    recorded_at: Any
    dedup_key: bytes
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
        dedup_key=bytes(row.dedup_key),
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


def settled(alias: str = "events") -> str:
    """The transaction-id fence, as a SQL condition on ``events`` (or its ``alias``).

    Tailing readers read in (transaction id, position) order and only below the oldest
    transaction still running, so an event whose transaction commits late is waited for
    instead of skipped, as a plain ``position > n`` tail would do. Every reader of the ledger
    in fence order uses this one condition.
    """
    return f"{alias}.transaction_id < pg_snapshot_xmin(pg_current_snapshot())"


async def settled_after(
    conn: psycopg.AsyncConnection[Any], checkpoint: Checkpoint, limit: int
) -> list[Checkpoint]:
    """The places of the next ``limit`` settled events after ``checkpoint``, in fence order
    (see :func:`settled`)."""
    cursor = await conn.execute(
        "SELECT transaction_id::text::bigint, position FROM events"
        f" WHERE (transaction_id, position) > (%s::text::xid8, %s) AND {settled()}"
        " ORDER BY events.transaction_id, events.position LIMIT %s",
        (str(checkpoint.transaction_id), checkpoint.position, limit),
    )
    return [Checkpoint(xid, position) for xid, position in await cursor.fetchall()]
