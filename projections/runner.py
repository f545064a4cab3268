"""The catch-up runner: keeps every projector's view current, each event applied exactly once.

Each projector is fed by one loop in one process at a time, whichever holds that projector's
session advisory lock on its dedicated connection; other processes stand by and take over
when the holder's connection goes away. A batch is read behind the transaction-id fence and
applied in one transaction together with the checkpoint, so a crash at any point leaves the
view and its checkpoint in agreement: nothing is skipped and nothing is applied twice.

Version policy: a view with no checkpoint yet, or whose stored version differs from the
projector's, is rebuilt by :func:`projections.replay.replay` when the runner becomes active
(set-based, much faster than folding from the start batch by batch), and again if another
process swaps in a view of another version while this one runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Final

import msgspec
import psycopg
from psycopg import pq, sql

from ledger.database import EVENTS_CHANNEL, connect, with_options
from ledger.events import RecordedEvent
from ledger.store import Checkpoint, read_after
from projections.base import Projector
from projections.locks import Lock, try_advisory_lock

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE: Final = 2000
#: Notified (payload: JSON projector, transaction_id, position) when a batch commits, so that
#: read-your-writes waiters and live feeds need not poll the checkpoint table.
PROJECTED_CHANNEL: Final = "ledger_projected"

# How long one wait for notifications lasts: the listener checks its stop flag this often.
_LISTEN_SLICE = 0.25
# Server-side TCP keepalives for the runner's connections: if the host holding a runner lock
# dies without closing its socket, the server drops the session (and the lock) in about 25 s
# instead of the operating system's default of hours. Ignored over Unix sockets.
_KEEPALIVES = "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3"

# Errors that say nothing about the event being applied: the database or connection is
# unavailable, a lock or serialisation conflict, or broken SQL/schema. The batch is retried
# later as a whole; turning these into dead letters would dead-letter the whole ledger.
_NOT_THE_EVENTS_FAULT = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    psycopg.ProgrammingError,
    psycopg.InternalError,
)


class DeadLetter(msgspec.Struct, frozen=True):
    """An event a projector could not apply, and why."""

    position: int
    error: str


class Batch(msgspec.Struct, frozen=True):
    """What one catch-up step did: the checkpoint after it, events read, events that failed."""

    checkpoint: Checkpoint
    events: int
    dead_letters: tuple[DeadLetter, ...] = ()


class StoredCheckpoint(msgspec.Struct, frozen=True):
    """A projector's row in ``projection_checkpoints``."""

    checkpoint: Checkpoint
    version: int


class VersionMismatch(Exception):
    """The stored view was built by another version of its projector."""

    def __init__(self, name: str, stored: int | None, expected: int) -> None:
        super().__init__(
            f"the {name} view is version {stored}, this code projects version {expected}"
        )
        self.name = name
        self.stored = stored
        self.expected = expected


