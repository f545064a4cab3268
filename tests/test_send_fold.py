"""Sent messages in the status view: submitted vs callbacks in any order, tags, send requests,
rejected numbers, multi-part parents reporting their worst part."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest

from ledger.events import NewEvent
from ledger.send_events import (
    SendRequest,
    rejected_event,
    send_requested_event,
    submitted_event,
)
from projections.queries import get_message_status, search_messages
from projections.registry import PROJECTORS, projector_named
from projections.views import MessageQuery
from tests.conftest import SYSTEM_KEY
from tests.test_status_projection import (
    Conn,
    apply,
    assert_build_matches_apply,
    callback,
    project,
    record,
    status_of,
    table_rows,
)

T0 = datetime(2026, 11, 23, 10, tzinfo=UTC)
STATUS = projector_named("message_status")


def _request(**changes: object) -> SendRequest:
    fields: dict[str, object] = {
        "request_id": uuid4(),
        "src": "14155550100",
        "dst": ["919876543210"],
        "text": "hello",
        "tags": {"campaign": "spring"},
        "requested_by": "token:abc",
        "body_hash": "00",
    }
    fields.update(changes)
    return SendRequest(**fields)  # type: ignore[arg-type]


def _submitted(request: SendRequest, message: UUID, at: datetime = T0) -> NewEvent:
    return submitted_event(
        request, message, to=request.dst[0], api_id="api-1", now=at, key=SYSTEM_KEY
    )


def _part(message: UUID, parent: UUID, status: str, at: datetime, error_code: str = "") -> NewEvent:
    """A callback of one part of the multi-part message ``parent``."""
    return callback(
        message, status, at=at, error_code=error_code, extra={"ParentMessageUUID": str(parent)}
    )


async def test_a_callback_before_its_submitted_event_folds_to_the_same_row(conn: Conn) -> None:
    request, message = _request(), uuid4()
    delivered = callback(message, "delivered", at=T0 + timedelta(seconds=5))
    submitted = _submitted(request, message)
    # Live: the callback is applied in one batch and the submitted event in a later one.
    first, second = await record(conn, delivered), await record(conn, submitted)
    for projector in PROJECTORS:
        await apply(conn, projector, first)
        await apply(conn, projector, second)
    late = await table_rows(conn, "message_status")
    row = await status_of(conn, message)
    assert (row.status, row.submitted_at, row.delivered_at) == (
        "delivered",
        T0,
        T0 + timedelta(seconds=5),
    )
    assert row.tags == {"campaign": "spring"}
    assert row.send_request_id == str(request.request_id)
    # The other order, and a rebuild, give the same table.
    for projector in PROJECTORS:
        await assert_build_matches_apply(conn, projector)
    await conn.execute("TRUNCATE message_status")
    await apply(conn, STATUS, second)
    await apply(conn, STATUS, first)
    assert await table_rows(conn, "message_status") == late


async def test_a_send_requests_own_stream_makes_no_row(conn: Conn) -> None:
    request = _request()
    await project(
        conn, STATUS, send_requested_event(request, now=T0, store_text=False, key=SYSTEM_KEY)
    )
    assert await get_message_status(conn, request.request_id) is None


async def test_a_number_plivo_refused_counts_as_a_rejected_message_of_its_request(
    conn: Conn,
) -> None:
    request = _request(dst=["123"])
    event = rejected_event(request, "123", api_id="api-1", now=T0, key=SYSTEM_KEY)
    await project(conn, STATUS, event)
    row = await status_of(conn, event.message_uuid)
    assert (row.status, row.to_number, row.send_request_id) == (
        "rejected",
        "123",
        str(request.request_id),
    )


async def test_search_filters_by_tag(conn: Conn) -> None:
    spring, autumn = _request(), _request(tags={"campaign": "autumn"})
    first, second = uuid4(), uuid4()
    await project(conn, STATUS, _submitted(spring, first), _submitted(autumn, second))
    page = await search_messages(conn, MessageQuery(tags={"campaign": "autumn"}))
    assert [item.message_uuid for item in page.items] == [second]


async def test_a_parent_reports_the_worst_status_of_its_parts(conn: Conn) -> None:
    parent, one, two = uuid4(), uuid4(), uuid4()
    await project(
        conn,
        STATUS,
        _submitted(_request(), parent),
        _part(one, parent, "delivered", T0 + timedelta(seconds=1)),
        _part(two, parent, "sent", T0 + timedelta(seconds=1)),
    )
    row = await status_of(conn, parent)
    assert row.status == "sent"  # not delivered until every part is
    assert {p.message_uuid: p.status for p in row.parts} == {one: "delivered", two: "sent"}


async def test_a_later_delivered_part_never_hides_a_failed_one(conn: Conn) -> None:
    parent, one, two = uuid4(), uuid4(), uuid4()
    await project(
        conn,
        STATUS,
        _submitted(_request(), parent),
        _part(one, parent, "failed", T0 + timedelta(seconds=1), error_code="30"),
    )
    await project(conn, STATUS, _part(two, parent, "delivered", T0 + timedelta(minutes=5)))
    row = await status_of(conn, parent)
    assert (row.status, row.error_code, row.error_description) == ("failed", "30", "spam detected")
    await assert_build_matches_apply(conn, STATUS)


@pytest.mark.parametrize("own", ["delivered", "failed"])
async def test_a_parent_that_plivo_reported_on_counts_as_one_of_its_parts(
    conn: Conn, own: str
) -> None:
    parent, two = uuid4(), uuid4()
    await project(
        conn,
        STATUS,
        callback(parent, own, at=T0),
        _part(two, parent, "delivered", T0 + timedelta(seconds=2)),
    )
    assert (await status_of(conn, parent)).status == own
