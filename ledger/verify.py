"""Verify the ledger: every leaf, root and chain link recomputed from the events, and every
stored signature re-checked, with the first bad position named and classified.

Kinds of finding:

* ``altered``: a stored event no longer hashes to its sealed leaf, a seal does not match its
  own leaves or chain, or history differs from an external head;
* ``deleted``: a sealed event is gone;
* ``inserted``: an event inside a sealed range that was never sealed, or one whose proof of
  origin fails (a Plivo signature that does not verify with any configured token, a system
  event without a valid MAC, an event stored unsigned);
* ``reordered``: sealed events present but in another order, or their contents swapped;
* ``unsealed``: a settled event older than the grace period that no block covers yet.

The walk streams events and blocks in fence order from one snapshot, so memory stays flat.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import msgspec
import psycopg

from ledger import merkle
from ledger.seals import (
    END_OF_LEDGER,
    GENESIS_CHAIN,
    Block,
    Head,
    StoredEvent,
    block_header,
    blocks_from,
    chain_link,
    events_in_order,
    get_block,
    leaf_of,
)
from ledger.signatures import SignatureError, verify_signature
from ledger.store import Checkpoint
from ledger.system_events import mac_matches

FindingKind = Literal["altered", "deleted", "inserted", "reordered", "unsealed"]
#: How each event's origin was proven (the report counts events per proof).
Proof = Literal[
    "plivo-v3",
    "plivo-v2",
    "system",
    "legacy",
]
PROOF_DESCRIPTIONS: Final = {
    "plivo-v3": "Plivo V3 signature re-checked: URL and body signed",
    "plivo-v2": "Plivo V2 signature re-checked: URL and nonce signed, body pinned by nonce",
    "system": "system event: MAC re-checked",
    "legacy": "stored before signature material was kept: origin not re-checkable",
}
#: Findings kept in a report; the rest are only counted.
MAX_FINDINGS: Final = 100
#: Leaves compared pairwise when looking for swapped contents in one block.
_SWAP_SEARCH_LIMIT: Final = 64

ProgressCallback = Callable[[int, int], None]


class Finding(msgspec.Struct, frozen=True):
    """One thing wrong with the ledger: what, where, and in words."""

    kind: FindingKind
    position: int | None
    block: int | None
    detail: str


class Credentials(msgspec.Struct, frozen=True):
    """What signatures are re-checked with: every current and retired Plivo auth token, the
    main account's, and the system keys."""

    auth_tokens: tuple[str, ...]
    main_auth_tokens: tuple[str, ...]
    system_keys: tuple[bytes, ...]


class VerifyReport(msgspec.Struct, frozen=True, kw_only=True):
    """What ``ledger verify`` checked and found."""

    events: int
    blocks: int
    first_block: int
    sealed_events: int
    unsealed_events: int
    proofs: dict[str, int]
    findings: list[Finding]
    finding_count: int
    head: Head | None
    witness: Head | None
    #: Whether the ledger still extends ``witness`` (None without one).
    extends_witness: bool | None
    seconds: float

    @property
    def intact(self) -> bool:
        """No finding at all."""
        return self.finding_count == 0


class _Findings:
    def __init__(self) -> None:
        self.kept: list[Finding] = []
        self.count = 0

    def add(self, kind: FindingKind, position: int | None, block: int | None, detail: str) -> None:
        self.count += 1
        if len(self.kept) < MAX_FINDINGS:
            self.kept.append(Finding(kind, position, block, detail))


class _Peekable:
    """The event stream with one event of look-ahead, to cut it at block boundaries."""

    def __init__(self, stream: AsyncIterator[StoredEvent]) -> None:
        self._stream = stream
        self._next: StoredEvent | None = None
        self._done = False

    async def peek(self) -> StoredEvent | None:
        if self._next is None and not self._done:
            try:
                self._next = await anext(self._stream)
            except StopAsyncIteration:
                self._done = True
        return self._next

    async def take_through(self, last: Checkpoint) -> list[StoredEvent]:
        taken = []
        while (event := await self.peek()) is not None and event.checkpoint <= last:
            taken.append(event)
            self._next = None
        return taken


