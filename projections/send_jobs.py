"""Scheduled work on sent messages: reconciliation with Plivo's Message API, and opt-in resends.

**Reconciliation.** A message still without a final status ``LEDGER_RECONCILE_AFTER`` (30 min)
after its last event most likely lost its callbacks (Plivo retries them for about 7 minutes
only). :meth:`SendJobs.reconcile` asks the Message API (``messages.get``) for each such
message the status view knows, oldest first, and appends Plivo's answer as
``message.reconciled``, so that lost callbacks are recovered instead of expiring. The lookups
are spaced to ``LEDGER_RECONCILE_PER_MINUTE`` (default 20, the rate Plivo documents for its
message listing, the only Message API limit it publishes), and a run makes at most that many,
so that one run a minute across all processes keeps to the limit. A message Plivo does not
know (404) is left to the expiry sweep, which then settles only what Plivo itself cannot.

**Resend.** With ``LEDGER_RESEND_ERROR_CODES`` set (codes or families, e.g. ``temporary``),
:meth:`SendJobs.resend` sends a message this ledger sent again when it failed with one of
those codes, after ``LEDGER_RESEND_BACKOFF`` * 2^(attempt-1), up to
``LEDGER_RESEND_MAX_ATTEMPTS`` sends in all. The resend is an ordinary send (the same events)
whose request id derives from the failed message, so racing workers send it once: the second
finds the first's request in the ledger. The new message's ``submitted`` names the old one
(``ResentFrom``), and ``message.resend_scheduled`` on the old one names the new one
(``ResentAs``): both audits show the link. Invalid or blocked recipients are never resent
(:data:`ledger.error_families.NEVER_RESEND`).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from uuid import UUID

import msgspec
from psycopg_pool import AsyncConnectionPool

from ledger.error_families import NEVER_RESEND
from ledger.events import SEND_REQUESTED, TAG_PREFIX, Payload
from ledger.plivo_api import PlivoApi, PlivoFailure
from ledger.send_events import (
    SendRequest,
    reconciled_event,
    resend_request_id,
    resend_scheduled_event,
)
from ledger.sends import body_hash, send
from ledger.store import Append, append, read_stream
from projections.expiry import FINAL_STATUSES

log = logging.getLogger(__name__)

#: Plivo keeps message records for 90 days: older messages cannot be looked up.
PLIVO_RETENTION: Final = timedelta(days=90)
#: Failures older than this are not resent, so that switching resends on does not send a
#: backlog of old messages.
RESEND_HORIZON: Final = timedelta(days=1)

_UNSETTLED = """
SELECT message_uuid, last_position FROM message_status
WHERE last_event_at < %(before)s AND last_event_at > %(horizon)s
  AND (status IS NULL OR NOT (status = ANY(%(final)s::text[])))
ORDER BY last_event_at
LIMIT %(limit)s
"""
_FAILED = """
SELECT message_uuid, error_code, status_at, to_number, send_request_id FROM message_status
WHERE status IN ('failed', 'undelivered') AND error_code = ANY(%(codes)s::text[])
  AND resent_as IS NULL AND send_request_id IS NOT NULL AND status_at > %(horizon)s
