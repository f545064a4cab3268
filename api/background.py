"""Work a service process does besides answering requests: projectors and scheduled jobs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, Final

from psycopg_pool import AsyncConnectionPool

from api.telemetry import PROJECTED_EVENTS
from ledger.database import create_pool
from ledger.sends import callback_url, plivo_api_for
from ledger.settings import Settings
from ledger.system_events import system_key
from projections.alerts import AlertRule, AlertWebhook
from projections.registry import build_projectors
from projections.replay import DEFAULT_JOBS
from projections.runner import CatchUpRunner
from projections.scheduler import ScheduledJobs
from projections.sealer import HeadPublisher, Sealer
from projections.send_jobs import SendJobs, SendSettings


def send_settings(settings: Settings) -> SendSettings:
    """What reconciliation and resends need of the settings."""
    return SendSettings(
        callback_url=callback_url(settings),
        store_text=settings.store_text,
        reconcile_after=settings.reconcile_after,
        reconcile_per_minute=settings.reconcile_per_minute,
        resend_error_codes=settings.resend_error_codes,
        resend_max_attempts=settings.resend_max_attempts,
        resend_backoff=settings.resend_backoff,
    )


log = logging.getLogger(__name__)

#: Connections of ``ledger worker``'s (and the projector process's) pool, for the jobs.
WORKER_POOL_SIZE: Final = 4


def background_connections(settings: Settings) -> int:
    """The most database connections a ``ledger worker`` (or ``ledger serve``'s projector
    process) opens: its pool full, the runner's listener, per view its own connection and,
    while it rebuilds, the rebuild's (:data:`~projections.replay.DEFAULT_JOBS`), and the
    sealer's."""
    return WORKER_POOL_SIZE + 1 + len(build_projectors(settings)) * (1 + DEFAULT_JOBS) + 1


@contextlib.asynccontextmanager
async def background_work(
    settings: Settings, database_url: str, pool: AsyncConnectionPool[Any]
) -> AsyncIterator[CatchUpRunner]:
    """Run the catch-up runner and the scheduled jobs for the duration of the block.

    Every process may run them: the runner only projects while it holds a projector's lock,
    and each job runs once per period across all processes.
    """
    projectors = build_projectors(settings)
    plivo = plivo_api_for(settings)
    send_jobs = (
        SendJobs(pool, plivo, send_settings(settings), key=system_key(settings))
        if plivo is not None
        else None
    )
    runner = CatchUpRunner(
        database_url,
        projectors,
        on_applied=lambda name, batch: PROJECTED_EVENTS.labels(name).inc(batch.events),
    )
    webhook = (
        AlertWebhook(settings.alert_webhook_url, settings.alert_webhook_secret)
        if settings.alert_webhook_url and settings.alert_webhook_secret
        else None
    )
    jobs = ScheduledJobs(
        pool,
        projectors,
        expire_after=settings.expire_after,
        system_key=system_key(settings),
        send_outcome_after=settings.send_outcome_after,
        # Checked at twice the timeout's resolution, at most once a minute.
        send_outcomes_every=min(timedelta(minutes=1), settings.send_outcome_after / 2),
        send_jobs=send_jobs,
        alert_rule=AlertRule.from_settings(settings),
        alert_every=settings.alert_every,
        alert_webhook=webhook,
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
        if plivo is not None:
            plivo.close()


async def _work_until_signalled(settings: Settings, database_url: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    pool = create_pool(database_url, size=WORKER_POOL_SIZE, name="worker")
    await pool.open(wait=False)
    try:
        async with background_work(settings, database_url, pool):
            await stop.wait()
            log.info("worker: stopping")
    finally:
        await pool.close()


def run_worker(settings: Settings, database_url: str) -> None:
    """Project and run scheduled jobs until SIGINT or SIGTERM (``ledger worker``)."""
    asyncio.run(_work_until_signalled(settings, database_url))
