"""The message_status view: the fold's precedence rules, order independence, build == apply.

The event helpers and the order-independence property defined here are shared with the
metrics and query tests, which import them.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from ledger.events import (
    MESSAGE_EXPIRED,
    MESSAGE_SUBMITTED,
    STATUS_REPORTED,
    EventMeta,
    NewEvent,
    RecordedEvent,
)
from ledger.store import Append, Checkpoint, append, read_stream
from projections.analytics import lookup_fills
from projections.base import Projector
from projections.queries import get_message_status
from projections.registry import PROJECTORS, projector_named
from projections.statements import build_statements_for, parameters, statements_for
from projections.status import MessageStatusProjector
from projections.views import MessageStatus
from tests.conftest import ledger_head

Conn = psycopg.AsyncConnection[Any]

#: Five minutes before a UTC midnight, so that lifecycles straddle a day boundary.
T0 = datetime(2026, 3, 1, 23, 55, tzinfo=UTC)
_keys = itertools.count()


def _dedup_key() -> bytes:
    return hashlib.sha256(f"test-{os.getpid()}-{next(_keys)}".encode()).digest()


def callback(
    message: UUID,
    status: str | None,
    *,
    at: datetime | None = None,
    sequence: int | str | None = None,
    error_code: str = "",
    units: str = "1",
    amount: str = "0.00000",
    sender: str = "14155550100",
    recipient: str = "919876543210",
    extra: dict[str, str] | None = None,
) -> NewEvent:
    """A Plivo status callback as the ingest path would append it (unique dedup key), with
    ``extra`` fields."""
    payload: dict[str, str | list[str]] = {
        "MessageUUID": str(message),
        "ErrorCode": error_code,
        "From": sender,
        "To": recipient,
        "Type": "sms",
        "Units": units,
        "TotalAmount": amount,
    }
    payload.update(extra or {})
    if status is not None:
        payload["Status"] = status
    if sequence is not None:
        payload["Sequence"] = str(sequence)
    return NewEvent(
        message_uuid=message,
        event_type=STATUS_REPORTED,
        status=status,
        occurred_at=at,
        dedup_key=_dedup_key(),
        payload=payload,
        meta=EventMeta(source="plivo", signature="v3"),
    )


def system_event(
    message: UUID, event_type: str, *, at: datetime | None, payload: dict[str, str] | None = None
) -> NewEvent:
    """An event this service appends itself (``message.submitted``, ``message.expired``)."""
    return NewEvent(
        message_uuid=message,
        event_type=event_type,
        status=None,
        occurred_at=at,
        dedup_key=_dedup_key(),
        payload=dict(payload or {}),
        meta=EventMeta(source="system", signature="system"),
    )


async def record(conn: Conn, *events: NewEvent) -> list[RecordedEvent]:
    """Append ``events`` in one transaction; return them as the ledger recorded them."""
    results = await append(conn, [Append(event) for event in events])
    positions = {result.position for result in results}
    # Read back by stream, not through the fence: another transaction still open anywhere on
    # the server would hold the fence below events committed here a moment ago.
    streams = {event.message_uuid for event in events}
    recorded = [e for uuid in streams for e in await read_stream(conn, uuid)]
    return sorted((e for e in recorded if e.position in positions), key=lambda e: e.position)


async def apply(conn: Conn, projector: Projector, events: Sequence[RecordedEvent]) -> None:
    """Fold exactly ``events``, as one batch, into the projector's tables on the search path."""
    await conn.execute(
        statements_for(projector).positions,
        parameters([projector], positions=[event.position for event in events]),
    )


async def build(conn: Conn, projector: Projector, upto: Checkpoint) -> None:
    """Build the projector's tables on the search path from every event at or before
    ``upto``, as replay does (here in one chunk, with no catch-up), and finish them."""
    await conn.execute(
        build_statements_for((projector,)).chunk,
        parameters(
            [projector],
            low=0,
            high=2**62,
            upto_xid=str(upto.transaction_id),
            upto_position=upto.position,
        ),
    )
    for statement in [*projector.finish_build(), *projector.derived()]:
        await conn.execute(statement, projector.parameters())


