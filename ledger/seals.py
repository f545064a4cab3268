"""Sealed history: blocks of settled events hashed into Merkle trees, each root chained to the
previous block's, so that no stored event can change without breaking a seal.

A block covers the events after the previous block's last (transaction id, position), in
fence order, up to and including its own last one; the transaction-id fence guarantees that
no event can later appear inside a sealed range. For each block:

* leaf = ``SHA-256(0x00 ‖ JCS(event document))`` per event (:func:`leaf_document`),
* root = the RFC 6962 Merkle tree hash of the leaves, in fence order,
* header = ``JCS({"v", "block", "event_count", "total_events", "last_transaction_id",
  "last_position"})``,
* chain = ``SHA-256(previous chain ‖ root ‖ header)``, the previous chain of block 1 being
  32 zero bytes.

The head, the latest block's (number, total events, root, chain), is one line to keep
outside the database (:class:`Head`); ``ledger verify --head`` proves the database still
extends it.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any, Final, Self
from uuid import UUID

import msgspec
import psycopg

from ledger import merkle
from ledger.canonical import DOCUMENT_VERSION, jcs, timestamp
from ledger.store import Checkpoint, settled

#: The chain value before block 1.
GENESIS_CHAIN: Final = bytes(merkle.HASH_SIZE)
HEAD_PREFIX: Final = "ledger-seal-head v1"

_decode_object = msgspec.json.Decoder(dict[str, Any]).decode


class StoredEvent(msgspec.Struct, frozen=True):
    """An event row exactly as stored: what a leaf commits to. Payload and meta are kept as
    the JSON they are, unvalidated, so that even a tampered row can be hashed and reported."""

    position: int
    transaction_id: int
    message_uuid: UUID
    event_type: str
    status: str | None
    occurred_at: datetime | None
    recorded_at: datetime
    dedup_key: bytes
    payload: dict[str, Any]
    meta: dict[str, Any]

    @property
    def checkpoint(self) -> Checkpoint:
        """This event's place in fence order."""
        return Checkpoint(self.transaction_id, self.position)


def leaf_document(event: StoredEvent) -> dict[str, Any]:
    """The document a leaf hashes: every stored column of the event."""
    return {
        "v": DOCUMENT_VERSION,
        "position": event.position,
        "transaction_id": event.transaction_id,
        "message_uuid": str(event.message_uuid),
        "event_type": event.event_type,
        "status": event.status,
        "occurred_at": timestamp(event.occurred_at),
        "recorded_at": timestamp(event.recorded_at),
        "dedup_key": base64.b64encode(event.dedup_key).decode(),
        "payload": event.payload,
        "meta": event.meta,
    }


def leaf_of(event: StoredEvent) -> bytes:
    """The event's leaf hash."""
    return merkle.leaf_hash(jcs(leaf_document(event)))


def block_header(block: int, event_count: int, total_events: int, last: Checkpoint) -> bytes:
    """The canonical header a block's chain link commits to."""
    return jcs(
        {
            "v": DOCUMENT_VERSION,
            "block": block,
            "event_count": event_count,
            "total_events": total_events,
            "last_transaction_id": last.transaction_id,
            "last_position": last.position,
        }
    )


def chain_link(previous_chain: bytes, root: bytes, header: bytes) -> bytes:
    """``SHA-256(previous chain ‖ root ‖ header)``."""
    return hashlib.sha256(previous_chain + root + header).digest()


class Block(msgspec.Struct, frozen=True):
    """A sealed block as stored."""

    block: int
    event_count: int
    total_events: int
    last: Checkpoint
    positions: tuple[int, ...]
    leaves: tuple[bytes, ...]
    root: bytes
    chain: bytes
    sealed_at: datetime

    @property
    def header(self) -> bytes:
        """The canonical header of this block."""
        return block_header(self.block, self.event_count, self.total_events, self.last)

    @property
    def head(self) -> Head:
        """This block as a head line's fields."""
        return Head(self.block, self.total_events, self.root, self.chain)


class HeadError(ValueError):
    """A head line that is not one ``ledger seal head`` printed."""


