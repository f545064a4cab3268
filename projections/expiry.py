"""The expiry sweeper: our own verdict on messages that never reached a final status.

A message whose current status (from the ``message_status`` view) is below ``expired`` in
precedence (submitted, queued, sent, an unknown status, or none) and whose last event is
older than ``LEDGER_EXPIRE_AFTER`` gets one ``message.expired`` system event. Its dedup key
depends on the message alone, so it is appended at most once per message, ever, however many
sweeps in however many processes select it (the view lags the ledger, so they may).
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from uuid import UUID

import msgspec
import psycopg

from ledger.durations import format_duration
from ledger.events import MESSAGE_EXPIRED, EventMeta, NewEvent
from ledger.store import Append, append
from ledger.system_events import signed
from projections.fold import STATUS_RANKS

log = logging.getLogger(__name__)

#: Statuses that end a message's wait: ``expired`` and everything it gives way to.
FINAL_STATUSES: Final = tuple(
    status for status, rank in STATUS_RANKS.items() if rank >= STATUS_RANKS["expired"]
)
# Distinct from the Plivo callbacks' key tags, so no callback can collide with a verdict.
_DEDUP_TAG: Final = b"v1\x00system\x00expired\x00"

_CANDIDATES = """
SELECT message_uuid, status, last_event_at FROM message_status
WHERE last_event_at < %s AND (status IS NULL OR NOT (status = ANY(%s::text[])))
ORDER BY last_event_at
LIMIT %s
"""


def expiry_dedup_key(message_uuid: UUID) -> bytes:
    """The one dedup key a message's expiry can have."""
    return hashlib.sha256(_DEDUP_TAG + msgspec.json.encode(["expired", str(message_uuid)])).digest()


def expired_event(
    message_uuid: UUID,
    *,
    last_status: str | None,
    last_event_at: datetime,
    now: datetime,
    expire_after: timedelta,
    system_key: bytes,
) -> NewEvent:
    """The ``message.expired`` system event for one message, signed with ``system_key``."""
    waited = format_duration(expire_after)
    event = NewEvent(
        message_uuid=message_uuid,
        event_type=MESSAGE_EXPIRED,
        status="expired",
        occurred_at=now,
        dedup_key=expiry_dedup_key(message_uuid),
        payload={
            "MessageUUID": str(message_uuid),
            "ExpiredAfter": waited,
            "LastStatus": last_status or "",
            "LastEventAt": last_event_at.isoformat(),
        },
        meta=EventMeta(
            source="system", signature="system", reason=f"no final status within {waited}"
        ),
    )
    return signed(event, system_key)


async def expire_stale(
    conn: psycopg.AsyncConnection[Any],
    *,
    expire_after: timedelta,
    system_key: bytes,
    now: datetime | None = None,
    limit: int = 5000,
    batch_size: int = 500,
) -> int:
    """Append ``message.expired`` for up to ``limit`` stale messages; returns how many were new.

    One query selects the candidates, oldest first; they are appended ``batch_size`` at a
    time, each batch one short transaction. ``conn`` must be in autocommit mode.
    """
    now = now or datetime.now(UTC)
    cursor = await conn.execute(_CANDIDATES, (now - expire_after, list(FINAL_STATUSES), limit))
    candidates = await cursor.fetchall()
    appended = 0
    for start in range(0, len(candidates), batch_size):
        batch = [
            Append(
                expired_event(
                    message_uuid,
                    last_status=status,
                    last_event_at=last_event_at,
                    now=now,
                    expire_after=expire_after,
                    system_key=system_key,
                )
            )
            for message_uuid, status, last_event_at in candidates[start : start + batch_size]
        ]
        results = await append(conn, batch)
        appended += sum(result.outcome == "appended" for result in results)
    if appended:
        log.info(
            "expired %d messages with no final status within %s",
            appended,
            format_duration(expire_after),
        )
    return appended