@contextlib.asynccontextmanager
async def tables_in(conn: Conn, schema: str, projector: Projector) -> AsyncIterator[None]:
    """The projector's tables, new and empty, in the new ``schema``, which comes first on the
    search path inside the block (as replay's shadow schema does)."""
    cursor = await conn.execute("SHOW search_path")
    row = await cursor.fetchone()
    assert row is not None
    await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    await conn.execute(
        sql.SQL("SET search_path = {}, {}").format(sql.Identifier(schema), sql.SQL(row[0]))
    )
    try:
        for statement in projector.schema():
            await conn.execute(statement)
        yield
    finally:
        await conn.execute(sql.SQL("SET search_path = {}").format(sql.SQL(row[0])))


async def project(conn: Conn, projector: Projector, *events: NewEvent) -> list[RecordedEvent]:
    """Append ``events`` and apply them to ``projector``'s live tables in one batch."""
    recorded = await record(conn, *events)
    await apply(conn, projector, recorded)
    return recorded


async def table_rows(conn: Conn, table: str, schema: str | None = None) -> list[str]:
    """Every row of ``table`` (in ``schema``, else on the search path) as text, sorted, for
    comparing two tables exactly (as text, 0.0025 and 0.00250 differ, as they do to a
    reader). Columns by name: tables built from the projector's DDL may order them
    differently from the migration's."""
    name = sql.Identifier(schema, table) if schema else sql.Identifier(table)
    cursor = await conn.execute(sql.SQL("SELECT * FROM {}").format(name))
    assert cursor.description is not None
    columns = [column.name for column in cursor.description]
    return sorted(repr(sorted(zip(columns, row, strict=True))) for row in await cursor.fetchall())


async def assert_build_matches_apply(conn: Conn, projector: Projector) -> None:
    """Building from the whole ledger gives exactly the live tables kept by ``apply``."""
    schema = f"built_{next(_keys)}"
    async with tables_in(conn, schema, projector):
        await build(conn, projector, await ledger_head(conn))
    for table in projector.tables:
        assert await table_rows(conn, table, schema) == await table_rows(conn, table)


async def status_of(conn: Conn, message: UUID) -> MessageStatus:
    found = await get_message_status(conn, message)
    assert found is not None
    return found


# --- The order-independence property ------------------------------------------------------

#: What a send adds: tags (one set, or two competing ones) and the request, on submitted;
#: the parent of a multi-part message's part, on callbacks.
_SEND_PAYLOADS = [
    {},
    {"SendRequest": "r1", "tag.campaign": "spring", "tag.team": "a"},
    {"SendRequest": "r2", "tag.campaign": "autumn", "ResentFrom": str(UUID(int=1))},
]
_PART_OF = {"ParentMessageUUID": str(UUID(int=2))}
_STATUSES = ["queued", "sent", "delivered", "undelivered", "failed", "rejected", "read", "accepted"]


@st.composite
def _message_events(draw: st.DrawFn, message: UUID) -> list[NewEvent]:
    """A realistic, shuffled-able lifecycle of one message: some callbacks (known and unknown
    statuses, repeated statuses, missing or malformed sequences, blank fields, missing
    timestamps, clustered times for ties) and possibly our own submitted/expired events."""
    events = []
    for _ in range(draw(st.integers(1, 7))):
        at = draw(st.one_of(st.none(), st.integers(0, 12).map(lambda m: T0 + timedelta(minutes=m))))
        kind = draw(st.sampled_from([*_STATUSES, None, MESSAGE_SUBMITTED, MESSAGE_EXPIRED]))
        if kind in (MESSAGE_SUBMITTED, MESSAGE_EXPIRED):
            payload = draw(st.sampled_from(_SEND_PAYLOADS)) if kind == MESSAGE_SUBMITTED else {}
            events.append(system_event(message, kind, at=at, payload=payload))
            continue
        events.append(
            callback(
                message,
                kind,
                at=at,
                sequence=draw(st.sampled_from([None, 1, 2, 3, 4, "x"])),
                error_code=draw(st.sampled_from(["", "000", "30", "420"])),
                units=draw(st.sampled_from(["1", "2", ""])),
                amount=draw(st.sampled_from(["0.00000", "0.0025", "0.00250", "", "1.2.3"])),
                sender=draw(st.sampled_from(["14155550100", ""])),
                extra=draw(st.sampled_from([{}, {"ParentMessageUUID": str(message)}, _PART_OF])),
            )
        )
    return events