class Head(msgspec.Struct, frozen=True):
    """The latest block, as one line to keep outside the database."""

    block: int
    total_events: int
    root: bytes
    chain: bytes

    def line(self) -> str:
        """``ledger-seal-head v1 block=N events=N root=<hex> chain=<hex>``."""
        return (
            f"{HEAD_PREFIX} block={self.block} events={self.total_events}"
            f" root={self.root.hex()} chain={self.chain.hex()}"
        )

    @classmethod
    def parse(cls, line: str) -> Self:
        """The head a :meth:`line` describes; raises :class:`HeadError` otherwise."""
        match = _HEAD_LINE.fullmatch(line.strip())
        if match is None:
            raise HeadError(
                f"not a seal head: expected '{HEAD_PREFIX} block=N events=N root=<64 hex> "
                "chain=<64 hex>', as 'ledger seal head' prints it"
            )
        return cls(
            int(match["block"]),
            int(match["events"]),
            bytes.fromhex(match["root"]),
            bytes.fromhex(match["chain"]),
        )


_HEAD_LINE = re.compile(
    re.escape(HEAD_PREFIX) + r" block=(?P<block>[1-9][0-9]{0,18}) events=(?P<events>[0-9]{1,19})"
    r" root=(?P<root>[0-9a-f]{64}) chain=(?P<chain>[0-9a-f]{64})"
)


def new_block(previous: Block | None, events: Sequence[StoredEvent]) -> Block:
    """The block sealing ``events`` (in fence order) after ``previous``."""
    if not events:
        raise ValueError("a block seals at least one event")
    number = previous.block + 1 if previous else 1
    total = (previous.total_events if previous else 0) + len(events)
    leaves = tuple(leaf_of(event) for event in events)
    root = merkle.root(leaves)
    last = events[-1].checkpoint
    header = block_header(number, len(events), total, last)
    return Block(
        block=number,
        event_count=len(events),
        total_events=total,
        last=last,
        positions=tuple(event.position for event in events),
        leaves=leaves,
        root=root,
        chain=chain_link(previous.chain if previous else GENESIS_CHAIN, root, header),
        sealed_at=datetime.now().astimezone(),
    )


_EVENT_COLUMNS = (
    "position, transaction_id::text::bigint, message_uuid, event_type, status, occurred_at,"
    " recorded_at, dedup_key, payload::text, meta::text"
)
_BLOCK_COLUMNS = (
    "block, event_count, total_events, last_transaction_id::text::bigint, last_position,"
    " positions, leaves, root, chain, sealed_at"
)


def _stored_event(row: Sequence[Any]) -> StoredEvent:
    return StoredEvent(
        position=row[0],
        transaction_id=row[1],
        message_uuid=row[2],
        event_type=row[3],
        status=row[4],
        occurred_at=row[5],
        recorded_at=row[6],
        dedup_key=bytes(row[7]),
        payload=_decode_object(row[8]),
        meta=_decode_object(row[9]),
    )


def _block(row: Sequence[Any]) -> Block:
    leaves = bytes(row[6])
    return Block(
        block=row[0],
        event_count=row[1],
        total_events=row[2],
        last=Checkpoint(row[3], row[4]),
        positions=tuple(row[5]),
        leaves=tuple(
            leaves[i : i + merkle.HASH_SIZE] for i in range(0, len(leaves), merkle.HASH_SIZE)
        ),
        root=bytes(row[7]),
        chain=bytes(row[8]),
        sealed_at=row[9],
    )


async def read_settled(
    conn: psycopg.AsyncConnection[Any], after: Checkpoint, limit: int
) -> list[StoredEvent]:
    """The next events after ``after`` whose transactions are all settled (the fence: see
    :func:`ledger.store.settled`), exactly as stored."""
    cursor = await conn.execute(
        f"SELECT {_EVENT_COLUMNS} FROM events"
        f" WHERE (transaction_id, position) > (%s::text::xid8, %s) AND {settled()}"
        " ORDER BY events.transaction_id, events.position LIMIT %s",
        (str(after.transaction_id), after.position, limit),
    )
    return [_stored_event(row) for row in await cursor.fetchall()]


