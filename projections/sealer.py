"""The sealer: tails the ledger behind the fence and closes a block every N events or T seconds.

Like a projector it is one active process at a time across the deployment (a session
advisory lock), reads in fence order, and keeps its place in what it writes: the newest
block's last event is its checkpoint, so a crash loses nothing and seals nothing twice (the
block number is the seals' primary key). Nothing of it runs on the ingest path.

Each new head can be published outside the database, to a file (one line per publication,
appended) and/or an HTTP endpoint (the line POSTed as text/plain), at most once a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import httpx
import psycopg
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from ledger.database import connect, first_line
from ledger.seals import Block, StoredEvent, last_block, new_block, read_settled, save_block
from ledger.store import Checkpoint
from projections.locks import Lock, advisory_unlock, try_advisory_lock

log = logging.getLogger(__name__)

SEALER_LOCK_NAME: Final = "sealer"


class HeadPublisher:
    """Writes the newest head to a file and/or POSTs it to a URL, at most every ``interval``."""

    def __init__(self, *, file: Path | None, url: str | None, interval: float = 60.0) -> None:
        self._file = file
        self._url = url
        self._interval = interval
        self._published_at: float | None = None

    @property
    def enabled(self) -> bool:
        """Whether any destination is configured."""
        return self._file is not None or self._url is not None

    def due(self) -> bool:
        """Whether a new head should be published now."""
        return self.enabled and (
            self._published_at is None or time.monotonic() - self._published_at >= self._interval
        )

    async def publish(self, block: Block) -> None:
        """Publish ``block``'s head line; failures are logged, never raised."""
        self._published_at = time.monotonic()
        line = block.head.line()
        if self._file is not None:
            try:
                with self._file.open("a", encoding="utf-8") as file:
                    file.write(line + "\n")
            except OSError as error:
                log.warning("could not write the seal head to %s: %s", self._file, error)
        if self._url is not None:
            try:
                await self._post(line)
            except httpx.HTTPError as error:
                log.warning("could not publish the seal head to %s: %s", self._url, error)

    async def _post(self, line: str) -> None:
        assert self._url is not None
        async with httpx.AsyncClient(timeout=5.0) as client:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(3),
                wait=wait_exponential(multiplier=0.5, max=4),
                retry=retry_if_exception_type(httpx.HTTPError),
                reraise=True,
            ):
                with attempt:
                    response = await client.post(
                        self._url, content=line, headers={"content-type": "text/plain"}
                    )
                    response.raise_for_status()


class Sealer:
    """Seals settled events into blocks while this process holds the sealer lock.

    A block closes when ``block_events`` events are waiting, or ``block_seconds`` after the
    first of them was read, whichever comes first. On :meth:`stop` whatever is waiting is
    sealed before the lock is released, so a clean shutdown leaves nothing unsealed.
    """

    def __init__(
        self,
        url: str,
        *,
        block_events: int,
        block_seconds: float,
        poll_interval: float = 0.1,
        lock_retry_interval: float = 2.0,
        publisher: HeadPublisher | None = None,
        on_sealed: Callable[[Block], None] | None = None,
    ) -> None:
        self._url = url
        self._block_events = block_events
        self._block_seconds = block_seconds
        self._poll_interval = poll_interval
        self._lock_retry_interval = lock_retry_interval
        self._publisher = publisher
        self._on_sealed = on_sealed
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start sealing in the background (inside the running event loop)."""
        if self._task is not None:
            raise RuntimeError("the sealer is already started")
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="sealer")

    async def stop(self, grace: float = 10.0) -> None:
        """Seal what is waiting, then stop and release the lock."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(task, grace)
        except TimeoutError:
            log.warning("sealer: still busy after %.0f s; stopping without its last block", grace)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                async with connect(self._url, application_name="ledger-sealer") as conn:
                    if await self._acquire(conn):
                        failures = 0
                        await self._seal_forever(conn)
                        await advisory_unlock(conn, Lock.SEALER, SEALER_LOCK_NAME)
                        return
            except psycopg.Error as error:
                failures += 1
                delay = min(30.0, 0.5 * 2**failures)
                log.warning("sealer: %s; retrying in %.1f s", first_line(error), delay)
                await self._sleep(delay)

    async def _acquire(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        waiting = False
        while not self._stopping.is_set():
            if await try_advisory_lock(conn, Lock.SEALER, SEALER_LOCK_NAME):
                log.info("sealer is active in this process")
                return True
            if not waiting:
                log.info("sealer is active elsewhere; standing by")
                waiting = True
            await self._sleep(self._lock_retry_interval)
        return False

    async def _seal_forever(self, conn: psycopg.AsyncConnection[Any]) -> None:
        previous = await last_block(conn)
        pending: list[StoredEvent] = []
        first_read_at = 0.0
        while True:
            stopping = self._stopping.is_set()
            after = pending[-1].checkpoint if pending else _end_of(previous)
            wanted = self._block_events - len(pending)
            if wanted > 0 and (more := await read_settled(conn, after, wanted)):
                if not pending:
                    first_read_at = time.monotonic()
                pending += more
            full = len(pending) >= self._block_events
            old = bool(pending) and time.monotonic() - first_read_at >= self._block_seconds
            if pending and (full or old or stopping):
                previous = await self._seal(conn, previous, pending[: self._block_events])
                pending = pending[self._block_events :]
                first_read_at = time.monotonic()
                continue
            if stopping:
                return
            await self._sleep(self._poll_interval)

    async def _seal(
        self, conn: psycopg.AsyncConnection[Any], previous: Block | None, events: list[StoredEvent]
    ) -> Block:
        block = new_block(previous, events)
        await save_block(conn, block)
        if self._on_sealed is not None:
            self._on_sealed(block)
        if self._publisher is not None and self._publisher.due():
            await self._publisher.publish(block)
        return block


def _end_of(block: Block | None) -> Checkpoint:
    return block.last if block is not None else Checkpoint()
