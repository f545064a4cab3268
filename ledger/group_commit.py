"""Group commit: concurrent appends share transactions, and each caller waits for its own commit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout, TooManyRequests

from ledger.database import DatabaseUnavailable
from ledger.store import Append, AppendResult, append

log = logging.getLogger(__name__)


class GroupCommitter:
    """Batches appends from concurrent requests into shared transactions.

    A fixed number of flushers take whatever is waiting, up to ``max_batch`` items, and write it
    in one transaction. An idle flusher takes a lone request at once, so a quiet service adds
    no latency; under load, requests pile up while the flushers commit and ride the next batch.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        *,
        max_batch: int = 256,
        flushers: int = 2,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._pool = pool
        self._max_batch = max_batch
        self._flusher_count = flushers
        self._on_batch = on_batch
        self._waiting: list[tuple[Append, asyncio.Future[AppendResult]]] = []
        self._wakeup = asyncio.Event()
        self._flushers: list[asyncio.Task[None]] = []
        self._closing = False

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

    async def append(self, item: Append) -> AppendResult:
        """Append one event; return once its transaction has committed.

        Raises :class:`DatabaseUnavailable` when the batch could not be committed.
        """
        if self._closing:
            raise DatabaseUnavailable("the service is shutting down")
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        self._wakeup.set()
        return await future

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

    def _take_waiting(self) -> list[tuple[Append, asyncio.Future[AppendResult]]]:
        """Everything still waiting for a flusher, taken off the queue."""
        waiting, self._waiting = self._waiting, []
        if not self._closing:
            self._wakeup.clear()
        return waiting

    async def _flush(self, batch: list[tuple[Append, asyncio.Future[AppendResult]]]) -> None:
        try:
            async with self._pool.connection() as conn:
                results = await append(conn, [item for item, _ in batch])
        except (psycopg.OperationalError, PoolTimeout, TooManyRequests) as error:
            log.warning("append of %d events failed: %s", len(batch), error)
            failure = DatabaseUnavailable(str(error))
            if isinstance(error, PoolTimeout):
                # No connection came for a whole pool timeout. What queued up meanwhile would
                # wait as long again only to fail the same way, past the 8 s Plivo waits for an
                # answer: fail it now, so that every caller hears its 503 in time.
                batch = batch + self._take_waiting()
            for _, future in batch:
                if not future.done():
                    future.set_exception(failure)
            return
        except Exception as error:  # every caller must hear back, whatever went wrong
            log.exception("append of %d events failed unexpectedly", len(batch))
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        if self._on_batch is not None:
            self._on_batch(len(batch))
        for (_, future), result in zip(batch, results, strict=True):
            with contextlib.suppress(asyncio.InvalidStateError):
                future.set_result(result)
