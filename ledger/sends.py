"""Sending through Plivo, recorded in the ledger before and after, so that every message's
history starts when it was sent.

:func:`send` is the whole flow (``POST /v1/messages``, ``ledger send`` and resends use it):

1. Append ``message.send_requested`` and wait for its commit. Its dedup key is the request
   id's, and a request id is derived from the ``Idempotency-Key`` when there is one, so a
   retry, in any process, finds the first request instead of sending again.
2. Call Plivo's ``messages.create`` with ``url`` = ``LEDGER_PUBLIC_URL/plivo/status`` and
   ``method`` = ``POST``, so that every callback comes back signed to this ledger.
3. Append, in one transaction, ``message.submitted`` per message UUID and
   ``message.rejected`` per number Plivo refused; or ``message.send_failed`` with Plivo's
   error.

A process killed between 1 and 3 leaves a request without an outcome:
:func:`mark_unknown_outcomes` (a scheduled job) appends ``message.send_outcome_unknown`` for
each one older than ``LEDGER_SEND_OUTCOME_AFTER``, so the gap is shown, never silent.

:func:`outcome_of` reads a request's outcome back from the ledger; the first answer and every
idempotent retry are built from it, so they are the same.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal
from uuid import UUID

import msgspec
import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from ledger.canonical import jcs
from ledger.durations import format_duration
from ledger.events import (
    MESSAGE_REJECTED,
    MESSAGE_SUBMITTED,
    SEND_FAILED,
    SEND_OUTCOME_UNKNOWN,
    SEND_REQUESTED,
)
from ledger.plivo_api import PlivoApi, PlivoFailure
from ledger.send_events import (
    SendRequest,
    outcome_unknown_event,
    rejected_event,
    send_failed_event,
    send_requested_event,
    submitted_event,
)
from ledger.settings import Settings
from ledger.store import Append, append

#: How far back the outcome job looks for requests without an outcome.
OUTCOME_HORIZON: Final = timedelta(days=7)
#: Plivo's error messages are kept and shown up to this length.
_MAX_ERROR: Final = 300


class SentMessage(msgspec.Struct, frozen=True):
    """A message Plivo accepted: its UUID, the number when Plivo's answer tells it (one
    destination), and the ledger position of its ``message.submitted`` event."""

    message_uuid: UUID
    to: str | None
    position: int


class RejectedNumber(msgspec.Struct, frozen=True):
    """A number Plivo refused (``invalid_number``), the stream its ``message.rejected``
    event is on, and that event's position."""

    number: str
    message_uuid: UUID
    position: int


class SendFailure(msgspec.Struct, frozen=True):
    """Why a request sent nothing we know of: ``kind`` (see
    :class:`~ledger.plivo_api.PlivoFailure`, or ``outcome_unknown``), Plivo's HTTP status
    and error, the status to answer the client with and a sentence saying what to do."""

    kind: str
    http_status: int | None
    error: str
    answer_status: int
    detail: str
    position: int


class SendOutcome(msgspec.Struct, frozen=True):
    """What became of a send request, as the ledger records it. ``pending``: requested, no
    outcome yet (Plivo's answer is awaited, or the process died and the outcome job has not
    run yet)."""

    request_id: UUID
    state: Literal["submitted", "failed", "unknown", "pending"]
    request_position: int
    body_hash: str
    api_id: str | None = None
    messages: list[SentMessage] = []
    rejected: list[RejectedNumber] = []
    failure: SendFailure | None = None


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with another request body."""


def body_hash(document: Any) -> str:
    """The SHA-256 of a request body's canonical JSON (RFC 8785), hex."""
    return hashlib.sha256(jcs(document)).hexdigest()


def plivo_params(request: SendRequest, callback_url: str) -> dict[str, Any]:
    """The arguments of ``messages.create`` for ``request``: always the ledger's callback
    URL, with POST."""
    params: dict[str, Any] = {
        "dst": "<".join(request.dst),
        "text": request.text,
        "type_": request.type,
        "url": callback_url,
        "method": "POST",
    }
    if request.powerpack_uuid is not None:
        params["powerpack_uuid"] = request.powerpack_uuid
    else:
        params["src"] = request.src
    if request.media_urls:
        params["media_urls"] = list(request.media_urls)
    if request.message_expiry is not None:
        params["message_expiry"] = request.message_expiry
    if request.log is not None:
        params["log"] = "true" if request.log else "false"
    return params