async def stored_checkpoint(
    conn: psycopg.AsyncConnection[Any], name: str, *, for_update: bool = False
) -> StoredCheckpoint | None:
    """A projector's stored checkpoint and view version; None if it has never run.

    ``for_update`` locks the row until the transaction ends: that is how a batch, replay's
    swap and the scheduler's tick take turns on one view.
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


async def catch_up(
    conn: psycopg.AsyncConnection[Any],
    projector: Projector,
    *,
    suffix: str = "",
    checkpoint: Checkpoint,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Batch:
    """Fold the next settled events after ``checkpoint`` into ``<tables><suffix>``.

    The one catch-up implementation, shared by the runner (live tables) and replay (copies).
    It must run inside the caller's transaction, which also stores the returned checkpoint:
    an event that makes ``apply`` fail is isolated by retrying the batch's halves in
    savepoints, and is returned as a dead letter while the rest of the batch is applied.
    """
    if conn.info.transaction_status != pq.TransactionStatus.INTRANS:
        raise RuntimeError("catch_up must run inside a transaction that also stores its checkpoint")
    events = await read_after(conn, checkpoint, batch_size)
    if not events:
        return Batch(checkpoint, 0)
    dead_letters = await _apply_isolating(conn, projector, events, suffix)
    last = events[-1]
    return Batch(Checkpoint(last.transaction_id, last.position), len(events), tuple(dead_letters))


async def _apply_isolating(
    conn: psycopg.AsyncConnection[Any],
    projector: Projector,
    events: Sequence[RecordedEvent],
    suffix: str,
) -> list[DeadLetter]:
    try:
        async with conn.transaction():
            await projector.apply(conn, events, suffix=suffix)
    except Exception as exc:
        if isinstance(exc, _NOT_THE_EVENTS_FAULT) or conn.broken:
            raise
        if len(events) == 1:
            log.error(
                "projector %s cannot apply the event at position %d: recording a dead letter",
                projector.name,
                events[0].position,
                exc_info=exc,
            )
            return [DeadLetter(events[0].position, f"{type(exc).__name__}: {exc}")]
        # Bisecting finds k poison events in O(k log n) applies, each half in its own savepoint.
        half = len(events) // 2
        return [
            *await _apply_isolating(conn, projector, events[:half], suffix),
            *await _apply_isolating(conn, projector, events[half:], suffix),
        ]
    return []


async def _idle_checkpoint(
    conn: psycopg.AsyncConnection[Any], projector: Projector
) -> Checkpoint | None:
    """The stored checkpoint if nothing is pending after it, else None.

    Checked without a transaction or a row lock, so an idle poll costs two reads and no
    transaction id.
    """
    stored = await stored_checkpoint(conn, projector.name)
    if stored is None:
        return None
    if stored.version != projector.version:
        raise VersionMismatch(projector.name, stored.version, projector.version)
    return None if await read_after(conn, stored.checkpoint, 1) else stored.checkpoint


async def _step(conn: psycopg.AsyncConnection[Any], projector: Projector, batch_size: int) -> Batch:
    """One batch inside the caller's transaction: lock, re-read, apply, advance."""
    stored = await lock_checkpoint(conn, projector)
    if stored.version != projector.version:
        raise VersionMismatch(projector.name, stored.version, projector.version)
    batch = await catch_up(conn, projector, checkpoint=stored.checkpoint, batch_size=batch_size)
    if batch.events:
        await save_checkpoint(conn, projector.name, batch.checkpoint)
        await record_dead_letters(conn, projector.name, batch.dead_letters)
        payload = {
            "projector": projector.name,
            "transaction_id": batch.checkpoint.transaction_id,
            "position": batch.checkpoint.position,
        }
        await conn.execute(
            "SELECT pg_notify(%s, %s)", (PROJECTED_CHANNEL, msgspec.json.encode(payload).decode())
        )
    return batch


def _require_autocommit(conn: psycopg.AsyncConnection[Any]) -> None:
    # Otherwise the batch's transaction would be a savepoint in an implicit transaction that
    # nobody commits, and the work would be lost when the connection closes.
    if not conn.autocommit:
        raise ValueError("the connection must be in autocommit mode: each batch commits itself")


