"""Periodic jobs on APScheduler 3.x: the expiry sweep, the send-outcome check, reconciliation
and resends, the delivery-drop alerts and their webhook's outbox, and a catch-up tick as a
safety net.

APScheduler 3 does not coordinate processes, and every process that runs ``ledger serve`` or
``ledger worker`` schedules the same jobs. So each run first claims its period in Postgres
(:meth:`ScheduledJobs.claim`): a transaction-scoped advisory lock makes a racing process skip
instead of wait, and the ``scheduled_job_runs`` row makes a process whose clock fires later in
the same period skip too. Each job's effect is idempotent besides, so a run that crashes
after its claim just leaves the work to the next period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, timedelta
from typing import Any, Final

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from psycopg_pool import AsyncConnectionPool

from ledger.durations import format_duration
from ledger.sends import mark_unknown_outcomes
from projections.alert_deliveries import deliver_due, enqueue
from projections.alerts import AlertRule, AlertWebhook, alert_events, evaluate
from projections.base import Projector
from projections.catch_up import DEFAULT_BATCH_SIZE, catch_up_unclaimed
from projections.checkpoints import VersionMismatch
from projections.expiry import expire_stale
from projections.locks import Lock, try_advisory_lock
from projections.send_jobs import SendJobs

log = logging.getLogger(__name__)

EXPIRE_JOB: Final = "expire"
CATCH_UP_JOB: Final = "catch_up"
SEND_OUTCOMES_JOB: Final = "send_outcomes"
RECONCILE_JOB: Final = "reconcile"
RESEND_JOB: Final = "resend"
#: Reconciliation and resends run once a minute: the reconciliation's rate limit is per
#: minute (see projections.send_jobs).
SEND_JOBS_EVERY: Final = timedelta(minutes=1)
ALERT_JOB: Final = "alerts"
ALERT_DELIVERIES_JOB: Final = "alert_deliveries"
#: How often the alert webhook's outbox is tried (a failed delivery waits longer: see
#: projections.alert_deliveries).
ALERT_DELIVERIES_EVERY: Final = timedelta(minutes=1)


class ScheduledJobs:
    """The periodic jobs, each run at most once per period across every process."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        projectors: Sequence[Projector],
        *,
        expire_after: timedelta,
        system_key: bytes,
        expire_every: timedelta = timedelta(minutes=5),
        expire_limit: int = 5000,
        catch_up_every: timedelta = timedelta(seconds=30),
        catch_up_batches: int = 10,
        batch_size: int = DEFAULT_BATCH_SIZE,
        send_outcome_after: timedelta = timedelta(minutes=2),
        send_outcomes_every: timedelta = timedelta(minutes=1),
        send_jobs: SendJobs | None = None,
        alert_rule: AlertRule | None = None,
        alert_every: timedelta = timedelta(minutes=15),
        alert_webhook: AlertWebhook | None = None,
    ) -> None:
        """``expire_after`` is ``Settings.expire_after`` and ``system_key`` signs the expiry
        events (:mod:`ledger.system_events`); ``expire_limit`` bounds one sweep and
        ``catch_up_batches`` one tick, so that no run can grow without bound.
        ``send_outcome_after`` is ``LEDGER_SEND_OUTCOME_AFTER``: a send request with no
        outcome for that long gets ``message.send_outcome_unknown``. ``send_jobs``, when
        sending is configured, adds reconciliation with Plivo and (if switched on) resends.
        With an ``alert_rule``, the delivery-drop alerts are evaluated every ``alert_every``
        and their changes posted to ``alert_webhook`` if there is one."""
        self._pool = pool
        self._projectors = tuple(projectors)
        self._expire_after = expire_after
        self._system_key = system_key
        self._expire_every = expire_every
        self._expire_limit = expire_limit
        self._catch_up_every = catch_up_every
        self._catch_up_batches = catch_up_batches
        self._batch_size = batch_size
        self._send_outcome_after = send_outcome_after
        self._send_outcomes_every = send_outcomes_every
        self._send_jobs = send_jobs
        self._alert_rule = alert_rule
        self._alert_every = alert_every
        self._alert_webhook = alert_webhook
        self._scheduler: AsyncIOScheduler | None = None
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self) -> None:
        """Schedule every job on an ``AsyncIOScheduler`` in the running event loop.

        Missed runs coalesce into one, and a job never overlaps itself in one process.
        """
        if self._scheduler is not None:
            raise RuntimeError("the scheduled jobs are already started")
        scheduler = AsyncIOScheduler(timezone=UTC)
        jobs: list[tuple[str, Callable[[], Awaitable[bool]], timedelta]] = [
            (EXPIRE_JOB, self.expire, self._expire_every),
            (CATCH_UP_JOB, self.catch_up, self._catch_up_every),
            (SEND_OUTCOMES_JOB, self.send_outcomes, self._send_outcomes_every),
        ]
        if self._send_jobs is not None:
            jobs.append((RECONCILE_JOB, self.reconcile, SEND_JOBS_EVERY))
            if self._send_jobs.resends:
                jobs.append((RESEND_JOB, self.resend, SEND_JOBS_EVERY))
        if self._alert_rule is not None:
            jobs.append((ALERT_JOB, self.alerts, self._alert_every))
        if self._alert_webhook is not None:
            jobs.append((ALERT_DELIVERIES_JOB, self.alert_deliveries, ALERT_DELIVERIES_EVERY))
        for job, function, every in jobs:
            scheduler.add_job(
                function,
                IntervalTrigger(seconds=every.total_seconds(), timezone=UTC),
                id=f"ledger-{job}",
                name=f"ledger {job}",
                coalesce=True,
                max_instances=1,
                misfire_grace_time=max(1, int(every.total_seconds())),
            )
        scheduler.start()
        self._scheduler = scheduler

    async def stop(self, grace: float = 10.0) -> None:
        """Stop scheduling, let runs in flight finish (up to ``grace`` seconds), shut down.

        APScheduler's own shutdown cancels coroutine jobs in flight, and cancelling a task
        parked in psycopg's wait can hang; a run still going after ``grace`` is cancelled
        anyway, which is safe because every job is transactional and idempotent.
        """
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is None:
            return
        scheduler.pause()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace)
        scheduler.shutdown(wait=False)
        await asyncio.sleep(0)  # the shutdown is scheduled on the loop: let it run

    @contextlib.contextmanager
    def _running(self) -> Iterator[None]:
        self._in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    async def claim(self, job: str, period: timedelta) -> bool:
        """Claim this period's run of ``job`` for this process; False if another has it.

        Runs less than half a period apart count as the same period, which absorbs the
        drift between processes' schedules.
        """
        async with self._pool.connection() as conn, conn.transaction():
            if not await try_advisory_lock(conn, Lock.JOB, job, scope="transaction"):
                return False
            cursor = await conn.execute(
                "INSERT INTO scheduled_job_runs (job, last_run_at) VALUES (%s, now())"
                " ON CONFLICT (job) DO UPDATE SET last_run_at = now()"
                " WHERE scheduled_job_runs.last_run_at <= now() - %s::interval"
                " RETURNING 1",
                (job, period / 2),
            )
            return await cursor.fetchone() is not None

    async def expire(self) -> bool:
        """Expire stale messages (see :mod:`projections.expiry`); whether this process ran it."""
        with self._running():
            if not await self.claim(EXPIRE_JOB, self._expire_every):
                return False
            async with self._pool.connection() as conn:
                await expire_stale(
                    conn,
                    expire_after=self._expire_after,
                    system_key=self._system_key,
                    limit=self._expire_limit,
                )
            return True

    async def send_outcomes(self) -> bool:
        """Mark send requests left without an outcome (see
        :func:`ledger.sends.mark_unknown_outcomes`); whether this process ran it."""
        with self._running():
            if not await self.claim(SEND_OUTCOMES_JOB, self._send_outcomes_every):
                return False
            async with self._pool.connection() as conn:
                marked = await mark_unknown_outcomes(
                    conn, after=self._send_outcome_after, key=self._system_key
                )
            if marked:
                log.warning(
                    "%d send requests have no recorded outcome after %s: marked unknown",
                    marked,
                    format_duration(self._send_outcome_after),
                )
            return True

    async def reconcile(self) -> bool:
        """Look up messages whose callbacks stopped at Plivo's Message API (see
        :mod:`projections.send_jobs`); whether this process ran it."""
        with self._running():
            if self._send_jobs is None or not await self.claim(RECONCILE_JOB, SEND_JOBS_EVERY):
                return False
            await self._send_jobs.reconcile()
            return True

    async def resend(self) -> bool:
        """Send again the failures due a resend (see :mod:`projections.send_jobs`); whether
        this process ran it."""
        with self._running():
            if self._send_jobs is None or not await self.claim(RESEND_JOB, SEND_JOBS_EVERY):
                return False
            await self._send_jobs.resend()
            return True

    async def alerts(self) -> bool:
        """Evaluate the delivery-drop alerts (see :mod:`projections.alerts`) and post their
        changes to the webhook; whether this process ran it. The table is replaced, and the
        webhook's deliveries added to its outbox, in one transaction before anything is
        posted: a failing receiver never holds the alerts back, and misses nothing (the
        deliveries job tries again every minute)."""
        with self._running():
            if self._alert_rule is None or not await self.claim(ALERT_JOB, self._alert_every):
                return False
            async with self._pool.connection() as conn, conn.transaction():
                evaluation = await evaluate(conn, self._alert_rule)
                if self._alert_webhook is not None:
                    await enqueue(conn, alert_events(evaluation))
            if evaluation.started or evaluation.resolved:
                log.warning(
                    "delivery alerts: %d firing (%d new, %d resolved)",
                    len(evaluation.firing),
                    len(evaluation.started),
                    len(evaluation.resolved),
                )
            if self._alert_webhook is not None and (evaluation.started or evaluation.resolved):
                await deliver_due(self._pool, self._alert_webhook)
            return True

    async def alert_deliveries(self) -> bool:
        """Post the alert webhook's deliveries that are due (see
        :mod:`projections.alert_deliveries`); whether this process ran it."""
        with self._running():
            if self._alert_webhook is None or not await self.claim(
                ALERT_DELIVERIES_JOB, ALERT_DELIVERIES_EVERY
            ):
                return False
            await deliver_due(self._pool, self._alert_webhook)
            return True

    async def catch_up(self) -> bool:
        """Apply pending events to views no runner holds; whether this process ran it.

        Runners poll every second, so this finds work only when no runner is alive.
        """
        with self._running():
            if not await self.claim(CATCH_UP_JOB, self._catch_up_every):
                return False
            for projector in self._projectors:
                await self._catch_up(projector)
            return True

    async def _catch_up(self, projector: Projector) -> None:
        try:
            async with self._pool.connection() as conn:
                applied = await catch_up_unclaimed(
                    conn, projector, batch_size=self._batch_size, max_batches=self._catch_up_batches
                )
        except VersionMismatch as exc:
            log.info("catch-up tick: %s; leaving it to the runner's rebuild", exc)
            return
        if applied:
            log.warning(
                "catch-up tick applied %d events to %s: no runner holds it", applied, projector.name
            )