async def send(
    pool: AsyncConnectionPool[Any],
    api: PlivoApi,
    request: SendRequest,
    *,
    callback_url: str,
    store_text: bool,
    key: bytes,
    wait_for_first: float = 15.0,
) -> SendOutcome:
    """Send ``request`` through Plivo, recording it before and after (module docstring).

    A request whose id is already in the ledger (an idempotent retry) sends nothing: it
    answers the first one's outcome, waiting up to ``wait_for_first`` seconds for it while
    it is pending. Raises :class:`IdempotencyConflict` when that first request had another
    body.
    """
    requested = send_requested_event(request, now=_now(), store_text=store_text, key=key)
    async with pool.connection() as conn:
        [result] = await append(conn, [Append(requested)])
    if result.outcome != "appended":
        return await _first_outcome(pool, request, wait_for_first)
    try:
        submission = await api.create(**plivo_params(request, callback_url))
    except PlivoFailure as failure:
        failed = send_failed_event(
            request.request_id,
            http_status=failure.http_status,
            error=failure.detail[:_MAX_ERROR],
            kind=failure.kind,
            now=_now(),
            key=key,
        )
        events = [failed]
    else:
        now = _now()
        one_destination = len(request.dst) - len(submission.invalid_numbers) == 1
        valid = [d for d in request.dst if d not in submission.invalid_numbers]
        events = [
            submitted_event(
                request,
                UUID(message_uuid),
                to=valid[0] if one_destination else "",
                api_id=submission.api_id,
                now=now,
                key=key,
            )
            for message_uuid in submission.message_uuids
        ]
        events += [
            rejected_event(request, number, api_id=submission.api_id, now=now, key=key)
            for number in submission.invalid_numbers
        ]
        if not events:  # a 2xx naming no message and no refused number: nothing to follow
            events = [
                send_failed_event(
                    request.request_id,
                    http_status=None,
                    error="Plivo accepted the request but named no message",
                    kind="server",
                    now=now,
                    key=key,
                )
            ]
    # Plivo has answered: losing that answer now would turn a known outcome into an unknown
    # one, so a database hiccup is retried for a few seconds (the append is idempotent).
    async for attempt in AsyncRetrying(
        stop=stop_after_attempt(4),
        wait=wait_exponential(multiplier=0.25, max=2),
        retry=retry_if_exception_type((psycopg.OperationalError, PoolTimeout)),
        reraise=True,
    ):
        with attempt:
            async with pool.connection() as conn:
                await append(conn, [Append(event) for event in events])
                outcome = await outcome_of(conn, request.request_id)
    assert outcome is not None  # its send_requested event was committed above
    return outcome


async def _first_outcome(
    pool: AsyncConnectionPool[Any], request: SendRequest, within: float
) -> SendOutcome:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        async with pool.connection() as conn:
            outcome = await outcome_of(conn, request.request_id)
        assert outcome is not None  # the append found its send_requested event
        if outcome.body_hash != request.body_hash:
            raise IdempotencyConflict(str(request.request_id))
        if outcome.state != "pending" or asyncio.get_running_loop().time() >= deadline:
            return outcome
        await asyncio.sleep(0.05)


_OUTCOME = """
SELECT position, event_type, message_uuid, payload FROM events
WHERE message_uuid = %(request)s
UNION ALL
SELECT position, event_type, message_uuid, payload FROM events
WHERE payload ->> 'SendRequest' = %(request)s::text
  AND event_type IN ('message.submitted', 'message.rejected')
ORDER BY position
"""


async def outcome_of(conn: psycopg.AsyncConnection[Any], request_id: UUID) -> SendOutcome | None:
    """The outcome of request ``request_id`` from the ledger; None if it was never made.

    Accepted messages win over a later ``send_outcome_unknown`` verdict (Plivo answered after
    all); otherwise a failure, then the verdict, then ``pending``.
    """
    cursor = await conn.execute(_OUTCOME, {"request": request_id})
    rows = await cursor.fetchall()
    requested = next((row for row in rows if row[1] == SEND_REQUESTED), None)
    if requested is None:
        return None
    position, payload = requested[0], requested[3]
    base = {
        "request_id": request_id,
        "request_position": position,
        "body_hash": _text(payload, "BodySHA256"),
    }
    messages = [
        SentMessage(row[2], _text(row[3], "To") or None, row[0])
        for row in rows
        if row[1] == MESSAGE_SUBMITTED
    ]
    rejected = [
        RejectedNumber(_text(row[3], "To"), row[2], row[0])
        for row in rows
        if row[1] == MESSAGE_REJECTED
    ]
    if messages or rejected:
        api_id = next(
            _text(row[3], "ApiId")
            for row in rows
            if row[1] in (MESSAGE_SUBMITTED, MESSAGE_REJECTED)
        )
        return SendOutcome(
            state="submitted", api_id=api_id, messages=messages, rejected=rejected, **base
        )
    for row in rows:
        if row[1] == SEND_FAILED:
            return SendOutcome(state="failed", failure=_failure(row[0], row[3]), **base)
    for row in rows:
        if row[1] == SEND_OUTCOME_UNKNOWN:
            waited = _text(row[3], "WaitedFor")
            failure = SendFailure(
                kind="outcome_unknown",
                http_status=None,
                error=f"no answer from Plivo was recorded within {waited}",
                answer_status=502,
                detail=(
                    f"The outcome of send request {request_id} is unknown: no answer from Plivo "
                    f"was recorded within {waited}. It may or may not have been sent: check "
                    "Plivo's message log before sending it again with a new Idempotency-Key."
                ),
                position=row[0],
            )
            return SendOutcome(state="unknown", failure=failure, **base)
    return SendOutcome(state="pending", **base)


