"""The projection daemon: keeps every projector's view current, each event applied exactly once.

Each projector is fed by one loop in one process at a time, whichever holds that projector's
session advisory lock on its dedicated connection; other processes stand by and take over
when the holder's connection goes away. A batch is one statement
(:func:`projections.catch_up.apply_next`), so the view and its checkpoint always agree.

Wake-ups are coalesced. While events keep coming, a loop applies a batch, pauses for its
view's ``busy_interval`` to let the next batch gather, and applies again: one statement per
view per interval, however many callbacks arrive. When a look finds nothing, the loop goes idle:
it waits for the ledger's debounced notification (sent after the append commits, never
inside it) or a poll, at intervals that double up to ``poll_interval``. An idle poll is a
read-only check that takes no transaction id.

Version policy: a view with no checkpoint yet, or whose stored version differs from the
projector's, is rebuilt by :func:`projections.replay.replay` when the loop becomes active
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

import psycopg
from psycopg import sql

from ledger.database import EVENTS_CHANNEL, connect, with_options
from projections.base import Projector
from projections.catch_up import DEFAULT_BATCH_SIZE, Batch, apply_next
from projections.checkpoints import VersionMismatch, pending, stored_checkpoint
from projections.locks import Lock, advisory_unlock, try_advisory_lock
from projections.replay import ReplayInProgress, replay

log = logging.getLogger(__name__)

# Server-side TCP keepalives for the runner's connections: if the host holding a runner lock
# dies without closing its socket, the server drops the session (and the lock) in about 25 s
# instead of the operating system's default of hours. Ignored over Unix sockets.
_KEEPALIVES: Final = (
    "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3"
)


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
    ``NOTIFY``. Lost connections are re-opened with backoff. See the module docstring for
    how wake-ups are coalesced.
    """

    def __init__(
        self,
        url: str,
        projectors: Sequence[Projector],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        busy_interval: float | None = None,
        poll_interval: float = 1.0,
        lock_retry_interval: float = 2.0,
        reconnect_delay: float = 0.5,
        stop_grace: float = 5.0,
        on_applied: Callable[[str, Batch], None] | None = None,
        application_name: str = "ledger-runner",
    ) -> None:
        """``url`` is a libpq URL; ``busy_interval``, if given, replaces every projector's
        own; ``on_applied(name, batch)`` is called after each batch that read events (for
        metrics). ``stop_grace`` bounds how long :meth:`stop` lets a batch
        or a rebuild finish before cancelling its query."""
        self._url = with_options(url, _KEEPALIVES)
        self._projectors = tuple(projectors)
        self._batch_size = batch_size
        self._busy_interval = busy_interval
        self._poll_interval = poll_interval
        self._lock_retry_interval = lock_retry_interval
        self._reconnect_delay = reconnect_delay
        self._stop_grace = stop_grace
        self._on_applied = on_applied
        self._application_name = application_name
        self._wakeups = {p.name: asyncio.Event() for p in self._projectors}
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: asyncio.Task[None] | None = None
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
        self._listener = asyncio.create_task(self._listen(), name="runner-listener")
        self._tasks = [self._listener]
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
        if self._listener is None:
            return
        # The listener only waits for notifications (no query, no transaction): it is
        # cancelled, not asked to stop.
        self._listener.cancel()
        self._listener = None
        _, unfinished = await asyncio.wait(self._tasks, timeout=self._stop_grace)
        if unfinished:
            log.warning("runner: cancelling queries still running after %.1f s", self._stop_grace)
            for conn in list(self._connections):
                with contextlib.suppress(psycopg.Error):
                    await conn.cancel_safe(timeout=2.0)
            _, unfinished = await asyncio.wait(unfinished, timeout=self._stop_grace)
        for task in unfinished:
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
            batch = await apply_next(conn, projector, batch_size=self._batch_size)
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

    async def _idle(self, name: str, seconds: float) -> bool:
        """Wait for a notification, ``seconds``, or stop; whether a notification came."""
        wakeup = self._wakeups[name]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wakeup.wait(), seconds)
        notified = wakeup.is_set()
        wakeup.clear()
        return notified

    async def _listen(self) -> None:
        backoff = _Backoff(self._reconnect_delay)
        while not self._stopping.is_set():
            try:
                async with self._connection() as conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(EVENTS_CHANNEL)))
                    backoff.reset()
                    # Whatever was notified while we were away is lost: look now.
                    self.wake()
                    # Until the connection fails, or stop() cancels this task.
                    async for _ in conn.notifies():
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
                        await advisory_unlock(conn, Lock.RUNNER, projector.name)
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
        busy_interval = (
            self._busy_interval if self._busy_interval is not None else projector.busy_interval
        )
        idle_for = 0.0  # the current idle poll interval; 0 while busy
        look = True  # apply without checking first: on becoming active, when busy, notified
        while not self._stopping.is_set():
            try:
                # A timed poll while idle is a read-only check first.
                if look or await pending(conn, projector):
                    batch = await apply_next(conn, projector, batch_size=self._batch_size)
                else:
                    batch = None
            except VersionMismatch:
                # Another process replayed the view with other code while we held the lock.
                await self._ensure_current(conn, projector)
                continue
            backoff.reset()
            if batch is not None and batch.events:
                self._report(projector, batch)
                idle_for = 0.0
                look = True
                if batch.events < self._batch_size:
                    # Busy: let the next batch gather for a moment, whatever wakes us meanwhile.
                    await self._sleep(busy_interval)
                continue
            idle_for = min(self._poll_interval, max(busy_interval, idle_for * 2))
            look = await self._idle(projector.name, idle_for)

    async def _ensure_current(
        self, conn: psycopg.AsyncConnection[Any], projector: Projector
    ) -> None:
        """Rebuild the view unless it is of this projector's version (see the module doc)."""
        while not self._stopping.is_set():
            stored = await stored_checkpoint(conn, projector.name)
            if stored is not None and stored.version == projector.version:
                return
            if stored is None:
                log.info(
                    "building the %s view for the first time (this code projects version %d)",
                    projector.name,
                    projector.version,
                )
            else:
                log.info(
                    "rebuilding the %s view: it was built by version %d, this code projects"
                    " version %d",
                    projector.name,
                    stored.version,
                    projector.version,
                )
            try:
                async with self._connection() as replay_conn:
                    # Its extra connections are this runner's, so that stop() cancels them too.
                    report = await replay(
                        replay_conn,
                        projector,
                        batch_size=self._batch_size,
                        connect=self._connection,
                    )
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
