"""The alert webhook's outbox (migration 009): deliveries kept until the receiver takes them.

The alert run adds its events in the transaction that replaces the alerts
(:func:`enqueue`), and :func:`deliver_due` posts what is due: at once after the run, and
from the deliveries job every minute. A delivery is claimed with a lease first, so that two
processes never post it at the same time and one killed mid-post leaves it to the next
run; it is deleted once taken, rescheduled with a growing wait when not, and given up
(logged as an error) a day after it was made, when the alert it reports is long stale.
Delivery is at least once: every attempt carries the same ``webhook-id``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Final

import httpx
import msgspec
import psycopg
from psycopg_pool import AsyncConnectionPool

from projections.alerts import AlertEvent, AlertWebhook, WebhookFailed

log = logging.getLogger(__name__)

#: How long a claimed delivery is left to the process that claimed it: past every attempt
#: of one post (``AlertWebhook``: 5 attempts, 10 s each, 15 s of waits).
LEASE: Final = timedelta(minutes=2)
#: The most deliveries one run claims.
CLAIM_LIMIT: Final = 100
#: The wait after a failed run: doubled for each failed run, up to an hour.
FIRST_RETRY: Final = timedelta(minutes=1)
LAST_RETRY: Final = timedelta(hours=1)
#: A delivery not taken this long after it was made is given up.
GIVE_UP_AFTER: Final = timedelta(hours=24)


class Delivery(msgspec.Struct, frozen=True):
    """One claimed delivery: its Standard Webhooks id, the JSON body, failed runs so far."""

    webhook_id: str
    body: bytes
    attempts: int


class DeliveryRun(msgspec.Struct, frozen=True):
    """What one :func:`deliver_due` did."""

    delivered: int = 0
    failed: int = 0
    given_up: int = 0


async def enqueue(conn: psycopg.AsyncConnection[Any], events: Sequence[AlertEvent]) -> None:
    """Add ``events`` to the outbox, each with a new webhook id (one statement)."""
    if not events:
        return
    await conn.execute(
        "INSERT INTO alert_deliveries (webhook_id, body)"
        " SELECT * FROM unnest(%s::text[], %s::bytea[])",
        (
            [f"msg_{uuid.uuid4().hex}" for _ in events],
            [msgspec.json.encode(event) for event in events],
        ),
    )


async def pending(conn: psycopg.AsyncConnection[Any]) -> int:
    """Deliveries the receiver has not taken yet."""
    cursor = await conn.execute("SELECT count(*) FROM alert_deliveries")
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def _give_up_stale(conn: psycopg.AsyncConnection[Any], give_up_after: timedelta) -> int:
    cursor = await conn.execute(
        "DELETE FROM alert_deliveries WHERE created_at < now() - %s::interval"
        " RETURNING webhook_id, attempts, last_error",
        (give_up_after,),
    )
    stale = await cursor.fetchall()
    for webhook_id, attempts, error in stale:
        log.error(
            "alert webhook: gave up on %s after %d failed runs over %s: %s",
            webhook_id,
            attempts,
            give_up_after,
            error,
        )
    return len(stale)


async def _claim(conn: psycopg.AsyncConnection[Any]) -> list[Delivery]:
    cursor = await conn.execute(
        "UPDATE alert_deliveries SET next_attempt_at = now() + %s::interval"
        " WHERE webhook_id IN (SELECT webhook_id FROM alert_deliveries"
        "  WHERE next_attempt_at <= now() ORDER BY created_at LIMIT %s FOR UPDATE SKIP LOCKED)"
        " RETURNING webhook_id, body, attempts",
        (LEASE, CLAIM_LIMIT),
    )
    return [
        Delivery(webhook_id, bytes(body), attempts)
        for webhook_id, body, attempts in await cursor.fetchall()
    ]


def _retry_wait(failed_runs: int) -> timedelta:
    # The shift is bounded: past an hour the wait stops growing, and timedelta would overflow.
    return min(FIRST_RETRY * (1 << min(failed_runs - 1, 6)), LAST_RETRY)


async def deliver_due(
    pool: AsyncConnectionPool[Any],
    webhook: AlertWebhook,
    *,
    give_up_after: timedelta = GIVE_UP_AFTER,
) -> DeliveryRun:
    """Post every delivery that is due (see the module docstring); what happened."""
    async with pool.connection() as conn:
        given_up = await _give_up_stale(conn, give_up_after)
        claimed = await _claim(conn)
    delivered = failed = 0
    async with httpx.AsyncClient(timeout=webhook.timeout) as client:
        for delivery in claimed:
            try:
                await webhook.post(client, delivery.webhook_id, delivery.body)
            except (httpx.HTTPError, WebhookFailed) as error:
                failed += 1
                runs = delivery.attempts + 1
                log.warning(
                    "alert webhook: %s not delivered (run %d), retried in %s: %s",
                    delivery.webhook_id,
                    runs,
                    _retry_wait(runs),
                    error,
                )
                async with pool.connection() as conn:
                    await conn.execute(
                        "UPDATE alert_deliveries SET attempts = %s, last_error = %s,"
                        " next_attempt_at = now() + %s::interval WHERE webhook_id = %s",
                        (runs, str(error)[:500], _retry_wait(runs), delivery.webhook_id),
                    )
            else:
                delivered += 1
                async with pool.connection() as conn:
                    await conn.execute(
                        "DELETE FROM alert_deliveries WHERE webhook_id = %s",
                        (delivery.webhook_id,),
                    )
    return DeliveryRun(delivered, failed, given_up)