def _text(payload: dict[str, Any], key: str) -> str:
    value = payload.get(key, "")
    return value if isinstance(value, str) else ""


def _failure(position: int, payload: dict[str, Any]) -> SendFailure:
    """A recorded ``message.send_failed``, with the answer and the advice it calls for."""
    kind, error = _text(payload, "ErrorKind"), _text(payload, "Error")
    status = int(raw) if (raw := _text(payload, "HttpStatus")).isdigit() else None
    said = f"Plivo answered {status}: {error}" if status else error
    advice = {
        "invalid_request": (400, f"{said}. Fix the request and send it again."),
        "authentication": (
            502,
            f"{said}. Plivo refused this ledger's credentials: the operator must check "
            "PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN. Nothing was sent.",
        ),
        "timeout": (
            502,
            f"{said}. It may or may not have been sent: check Plivo's message log before "
            "sending it again with a new Idempotency-Key.",
        ),
    }
    answer_status, detail = advice.get(
        kind, (502, f"{said}. Nothing was sent: retry later with a new Idempotency-Key.")
    )
    return SendFailure(kind, status, error, answer_status, detail, position)


def _now() -> datetime:
    return datetime.now(UTC)


_WITHOUT_OUTCOME = """
SELECT r.message_uuid, r.recorded_at FROM events AS r
WHERE r.event_type = 'message.send_requested'
  AND r.recorded_at < %(before)s AND r.recorded_at >= %(horizon)s
  AND NOT EXISTS (
      SELECT FROM events AS o
      WHERE o.message_uuid = r.message_uuid AND o.event_type <> 'message.send_requested')
  AND NOT EXISTS (
      SELECT FROM events AS s
      WHERE s.payload ->> 'SendRequest' = r.message_uuid::text
        AND s.event_type IN ('message.submitted', 'message.rejected'))
ORDER BY r.recorded_at
LIMIT %(limit)s
"""


async def mark_unknown_outcomes(
    conn: psycopg.AsyncConnection[Any],
    *,
    after: timedelta,
    key: bytes,
    now: datetime | None = None,
    limit: int = 1000,
) -> int:
    """Append ``message.send_outcome_unknown`` for each request older than ``after``
    (and younger than :data:`OUTCOME_HORIZON`) without an outcome; how many were new.

    ``after`` must exceed the longest a live process waits for Plivo (the send timeout), so
    that only requests whose process is gone are marked. Each request's verdict has one dedup
    key: racing processes append it once.
    """
    now = now or _now()
    cursor = await conn.execute(
        _WITHOUT_OUTCOME, {"before": now - after, "horizon": now - OUTCOME_HORIZON, "limit": limit}
    )
    waited = format_duration(after)
    events = [
        Append(outcome_unknown_event(request, requested_at=at, waited=waited, now=now, key=key))
        for request, at in await cursor.fetchall()
    ]
    results = await append(conn, events) if events else []
    return sum(result.outcome == "appended" for result in results)


async def unknown_outcomes(conn: psycopg.AsyncConnection[Any]) -> int:
    """How many send requests the ledger marks ``send_outcome_unknown``."""
    cursor = await conn.execute(
        "SELECT count(*) FROM events WHERE event_type = %s", (SEND_OUTCOME_UNKNOWN,)
    )
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


def plivo_api_for(settings: Settings) -> PlivoApi | None:
    """The Plivo API client the settings configure; None without ``PLIVO_AUTH_ID`` and
    ``PLIVO_AUTH_TOKEN`` (the first token sends; the others only verify callbacks)."""
    if not settings.plivo_auth_id or not settings.plivo_auth_tokens:
        return None
    return PlivoApi(
        settings.plivo_auth_id,
        settings.plivo_auth_tokens[0],
        api_url=settings.plivo_api_url,
        timeout=settings.send_timeout.total_seconds(),
        concurrency=settings.send_concurrency,
    )


def callback_url(settings: Settings) -> str:
    """The status callback URL every send gives Plivo: this ledger's callback endpoint."""
    return f"{settings.callback_base_url}/plivo/status"