async def verify_ledger(
    conn: psycopg.AsyncConnection[Any],
    credentials: Credentials,
    *,
    since_block: int = 1,
    until_block: int | None = None,
    witness: Head | None = None,
    unsealed_grace: timedelta = timedelta(minutes=5),
    on_progress: ProgressCallback | None = None,
) -> VerifyReport:
    """Verify blocks from ``since_block`` on, every event from there to the head, and, with
    ``witness``, that the ledger still extends that earlier head. With ``until_block``, only
    the blocks up to it and their events (one part of a parallel verify,
    :mod:`ledger.verify_parallel`).

    ``conn`` must be an autocommit connection; the walk runs in one read-only repeatable-read
    transaction, so it sees one consistent snapshot and holds back no projector.
    """
    started = time.perf_counter()
    findings = _Findings()
    proofs: dict[str, int] = dict.fromkeys(PROOF_DESCRIPTIONS, 0)
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        await conn.execute("SET LOCAL statement_timeout = 0")
        previous = await get_block(conn, since_block - 1) if since_block > 1 else None
        if since_block > 1 and previous is None:
            raise ValueError(f"there is no block {since_block - 1} to start after")
        legacy_end = await _legacy_end(conn)
        start = previous.last if previous else Checkpoint()
        last = await get_block(conn, until_block) if until_block is not None else None
        through = last.last if last is not None else END_OF_LEDGER
        total = await _events_between(conn, start, through)
        pins = _NoncePins(conn, findings)
        checker = _OriginChecker(credentials, legacy_end, pins, findings, proofs)
        done = 0
        if on_progress:
            on_progress(0, total)
        expected_chain = previous.chain if previous else GENESIS_CHAIN
        witness_chain: bytes | None = None
        witness_total: int | None = None
        head: Head | None = previous.head if previous else None
        blocks = 0
        sealed = 0
        events = _Peekable(events_in_order(conn, start, through=through))
        async for block in blocks_from(conn, since_block, until_block):
            covered = await events.take_through(block.last)
            expected_chain = _check_seal(block, expected_chain, findings)
            _compare(block, covered, findings)
            for event in covered:
                await checker.check(event, block.block)
            blocks += 1
            sealed += len(covered)
            done += len(covered)
            head = block.head
            if witness is not None and block.block == witness.block:
                witness_chain, witness_total = expected_chain, block.total_events
            if on_progress:
                on_progress(done, total)
        unsealed = await events.take_through(END_OF_LEDGER)
        await _check_unsealed(conn, unsealed, unsealed_grace, findings)
        for event in unsealed:
            await checker.check(event, None)
        done += len(unsealed)
        if on_progress:
            on_progress(done, max(done, total))
        await pins.flush()
    extends = (
        _check_witness(witness, witness_chain, witness_total, findings)
        if witness is not None
        else None
    )
    return VerifyReport(
        events=done,
        blocks=blocks,
        first_block=since_block,
        sealed_events=sealed,
        unsealed_events=len(unsealed),
        proofs=proofs,
        findings=findings.kept,
        finding_count=findings.count,
        head=head,
        witness=witness,
        extends_witness=extends,
        seconds=time.perf_counter() - started,
    )


def _check_seal(block: Block, expected_previous: bytes, findings: _Findings) -> bytes:
    """Check a block against itself and its predecessor; return the chain value the next
    block must link to (recomputed, so one bad seal is reported once, not at every block
    after it)."""
    first = block.positions[0] if block.positions else None
    root = merkle.root(block.leaves)
    if len(block.leaves) != block.event_count or len(block.positions) != block.event_count:
        findings.add(
            "altered",
            first,
            block.block,
            f"the seal of block {block.block} lists {len(block.positions)} positions and "
            f"{len(block.leaves)} leaves for {block.event_count} events",
        )
    if root != block.root:
        findings.add(
            "altered",
            first,
            block.block,
            f"the seal of block {block.block} was altered: its root is not its leaves' root",
        )
    header = block_header(block.block, block.event_count, block.total_events, block.last)
    chain = chain_link(expected_previous, root, header)
    if chain != block.chain:
        findings.add(
            "altered",
            first,
            block.block,
            f"the seal of block {block.block} was altered: it does not chain to block "
            f"{block.block - 1}",
        )
    return chain


def _compare(block: Block, covered: Sequence[StoredEvent], findings: _Findings) -> None:
    """The events now in the block's range against what was sealed."""
    sealed = block.positions
    present = [event.position for event in covered]
    sealed_set, present_set = set(sealed), set(present)
    if missing := [p for p in sealed if p not in present_set]:
        findings.add(
            "deleted",
            missing[0],
            block.block,
            f"{len(missing)} sealed event(s) of block {block.block} are gone, the first at "
            f"position {missing[0]}",
        )
    if extra := [p for p in present if p not in sealed_set]:
        findings.add(
            "inserted",
            extra[0],
            block.block,
            f"{len(extra)} event(s) inside the range of block {block.block} were never sealed, "
            f"the first at position {extra[0]}",
        )
    if missing or extra:
        return
    if present != list(sealed):
        moved = next(q for p, q in zip(present, sealed, strict=True) if p != q)
        findings.add(
            "reordered",
            moved,
            block.block,
            f"the events of block {block.block} are in another order than sealed, from "
            f"position {moved}",
        )
        return
    changed = [
        (index, event)
        for index, event in enumerate(covered)
        if leaf_of(event) != block.leaves[index]
    ]
    if not changed:
        return
    if _swapped(changed, block):
        findings.add(
            "reordered",
            changed[0][1].position,
            block.block,
            f"the contents of {len(changed)} events of block {block.block} were swapped, the "
            f"first at position {changed[0][1].position}",
        )
        return
    for _index, event in changed:
        findings.add(
            "altered",
            event.position,
            block.block,
            f"the event at position {event.position} no longer matches its seal",
        )


