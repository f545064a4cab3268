"""What a message's events say beyond its status, in words for support staff."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from uuid import uuid4

from ledger.events import MESSAGE_EXPIRED, STATUS_REPORTED, EventMeta, RecordedEvent
from projections.anomalies import find_anomalies

T0 = datetime(2026, 11, 23, 9, tzinfo=UTC)
MESSAGE = uuid4()
_positions = itertools.count(1)


def reported(status: str, *, at: datetime = T0, sequence: str = "") -> RecordedEvent:
    """A stored Plivo callback; positions grow in the order events are made."""
    position = next(_positions)
    return RecordedEvent(
        position=position,
        transaction_id=position,
        message_uuid=MESSAGE,
        event_type=STATUS_REPORTED,
        status=status,
        occurred_at=at,
        recorded_at=T0 + timedelta(seconds=position),
        dedup_key=f"{status}/{sequence}".encode(),
        payload={"Status": status, "Sequence": sequence},
        meta=EventMeta(source="plivo", signature="v3"),
    )


def texts(*events: RecordedEvent, now: datetime = T0 + timedelta(minutes=1)) -> list[str]:
    return [anomaly.text for anomaly in find_anomalies(events, now=now)]


def test_a_lifecycle_recorded_in_order_has_no_anomaly() -> None:
    assert texts(reported("queued"), reported("sent"), reported("delivered")) == []


def test_a_later_status_recorded_first_is_named_with_what_it_overtook() -> None:
    events = (reported("delivered"), reported("sent"), reported("queued"))
    assert texts(*events) == [
        "delivered reported before sent and queued",
        "sent reported before queued",
    ]


def test_order_is_the_ledgers_recording_order_not_the_order_given() -> None:
    queued, sent = reported("queued"), reported("sent")
    assert texts(sent, queued) == []


def test_a_status_stored_again_counts_as_an_ignored_duplicate() -> None:
    events = (
        reported("queued"),
        reported("sent", sequence="2"),
        reported("sent", sequence="3"),
        reported("delivered"),
        reported("delivered", sequence="5"),
    )
    assert texts(*events) == ["duplicate callbacks ignored: 2 (sent ×1, delivered ×1)"]


def test_two_different_final_outcomes_are_a_conflict() -> None:
    events = (reported("queued"), reported("sent"), reported("undelivered"), reported("delivered"))
    assert texts(*events) == [
        "conflicting final reports: undelivered, delivered "
        "(the higher Sequence, then the later one, wins)"
    ]


def test_a_message_still_sent_hours_later_has_no_delivery_report_yet() -> None:
    events = (reported("queued"), reported("sent"))
    assert texts(*events, now=T0 + timedelta(hours=3, minutes=5)) == [
        "no delivery report yet after 3 h"
    ]
    assert texts(*events, now=T0 + timedelta(minutes=59)) == []


def test_a_final_status_or_the_ledgers_expiry_is_not_overdue() -> None:
    later = T0 + timedelta(days=3)
    assert texts(reported("queued"), reported("failed"), now=later) == []
    expired = RecordedEvent(
        position=next(_positions),
        transaction_id=0,
        message_uuid=MESSAGE,
        event_type=MESSAGE_EXPIRED,
        status="expired",
        occurred_at=T0 + timedelta(days=2),
        recorded_at=T0 + timedelta(days=2),
        dedup_key=b"expired",
        payload={},
        meta=EventMeta(source="system", signature="system"),
    )
    assert texts(reported("queued"), reported("sent"), expired, now=later) == []
