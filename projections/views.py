"""What the read views return: the shapes the API and the CLI serialise."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Final
from uuid import UUID

import msgspec

#: The key under which daily metrics count messages that have no reported status at all.
NO_STATUS: Final = "none"


class MessagePart(msgspec.Struct, frozen=True):
    """One part of a multi-part message (a callback whose ``ParentMessageUUID`` names
    another message), with its own current status."""

    message_uuid: UUID
    status: str | None
    error_code: str | None


class MessageStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One message's current status, as folded from its events.

    ``status_at`` is the event time of the event that set the current status; each
    ``<status>_at`` is the earliest event time reported with that status. Amounts are exact
    decimals (serialised as strings). A message this ledger sent names its
    ``send_request_id`` and carries the request's ``tags``; a resend names the message it
    resends (``resent_from``), and the failed message the one it was resent as
    (``resent_as``). A multi-part message lists its ``parts``, and its ``status`` is the
    worst of theirs (:func:`projections.parts.worst_status`): a delivered part never hides a
    failed one.
    """

    message_uuid: UUID
    status: str | None
    error_code: str | None
    error_description: str | None
    from_number: str | None
    to_number: str | None
    message_type: str | None
    units: int | None
    total_amount: Decimal | None
    first_event_at: datetime
    last_event_at: datetime
    status_at: datetime
    submitted_at: datetime | None
    queued_at: datetime | None
    sent_at: datetime | None
    expired_at: datetime | None
    delivered_at: datetime | None
    undelivered_at: datetime | None
    failed_at: datetime | None
    rejected_at: datetime | None
    read_at: datetime | None
    event_count: int
    last_position: int
    send_request_id: str | None = None
    tags: dict[str, str] | None = None
    resent_from: str | None = None
    resent_as: str | None = None
    parent_message_uuid: str | None = None
    parts: list[MessagePart] = msgspec.field(default_factory=list)


class MessageQuery(msgspec.Struct, frozen=True, kw_only=True):
    """A search of the status view. Every filter is optional; ``since`` is inclusive and
    ``until`` exclusive, both on the message's first event time. Numbers may be written any
    way a person dials them (see :func:`ledger.phone_numbers.normalise_number`); the error
    code is the current one. ``tags`` match messages carrying every one of them (name →
    value). ``cursor`` is the ``next_cursor`` of the previous page."""

    status: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    error_code: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    tags: dict[str, str] | None = None
    limit: int = 50
    cursor: str | None = None


class MessagePage(msgspec.Struct, frozen=True, kw_only=True):
    """One page of a search, newest first; ``next_cursor`` is None on the last page."""

    items: list[MessageStatus]
    next_cursor: str | None


class LatencyBucket(msgspec.Struct, frozen=True, kw_only=True):
    """Delivered messages whose time to deliver (first event → delivered) was below
    ``upper_bound_seconds`` and at or above the previous bucket's bound. The last bucket has
    no upper bound (None)."""

    upper_bound_seconds: int | None
    count: int


class DailyMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """One day's messages (by the day of each message's first event), each counted once at
    its current status.

    ``delivery_rate`` = delivered / (delivered + undelivered + failed + rejected + expired),
    None when nothing reached one of those outcomes. ``p50_seconds`` and ``p95_seconds`` are
    estimated from the histogram by linear interpolation within the bucket where the
    cumulative count reaches the quantile (as Prometheus' ``histogram_quantile`` does); a
    quantile falling in the unbounded last bucket reports that bucket's lower bound.
    """

    day: date
    messages: int
    statuses: dict[str, int]
    delivery_rate: float | None
    units: int
    total_amount: Decimal
    error_codes: dict[str, int]
    latency_histogram: list[LatencyBucket]
    p50_seconds: float | None
    p95_seconds: float | None
