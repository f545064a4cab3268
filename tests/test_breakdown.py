"""Breakdowns from the analytics cube: ranges of whole days read the daily roll-up, their
partial first and last days the hours, and both give the same figures."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import uuid4

from projections.breakdown import BreakdownQuery, breakdown
from tests.test_analytics_projection import analytics, reported
from tests.test_status_projection import Conn, project

START = datetime(2026, 3, 1, 18, 30, tzinfo=UTC)


async def traffic(conn: Conn) -> None:
    """A message every 5 hours for four days from START, queued, sent 0.2 s later and
    settled 5 s after that: 13 delivered in India, 7 failed in the US."""
    for n in range(20):
        at, message = START + timedelta(hours=5 * n), uuid4()
        network = {"mcc": "405", "mnc": "803"} if n % 3 else {"mcc": "310", "mnc": "260"}
        await project(
            conn,
            analytics,
            reported(message, "queued", at=at, sequence=1),
            reported(message, "sent", at=at + timedelta(seconds=0.2), sequence=2, **network),
            reported(
                message,
                "delivered" if n % 3 else "failed",
                at=at + timedelta(seconds=5.2),
                sequence=3,
                amount="0.0050",
                **network,
            ),
        )


async def by_country(conn: Conn, start: datetime, end: datetime) -> Counter[str]:
    result = await breakdown(conn, BreakdownQuery(start=start, end=end, by=("country",)))
    return Counter({str(row.country): row.messages for row in result.rows})


async def by_country_from_hours(conn: Conn, start: datetime, end: datetime) -> Counter[str]:
    result = await breakdown(conn, BreakdownQuery(start=start, end=end, by=("country", "hour")))
    totals: Counter[str] = Counter()
    for row in result.rows:
        totals[str(row.country)] += row.messages
    return totals


async def test_a_range_of_whole_days_and_partial_edges_counts_what_its_hours_count(
    conn: Conn,
) -> None:
    await traffic(conn)
    start, end = START + timedelta(hours=7), START + timedelta(days=3, hours=2)
    expected = await by_country_from_hours(conn, start, end)
    assert sum(expected.values()) == 13  # the messages 10, 15, …, 70 hours after START
    assert await by_country(conn, start, end) == expected


async def test_a_range_within_one_day_counts_only_its_hours(conn: Conn) -> None:
    await traffic(conn)
    start = datetime(2026, 3, 2, 1, tzinfo=UTC)
    assert await by_country(conn, start, start + timedelta(hours=10)) == {"IN": 1, "US": 1}


async def test_the_latency_histograms_are_the_same_read_by_day_or_by_hour(conn: Conn) -> None:
    await traffic(conn)
    start, end = START, START + timedelta(days=4)
    daily = await breakdown(conn, BreakdownQuery(start=start, end=end, by=("country",)))
    hourly = await breakdown(conn, BreakdownQuery(start=start, end=end, by=("country", "hour")))
    assert daily.latency == hourly.latency
    assert sum(bucket.count for bucket in daily.latency.queue) == 20
    assert [(r.country, r.amount) for r in daily.rows] == [
        ("IN", Decimal("0.065")),
        ("US", Decimal("0.035")),
    ]


async def messages_at(conn: Conn, at: datetime, count: int, network: dict[str, str]) -> None:
    """``count`` messages delivered at ``at`` on ``network`` (its MCC and MNC)."""
    for _ in range(count):
        await project(conn, analytics, reported(uuid4(), "delivered", at=at, sequence=1, **network))


INDIA = {"mcc": "405", "mnc": "803"}
US = {"mcc": "310", "mnc": "260"}


async def test_by_hour_a_limit_answers_the_busiest_hours_with_all_their_messages(
    conn: Conn,
) -> None:
    hour = START.replace(minute=0)
    for hours_later, count in ((0, 3), (3, 1), (6, 2)):
        await messages_at(conn, hour + timedelta(hours=hours_later, minutes=5), count, INDIA)
    query = BreakdownQuery(start=hour, end=hour + timedelta(days=1), by=("hour",), limit=2)
    result = await breakdown(conn, query)
    assert [(row.hour, row.messages, row.delivered) for row in result.rows] == [
        (hour, 3, 3),
        (hour + timedelta(hours=6), 2, 2),
    ]


async def test_by_country_and_hour_a_limit_answers_only_the_busiest_groups(conn: Conn) -> None:
    hour = START.replace(minute=0)
    await messages_at(conn, hour + timedelta(minutes=5), 3, INDIA)
    await messages_at(conn, hour + timedelta(minutes=10), 1, US)
    query = BreakdownQuery(
        start=hour, end=hour + timedelta(days=1), by=("country", "hour"), limit=1
    )
    result = await breakdown(conn, query)
    assert [(row.country, row.hour, row.messages) for row in result.rows] == [("IN", hour, 3)]
