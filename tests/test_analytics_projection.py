"""The delivery_analytics view: each message counted once, in its current cell of (hour,
country, carrier, sender, tag, status, error family), with both latency histograms."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg import sql

from ledger.events import MESSAGE_SUBMITTED, NewEvent
from ledger.settings import Settings
from projections.analytics import (
    COUNTS,
    LATENCY_BOUNDS,
    DeliveryAnalyticsProjector,
    bucket_columns,
)
from projections.networks import DATA_VERSION, network_rows, number_prefix_rows
from projections.registry import build_projectors, projector_named
from tests.test_status_projection import (
    Conn,
    assert_build_matches_apply,
    callback,
    check_order_independence,
    project,
    property_settings,
    system_event,
)

T0 = datetime(2026, 3, 1, 10, 58, tzinfo=UTC)
#: The projector with default settings (hours in UTC, tag key "campaign").
analytics = DeliveryAnalyticsProjector()
HOUR_10, HOUR_11 = datetime(2026, 3, 1, 10, tzinfo=UTC), datetime(2026, 3, 1, 11, tzinfo=UTC)


def reported(
    message: UUID,
    status: str,
    *,
    at: datetime,
    sequence: int,
    mcc: str = "",
    mnc: str = "",
    error_code: str = "",
    recipient: str = "919876543210",
    powerpack: str = "",
    amount: str = "0.00000",
) -> NewEvent:
    """A callback with the analytics fields (MCC, MNC, PowerpackUUID)."""
    event = callback(
        message,
        status,
        at=at,
        sequence=sequence,
        error_code=error_code,
        recipient=recipient,
        amount=amount,
    )
    extra = {"MCC": mcc, "MNC": mnc, "PowerpackUUID": powerpack}
    return msgspec.structs.replace(event, payload={**event.payload, **extra})


def submitted(message: UUID, *, at: datetime, **tags: str) -> NewEvent:
    """Our own ``message.submitted`` event, with tags stored as the send path stores them."""
    event = system_event(message, MESSAGE_SUBMITTED, at=at)
    tagged: dict[str, str | list[str]] = {f"tag.{key}": value for key, value in tags.items()}
    return msgspec.structs.replace(event, payload=tagged)


async def cells(conn: Conn) -> list[tuple[Any, ...]]:
    """(hour, country, carrier, sender, tag, status, error family, messages) of every cell."""
    cursor = await conn.execute(
        "SELECT hour, country, carrier, sender, tag, status, error_family, messages"
        " FROM analytics_counts ORDER BY 1, 2, 3, 4, 5, 6, 7"
    )
    return await cursor.fetchall()


async def histogram(conn: Conn, stage: str) -> list[int]:
    names = sql.SQL(", ").join(
        sql.SQL("sum({})::int").format(sql.Identifier(n)) for n in bucket_columns(stage)
    )
    cursor = await conn.execute(sql.SQL("SELECT {} FROM {}").format(names, sql.Identifier(COUNTS)))
    row = await cursor.fetchone()
    assert row is not None
    return list(row)


def bucket_of(seconds: float) -> int:
    return sum(1 for bound in LATENCY_BOUNDS if bound <= seconds)


@property_settings
@given(data=st.data())
async def test_any_order_and_batching_of_events_gives_the_same_cube(
    conn: Conn, data: st.DataObject
) -> None:
    await check_order_independence(conn, DeliveryAnalyticsProjector(), data)


async def test_a_message_counts_once_in_its_current_cell_with_country_and_carrier(
    conn: Conn,
) -> None:
    message = uuid4()
    await project(conn, analytics, reported(message, "queued", at=T0, sequence=1))
    # No MCC on queued: the country comes from the recipient's number, no carrier yet.
    assert await cells(conn) == [(HOUR_10, "IN", "", "14155550100", "", "queued", "", 1)]
    await project(
        conn,
        analytics,
        reported(message, "sent", at=T0 + timedelta(seconds=1), sequence=2, mcc="405", mnc="803"),
    )
    await project(
        conn,
        analytics,
        reported(
            message, "delivered", at=T0 + timedelta(seconds=9), sequence=3, mcc="405", mnc="803"
        ),
    )
    assert await cells(conn) == [(HOUR_10, "IN", "AIRCEL", "14155550100", "", "delivered", "", 1)]


async def test_a_late_callback_with_an_earlier_time_moves_the_message_to_its_first_hour(
    conn: Conn,
) -> None:
    message = uuid4()
    await project(
        conn, analytics, reported(message, "delivered", at=T0 + timedelta(minutes=5), sequence=3)
    )
    assert [cell[0] for cell in await cells(conn)] == [HOUR_11]
    await project(conn, analytics, reported(message, "queued", at=T0, sequence=1))
    assert [(cell[0], cell[5]) for cell in await cells(conn)] == [(HOUR_10, "delivered")]


async def test_error_codes_fall_into_their_families(conn: Conn) -> None:
    for code in ("20", "30", "50", "100", "200", "900", "420", "1000", "7777"):
        await project(
            conn, analytics, reported(uuid4(), "failed", at=T0, sequence=2, error_code=code)
        )
    families = {cell[6]: cell[7] for cell in await cells(conn)}
    assert families == {
        "temporary": 1,
        "content": 1,
        "number": 1,
        "carrier": 1,
        "compliance": 1,
        "credit": 1,
        "expiry": 1,
        "unknown": 2,
    }


async def test_the_sender_is_the_powerpack_when_there_is_one(conn: Conn) -> None:
    pack = str(uuid4())
    await project(conn, analytics, reported(uuid4(), "queued", at=T0, sequence=1, powerpack=pack))
    assert [cell[3] for cell in await cells(conn)] == [pack]


async def test_the_tag_comes_from_the_submitted_event_of_the_configured_key(conn: Conn) -> None:
    message = uuid4()
    await project(
        conn,
        analytics,
        submitted(message, at=T0 - timedelta(seconds=1), campaign="black-friday", team="growth"),
        reported(message, "queued", at=T0, sequence=1),
    )
    assert [cell[4] for cell in await cells(conn)] == ["black-friday"]


async def test_the_country_of_a_number_without_mcc_follows_its_area_code(conn: Conn) -> None:
    await project(
        conn, analytics, reported(uuid4(), "failed", at=T0, sequence=2, recipient="14165550123")
    )
    await project(
        conn, analytics, reported(uuid4(), "failed", at=T0, sequence=2, recipient="12125550123")
    )
    await project(conn, analytics, reported(uuid4(), "failed", at=T0, sequence=2, recipient="x"))
    assert sorted(cell[1] for cell in await cells(conn)) == ["", "CA", "US"]


async def test_an_unknown_network_is_named_by_its_codes(conn: Conn) -> None:
    await project(
        conn, analytics, reported(uuid4(), "sent", at=T0, sequence=2, mcc="310", mnc="999")
    )
    assert [(cell[1], cell[2]) for cell in await cells(conn)] == [("US", "310-999")]


async def test_both_latency_stages_land_in_their_buckets(conn: Conn) -> None:
    message = uuid4()
    await project(
        conn,
        analytics,
        reported(message, "queued", at=T0, sequence=1),
        reported(message, "sent", at=T0 + timedelta(milliseconds=300), sequence=2),
        reported(message, "delivered", at=T0 + timedelta(seconds=40.3), sequence=3),
    )
    queue, carrier = await histogram(conn, "queue"), await histogram(conn, "carrier")
    assert queue.index(1) == bucket_of(0.3)
    assert sum(queue) == 1
    assert carrier.index(1) == bucket_of(40)
    assert sum(carrier) == 1


async def test_charges_sum_exactly_in_the_cell(conn: Conn) -> None:
    for _ in range(3):
        await project(
            conn, analytics, reported(uuid4(), "sent", at=T0, sequence=2, amount="0.0025")
        )
    cursor = await conn.execute("SELECT total_amount, units FROM analytics_counts")
    assert await cursor.fetchall() == [(Decimal("0.0075"), 3)]


async def test_build_gives_exactly_what_incremental_apply_gives(conn: Conn) -> None:
    for n in range(6):
        message = uuid4()
        at = T0 + timedelta(minutes=n * 20)
        await project(conn, analytics, submitted(message, at=at, campaign=f"c{n % 2}"))
        await project(conn, analytics, reported(message, "queued", at=at, sequence=1))
        await project(
            conn,
            analytics,
            reported(
                message, "sent", at=at + timedelta(seconds=1), sequence=2, mcc="404", mnc="80"
            ),
            reported(
                message,
                "undelivered" if n % 3 else "delivered",
                at=at + timedelta(seconds=5),
                sequence=3,
                error_code="30" if n % 3 else "",
            ),
        )
    await assert_build_matches_apply(conn, analytics)


async def test_the_version_follows_the_zone_the_tag_key_and_the_lookup_data() -> None:
    base = DeliveryAnalyticsProjector()
    assert DeliveryAnalyticsProjector(timezone="Asia/Kolkata").version != base.version
    assert DeliveryAnalyticsProjector(tag_key="team").version != base.version
    assert "mcc-mnc-p1" in DATA_VERSION
    assert "phonenumbers" in DATA_VERSION
    configured = projector_named(
        "delivery_analytics", build_projectors(Settings(analytics_tag="team"))
    )
    assert configured.version == DeliveryAnalyticsProjector(tag_key="team").version


def test_a_bad_tag_key_or_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="tag key"):
        DeliveryAnalyticsProjector(tag_key="no spaces")
    with pytest.raises(ValueError, match="time zone"):
        DeliveryAnalyticsProjector(timezone="Mars/Olympus")


async def test_the_lookup_data_reaches_sql_exactly(conn: Conn) -> None:
    cursor = await conn.execute("SELECT mcc, mnc, country, carrier FROM analytics_networks")
    assert sorted(await cursor.fetchall()) == sorted(network_rows())
    assert any('"' in row[3] for row in network_rows())  # quotes survive the array literal
    cursor = await conn.execute("SELECT prefix, country FROM analytics_number_prefixes")
    assert sorted(await cursor.fetchall()) == sorted(number_prefix_rows())


async def test_the_days_hold_the_hours_summed_by_day_in_the_views_zone(conn: Conn) -> None:
    # 23:30 and 00:30 UTC on either side of midnight are both 1 March in New York.
    new_york = DeliveryAnalyticsProjector(timezone="America/New_York")
    for at in (datetime(2026, 3, 1, 23, 30, tzinfo=UTC), datetime(2026, 3, 2, 0, 30, tzinfo=UTC)):
        await project(conn, new_york, reported(uuid4(), "delivered", at=at, sequence=3))
    late = uuid4()
    await project(conn, new_york, reported(late, "sent", at=T0 + timedelta(days=2), sequence=2))
    # A late callback moves the message to its first day: its old day's cell goes away.
    await project(conn, new_york, reported(late, "queued", at=T0, sequence=1))
    cursor = await conn.execute(
        "SELECT day, status, messages FROM analytics_days ORDER BY day, status"
    )
    assert await cursor.fetchall() == [
        (datetime(2026, 3, 1, 5, tzinfo=UTC), "delivered", 2),
        (datetime(2026, 3, 1, 5, tzinfo=UTC), "sent", 1),
    ]
