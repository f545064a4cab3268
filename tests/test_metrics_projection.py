"""The daily_delivery_metrics view: each message counted once, on its first day, at its
current status, however late or out of order its callbacks arrive."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.settings import Settings
from projections.fold import LATENCY_BOUNDS, NOT_DELIVERED
from projections.metrics import DailyMetricsProjector
from projections.registry import build_projectors, projector_named
from tests.test_status_projection import (
    T0,
    Conn,
    assert_build_matches_apply,
    callback,
    check_order_independence,
    project,
    property_settings,
)

DAY_1, DAY_2 = date(2026, 3, 1), date(2026, 3, 2)
BEFORE_MIDNIGHT = T0  # 23:55 UTC on DAY_1
AFTER_MIDNIGHT = T0 + timedelta(minutes=10)  # 00:05 UTC on DAY_2


async def cells(conn: Conn) -> list[tuple[Any, ...]]:
    """The cube: (day, status, error code, latency bucket, messages), zero cells excluded by
    the projector itself."""
    cursor = await conn.execute(
        "SELECT day, status, error_code, latency_bucket, messages FROM daily_delivery_counts"
        " ORDER BY day, status, error_code, latency_bucket"
    )
    return await cursor.fetchall()


def bucket_of(seconds: float) -> int:
    """The expected latency bucket of a delivery after ``seconds``."""
    return sum(1 for bound in LATENCY_BOUNDS if bound <= seconds)


@property_settings
@given(data=st.data())
async def test_any_order_and_batching_of_events_gives_the_same_counts(
    conn: Conn, data: st.DataObject
) -> None:
    await check_order_independence(conn, DailyMetricsProjector(), data)


async def test_a_status_change_moves_the_message_between_counters(conn: Conn) -> None:
    projector, message = DailyMetricsProjector(), uuid4()
    await project(conn, projector, callback(message, "queued", at=BEFORE_MIDNIGHT, sequence=1))
    assert await cells(conn) == [(DAY_1, "queued", "", NOT_DELIVERED, 1)]
    await project(
        conn,
        projector,
        callback(message, "undelivered", at=BEFORE_MIDNIGHT, sequence=3, error_code="30"),
    )
    assert await cells(conn) == [(DAY_1, "undelivered", "30", NOT_DELIVERED, 1)]


async def test_other_messages_in_the_same_cell_stay_counted(conn: Conn) -> None:
    projector, moving, staying = DailyMetricsProjector(), uuid4(), uuid4()
    await project(
        conn,
        projector,
        callback(moving, "sent", at=BEFORE_MIDNIGHT, sequence=2),
        callback(staying, "sent", at=BEFORE_MIDNIGHT, sequence=2),
    )
    await project(conn, projector, callback(moving, "failed", sequence=3, error_code="420"))
    assert await cells(conn) == [
        (DAY_1, "failed", "420", NOT_DELIVERED, 1),
        (DAY_1, "sent", "", NOT_DELIVERED, 1),
    ]


async def test_a_late_callback_from_an_earlier_day_moves_the_message_to_that_day(
    conn: Conn,
) -> None:
    projector, message = DailyMetricsProjector(), uuid4()
    await project(conn, projector, callback(message, "sent", at=AFTER_MIDNIGHT, sequence=2))
    assert await cells(conn) == [(DAY_2, "sent", "", NOT_DELIVERED, 1)]
    await project(conn, projector, callback(message, "queued", at=BEFORE_MIDNIGHT, sequence=1))
    assert await cells(conn) == [(DAY_1, "sent", "", NOT_DELIVERED, 1)]


async def test_a_callback_arriving_days_later_corrects_the_first_day(conn: Conn) -> None:
    projector, message = DailyMetricsProjector(), uuid4()
    await project(conn, projector, callback(message, "sent", at=BEFORE_MIDNIGHT, sequence=2))
    three_days_later = BEFORE_MIDNIGHT + timedelta(days=3)
    await project(conn, projector, callback(message, "delivered", at=three_days_later, sequence=3))
    assert await cells(conn) == [
        (DAY_1, "delivered", "", bucket_of(timedelta(days=3).total_seconds()), 1)
    ]


async def test_the_day_boundary_follows_the_configured_zone(conn: Conn) -> None:
    message = uuid4()
    # 23:55 UTC on 1 March is 05:25 on 2 March in Kolkata (UTC+05:30).
    await project(
        conn,
        DailyMetricsProjector(timezone="Asia/Kolkata"),
        callback(message, "queued", at=BEFORE_MIDNIGHT, sequence=1),
    )
    assert [cell[0] for cell in await cells(conn)] == [DAY_2]


async def test_the_time_to_deliver_is_counted_from_the_first_event(conn: Conn) -> None:
    projector, message = DailyMetricsProjector(), uuid4()
    await project(
        conn,
        projector,
        callback(message, "delivered", at=BEFORE_MIDNIGHT + timedelta(seconds=14), sequence=3),
        callback(message, "queued", at=BEFORE_MIDNIGHT, sequence=1),
    )
    assert await cells(conn) == [(DAY_1, "delivered", "", bucket_of(14), 1)]
    assert LATENCY_BOUNDS[bucket_of(14) - 1] <= 14 < LATENCY_BOUNDS[bucket_of(14)]


async def test_units_and_amounts_are_summed_exactly_at_their_final_values(conn: Conn) -> None:
    projector = DailyMetricsProjector()
    for units, amount in (("1", "0.0025"), ("3", "0.0075"), ("2", "0.00500")):
        message = uuid4()
        await project(conn, projector, callback(message, "queued", at=T0, sequence=1, units=units))
        await project(
            conn,
            projector,
            callback(message, "sent", at=T0, sequence=2, units=units, amount=amount),
        )
    cursor = await conn.execute("SELECT messages, units, total_amount FROM daily_delivery_counts")
    assert await cursor.fetchall() == [(3, 6, Decimal("0.015"))]


async def test_build_gives_exactly_what_incremental_apply_gives(conn: Conn) -> None:
    projector = DailyMetricsProjector(timezone="America/New_York")
    for index in range(15):
        message = uuid4()
        at = T0 + timedelta(hours=7 * index)
        await project(conn, projector, callback(message, "sent", at=at, sequence=2))
        outcome = ["delivered", "undelivered", "failed", "read", "sent"][index % 5]
        await project(
            conn,
            projector,
            callback(message, outcome, at=at + timedelta(seconds=index**3), sequence=3),
            callback(message, "queued", at=at - timedelta(hours=index % 4), sequence=1),
        )
    await assert_build_matches_apply(conn, projector)


def test_the_version_changes_with_the_zone_so_the_view_is_rebuilt() -> None:
    utc, kolkata = DailyMetricsProjector(), DailyMetricsProjector(timezone="Asia/Kolkata")
    assert utc.version != kolkata.version
    assert utc.version == DailyMetricsProjector(timezone="UTC").version


def test_an_unknown_zone_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="Mars/Olympus"):
        DailyMetricsProjector(timezone="Mars/Olympus")


def test_projectors_built_from_settings_use_the_configured_zone() -> None:
    projectors = build_projectors(Settings(timezone="Asia/Kolkata"))
    metrics = projector_named("daily_delivery_metrics", projectors)
    assert isinstance(metrics, DailyMetricsProjector)
    assert metrics.timezone == "Asia/Kolkata"
