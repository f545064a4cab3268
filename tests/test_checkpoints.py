"""The idle poll: whether events wait after a view's checkpoint, asked cheaply."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from ledger.store import append
from projections.checkpoints import PENDING, lock_checkpoint, pending, save_checkpoint
from projections.registry import PROJECTORS
from tests.conftest import ledger_head
from tests.test_runner import new_event

Conn = psycopg.AsyncConnection[Any]


def _relations_scanned(plan: dict[str, Any]) -> set[str]:
    scanned = {plan["Relation Name"]} if plan["Node Type"] == "Seq Scan" else set()
    for child in plan.get("Plans", []):
        scanned |= _relations_scanned(child)
    return scanned


async def test_an_idle_poll_probes_the_fence_index_instead_of_scanning_the_ledger(
    conn: Conn,
) -> None:
    status = PROJECTORS[0]
    await append(conn, [new_event() for _ in range(5_000)])
    # The view caught up with the ledger.
    async with conn.transaction():
        await lock_checkpoint(conn, status)
        await save_checkpoint(conn, status.name, await ledger_head(conn))
    await conn.execute("ANALYZE events")

    cursor = await conn.execute(f"EXPLAIN (FORMAT JSON) {PENDING}", (status.name,))
    row = await cursor.fetchone()
    assert row is not None
    [explained] = row[0] if isinstance(row[0], list) else json.loads(row[0])

    assert "events" not in _relations_scanned(explained["Plan"])
    assert not await pending(conn, status)
    await append(conn, [new_event()])
    assert await pending(conn, status)
