"""Reading the views: one message, keyset-paginated search, daily metrics."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from uuid import UUID, uuid4

import msgspec
import pytest

from ledger.error_codes import describe_error
from ledger.events import MESSAGE_EXPIRED, NewEvent
from projections.fold import LATENCY_BOUNDS
from projections.metrics import DailyMetricsProjector
from projections.queries import (
    InvalidCursor,
    daily_metrics,
    get_message_status,
    histogram_quantile,
    search_messages,
)
from projections.status import MessageStatusProjector
from projections.views import MessageQuery
from tests.test_status_projection import (
    T0,
    Conn,
    apply,
    callback,
    project,
    record,
    system_event,
)

DAY_1 = date(2026, 3, 1)


async def project_both(conn: Conn, *events: NewEvent) -> None:
    recorded = await record(conn, *events)
    await apply(conn, MessageStatusProjector(), recorded)
    await apply(conn, DailyMetricsProjector(), recorded)


async def search_all(conn: Conn, query: MessageQuery) -> list[UUID]:
    """Every page of a search, followed cursor by cursor."""
    found: list[UUID] = []
    while True:
        page = await search_messages(conn, query)
        found += [item.message_uuid for item in page.items]
        if page.next_cursor is None:
            return found
        query = msgspec.structs.replace(query, cursor=page.next_cursor)


async def test_an_unknown_message_has_no_status(conn: Conn) -> None:
    assert await get_message_status(conn, uuid4()) is None


async def test_a_message_status_explains_its_error_code(conn: Conn) -> None:
    message = uuid4()
    await project(
        conn, MessageStatusProjector(), callback(message, "undelivered", error_code="200")
    )
    found = await get_message_status(conn, message)
    assert found is not None
    assert (found.error_code, found.error_description) == (
        "200",
        "source number blocked by STOP from destination (opt-out)",
    )


def test_error_codes_are_described_and_no_error_has_no_description() -> None:
    assert describe_error("420") == "message expired while queued"
    assert describe_error(" 30 ") == "spam detected"
    assert describe_error("7777") == "undocumented error code 7777"
    assert [describe_error(code) for code in (None, "", "0", "000")] == [None] * 4


async def test_pages_follow_each_other_without_repeats_or_gaps(conn: Conn) -> None:
    # Groups of three messages share a first event time, so the order needs its tiebreaker.
    messages = {uuid4(): T0 + timedelta(seconds=index // 3) for index in range(23)}
    await project(
        conn,
        MessageStatusProjector(),
        *(callback(message, "queued", at=at) for message, at in messages.items()),
    )
    newest_first = sorted(messages, key=lambda m: (messages[m], m), reverse=True)
    assert await search_all(conn, MessageQuery(limit=5)) == newest_first


async def test_the_last_page_has_no_cursor_even_when_it_is_full(conn: Conn) -> None:
    await project(
        conn, MessageStatusProjector(), *(callback(uuid4(), "sent", at=T0) for _ in range(4))
    )
    first = await search_messages(conn, MessageQuery(limit=2))
    assert first.next_cursor is not None
    last = await search_messages(conn, MessageQuery(limit=2, cursor=first.next_cursor))
    assert (len(last.items), last.next_cursor) == (2, None)


async def test_filters_select_by_status_sender_recipient_and_first_event_time(
    conn: Conn,
) -> None:
    early, late, other_sender, other_recipient = uuid4(), uuid4(), uuid4(), uuid4()
    await project(
        conn,
        MessageStatusProjector(),
        callback(early, "delivered", at=T0),
        callback(late, "delivered", at=T0 + timedelta(hours=1)),
        callback(late, "queued", at=T0 + timedelta(hours=1)),
        callback(other_sender, "failed", at=T0, sender="18005550199"),
        callback(other_recipient, "delivered", at=T0, recipient="447700900123"),
    )
    delivered = await search_all(conn, MessageQuery(status="Delivered"))
    assert set(delivered) == {early, late, other_recipient}
    assert await search_all(conn, MessageQuery(from_number="18005550199")) == [other_sender]
    assert await search_all(conn, MessageQuery(to_number="447700900123")) == [other_recipient]
    window = MessageQuery(since=T0 + timedelta(hours=1), until=T0 + timedelta(hours=2))
    assert await search_all(conn, window) == [late]
    before = MessageQuery(status="delivered", to_number="919876543210", until=T0 + timedelta(1))
    assert set(await search_all(conn, before)) == {early, late}


async def test_numbers_match_however_they_are_written(conn: Conn) -> None:
    mine, other = uuid4(), uuid4()
    await project(
        conn,
        MessageStatusProjector(),
        callback(mine, "delivered", at=T0, sender="18005550199", recipient="14155550100"),
        callback(other, "delivered", at=T0, recipient="14155550101"),
    )
    for typed in ("+14155550100", "+1 415 555 0100", "+1 (415) 555-0100"):
        assert await search_all(conn, MessageQuery(to_number=typed)) == [mine]
    assert await search_all(conn, MessageQuery(from_number="+1 800 555 0199")) == [mine]


async def test_the_error_code_filter_selects_by_the_current_error_code(conn: Conn) -> None:
    spam, unreachable, recovered = uuid4(), uuid4(), uuid4()
    await project(
        conn,
        MessageStatusProjector(),
        callback(spam, "undelivered", at=T0, error_code="30"),
        callback(unreachable, "undelivered", at=T0, error_code="50"),
        callback(recovered, "undelivered", at=T0, sequence=3, error_code="30"),
        callback(recovered, "delivered", at=T0, sequence=4),
    )
    assert await search_all(conn, MessageQuery(error_code=" 30")) == [spam]
    assert await search_all(conn, MessageQuery(error_code="50")) == [unreachable]


async def test_a_cursor_that_was_not_handed_out_is_refused(conn: Conn) -> None:
    for cursor in ("not base64!", "bm90IGpzb24", "WzEsMl0"):
        with pytest.raises(InvalidCursor):
            await search_messages(conn, MessageQuery(cursor=cursor))


async def test_a_limit_below_one_is_refused(conn: Conn) -> None:
    with pytest.raises(ValueError, match="limit"):
        await search_messages(conn, MessageQuery(limit=0))


async def test_daily_metrics_give_rate_histogram_and_percentiles_of_a_known_day(
    conn: Conn,
) -> None:
    events = []
    # Ten deliveries: four after 3 s, four after 7 s, two after 45 s.
    for latency in [3] * 4 + [7] * 4 + [45] * 2:
        message = uuid4()
        events += [
            callback(message, "queued", at=T0, sequence=1),
            callback(
                message,
                "delivered",
                at=T0 + timedelta(seconds=latency),
                sequence=3,
                units="2",
                amount="0.0050",
            ),
        ]
    failures = [("undelivered", "30"), ("failed", "420"), ("rejected", "30")]
    events += [callback(uuid4(), s, at=T0, sequence=3, error_code=c) for s, c in failures]
    events += [system_event(uuid4(), MESSAGE_EXPIRED, at=T0) for _ in range(2)]
    events += [callback(uuid4(), "sent", at=T0, sequence=2) for _ in range(3)]
    await project_both(conn, *events)

    [day] = await daily_metrics(conn, DAY_1, DAY_1)
    assert day.day == DAY_1
    assert day.messages == 18
    assert day.statuses == {
        "delivered": 10,
        "expired": 2,
        "failed": 1,
        "rejected": 1,
        "sent": 3,
        "undelivered": 1,
    }
    assert day.delivery_rate == pytest.approx(10 / 15)
    assert day.error_codes == {"30": 2, "420": 1}
    assert (day.units, day.total_amount) == (20 + 3 + 3, Decimal("0.05"))
    counts = {bucket.upper_bound_seconds: bucket.count for bucket in day.latency_histogram}
    assert (counts[5], counts[10], counts[60], sum(counts.values())) == (4, 4, 2, 10)
    assert [b.upper_bound_seconds for b in day.latency_histogram] == [*LATENCY_BOUNDS, None]
    # p50: rank 5 is the 1st of 4 in [5, 10) → 6.25; p95: rank 9.5 is 1.5 of 2 in [30, 60).
    assert (day.p50_seconds, day.p95_seconds) == (6.25, 52.5)


async def test_daily_metrics_list_only_days_with_messages_within_the_range(conn: Conn) -> None:
    await project_both(
        conn,
        callback(uuid4(), "sent", at=T0),
        callback(uuid4(), "sent", at=T0 + timedelta(days=2)),
        callback(uuid4(), "sent", at=T0 + timedelta(days=5)),
    )
    days = await daily_metrics(conn, DAY_1, DAY_1 + timedelta(days=3))
    assert [d.day for d in days] == [DAY_1, DAY_1 + timedelta(days=2)]
    assert await daily_metrics(conn, DAY_1 + timedelta(days=1), DAY_1 + timedelta(days=1)) == []


async def test_a_day_without_outcomes_or_deliveries_has_no_rate_or_percentiles(
    conn: Conn,
) -> None:
    await project_both(conn, callback(uuid4(), "sent", at=T0))
    [day] = await daily_metrics(conn, DAY_1, DAY_1)
    assert (day.delivery_rate, day.p50_seconds, day.p95_seconds) == (None, None, None)
    assert sum(bucket.count for bucket in day.latency_histogram) == 0


def test_a_quantile_in_the_unbounded_bucket_reports_its_lower_bound() -> None:
    counts = [0] * len(LATENCY_BOUNDS) + [3]
    assert histogram_quantile(0.5, counts) == float(LATENCY_BOUNDS[-1])
    assert histogram_quantile(0.5, [0] * (len(LATENCY_BOUNDS) + 1)) is None