def _swapped(changed: Sequence[tuple[int, StoredEvent]], block: Block) -> bool:
    """Whether the changed events' contents (what the sender gave: message, type, status,
    times, dedup key, payload, meta) are sealed ones, each moved to another changed row (what
    the database assigned there: position, transaction id, recorded time, kept)."""
    if len(changed) < 2 or len(changed) > _SWAP_SEARCH_LIMIT:
        return False
    for _index, event in changed:
        placed = {
            leaf_of(
                msgspec.structs.replace(
                    event,
                    position=other.position,
                    transaction_id=other.transaction_id,
                    recorded_at=other.recorded_at,
                )
            )
            for _other_index, other in changed
            if other is not event
        }
        if not placed & {block.leaves[other_index] for other_index, _ in changed}:
            return False
    return True


async def _check_unsealed(
    conn: psycopg.AsyncConnection[Any],
    unsealed: Sequence[StoredEvent],
    grace: timedelta,
    findings: _Findings,
) -> None:
    if not unsealed:
        return
    cursor = await conn.execute("SELECT now()")
    row = await cursor.fetchone()
    now = row[0] if row else datetime.now(UTC)
    stale = [event for event in unsealed if now - event.recorded_at > grace]
    if stale:
        findings.add(
            "unsealed",
            stale[0].position,
            None,
            f"{len(stale)} event(s) recorded more than {grace} ago are not sealed yet, the "
            f"first at position {stale[0].position}: is the sealer running?",
        )


def _check_witness(
    witness: Head, chain: bytes | None, total: int | None, findings: _Findings
) -> bool:
    """Whether the ledger extends ``witness``; a finding when it does not."""
    if chain is None:
        findings.add(
            "deleted",
            None,
            witness.block,
            f"block {witness.block} of the external head is not in the ledger",
        )
    elif chain != witness.chain or total != witness.total_events:
        findings.add(
            "altered",
            None,
            witness.block,
            f"history up to block {witness.block} differs from the external head: the ledger "
            "was rewritten (events and seals) since that head was taken",
        )
    else:
        return True
    return False


async def _legacy_end(conn: psycopg.AsyncConnection[Any]) -> Checkpoint:
    cursor = await conn.execute(
        "SELECT transaction_id::text::bigint, position FROM legacy_events_end"
    )
    row = await cursor.fetchone()
    return Checkpoint(row[0], row[1]) if row else Checkpoint()


async def _events_between(
    conn: psycopg.AsyncConnection[Any], start: Checkpoint, through: Checkpoint
) -> int:
    cursor = await conn.execute(
        "SELECT count(*) FROM events WHERE (transaction_id, position) > (%s::text::xid8, %s)"
        " AND (transaction_id, position) <= (%s::text::xid8, %s)",
        (str(start.transaction_id), start.position, str(through.transaction_id), through.position),
    )
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


def _pairs(payload: dict[str, Any]) -> list[tuple[str, str]] | None:
    """The callback's fields as (name, value) pairs; None for a payload no callback could
    have (a stored value that is neither a string nor a list of strings)."""
    if set(map(type, payload.values())) <= {str}:  # no repeated field: the common case
        return list(payload.items())
    pairs: list[tuple[str, str]] = []
    for key, value in payload.items():
        if type(value) is str:
            pairs.append((key, value))
        elif type(value) is list and all(type(item) is str for item in value):
            pairs.extend((key, item) for item in value)
        else:
            return None
    return pairs


