"""The projector at work: its CPU per event while callbacks arrive at a steady rate.

A child process appends real callbacks (``bench.traffic``: signed lifecycles, shuffled as
Plivo's retries and the network mix them) at a fixed rate, in small batches and with the
ledger's debounced notification, as the HTTP workers do. This process runs the projectors
with the service's own runner (:class:`~projections.runner.CatchUpRunner`), each view at its
own busy interval, so each batch is the size it is in production. The CPU of this process
(the runner) and of the runner's server backends (the folds run there), per event fed, is
the projector's cost; run with and without a view, the difference is what that view adds.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Sequence
from typing import NamedTuple

import psutil  # type: ignore[import-untyped]

from bench.harness import CpuMeter
from bench.traffic import signed_callbacks
from ledger.callbacks import parse_form, to_event
from ledger.database import connect
from ledger.events import EventMeta
from ledger.settings import Settings
from ledger.store import Append, append, notify_readers
from projections.base import Projector
from projections.progress import projector_lag
from projections.runner import CatchUpRunner

#: Appends per second the child makes, each one batch of a tick's events.
_TICKS_PER_SECOND = 100
#: The child notifies at most this often, as the group committer does.
_NOTIFY_EVERY = 5
_APPLICATION = "bench-live-fold"


class LiveCost(NamedTuple):
    """Events fed and folded by every view, and the CPU seconds spent folding them."""

    events: int
    seconds: float
    runner_cpu: float
    backend_cpu: float

    @property
    def per_event(self) -> float:
        """CPU seconds per event, the runner's and its backends' together."""
        return (self.runner_cpu + self.backend_cpu) / self.events


def _feed(url: str, seed: int, rate: int, count: int) -> None:
    """Append ``count`` callbacks at ``rate`` a second (the child process's body)."""
    settings = Settings()
    events = [
        to_event(
            parse_form(callback.body),
            meta=EventMeta("plivo", "unsigned"),
            timestamps_tz=settings.plivo_zone,
        )
        for callback in signed_callbacks(count, seed=seed)[:count]
    ]
    per_tick = max(1, rate // _TICKS_PER_SECOND)

    async def run() -> None:
        async with connect(url) as conn:
            started = time.perf_counter()
            for tick, first in enumerate(range(0, len(events), per_tick)):
                await append(conn, [Append(e, None) for e in events[first : first + per_tick]])
                if tick % _NOTIFY_EVERY == 0:
                    await notify_readers(conn)
                due = started + (tick + 1) / _TICKS_PER_SECOND
                await asyncio.sleep(max(0.0, due - time.perf_counter()))

    asyncio.run(run())


async def _caught_up(url: str, projectors: Sequence[Projector], within: float = 300.0) -> None:
    names = [p.name for p in projectors]
    deadline = time.monotonic() + within
    async with connect(url) as conn:
        while time.monotonic() < deadline:
            if not any(lag.events_behind for lag in await projector_lag(conn, names)):
                return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the views did not catch up with the ledger within {within:g} s")


async def _backends(url: str) -> list[psutil.Process]:
    async with connect(url) as conn:
        cursor = await conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (_APPLICATION,)
        )
        return [psutil.Process(pid) for (pid,) in await cursor.fetchall()]


async def _measure(
    url: str, projectors: Sequence[Projector], *, seed: int, rate: int, count: int
) -> LiveCost:
    runner = CatchUpRunner(url, projectors, application_name=_APPLICATION)
    await runner.start()
    try:
        await _caught_up(url, projectors)
        backends = await _backends(url)
        meter = CpuMeter({"runner": lambda: [psutil.Process()], "backends": lambda: backends})
        meter.start()
        feeder = multiprocessing.get_context("spawn").Process(
            target=_feed, args=(url, seed, rate, count)
        )
        feeder.start()
        await asyncio.get_running_loop().run_in_executor(None, feeder.join)
        await _caught_up(url, projectors)
        used = meter.stop()
    finally:
        await runner.stop()
    if feeder.exitcode != 0:
        raise RuntimeError(f"the feeding process failed (exit status {feeder.exitcode})")
    return LiveCost(count, used["wall"], used["runner"], used["backends"])


def live_cost(
    url: str, projectors: Sequence[Projector], *, seed: int, rate: int, seconds: float
) -> LiveCost:
    """The projector's CPU over ``seconds`` of callbacks at ``rate`` a second (new ones, from
    ``seed``), folded into ``projectors``' views, which are first brought up to date."""
    count = int(rate * seconds)
    signed_callbacks(count, seed=seed)  # signed and cached now, not while measuring
    return asyncio.run(_measure(url, projectors, seed=seed, rate=rate, count=count))