@st.composite
def _batches(draw: st.DrawFn, items: Sequence[Any]) -> list[list[Any]]:
    """``items`` shuffled and cut into consecutive non-empty batches."""
    shuffled = draw(st.permutations(items))
    cuts = draw(st.sets(st.integers(1, len(items) - 1))) if len(items) > 1 else set()
    bounds = [0, *sorted(cuts), len(items)]
    return [list(shuffled[a:b]) for a, b in itertools.pairwise(bounds)]


@contextlib.asynccontextmanager
async def private_ledger(conn: Conn) -> AsyncIterator[str]:
    """A schema of its own holding an empty ledger and empty views, first on the search path,
    so one database serves many hypothesis examples without them seeing each other; its
    name, also the prefix of the schemas the example creates (dropped with it)."""
    schema = f"example_{next(_keys)}"
    await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    tables = ["events", *(t for projector in PROJECTORS for t in projector.tables)]
    for table in tables:
        await conn.execute(
            sql.SQL("CREATE TABLE {} (LIKE public.{} INCLUDING ALL)").format(
                sql.Identifier(schema, table), sql.Identifier(table)
            )
        )
    await conn.execute(sql.SQL("SET search_path = {}, public").format(sql.Identifier(schema)))
    for fill in lookup_fills():  # as a first build of the views fills them
        await conn.execute(fill)
    try:
        yield schema
    finally:
        await conn.execute("RESET search_path")
        for suffix in ("", "_split", "_built"):
            await conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema + suffix))
            )


async def check_order_independence(conn: Conn, projector: Projector, data: st.DataObject) -> None:
    """The property: for messages with arbitrary events, appended to the ledger in a random
    order over several transactions, applying them in one batch, applying them shuffled in
    random batches, and building from scratch all give the same tables."""
    messages = [uuid4() for _ in range(data.draw(st.integers(1, 3), label="messages"))]
    events = [e for m in messages for e in data.draw(_message_events(m), label="events")]
    async with private_ledger(conn) as ledger:
        for batch in data.draw(_batches(events), label="append transactions"):
            await append(conn, [Append(event) for event in batch])
        recorded = [e for message in messages for e in await read_stream(conn, message)]
        upto = await ledger_head(conn)
        await apply(conn, projector, recorded)
        async with tables_in(conn, f"{ledger}_split", projector):
            for batch in data.draw(_batches(recorded), label="apply batches"):
                await apply(conn, projector, batch)
        async with tables_in(conn, f"{ledger}_built", projector):
            await build(conn, projector, upto)
        for table in projector.tables:
            once = await table_rows(conn, table)
            assert await table_rows(conn, table, f"{ledger}_split") == once, table
            assert await table_rows(conn, table, f"{ledger}_built") == once, table


#: Examples share the test's database (each in its own schema), hence the health check.
property_settings = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


# --- Tests ---------------------------------------------------------------------------------


@property_settings
@given(data=st.data())
async def test_any_order_and_batching_of_events_gives_the_same_rows(
    conn: Conn, data: st.DataObject
) -> None:
    await check_order_independence(conn, MessageStatusProjector(), data)


async def test_a_higher_status_wins_whatever_arrives_last(conn: Conn) -> None:
    message = uuid4()
    await project(
        conn,
        MessageStatusProjector(),
        callback(message, "delivered", at=T0 + timedelta(seconds=20), sequence=3),
        callback(message, "queued", at=T0, sequence=1),
        callback(message, "sent", at=T0 + timedelta(seconds=5), sequence=2),
    )
    assert (await status_of(conn, message)).status == "delivered"


async def test_a_later_batch_with_a_lower_status_does_not_regress_the_row(conn: Conn) -> None:
    message, projector = uuid4(), MessageStatusProjector()
    await project(conn, projector, callback(message, "delivered", at=T0, sequence=3))
    await project(conn, projector, callback(message, "sent", at=T0, sequence=2))
    row = await status_of(conn, message)
    assert (row.status, row.sent_at, row.event_count) == ("delivered", T0, 2)


