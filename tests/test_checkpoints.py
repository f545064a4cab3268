"""The idle poll: whether events wait after a view's checkpoint, asked cheaply."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import psycopg

from ledger.events import STATUS_REPORTED, EventMeta, NewEvent
from ledger.store import Append, append
from projections.checkpoints import PENDING, pending
from projections.registry import PROJECTORS
from tests.conftest import ledger_head

Conn = psycopg.AsyncConnection[Any]


def _appends(count: int) -> list[Append]:
    return [
        Append(
            NewEvent(
                message_uuid=uuid4(),
                event_type=STATUS_REPORTED,
                status="sent",
                occurred_at=datetime.now(UTC),
                dedup_key=os.urandom(16),
                payload={"Status": "sent"},
                meta=EventMeta("plivo", "unsigned"),
            )
        )
        for _ in range(count)
    ]


def _relations_scanned(plan: dict[str, Any]) -> set[str]:
    scanned = {plan["Relation Name"]} if plan["Node Type"] == "Seq Scan" else set()
    for child in plan.get("Plans", []):
        scanned |= _relations_scanned(child)
    return scanned


async def test_an_idle_poll_probes_the_fence_index_instead_of_scanning_the_ledger(
    conn: Conn,
) -> None:
    status = PROJECTORS[0]
    await append(conn, _appends(5_000))
    # The view caught up with the ledger.
    head = await ledger_head(conn)
    await conn.execute(
        "INSERT INTO projection_checkpoints (name, transaction_id, position, version)"
        " VALUES (%s, %s::text::xid8, %s, %s) ON CONFLICT (name) DO UPDATE"
        " SET transaction_id = excluded.transaction_id, position = excluded.position",
        (status.name, str(head.transaction_id), head.position, status.version),
    )
    await conn.execute("ANALYZE events")

    cursor = await conn.execute(f"EXPLAIN (FORMAT JSON) {PENDING}", (status.name,))
    row = await cursor.fetchone()
    assert row is not None
    [explained] = row[0] if isinstance(row[0], list) else json.loads(row[0])

    assert "events" not in _relations_scanned(explained["Plan"])
    assert not await pending(conn, status)
    await append(conn, _appends(1))
    assert await pending(conn, status)
