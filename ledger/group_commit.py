"""Group commit: concurrent appends share transactions, and each caller waits for its own commit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout, TooManyRequests

from ledger.database import DatabaseUnavailable, first_line
from ledger.store import Append, AppendResult, append, notify_readers

log = logging.getLogger(__name__)


#: The least time between two wake-up notifications from one process: a reader woken once
#: keeps reading while there is more, so a burst needs one notification, not one per batch.
NOTIFY_INTERVAL = 0.05

#: Errors that say the database is stalled rather than broken: a statement or lock timeout.
#: Whatever is queued behind a stalled batch would stall the same way, so it fails at once.
_STALLED = (PoolTimeout, psycopg.errors.QueryCanceled, psycopg.errors.LockNotAvailable)


class _Waiting(NamedTuple):
    """An append waiting for a flusher, its caller's future, and when it stops waiting."""

    item: Append
    future: asyncio.Future[AppendResult]
    deadline: float


class GroupCommitter:
    """Batches appends from concurrent requests into shared transactions.

    A fixed number of flushers take whatever is waiting, up to ``max_batch`` items, and write it
    in one transaction. An idle flusher takes a lone request at once, so a quiet service adds
    no latency; under load, requests pile up while the flushers commit and ride the next batch.

    ``queue_timeout`` bounds how long a request may wait for a flusher: past it, a request not
    yet sent is answered :class:`DatabaseUnavailable` (nothing was stored). A request already
    sent waits for its statement, which the pool's ``statement_timeout`` bounds on the server.
    The queue is first in, first out and every request waits as long, so one timer, set for
    the oldest waiting request, enforces that for all (not one timer per request).
    """

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        *,
        max_batch: int = 256,
        flushers: int = 2,
        queue_timeout: float = 5.0,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._pool = pool
        self._max_batch = max_batch
        self._flusher_count = flushers
        self._queue_timeout = queue_timeout
        self._on_batch = on_batch
        self._waiting: list[_Waiting] = []
        self._expiry: asyncio.TimerHandle | None = None
        self._wakeup = asyncio.Event()
        self._flushers: list[asyncio.Task[None]] = []
        self._closing = False
        self._notified_at = -NOTIFY_INTERVAL

    @property
    def pool(self) -> AsyncConnectionPool[Any]:
        """The ingest pool the flushers write with, which nothing else should use."""
        return self._pool

    async def start(self) -> None:
        """Start the flushers (inside the running event loop)."""
        self._flushers = [
            asyncio.create_task(self._flush_forever(), name=f"group-commit-{n}")
            for n in range(self._flusher_count)
        ]

    async def close(self) -> None:
        """Stop taking appends, commit everything already taken, then stop the flushers."""
        self._closing = True
        self._wakeup.set()
        await asyncio.gather(*self._flushers, return_exceptions=True)
        self._flushers = []
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    async def append(self, item: Append) -> AppendResult:
        """Append one event; return once its transaction has committed.

        Raises :class:`DatabaseUnavailable` when the batch could not be committed.
        """
        if self._closing:
            raise DatabaseUnavailable("the service is shutting down")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[AppendResult] = loop.create_future()
        deadline = loop.time() + self._queue_timeout
        self._waiting.append(_Waiting(item, future, deadline))
        self._wakeup.set()
        if self._expiry is None:
            self._expiry = loop.call_at(deadline, self._expire)
        # Once a flusher has taken it, only its statement's own timeout decides.
        return await future

    def _expire(self) -> None:
        """Refuse the requests that waited for a flusher past the queue timeout (never sent:
        safe to refuse), then set the timer for the oldest one still waiting."""
        self._expiry = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        expired = 0
        for entry in self._waiting:
            if entry.deadline > now:
                break
            expired += 1
        refused, self._waiting[:expired] = self._waiting[:expired], []
        for entry in refused:
            if not entry.future.done():
                entry.future.set_exception(
                    DatabaseUnavailable("no flusher was free within the queue timeout")
                )
        if self._waiting:
            self._expiry = loop.call_at(self._waiting[0].deadline, self._expire)

    async def _flush_forever(self) -> None:
        while True:
            await self._wakeup.wait()
            batch = self._waiting[: self._max_batch]
            del self._waiting[: self._max_batch]
            if not self._waiting:
                self._wakeup.clear()
            if batch:
                await self._flush(batch)
            elif self._closing:
                self._wakeup.set()  # let the other flushers see the end too
                return

    def _take_waiting(self) -> list[_Waiting]:
        """Everything still waiting for a flusher, taken off the queue."""
        waiting, self._waiting = self._waiting, []
        if not self._closing:
            self._wakeup.clear()
        return waiting

    async def _flush(self, batch: list[_Waiting]) -> None:
        items = [entry.item for entry in batch]
        try:
            async with self._pool.connection() as conn:
                try:
                    results = await append(conn, items)
                except psycopg.errors.DeadlockDetected:
                    # Chosen as the victim of a deadlock with a concurrent batch, which has
                    # committed by now: the same append again finds its events stored.
                    results = await append(conn, items)
                self._resolve(batch, results)
                if any(result.outcome == "appended" for result in results):
                    await self._notify(conn)
        except (psycopg.OperationalError, PoolTimeout, TooManyRequests) as error:
            log.warning("append of %d events failed: %s", len(batch), first_line(error))
            failure = DatabaseUnavailable(str(error))
            if isinstance(error, _STALLED):
                # No connection came, or the statement hit its timeout. What queued up
                # meanwhile would wait as long again only to fail the same way, past the 8 s
                # Plivo waits for an answer: fail it now, so every caller hears its 503 in time.
                batch = batch + self._take_waiting()
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(failure)
        except Exception as error:  # every caller must hear back, whatever went wrong
            log.exception("append of %d events failed unexpectedly", len(batch))
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(error)

    async def _notify(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Wake tailing readers after a commit, at most once per :data:`NOTIFY_INTERVAL`."""
        now = time.monotonic()
        if now - self._notified_at < NOTIFY_INTERVAL:
            return
        self._notified_at = now
        await notify_readers(conn)

    def _resolve(self, batch: list[_Waiting], results: list[AppendResult]) -> None:
        if self._on_batch is not None:
            self._on_batch(len(batch))
        for entry, result in zip(batch, results, strict=True):
            with contextlib.suppress(asyncio.InvalidStateError):
                entry.future.set_result(result)
