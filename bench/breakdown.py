"""Breakdown: what the delivery-analytics view costs the projector, and how fast it answers.

1. **Fold cost at equal batch sizes.** A ledger of generated history (bench/history.py: the
   simulator's six networks in four countries and 20 senders) is folded live, batch by
   batch as the runner does (``apply_next``), by each view from scratch in turn: all of it
   2,000 events a batch, then its first 20,000 events 100 a batch. The CPU of the server's
   backend and of this process per event compares the analytics fold with the two others.
2. **Query latency.** The history is grown to 1M messages over 30 days, the analytics view
   rebuilt (``replay``), and ``GET /v1/metrics/breakdown``'s query
   (:func:`projections.breakdown.breakdown`) run over the 30 days for several groupings;
   p50/p95 per grouping and over all of them.
3. **The projector at work** (:mod:`bench.live_fold`), on views of that full ledger: real
   callbacks at 1,000/s, folded by the service's runner with each view at its own busy
   interval, without the analytics view and with it; what it adds to the projector's CPU
   per event is the target's figure.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import psutil  # type: ignore[import-untyped]
import psycopg
from psycopg import sql

from bench import history
from bench.harness import Database, Latencies, database, migrate, percentile
from bench.live_fold import LiveCost, live_cost
from bench.options import Options
from bench.report import Figure, Section, Target
from ledger.settings import Settings
from projections.analytics import LOOKUP_TABLES, lookup_fills
from projections.base import Projector
from projections.breakdown import BreakdownQuery, breakdown
from projections.catch_up import apply_next
from projections.registry import build_projectors, projector_named
from projections.replay import replay

#: 1M messages over 30 days: one every 2.592 s (history's own spacing is 0.5 s).
SPACING_MS = 2592
MESSAGES = 1_000_000
GROUPINGS = (
    "country",
    "country,carrier",
    "sender",
    "hour",
    "error_family",
    "country,carrier,sender,hour",
)
REPEATS = 20


def _spread_sql() -> str:
    """bench/history.py's query with its messages spread over 30 days."""
    old = "m * interval '500 milliseconds'"
    if old not in history.INSERT_SQL:
        raise AssertionError(f"bench/history.py changed: {old!r} is gone")
    return history.INSERT_SQL.replace(old, f"m * interval '{SPACING_MS} milliseconds'")


def _grow(db: Database, first: int, last: int) -> float:
    """Messages ``first`` to ``last - 1``, 30 days' worth in all; seconds."""
    original = history.INSERT_SQL
    history.INSERT_SQL = _spread_sql()
    try:
        return history.extend(db, seed=1, first=first, last=last)
    finally:
        history.INSERT_SQL = original


class Drained(NamedTuple):
    """One view folded live: events, wall seconds, and CPU seconds of its server backend
    (the fold runs there) and of this process (the projector's own share)."""

    events: int
    seconds: float
    backend_cpu: float
    client_cpu: float


async def _drain(
    url: str, projector: Projector, batch_size: int, most: int | None = None
) -> Drained:
    """Fold the ledger's events (the first ``most`` or so, else all) into ``projector``'s
    view live, ``batch_size`` at a time, on one connection, from scratch (a local server's
    backend is a process psutil can read)."""
    events, started, here = 0, time.perf_counter(), time.process_time()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await _empty(conn, projector)
        row = await (await conn.execute("SELECT pg_backend_pid()")).fetchone()
        assert row is not None
        backend = psutil.Process(row[0])
        before = backend.cpu_times()
        while most is None or events < most:
            batch = (await apply_next(conn, projector, batch_size=batch_size)).events
            if not batch:
                break
            events += batch
        after = backend.cpu_times()
    return Drained(
        events,
        time.perf_counter() - started,
        after.user + after.system - before.user - before.system,
        time.process_time() - here,
    )