class _NoncePins:
    """Batched checks that each signed event's nonce is pinned to the event's own body."""

    BATCH: Final = 2000

    def __init__(self, conn: psycopg.AsyncConnection[Any], findings: _Findings) -> None:
        self._conn = conn
        self._findings = findings
        self._waiting: list[tuple[StoredEvent, int | None, str, str, bytes]] = []

    async def expect(
        self, event: StoredEvent, block: int | None, *, scheme: str, nonce: str, digest: bytes
    ) -> None:
        """Check, in the next batch, that ``scheme``/``nonce`` is pinned to ``digest``."""
        self._waiting.append((event, block, scheme, nonce, digest))
        if len(self._waiting) >= self.BATCH:
            await self.flush()

    async def flush(self) -> None:
        """Run the waiting checks."""
        waiting, self._waiting = self._waiting, []
        if not waiting:
            return
        cursor = await self._conn.execute(
            "SELECT i.n, p.body_digest FROM unnest(%s::text[], %s::text[])"
            " WITH ORDINALITY AS i(scheme, nonce, n)"
            " LEFT JOIN callback_nonces AS p USING (scheme, nonce)",
            ([item[2] for item in waiting], [item[3] for item in waiting]),
        )
        for n, pinned in await cursor.fetchall():
            event, block, _scheme, nonce, digest = waiting[n - 1]
            if pinned is None or bytes(pinned) != digest:
                self._findings.add(
                    "inserted" if pinned is None else "altered",
                    event.position,
                    block,
                    f"the event at position {event.position} "
                    + (
                        f"was never accepted with nonce {nonce!r}"
                        if pinned is None
                        else f"is not the body nonce {nonce!r} was accepted with"
                    ),
                )


class _OriginChecker:
    """Re-checks where each event came from, and counts the proofs."""

    def __init__(
        self,
        credentials: Credentials,
        legacy_end: Checkpoint,
        pins: _NoncePins,
        findings: _Findings,
        proofs: dict[str, int],
    ) -> None:
        self._credentials = credentials
        self._legacy_end = legacy_end
        self._pins = pins
        self._findings = findings
        self._proofs = proofs

    async def check(self, event: StoredEvent, block: int | None) -> None:
        meta = event.meta
        source, scheme = meta.get("source"), meta.get("signature")
        if source == "system" and scheme == "system":
            self._system(event, block)
        elif source == "plivo" and scheme in {"v3", "v3-ma", "v2", "v2-ma"}:
            await self._plivo(event, block, str(scheme))
        elif source == "plivo" and scheme == "unsigned":
            self._findings.add(
                "inserted",
                event.position,
                block,
                f"the event at position {event.position} was stored unsigned "
                "(LEDGER_INSECURE_SKIP_SIGNATURES was on): its origin cannot be proven",
            )
        else:
            self._forged(event, block, "claims no origin this ledger records")

    def _system(self, event: StoredEvent, block: int | None) -> None:
        if mac_matches(
            self._credentials.system_keys,
            message_uuid=event.message_uuid,
            event_type=event.event_type,
            status=event.status,
            occurred_at=event.occurred_at,
            dedup_key=event.dedup_key,
            payload=event.payload,
            meta=event.meta,
        ):
            self._proofs["system"] += 1
        elif self._is_legacy(event) and "mac" not in event.meta:
            self._proofs["legacy"] += 1
        else:
            self._forged(event, block, "is a system event without a valid MAC")

    async def _plivo(self, event: StoredEvent, block: int | None, scheme: str) -> None:
        meta = event.meta
        method, url, headers = meta.get("method"), meta.get("signed_url"), meta.get("signatures")
        if not (isinstance(method, str) and isinstance(url, str) and isinstance(headers, dict)):
            if self._is_legacy(event):
                self._proofs["legacy"] += 1
            else:
                self._forged(event, block, "carries no signature material")
            return
        pairs = _pairs(event.payload)
        if pairs is None:
            self._forged(event, block, "has a payload no callback could carry")
            return
        family = "v3" if scheme.startswith("v3") else "v2"
        try:
            check = verify_signature(
                method=method,
                url=url,
                params=pairs,
                headers={str(k): str(v) for k, v in headers.items()},
                auth_tokens=self._credentials.auth_tokens,
                main_auth_tokens=self._credentials.main_auth_tokens,
            )
        except SignatureError:
            self._forged(event, block, f"has a {scheme} signature no configured auth token made")
            return
        if check.scheme != scheme:
            self._forged(event, block, f"claims {scheme} but was signed {check.scheme}")
            return
        self._proofs[f"plivo-{family}"] += 1
        await self._pins.expect(
            event, block, scheme=family, nonce=check.nonce, digest=check.body_digest
        )

    def _is_legacy(self, event: StoredEvent) -> bool:
        return event.checkpoint <= self._legacy_end

    def _forged(self, event: StoredEvent, block: int | None, why: str) -> None:
        self._findings.add(
            "inserted",
            event.position,
            block,
            f"the event at position {event.position} {why}: forged or unsigned",
        )
