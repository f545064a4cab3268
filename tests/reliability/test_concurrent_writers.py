"""Concurrent writers vs the catch-up runner: events that commit out of position order are
still projected, each exactly once.

Eight appenders, each on its own connection, append the events of a few hundred messages
with ``ledger.store.append`` (10 % of them twice, by different appenders), each batch inside
a transaction the appender keeps open for a random few milliseconds before committing. So a
batch often commits after batches holding later positions: a reader tailing
``position > checkpoint`` would step over it for good. Meanwhile a ``CatchUpRunner`` keeps
the views current in small batches. Once the appenders are done and the runner has caught
up, every message must be counted exactly once in both views, and the views must equal a
rebuild from scratch (``projections.replay``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

import psycopg
import pytest

from ledger.callbacks import to_event
from ledger.database import connect
from ledger.events import EventMeta, NewEvent
from ledger.settings import Settings
from ledger.store import Append, append
from tests.reliability.conftest import (
    assert_same_rows,
    message_lifecycles,
    table_snapshot,
    traffic_start,
    wait_for_projections,
)

pytestmark = pytest.mark.reliability

WRITERS = 8
MESSAGES = 400
DUPLICATE_SHARE = 0.10
#: The longest an appender keeps its transaction open after inserting, in seconds.
MAX_HOLD_SECONDS = 0.03
#: Small runner batches: many checkpoints, so many chances to step over a late commit.
RUNNER_BATCH = 25


@dataclass(frozen=True)
class Commit:
    """One appender transaction: the positions it inserted and when it committed."""

    positions: tuple[int, ...]
    committed_at: float


@dataclass
class Scenario:
    database_url: str
    messages: set[str]
    distinct_events: int
    commits: list[Commit] = field(default_factory=list)
    applied_while_writing: int = 0
    tables: tuple[str, ...] = ()

    def late_commits(self) -> int:
        """Commits that became visible after a commit holding a later position."""
        late, highest_committed = 0, 0
        for commit in sorted(self.commits, key=lambda c: c.committed_at):
            if commit.positions and min(commit.positions) < highest_committed:
                late += 1
            highest_committed = max(highest_committed, *commit.positions, 0)
        return late


def events_to_append(rng: random.Random) -> tuple[list[NewEvent], set[str], int]:
    """Every event of MESSAGES lifecycles plus some duplicates, shuffled; the messages; and
    how many distinct events there are."""
    meta = EventMeta("plivo", "v3")
    distinct = [
        to_event(tuple(params), meta=meta, timestamps_tz=UTC)
        for lifecycle in message_lifecycles(rng, MESSAGES, start=traffic_start())
        for params in lifecycle
    ]
    events = distinct + rng.choices(distinct, k=int(len(distinct) * DUPLICATE_SHARE))
    rng.shuffle(events)
    return events, {str(event.message_uuid) for event in distinct}, len(distinct)


async def appender(
    database_url: str, events: list[NewEvent], rng: random.Random, commits: list[Commit]
) -> None:
    """Append ``events`` in batches of 1-4, each held open a random while before commit."""
    async with connect(database_url) as conn:
        start = 0
        while start < len(events):
            size = rng.randint(1, 4)
            batch, start = events[start : start + size], start + size
            hold = rng.uniform(0, MAX_HOLD_SECONDS)
            while True:
                try:
                    async with conn.transaction():
                        results = await append(conn, [Append(event) for event in batch])
                        await asyncio.sleep(hold)
                    break
                except psycopg.errors.DeadlockDetected:
                    # Held-open batches sharing duplicates can wait on each other in a cycle;
                    # PostgreSQL rolls one back, and it is tried again (the service would
                    # answer 503 and Plivo retry).
                    continue
            positions = tuple(
                r.position for r in results if r.outcome == "appended" and r.position is not None
            )
            commits.append(Commit(positions, time.monotonic()))


@pytest.fixture(scope="module")
async def scenario(module_databases: Callable[[], str]) -> Scenario:
    from projections.catch_up import Batch
    from projections.registry import build_projectors
    from projections.runner import CatchUpRunner

    rng = random.Random(8)
    events, messages, distinct = events_to_append(rng)
    result = Scenario(module_databases(), messages, distinct)
    projectors = build_projectors(Settings())
    result.tables = tuple(table for projector in projectors for table in projector.tables)

    writing = True

    def applied(_name: str, batch: Batch) -> None:
        if writing:
            result.applied_while_writing += batch.events

    runner = CatchUpRunner(
        result.database_url,
        projectors,
        batch_size=RUNNER_BATCH,
        poll_interval=0.05,
        on_applied=applied,
    )
    await runner.start()
    try:
        shares = [events[n::WRITERS] for n in range(WRITERS)]
        await asyncio.gather(
            *(
                appender(result.database_url, share, random.Random(n), result.commits)
                for n, share in enumerate(shares)
            )
        )
        writing = False
        await wait_for_projections(result.database_url)
    finally:
        await runner.stop()
    return result


async def scalar(database_url: str, query: str) -> Any:
    async with connect(database_url) as conn:
        row = await (await conn.execute(query)).fetchone()
    assert row is not None
    return row[0]


def test_commits_really_landed_out_of_position_order_while_the_runner_ran(
    scenario: Scenario,
) -> None:
    assert scenario.late_commits() >= 10
    assert scenario.applied_while_writing > 0


async def test_the_ledger_holds_every_distinct_event_once(scenario: Scenario) -> None:
    assert await scalar(scenario.database_url, "SELECT count(*) FROM events") == (
        scenario.distinct_events
    )


async def test_the_status_view_counts_every_message_and_event_exactly_once(
    scenario: Scenario,
) -> None:
    url = scenario.database_url
    assert await scalar(url, "SELECT count(*) FROM message_status") == len(scenario.messages)
    assert await scalar(url, "SELECT count(DISTINCT message_uuid) FROM message_status") == len(
        scenario.messages
    )
    assert await scalar(url, "SELECT sum(event_count) FROM message_status") == (
        scenario.distinct_events
    )


async def test_the_daily_metrics_count_every_message_exactly_once(scenario: Scenario) -> None:
    url = scenario.database_url
    assert await scalar(url, "SELECT sum(messages) FROM daily_delivery_counts") == len(
        scenario.messages
    )
    assert await scalar(url, "SELECT count(*) FROM daily_delivery_facts") == len(scenario.messages)


async def test_the_views_equal_a_rebuild_from_scratch(scenario: Scenario) -> None:
    from projections.registry import build_projectors
    from projections.replay import replay

    url = scenario.database_url
    projected = {table: await table_snapshot(url, table) for table in scenario.tables}
    async with connect(url) as conn:
        for projector in build_projectors(Settings()):
            await replay(conn, projector)
    for table in scenario.tables:
        assert_same_rows(projected[table], await table_snapshot(url, table), table)