async def _empty(conn: psycopg.AsyncConnection[Any], projector: Projector) -> None:
    """The view as before its first event: its checkpoint and its rows gone (its lookup
    tables, filled by the schema, kept)."""
    await conn.execute("DELETE FROM projection_checkpoints WHERE name = %s", (projector.name,))
    for table in projector.tables:
        if table not in LOOKUP_TABLES:
            await conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(table)))


#: (events per batch, events folded or None for all): a rebuild-like size, and the size
#: the live projector usually applies (one batch per view every ``busy_interval``, 20 ms).
BATCHES = ((2000, None), (100, 20_000))


def projector_cost(db: Database, section: Section, projectors: tuple[Projector, ...]) -> None:
    """Fold the ledger live with each view in turn, from scratch, in batches of each size of
    :data:`BATCHES`; CPU per event of each, and what the analytics view adds."""
    for batch_size, most in BATCHES:
        costs: dict[str, float] = {}
        own: dict[str, float] = {}
        for projector in projectors:
            drained = asyncio.run(_drain(db.url, projector, batch_size, most))
            events = drained.events
            costs[projector.name] = (drained.backend_cpu + drained.client_cpu) / events
            own[projector.name] = drained.client_cpu / events
            section.add(
                Figure(
                    f"{projector.name}: live fold, {events:,} events, {batch_size:,} a batch",
                    costs[projector.name] * 1e6,
                    "µs CPU/event",
                    note=f"{events / drained.seconds:,.0f} events/s wall; of the CPU, the"
                    f" server backend {drained.backend_cpu / events * 1e6:.1f} µs/event and"
                    f" the projector's own process {own[projector.name] * 1e6:.1f} µs/event",
                )
            )
        others = sum(cost for name, cost in costs.items() if name != "delivery_analytics")
        own_others = sum(cost for name, cost in own.items() if name != "delivery_analytics")
        section.add(
            Figure(
                f"delivery_analytics added to the projector's CPU per event,"
                f" {batch_size:,} a batch",
                costs["delivery_analytics"] / others * 100,
                "%",
                note="analytics view's CPU per event / (message_status +"
                " daily_delivery_metrics), the backends' CPU included, since the folds run"
                " there (the target reads the live figure below); the projector process's"
                " own CPU alone:"
                f" {own['delivery_analytics'] / own_others * 100:.0f} %",
            )
        )


#: The live measurement: callbacks a second, and for how long (quick: a third of it), in
#: rounds that alternate without and with the analytics view, so that the machine's drift
#: over the measurement falls on both alike.
LIVE_RATE = 1000
LIVE_SECONDS = 60.0
LIVE_ROUNDS = 4


def _total(costs: list[LiveCost]) -> LiveCost:
    return LiveCost(*(sum(values) for values in zip(*costs, strict=True)))


def live_projector_cost(
    db: Database, section: Section, projectors: tuple[Projector, ...], seconds: float
) -> None:
    """The projector at ``LIVE_RATE`` callbacks a second, each view at its own busy
    interval (:mod:`bench.live_fold`), without the analytics view and with it, alternating
    over ``LIVE_ROUNDS`` rounds: what the analytics view adds to the projector's CPU per
    event, in production's batch sizes."""
    without = tuple(p for p in projectors if p.name != "delivery_analytics")
    rounds: dict[tuple[Projector, ...], list[LiveCost]] = {without: [], projectors: []}
    for round_number in range(LIVE_ROUNDS):
        for n, views in enumerate(rounds):
            seed = 11 + 2 * round_number + n
            cost = live_cost(
                db.url, views, seed=seed, rate=LIVE_RATE, seconds=seconds / LIVE_ROUNDS
            )
            rounds[views].append(cost)
    for views, costs in rounds.items():
        cost = _total(costs)
        names = " + ".join(p.name for p in views)
        section.add(
            Figure(
                f"projector CPU per event, live at {LIVE_RATE:,}/s: {names}",
                cost.per_event * 1e6,
                "µs CPU/event",
                note=f"{cost.events:,} callbacks in {LIVE_ROUNDS} rounds, {cost.seconds:.1f} s;"
                f" the runner {cost.runner_cpu / cost.events * 1e6:.1f} µs/event, its server"
                f" backends {cost.backend_cpu / cost.events * 1e6:.1f} µs/event; by round "
                + ", ".join(f"{c.per_event * 1e6:.0f}" for c in costs),
            )
        )
    base, full = (_total(costs) for costs in rounds.values())
    each = [
        f"{(w.per_event / b.per_event - 1) * 100:+.0f} %"
        for b, w in zip(rounds[without], rounds[projectors], strict=True)
    ]
    section.add(
        Figure(
            f"delivery_analytics added to the projector's CPU per event, live at {LIVE_RATE:,}/s",
            (full.per_event / base.per_event - 1) * 100,
            "%",
            target=Target("value", "<=", 15, "%"),
            note="issue 11's target as it names it: the projector (runner and backends) with"
            " the analytics view against without it, each view batching at its own busy"
            " interval as in production; the equal-batch figures above compare the folds"
            f" alone; by round {', '.join(each)}",
        )
    )