async def test_among_final_statuses_the_higher_sequence_wins(conn: Conn) -> None:
    message, projector = uuid4(), MessageStatusProjector()
    await project(conn, projector, callback(message, "undelivered", sequence=4, error_code="30"))
    await project(conn, projector, callback(message, "delivered", sequence=3, at=T0))
    row = await status_of(conn, message)
    assert (row.status, row.error_code) == ("undelivered", "30")


async def test_without_sequences_the_later_event_time_wins_then_the_later_position(
    conn: Conn,
) -> None:
    later, tied = uuid4(), uuid4()
    projector = MessageStatusProjector()
    await project(
        conn,
        projector,
        callback(later, "failed", at=T0 + timedelta(seconds=1), error_code="420"),
        callback(later, "delivered", at=T0),
        callback(tied, "delivered", at=T0),
        callback(tied, "failed", at=T0, error_code="900"),
    )
    assert (await status_of(conn, later)).status == "failed"
    assert (await status_of(conn, tied)).error_code == "900"


async def test_an_unknown_status_is_stored_but_loses_to_any_known_one(conn: Conn) -> None:
    alone, with_queued = uuid4(), uuid4()
    await project(
        conn,
        MessageStatusProjector(),
        callback(alone, "accepted", sequence=7),
        callback(alone, None, sequence=9),
        callback(with_queued, "accepted", sequence=7),
        callback(with_queued, "queued", sequence=1),
    )
    assert (await status_of(conn, alone)).status == "accepted"
    assert (await status_of(conn, with_queued)).status == "queued"


async def test_expired_outranks_sent_but_not_a_delivery_report(conn: Conn) -> None:
    stuck, delivered = uuid4(), uuid4()
    await project(
        conn,
        MessageStatusProjector(),
        callback(stuck, "sent", at=T0, sequence=2),
        system_event(stuck, MESSAGE_EXPIRED, at=T0 + timedelta(days=2)),
        callback(delivered, "delivered", at=T0, sequence=3),
        system_event(delivered, MESSAGE_EXPIRED, at=T0 + timedelta(days=2)),
    )
    row = await status_of(conn, stuck)
    assert (row.status, row.expired_at) == ("expired", T0 + timedelta(days=2))
    assert (await status_of(conn, delivered)).status == "delivered"


FINAL_STATUSES = ["delivered", "undelivered", "failed", "rejected"]


@pytest.mark.parametrize("final", FINAL_STATUSES)
async def test_read_outranks_a_final_status_that_arrives_before_it(conn: Conn, final: str) -> None:
    # The final status carries the higher Sequence and the later time: only precedence
    # can make read win.
    message, projector = uuid4(), MessageStatusProjector()
    await project(
        conn, projector, callback(message, final, at=T0 + timedelta(minutes=1), sequence=5)
    )
    await project(conn, projector, callback(message, "read", at=T0, sequence=4))
    assert (await status_of(conn, message)).status == "read"


@pytest.mark.parametrize("final", FINAL_STATUSES)
async def test_read_outranks_a_final_status_that_arrives_after_it(conn: Conn, final: str) -> None:
    message, projector = uuid4(), MessageStatusProjector()
    await project(conn, projector, callback(message, "read", at=T0, sequence=4))
    await project(
        conn, projector, callback(message, final, at=T0 + timedelta(minutes=1), sequence=5)
    )
    assert (await status_of(conn, message)).status == "read"


async def test_milestones_and_event_times_are_the_earliest_and_latest_reported(
    conn: Conn,
) -> None:
    message = uuid4()
    recorded = await project(
        conn,
        MessageStatusProjector(),
        system_event(message, MESSAGE_SUBMITTED, at=T0 - timedelta(seconds=1)),
        callback(message, "sent", at=T0 + timedelta(seconds=9), sequence=2),
        callback(message, "sent", at=T0 + timedelta(seconds=4), sequence=2),
        callback(message, "queued", at=T0, sequence=1),
        callback(message, "delivered", at=T0 + timedelta(seconds=30), sequence=3),
    )
    row = await status_of(conn, message)
    assert row.submitted_at == T0 - timedelta(seconds=1)
    assert (row.queued_at, row.sent_at) == (T0, T0 + timedelta(seconds=4))
    assert row.delivered_at == row.last_event_at == row.status_at == T0 + timedelta(seconds=30)
    assert row.first_event_at == T0 - timedelta(seconds=1)
    assert (row.failed_at, row.read_at) == (None, None)
    assert (row.event_count, row.last_position) == (5, max(e.position for e in recorded))