#: Beyond every place in fence order.
END_OF_LEDGER: Final = Checkpoint(2**63 - 1, 2**63 - 1)


async def events_in_order(
    conn: psycopg.AsyncConnection[Any],
    after: Checkpoint,
    *,
    through: Checkpoint = END_OF_LEDGER,
    batch: int = 5000,
) -> AsyncIterator[StoredEvent]:
    """Every stored event after ``after`` and up to ``through``, in fence order, streamed
    through a server-side cursor (memory stays flat). ``conn`` must be in a transaction."""
    async with conn.cursor(name="ledger_events_in_order") as cursor:
        cursor.itersize = batch
        await cursor.execute(
            f"SELECT {_EVENT_COLUMNS} FROM events"
            " WHERE (transaction_id, position) > (%s::text::xid8, %s)"
            " AND (transaction_id, position) <= (%s::text::xid8, %s)"
            " ORDER BY events.transaction_id, events.position",
            (
                str(after.transaction_id),
                after.position,
                str(through.transaction_id),
                through.position,
            ),
        )
        async for row in cursor:
            yield _stored_event(row)


async def last_block(conn: psycopg.AsyncConnection[Any]) -> Block | None:
    """The newest block, or None before the first seal."""
    cursor = await conn.execute(f"SELECT {_BLOCK_COLUMNS} FROM seals ORDER BY block DESC LIMIT 1")
    row = await cursor.fetchone()
    return _block(row) if row else None


async def get_block(conn: psycopg.AsyncConnection[Any], number: int) -> Block | None:
    """Block ``number``, or None if there is none."""
    cursor = await conn.execute(f"SELECT {_BLOCK_COLUMNS} FROM seals WHERE block = %s", (number,))
    row = await cursor.fetchone()
    return _block(row) if row else None


async def blocks_from(
    conn: psycopg.AsyncConnection[Any], first: int, last: int | None = None, *, batch: int = 16
) -> AsyncIterator[Block]:
    """Every block from ``first`` (to ``last``) in order, streamed ``batch`` at a time (a
    block of 1,024 events is about 140 kB in memory). ``conn`` must be in a transaction."""
    async with conn.cursor(name="ledger_blocks_from") as cursor:
        cursor.itersize = batch
        await cursor.execute(
            f"SELECT {_BLOCK_COLUMNS} FROM seals WHERE block BETWEEN %s AND %s ORDER BY block",
            (first, last if last is not None else 2**63 - 1),
        )
        async for row in cursor:
            yield _block(row)


async def block_holding(conn: psycopg.AsyncConnection[Any], event: Checkpoint) -> Block | None:
    """The block whose range holds ``event``'s place in fence order (None if unsealed)."""
    cursor = await conn.execute(
        f"SELECT {_BLOCK_COLUMNS} FROM seals"
        " WHERE (last_transaction_id, last_position) >= (%s::text::xid8, %s)"
        " ORDER BY last_transaction_id, last_position LIMIT 1",
        (str(event.transaction_id), event.position),
    )
    row = await cursor.fetchone()
    return _block(row) if row else None


async def save_block(conn: psycopg.AsyncConnection[Any], block: Block) -> None:
    """Store a new block (its number must follow the newest one's)."""
    await conn.execute(
        "INSERT INTO seals (block, event_count, total_events, last_transaction_id,"
        " last_position, positions, leaves, root, chain, sealed_at)"
        " VALUES (%s, %s, %s, %s::text::xid8, %s, %s, %s, %s, %s, %s)",
        (
            block.block,
            block.event_count,
            block.total_events,
            str(block.last.transaction_id),
            block.last.position,
            list(block.positions),
            b"".join(block.leaves),
            block.root,
            block.chain,
            block.sealed_at,
        ),
    )


async def seal_settled(
    conn: psycopg.AsyncConnection[Any], *, block_events: int, previous: Block | None = None
) -> list[Block]:
    """Seal every event settled now into blocks of at most ``block_events``; the new blocks.

    ``previous`` is the newest block if the caller knows it (else it is read). For tests, the
    sealer's last act before it stops, and operators' tools; the sealer itself closes blocks
    by size or age (:mod:`projections.sealer`).
    """
    previous = previous if previous is not None else await last_block(conn)
    sealed = []
    while events := await read_settled(
        conn, previous.last if previous else Checkpoint(), block_events
    ):
        previous = new_block(previous, events)
        await save_block(conn, previous)
        sealed.append(previous)
    return sealed