async def apply_batch(
    conn: psycopg.AsyncConnection[Any],
    projector: Projector,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Batch:
    """Apply the next batch to the live view, in one transaction with its checkpoint.

    ``conn`` must be in autocommit mode. The checkpoint is re-read under ``FOR UPDATE`` in the
    transaction (never cached): replay may have moved it, and two appliers serialise on it.
    Raises :class:`VersionMismatch` if the stored view is of another version.
    """
    _require_autocommit(conn)
    if (idle := await _idle_checkpoint(conn, projector)) is not None:
        return Batch(idle, 0)
    async with conn.transaction():
        return await _step(conn, projector, batch_size)


async def catch_up_unclaimed(
    conn: psycopg.AsyncConnection[Any],
    projector: Projector,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_batches: int = 10,
) -> int:
    """Apply up to ``max_batches`` batches if no runner holds this projector; events applied.

    A safety net for when no runner is alive: each batch first tries the runner lock as a
    transaction lock, which fails while any runner holds it as a session lock.
    """
    _require_autocommit(conn)
    applied = 0
    for _ in range(max_batches):
        if await _idle_checkpoint(conn, projector) is not None:
            break
        async with conn.transaction():
            if not await try_advisory_lock(conn, Lock.RUNNER, projector.name, scope="transaction"):
                break
            batch = await _step(conn, projector, batch_size)
        applied += batch.events
        if batch.events < batch_size:
            break
    return applied


class _Backoff:
    """Exponential reconnect delays with jitter, so that restarted workers do not stampede."""

    def __init__(self, first: float, limit: float = 30.0) -> None:
        self._first = first
        self._limit = limit
        self._failures = 0

    def next(self) -> float:
        delay = min(self._limit, self._first * 2.0**self._failures)
        self._failures += 1
        return delay / 2 + random.uniform(0, delay / 2)  # noqa: S311 - jitter, not security

    def reset(self) -> None:
        self._failures = 0


def _describe(exc: BaseException) -> str:
    # The first line of a psycopg error names the server and the cause, never the password.
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class CatchUpRunner:
    """Keeps projectors' views current in this process whenever it holds their locks.

    One task per projector (lock, catch up, wait) and one listener task that wakes them on
    ``NOTIFY``. They also poll every ``poll_interval`` seconds, because notifications sent
    while disconnected are lost. Lost connections are re-opened with backoff.
    """

    def __init__(
        self,
        url: str,
        projectors: Sequence[Projector],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        poll_interval: float = 1.0,
        lock_retry_interval: float = 2.0,
        reconnect_delay: float = 0.5,
        stop_grace: float = 5.0,
        on_applied: Callable[[str, Batch], None] | None = None,
        application_name: str = "ledger-runner",
    ) -> None:
        """``url`` is a libpq URL; ``on_applied(name, batch)`` is called after each batch that
        read events (for metrics). ``stop_grace`` bounds how long :meth:`stop` lets a batch
        or a rebuild finish before cancelling its query."""
        self._url = with_options(url, _KEEPALIVES)
        self._projectors = tuple(projectors)
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._lock_retry_interval = lock_retry_interval
        self._reconnect_delay = reconnect_delay
        self._stop_grace = stop_grace
        self._on_applied = on_applied
        self._application_name = application_name
        self._wakeups = {p.name: asyncio.Event() for p in self._projectors}
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._connections: set[psycopg.AsyncConnection[Any]] = set()
        self._active: set[str] = set()

    @property
    def active(self) -> frozenset[str]:
        """Names of the projectors this runner currently holds the lock for."""
        return frozenset(self._active)

    async def start(self) -> None:
        """Start the listener and one task per projector (inside the running event loop)."""
        if self._tasks:
            raise RuntimeError("the runner is already started")
        self._stopping.clear()
        self._tasks = [asyncio.create_task(self._listen(), name="runner-listener")]
        self._tasks += [
            asyncio.create_task(self._keep_current(p), name=f"runner-{p.name}")
            for p in self._projectors
        ]

    async def stop(self) -> None:
        """Stop every task and close every connection, releasing the locks.

        Tasks stop at their next check of the stop flag (a batch in flight commits first);
        queries still running after ``stop_grace`` seconds are cancelled server-side, since
        cancelling a task parked in psycopg's wait can hang.
        """
        self._stopping.set()
        self.wake()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=self._stop_grace)
        if pending:
            log.warning("runner: cancelling queries still running after %.1f s", self._stop_grace)
            for conn in list(self._connections):
                with contextlib.suppress(psycopg.Error):
                    await conn.cancel_safe(timeout=2.0)
            _, pending = await asyncio.wait(pending, timeout=self._stop_grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def wake(self) -> None:
        """Make every projector task look for new events now."""
        for event in self._wakeups.values():
            event.set()

    async def run_once(self, projector: Projector) -> int:
        """Apply one batch to ``projector``'s view on a connection of its own; events read.

        For tests and tools that step deterministically. It does not take the runner lock:
        correctness does not depend on it, the checkpoint row lock serialises appliers.
        """
        async with self._connection() as conn:
            batch = await apply_batch(conn, projector, batch_size=self._batch_size)
        self._report(projector, batch)
        return batch.events

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with connect(self._url, application_name=self._application_name) as conn:
            self._connections.add(conn)
            try:
                yield conn
            finally:
                self._connections.discard(conn)

    def _report(self, projector: Projector, batch: Batch) -> None:
        if batch.events and self._on_applied is not None:
            self._on_applied(projector.name, batch)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but return at once when stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _idle(self, name: str) -> None:
        """Wait for a notification, the poll interval, or stop."""
        wakeup = self._wakeups[name]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wakeup.wait(), self._poll_interval)
        wakeup.clear()

    async def _listen(self) -> None:
        backoff = _Backoff(self._reconnect_delay)
        while not self._stopping.is_set():
            try:
                async with self._connection() as conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(EVENTS_CHANNEL)))
                    backoff.reset()
                    # Whatever was notified while we were away is lost: look now.
                    self.wake()
                    while not self._stopping.is_set():
                        async for _ in conn.notifies(timeout=_LISTEN_SLICE):
                            self.wake()
            except psycopg.Error as exc:
                delay = backoff.next()
                log.warning("runner listener: %s; reconnecting in %.1f s", _describe(exc), delay)
                await self._sleep(delay)
            except Exception:
                delay = backoff.next()
                log.exception("runner listener failed; restarting in %.1f s", delay)
                await self._sleep(delay)

    async def _keep_current(self, projector: Projector) -> None:
        backoff = _Backoff(self._reconnect_delay)
        while not self._stopping.is_set():
            try:
                async with self._connection() as conn:
                    if await self._acquire(conn, projector):
                        try:
                            await self._project(conn, projector, backoff)
                        finally:
                            self._active.discard(projector.name)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                if self._stopping.is_set():
                    return  # stop() cancelled the query or closed the connection
                delay = backoff.next()
                log.warning(
                    "runner for %s: %s; reconnecting in %.1f s",
                    projector.name,
                    _describe(exc),
                    delay,
                )
                await self._sleep(delay)
            except Exception:
                delay = backoff.next()
                log.exception("runner for %s failed; retrying in %.1f s", projector.name, delay)
                await self._sleep(delay)

    async def _acquire(self, conn: psycopg.AsyncConnection[Any], projector: Projector) -> bool:
        """Wait until this connection holds the projector's runner lock; False if stopping."""
        waiting = False
        while not self._stopping.is_set():
            if await try_advisory_lock(conn, Lock.RUNNER, projector.name):
                log.info("runner for %s is active in this process", projector.name)
                return True
            if not waiting:
                log.info("runner for %s is active elsewhere; standing by", projector.name)
                waiting = True
            await self._sleep(self._lock_retry_interval)
        return False

    async def _project(
        self, conn: psycopg.AsyncConnection[Any], projector: Projector, backoff: _Backoff
    ) -> None:
        self._active.add(projector.name)
        await self._ensure_current(conn, projector)
        while not self._stopping.is_set():
            try:
                batch = await apply_batch(conn, projector, batch_size=self._batch_size)
            except VersionMismatch:
                # Another process replayed the view with other code while we held the lock.
                await self._ensure_current(conn, projector)
                continue
            backoff.reset()
            self._report(projector, batch)
            if batch.events < self._batch_size:
                await self._idle(projector.name)

    async def _ensure_current(
        self, conn: psycopg.AsyncConnection[Any], projector: Projector
    ) -> None:
        """Rebuild the view unless it is of this projector's version (see the module doc)."""
        from projections.replay import ReplayInProgress, replay

        while not self._stopping.is_set():
            stored = await stored_checkpoint(conn, projector.name)
            if stored is not None and stored.version == projector.version:
                return
            log.info(
                "rebuilding the %s view (stored version %s, this code projects version %d)",
                projector.name,
                None if stored is None else stored.version,
                projector.version,
            )
            try:
                async with self._connection() as replay_conn:
                    report = await replay(replay_conn, projector, batch_size=self._batch_size)
            except ReplayInProgress:
                log.info("waiting for the rebuild of %s running elsewhere", projector.name)
                await self._sleep(self._lock_retry_interval)
            else:
                log.info(
                    "rebuilt %s from %d events in %.1f s",
                    projector.name,
                    report.events,
                    report.seconds,
                )