async def test_an_event_without_its_own_time_counts_at_its_recorded_time(conn: Conn) -> None:
    message = uuid4()
    [recorded] = await project(conn, MessageStatusProjector(), callback(message, "queued"))
    row = await status_of(conn, message)
    assert row.queued_at == row.first_event_at == recorded.recorded_at


async def test_blank_and_zero_error_codes_mean_no_error(conn: Conn) -> None:
    blank, zeros = uuid4(), uuid4()
    await project(
        conn,
        MessageStatusProjector(),
        callback(blank, "delivered", error_code=""),
        callback(zeros, "delivered", error_code="000"),
    )
    assert (await status_of(conn, blank)).error_code is None
    assert (await status_of(conn, zeros)).error_code is None


async def test_charges_keep_the_largest_reported_amount_exactly(conn: Conn) -> None:
    message = uuid4()
    await project(
        conn,
        MessageStatusProjector(),
        callback(message, "delivered", sequence=3, units="2", amount="0.00500"),
        callback(message, "queued", sequence=1, units="2", amount="0.00000"),
    )
    row = await status_of(conn, message)
    assert (row.units, row.total_amount) == (2, Decimal("0.005"))
    assert str(row.total_amount) == "0.005"


async def test_blank_fields_do_not_erase_known_ones(conn: Conn) -> None:
    message = uuid4()
    await project(
        conn,
        MessageStatusProjector(),
        callback(message, "queued", sequence=1, sender="14155550100", recipient="447700900123"),
        callback(message, "delivered", sequence=3, sender="", recipient="", units="", amount=""),
    )
    row = await status_of(conn, message)
    assert (row.from_number, row.to_number, row.message_type) == (
        "14155550100",
        "447700900123",
        "sms",
    )
    assert row.units == 1


async def test_malformed_numbers_read_as_missing_instead_of_failing(conn: Conn) -> None:
    message = uuid4()
    await project(
        conn,
        MessageStatusProjector(),
        callback(message, "sent", sequence="2x", units="one", amount="1.2.3"),
        callback(message, "sent", sequence="99999999999999999999", units="12345678901", amount="."),
    )
    row = await status_of(conn, message)
    assert (row.status, row.units, row.total_amount) == ("sent", None, None)


async def test_build_gives_exactly_what_incremental_apply_gives(conn: Conn) -> None:
    projector = MessageStatusProjector()
    for index in range(12):
        message = uuid4()
        at = T0 + timedelta(minutes=index)
        await project(conn, projector, callback(message, "queued", at=at, sequence=1))
        await project(
            conn,
            projector,
            callback(message, "sent", at=at + timedelta(seconds=3), sequence=2, amount="0.0025"),
            callback(message, ["delivered", "undelivered", "failed"][index % 3], sequence=3),
        )
    await assert_build_matches_apply(conn, projector)


async def test_build_stops_at_the_checkpoint_in_fence_order(conn: Conn) -> None:
    projector, message = MessageStatusProjector(), uuid4()
    await record(conn, callback(message, "queued", at=T0, sequence=1))
    upto = await ledger_head(conn)
    await record(conn, callback(message, "delivered", at=T0, sequence=3))
    async with tables_in(conn, "built", projector):
        await build(conn, projector, upto)
    cursor = await conn.execute("SELECT status, last_position FROM built.message_status")
    assert await cursor.fetchall() == [("queued", upto.position)]


async def test_a_fold_writes_to_the_tables_first_on_the_search_path(conn: Conn) -> None:
    projector, message = MessageStatusProjector(), uuid4()
    recorded = await record(conn, callback(message, "queued"))
    async with tables_in(conn, "shadow", projector):
        await apply(conn, projector, recorded)
    assert await get_message_status(conn, message) is None
    assert len(await table_rows(conn, "message_status", "shadow")) == 1


async def test_projectors_are_found_by_name_and_an_unknown_name_lists_them() -> None:
    assert projector_named("message_status").name == "message_status"
    with pytest.raises(KeyError, match="message_status, daily_delivery_metrics"):
        projector_named("nope")