class InclusionProof(msgspec.Struct, frozen=True, kw_only=True):
    """What proves one event is in the sealed history, checkable against any head that
    extends its block (README, "Proof format"). Hashes are hex; ``header`` is the block's
    canonical header as text."""

    block: int
    leaf_index: int
    tree_size: int
    leaf_hash: str
    audit_path: list[str]
    root: str
    header: str
    previous_chain: str
    chain: str


async def inclusion_proof(
    conn: psycopg.AsyncConnection[Any], event: Checkpoint, *, block: Block | None = None
) -> InclusionProof | None:
    """The proof that the event at ``event`` is sealed; None if no block holds it (not
    sealed yet, or it was slipped into a sealed range afterwards). ``block`` may be given when
    the caller already holds the block covering the event."""
    block = block or await block_holding(conn, event)
    if block is None or event.position not in block.positions:
        return None
    index = block.positions.index(event.position)
    previous = await get_block(conn, block.block - 1) if block.block > 1 else None
    return InclusionProof(
        block=block.block,
        leaf_index=index,
        tree_size=block.event_count,
        leaf_hash=block.leaves[index].hex(),
        audit_path=[node.hex() for node in merkle.audit_path(index, block.leaves)],
        root=block.root.hex(),
        header=block.header.decode(),
        previous_chain=(previous.chain if previous else GENESIS_CHAIN).hex(),
        chain=block.chain.hex(),
    )


async def inclusion_proofs(
    conn: psycopg.AsyncConnection[Any], events: Sequence[Checkpoint]
) -> list[InclusionProof | None]:
    """:func:`inclusion_proof` for each of ``events``, reading each block once."""
    blocks: list[Block] = []
    proofs: list[InclusionProof | None] = []
    for event in events:
        block = next((b for b in blocks if _covers(b, event)), None)
        if block is None and (block := await block_holding(conn, event)) is not None:
            blocks.append(block)
        proofs.append(await inclusion_proof(conn, event, block=block) if block else None)
    return proofs


def _covers(block: Block, event: Checkpoint) -> bool:
    return event <= block.last and event.position in block.positions


async def blocks_after(conn: psycopg.AsyncConnection[Any], after: int, limit: int) -> list[Block]:
    """Up to ``limit`` blocks after block ``after``, in order."""
    cursor = await conn.execute(
        f"SELECT {_BLOCK_COLUMNS} FROM seals WHERE block > %s ORDER BY block LIMIT %s",
        (after, limit),
    )
    return [_block(row) for row in await cursor.fetchall()]


class SealProgress(msgspec.Struct, frozen=True):
    """How far the sealer has got: the newest block, the last sealed position, and how long
    the oldest event not yet sealed has been waiting (0 when every event is sealed)."""

    block: int
    sealed_events: int
    sealed_position: int
    seconds_behind: float


async def seal_progress(conn: psycopg.AsyncConnection[Any]) -> SealProgress:
    """The sealer's progress, from two index lookups (nothing is counted)."""
    cursor = await conn.execute(
        "SELECT coalesce(s.block, 0), coalesce(s.total_events, 0), coalesce(s.last_position, 0),"
        " coalesce(extract(epoch FROM now() - (SELECT e.recorded_at FROM events AS e"
        "   WHERE (e.transaction_id, e.position)"
        "       > (coalesce(s.last_transaction_id, '0'::xid8), coalesce(s.last_position, 0))"
        "   ORDER BY e.transaction_id, e.position LIMIT 1)), 0)::float8"
        " FROM (SELECT) AS one"
        " LEFT JOIN LATERAL (SELECT * FROM seals ORDER BY block DESC LIMIT 1) AS s ON true"
    )
    row = await cursor.fetchone()
    assert row is not None  # the query always returns one row
    return SealProgress(*row)