ORDER BY status_at
LIMIT %(limit)s
"""
_REQUESTED = """
SELECT message_uuid FROM events
WHERE message_uuid = ANY(%s::uuid[]) AND event_type = 'message.send_requested'
"""


class SendSettings(msgspec.Struct, frozen=True, kw_only=True):
    """What the jobs need of the settings (see the README's configuration table)."""

    callback_url: str
    store_text: bool
    reconcile_after: timedelta
    reconcile_per_minute: int
    resend_error_codes: frozenset[str]
    resend_max_attempts: int
    resend_backoff: timedelta


class _Failure(msgspec.Struct, frozen=True):
    """A failed message a resend may follow, from the status view."""

    message_uuid: UUID
    error_code: str
    failed_at: datetime
    to_number: str | None
    send_request_id: str


class SendJobs:
    """Reconciliation and resends, for :class:`projections.scheduler.ScheduledJobs`."""

    def __init__(
        self, pool: AsyncConnectionPool[Any], api: PlivoApi, settings: SendSettings, *, key: bytes
    ) -> None:
        """``key`` signs the events (the system key)."""
        self._pool = pool
        self._api = api
        self._settings = settings
        self._key = key

    @property
    def resends(self) -> bool:
        """Whether resends are switched on."""
        return bool(self._settings.resend_error_codes)

    async def reconcile(self, *, now: datetime | None = None) -> int:
        """Look up unsettled messages at Plivo and append its answers; how many were new."""
        now = now or datetime.now(UTC)
        rate = self._settings.reconcile_per_minute
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                _UNSETTLED,
                {
                    "before": now - self._settings.reconcile_after,
                    "horizon": now - PLIVO_RETENTION,
                    "final": list(FINAL_STATUSES),
                    "limit": rate,
                },
            )
            candidates = await cursor.fetchall()
        appended = 0
        loop = asyncio.get_running_loop()
        next_call = loop.time()
        for message_uuid, last_position in candidates:
            await asyncio.sleep(max(0.0, next_call - loop.time()))
            next_call = loop.time() + 60 / rate
            try:
                found = await self._api.get(str(message_uuid))
            except PlivoFailure as failure:
                log.warning("reconciliation stopped: %s (%s)", failure.detail, failure.kind)
                break
            if found is None or not found.message_state:
                log.info("Plivo's Message API does not know %s: left to the expiry", message_uuid)
                continue
            event = reconciled_event(found, checked_after=last_position, now=now, key=self._key)
            async with self._pool.connection() as conn:
                [result] = await append(conn, [Append(event)])
            appended += result.outcome == "appended"
        if appended:
            log.info("reconciled %d messages with Plivo's Message API", appended)
        return appended

    async def resend(self, *, now: datetime | None = None, limit: int = 100) -> int:
        """Send again the failed messages due a resend (module docstring); how many."""
        now = now or datetime.now(UTC)
        codes = sorted(self._settings.resend_error_codes - NEVER_RESEND)
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                _FAILED, {"codes": codes, "horizon": now - RESEND_HORIZON, "limit": limit}
            )
            failures = [_Failure(*row) for row in await cursor.fetchall()]
            # A failure whose resend was requested before (by this job anywhere) is done
            # with, whatever became of that resend.
            cursor = await conn.execute(
                _REQUESTED, ([resend_request_id(f.message_uuid) for f in failures],)
            )
            requested = {row[0] for row in await cursor.fetchall()}
        resent = 0
        for failure in failures:
            if resend_request_id(failure.message_uuid) not in requested and failure.to_number:
                resent += await self._resend_one(failure, now)
        return resent

    async def _resend_one(self, failure: _Failure, now: datetime) -> int:
        failed, to_number = failure.message_uuid, failure.to_number or ""
        async with self._pool.connection() as conn:
            stream = await read_stream(conn, UUID(failure.send_request_id))
        first = next((e.payload for e in stream if e.event_type == SEND_REQUESTED), None)
        if first is None:
            return 0
        text, attempt = _text(first, "Text"), int(_text(first, "Attempt") or "1")
        due = failure.failed_at + self._settings.resend_backoff * 2 ** (attempt - 1)
        if attempt >= self._settings.resend_max_attempts or now < due:
            return 0
        if "Text" not in first:
            log.warning("cannot resend %s: its text was not stored (LEDGER_STORE_TEXT)", failed)
            return 0
        request = _resend_request(first, failed, to_number, text, attempt + 1)
        outcome = await send(
            self._pool,
            self._api,
            request,
            callback_url=self._settings.callback_url,
            store_text=self._settings.store_text,
            key=self._key,
        )
        if not outcome.messages:
            log.warning("resend of %s sent nothing: %s", failed, outcome.state)
            return 0
        linked = resend_scheduled_event(
            failed,
            outcome.messages[0].message_uuid,
            request_id=request.request_id,
            attempt=request.attempt,
            error_code=failure.error_code,
            now=now,
            key=self._key,
        )
        async with self._pool.connection() as conn:
            [result] = await append(conn, [Append(linked)])
        return int(result.outcome == "appended")


def _text(payload: Payload, key: str) -> str:
    value = payload.get(key, "")
    return value if isinstance(value, str) else ""


def _resend_request(
    first: Payload, failed: UUID, to_number: str, text: str, attempt: int
) -> SendRequest:
    """The send request of the resend of ``failed``: the first request's sender, type,
    media and tags, to the failed message's recipient."""
    media = first.get("MediaURLs", [])
    tags = {
        key.removeprefix(TAG_PREFIX): value
        for key, value in first.items()
        if key.startswith(TAG_PREFIX) and isinstance(value, str)
    }
    fields: dict[str, Any] = {
        "src": _text(first, "From") or None,
        "powerpack_uuid": _text(first, "PowerpackUUID") or None,
        "dst": [to_number],
        "text": text,
        "type": _text(first, "Type") or "sms",
        "media_urls": media if isinstance(media, list) else [media],
        "tags": tags,
    }
    return SendRequest(
        request_id=resend_request_id(failed),
        requested_by="resend",
        body_hash=body_hash({**fields, "resent_from": str(failed)}),
        resent_from=failed,
        attempt=attempt,
        **fields,
    )
