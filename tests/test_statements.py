"""The fold statements: one read of each event for every view a statement folds."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

from projections import fold
from projections.catch_up import apply_next
from projections.registry import PROJECTORS, projector_named
from projections.statements import build_statements_for, live_statement, statements_for


def test_a_rebuild_of_every_view_reads_each_payload_field_once() -> None:
    chunk = build_statements_for(PROJECTORS).chunk

    for key in (*fold.PAYLOAD_FIELDS, "MCC", "MNC", "PowerpackUUID"):
        assert chunk.count(f"payload ->> '{key}'") == 1, key


def test_a_view_folds_only_the_columns_it_reads() -> None:
    daily = next(p for p in PROJECTORS if p.name == "daily_delivery_metrics")

    statement = statements_for(daily).next

    assert "'MCC'" not in statement
    assert '"parent_message_uuid"' not in statement


def test_views_defining_a_fold_column_differently_are_refused() -> None:
    units = fold.Reads((fold.UNITS,))
    other = fold.Reads((fold.UNITS._replace(value=sql.Identifier("total_amount")),))

    with pytest.raises(ValueError, match="'units' differently"):
        fold.folded_for(sql.Identifier("batch"), [units, other])


async def test_a_live_statement_has_its_values_written_in(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    analytics = projector_named("delivery_analytics", PROJECTORS)

    statement = live_statement(conn, analytics, 250)

    assert "%(" not in statement
    assert "LIMIT 250" in statement
    assert f"= {analytics.version}" in statement
    assert "'UTC'" in statement


async def test_a_connection_plans_a_live_view_once(conn: psycopg.AsyncConnection[Any]) -> None:
    analytics = projector_named("delivery_analytics", PROJECTORS)

    for _ in range(8):
        await apply_next(conn, analytics, batch_size=100)

    cursor = await conn.execute(
        "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = %s",
        (live_statement(conn, analytics, 100),),
    )
    plans = [(generic > 0, custom) for generic, custom in await cursor.fetchall()]
    assert plans == [(True, 0)]
