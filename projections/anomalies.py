"""What a message's events say that its current status does not: callbacks that arrived out
of order, repeated or contradicting each other, and a delivery report that never came.

Support staff read these in ``ledger audit``; each is stated in words. The checks read the
events as the ledger stores them. Retries of a stored callback (same MessageUUID, Status and
Sequence) are never stored (they are answered ``duplicate``), so what counts as a repeat here
is a *stored* callback reporting a status already reported, e.g. under a new Sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Final, Literal

import msgspec

from ledger.durations import describe_duration
from ledger.events import STATUS_REPORTED, RecordedEvent
from projections.fold import STATUS_RANKS, UNKNOWN_STATUS_RANK

#: Still without a final status this long after its first event, a message is flagged.
#: Delivery reports usually come within minutes, and Plivo fails a message still queued
#: after its expiry (3 h by default) with error 420.
OVERDUE_AFTER: Final = timedelta(hours=1)
#: The rank of the final outcomes (delivered, undelivered, failed, rejected).
_FINAL_RANK: Final = STATUS_RANKS["delivered"]
_STILL_ON_ITS_WAY: Final = frozenset({"submitted", "queued", "sent"})

AnomalyKind = Literal["out_of_order", "repeated", "conflicting", "overdue"]


class Anomaly(msgspec.Struct, frozen=True):
    """One thing worth a support person's attention, and its wording."""

    kind: AnomalyKind
    text: str


def _rank(status: str | None) -> int:
    return STATUS_RANKS.get(status or "", UNKNOWN_STATUS_RANK)


def _reported_statuses(events: Sequence[RecordedEvent]) -> list[str]:
    """The statuses of Plivo's callbacks in ledger (recording) order."""
    return [
        event.status
        for event in sorted(events, key=lambda event: event.position)
        if event.event_type == STATUS_REPORTED and event.status
    ]


def out_of_order(events: Sequence[RecordedEvent]) -> list[Anomaly]:
    """Later statuses recorded before earlier ones: "delivered reported before sent and
    queued", one line per later status."""
    found: dict[str, dict[str, None]] = {}
    seen: list[str] = []
    for status in _reported_statuses(events):
        for earlier in seen:
            if _rank(earlier) > _rank(status) > UNKNOWN_STATUS_RANK:
                found.setdefault(earlier, {})[status] = None
        seen.append(status)
    return [
        Anomaly("out_of_order", f"{later} reported before {' and '.join(earlier)}")
        for later, earlier in found.items()
    ]


def repeated(events: Sequence[RecordedEvent]) -> list[Anomaly]:
    """Stored callbacks repeating a status already reported; the view keeps the first time
    of each status (and the winner by Sequence), so they change nothing a reader sees."""
    seen: set[str] = set()
    repeats: dict[str, int] = {}
    for status in _reported_statuses(events):
        if status in seen:
            repeats[status] = repeats.get(status, 0) + 1
        seen.add(status)
    if not repeats:
        return []
    which = ", ".join(f"{status} ×{count}" for status, count in repeats.items())
    return [Anomaly("repeated", f"duplicate callbacks ignored: {sum(repeats.values())} ({which})")]


def conflicting(events: Sequence[RecordedEvent]) -> list[Anomaly]:
    """More than one final outcome reported, e.g. undelivered and then delivered."""
    finals = list(dict.fromkeys(s for s in _reported_statuses(events) if _rank(s) == _FINAL_RANK))
    if len(finals) < 2:
        return []
    return [
        Anomaly(
            "conflicting",
            f"conflicting final reports: {', '.join(finals)} "
            "(the higher Sequence, then the later one, wins)",
        )
    ]


def overdue(
    events: Sequence[RecordedEvent], *, now: datetime, after: timedelta = OVERDUE_AFTER
) -> list[Anomaly]:
    """Still queued or sent (or with no status at all) ``after`` its first event."""
    if not events:
        return []
    statuses = [e.status for e in events if e.status]
    best = max(statuses, key=_rank, default=None)
    if best is not None and best not in _STILL_ON_ITS_WAY:
        return []
    first = min(e.occurred_at or e.recorded_at for e in events)
    waited = now - first
    if waited < after:
        return []
    return [Anomaly("overdue", f"no delivery report yet after {describe_duration(waited)}")]


def find_anomalies(
    events: Sequence[RecordedEvent], *, now: datetime, overdue_after: timedelta = OVERDUE_AFTER
) -> list[Anomaly]:
    """Every anomaly in one message's events (any order), in a stable order."""
    return [
        *out_of_order(events),
        *conflicting(events),
        *repeated(events),
        *overdue(events, now=now, after=overdue_after),
    ]