async def _queries(url: str, start: datetime, end: datetime) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {by: [] for by in GROUPINGS}
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for _ in range(REPEATS):
            for by in GROUPINGS:
                query = BreakdownQuery(start=start, end=end, by=tuple(by.split(",")))  # type: ignore[arg-type]
                started = time.perf_counter()
                await breakdown(conn, query)
                timings[by].append(time.perf_counter() - started)
    return timings


async def _rebuild(url: str, projector: Projector) -> float:
    started = time.perf_counter()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await replay(conn, projector)
    return time.perf_counter() - started


def run(opts: Options) -> Section:
    """Both measurements on one database (see the module docstring)."""
    section = Section("Breakdown: analytics projector cost and query latency")
    messages = MESSAGES // 10 if opts.quick else MESSAGES
    projectors = build_projectors(Settings())
    with database(opts.database_url, "breakdown") as db:
        migrate(db)
        with db.connect() as conn:  # as the view's first build would
            for fill in lookup_fills():
                conn.execute(fill)
        cost_messages = messages // 10 if opts.quick else 70_000
        _grow(db, 0, cost_messages)
        projector_cost(db, section, projectors)
        print(f"  generating {messages:,} messages over 30 days", flush=True)
        _grow(db, cost_messages, messages)
        analytics = projector_named("delivery_analytics", projectors)
        rebuilt = asyncio.run(_rebuild(db.url, analytics))
        section.add(Figure(f"replay delivery_analytics, {messages:,} messages", rebuilt, "s"))
        with db.connect() as conn:
            row = conn.execute(
                "SELECT count(*), min(hour), max(hour), (SELECT count(*) FROM analytics_days)"
                " FROM analytics_counts"
            ).fetchone()
        assert row is not None
        cells, first, last, days = row
        section.note(f"analytics_counts: {cells:,} cells from {first} to {last}; by day {days:,}")
        start = datetime(2025, 6, 1, tzinfo=UTC)
        timings = asyncio.run(_queries(db.url, start, start + timedelta(days=30)))
        # Last, on views of the full ledger, as a projector runs in production: the other
        # views rebuilt first, so that the runner starts current.
        for projector in projectors:
            if projector is not analytics:
                asyncio.run(_rebuild(db.url, projector))
        live_projector_cost(
            db, section, projectors, LIVE_SECONDS / 3 if opts.quick else LIVE_SECONDS
        )
    every: list[float] = []
    for by, seconds in timings.items():
        every.extend(seconds)
        section.add(
            Figure(
                f"breakdown by {by}, 30 days",
                percentile(seconds, 95) * 1000,
                "ms p95",
                note=str(Latencies.of(seconds)),
            )
        )
    section.add(
        Figure(
            f"breakdown, every grouping, 30 days, {messages:,} messages",
            percentile(every, 95) * 1000,
            "ms p95",
            target=Target("value", "<=", 200, "ms"),
            note=f"{len(every)} queries, in-process (psycopg), no HTTP",
        )
    )
    return section
