"""Work a service process does besides answering requests: projectors and scheduled jobs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

from psycopg_pool import AsyncConnectionPool

from api.telemetry import PROJECTED_EVENTS
from ledger.database import create_pool
from ledger.settings import Settings
from ledger.system_events import system_key
from projections.registry import build_projectors
from projections.runner import CatchUpRunner
from projections.scheduler import ScheduledJobs
from projections.sealer import HeadPublisher, Sealer

log = logging.getLogger(__name__)

#: How often a supervised worker checks that the server that started it is still there.
_PARENT_CHECK_SECONDS = 1.0


@contextlib.asynccontextmanager
async def background_work(
    settings: Settings, database_url: str, pool: AsyncConnectionPool[Any]
) -> AsyncIterator[CatchUpRunner]:
    """Run the catch-up runner and the scheduled jobs for the duration of the block.

    Every process may run them: the runner only projects while it holds a projector's lock,
    and each job runs once per period across all processes.
    """
    projectors = build_projectors(settings)
    runner = CatchUpRunner(
        database_url,
        projectors,
        on_applied=lambda name, batch: PROJECTED_EVENTS.labels(name).inc(batch.events),
    )
    jobs = ScheduledJobs(
        pool, projectors, expire_after=settings.expire_after, system_key=system_key(settings)
    )
    sealer = Sealer(
        database_url,
        block_events=settings.seal_block_events,
        block_seconds=settings.seal_block_seconds,
        publisher=HeadPublisher(file=settings.seal_head_file, url=settings.seal_head_url),
    )
    await runner.start()
    await jobs.start()
    await sealer.start()
    try:
        yield runner
    finally:
        await sealer.stop()
        await jobs.stop()
        await runner.stop()


async def _orphaned(parent: int, stop: asyncio.Event) -> None:
    """Set ``stop`` once process ``parent`` is gone (this process was re-parented); return
    when ``stop`` is set."""
    while not stop.is_set():
        if os.getppid() != parent:
            log.warning("worker: parent process %d is gone, stopping", parent)
            stop.set()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), _PARENT_CHECK_SECONDS)


async def _work_until_signalled(settings: Settings, database_url: str, parent: int | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    watch = asyncio.create_task(_orphaned(parent, stop)) if parent is not None else None
    pool = create_pool(database_url, size=4, name="worker")
    await pool.open(wait=False)
    try:
        async with background_work(settings, database_url, pool):
            await stop.wait()
            log.info("worker: stopping")
    finally:
        await pool.close()
        if watch is not None:
            watch.cancel()


def run_worker(settings: Settings, database_url: str, *, parent: int | None = None) -> None:
    """Project and run scheduled jobs until SIGINT or SIGTERM (``ledger worker``).

    With ``parent`` (a process id), also stop when that process is gone, so that a child
    never outlives the server that started it, even one killed with SIGKILL.
    """
    asyncio.run(_work_until_signalled(settings, database_url, parent))
