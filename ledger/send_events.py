"""The events of sending a message, and the keys that make each one happen at most once.

A send request is a stream of its own, keyed by the request id (a UUID, see
:func:`request_id_for`): ``message.send_requested`` opens it; ``message.send_failed`` (Plivo
refused or failed) or ``message.send_outcome_unknown`` (no answer was recorded in time)
close it when there is no message to follow. Each message Plivo accepted gets
``message.submitted`` on its own stream (Plivo's UUID), and each number Plivo listed in
``invalid_number`` gets ``message.rejected`` on a stream derived from the request and the
number, so that it is counted like any rejected message. Both name the request in
``SendRequest`` and carry its tags as ``tag.<name>`` keys.

Every one is a system event (:mod:`ledger.system_events`): signed with the system key, its
``meta.reason`` saying who asked. Dedup keys depend only on what the event is about (the
request, the message, the number), so retries and racing processes append each one once.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Final
from uuid import UUID, uuid4, uuid5

import msgspec

from ledger.events import (
    MESSAGE_RECONCILED,
    MESSAGE_REJECTED,
    MESSAGE_SUBMITTED,
    RESEND_SCHEDULED,
    SEND_FAILED,
    SEND_OUTCOME_UNKNOWN,
    SEND_REQUEST_KEY,
    SEND_REQUESTED,
    TAG_PREFIX,
    EventMeta,
    NewEvent,
    Payload,
)
from ledger.plivo_api import PlivoMessage
from ledger.system_events import signed

#: The namespace of the UUIDs this service derives (request ids from idempotency keys,
#: resends, streams of rejected numbers). Fixed forever: changing it would forget every key.
SEND_NAMESPACE: Final = UUID("6f1d3c52-8f0e-4b8e-9d51-4c2b1e7a0d5f")
_KEY_TAG: Final = b"v1\x00system\x00send\x00"
#: How a reconciled event is authenticated: the ledger asked Plivo's API itself.
PLIVO_API_REASON: Final = "system: Plivo API"


class SendRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One send, as the ledger records it before calling Plivo.

    ``requested_by`` says who asked (a token's fingerprint, ``cli``, or ``resend``);
    ``body_hash`` is the SHA-256 of the canonical request, so that an idempotent retry with
    another body is recognised; ``text`` is kept only with ``LEDGER_STORE_TEXT=1`` (its length
    and hash always are). ``resent_from`` and ``attempt`` are set on a resend.
    """

    request_id: UUID
    src: str | None = None
    powerpack_uuid: str | None = None
    dst: list[str]
    text: str
    type: str = "sms"
    media_urls: list[str] = []
    tags: dict[str, str] = {}
    message_expiry: int | None = None
    log: bool | None = None
    requested_by: str
    body_hash: str
    idempotency_key: str | None = None
    resent_from: UUID | None = None
    attempt: int = 1


def request_id_for(idempotency_key: str | None) -> UUID:
    """The request id: derived from the ``Idempotency-Key`` when there is one (so that every
    retry, in any process, lands on the same stream and dedup key), else random."""
    if idempotency_key is None:
        return uuid4()
    return uuid5(SEND_NAMESPACE, f"idempotency-key:{idempotency_key}")


def resend_request_id(failed: UUID) -> UUID:
    """The request id of the resend of ``failed``: one per failed message, ever."""
    return uuid5(SEND_NAMESPACE, f"resend:{failed}")


def rejected_stream(request_id: UUID, number: str) -> UUID:
    """The stream of a number Plivo refused in request ``request_id``."""
    return uuid5(SEND_NAMESPACE, f"rejected:{request_id}:{number}")


def dedup_key(kind: str, *parts: str) -> bytes:
    """The one dedup key of a send event of ``kind`` about ``parts``."""
    return hashlib.sha256(_KEY_TAG + msgspec.json.encode([kind, *parts])).digest()


def text_hash(text: str) -> str:
    """The SHA-256 of a message's text, hex."""
    return hashlib.sha256(text.encode()).hexdigest()


def _tags(tags: dict[str, str]) -> Payload:
    return {f"{TAG_PREFIX}{name}": value for name, value in sorted(tags.items())}


def _sender(request: SendRequest) -> Payload:
    if request.powerpack_uuid is not None:
        return {"PowerpackUUID": request.powerpack_uuid}
    return {"From": request.src or ""}


def _meta(reason: str) -> EventMeta:
    return EventMeta(source="system", signature="system", reason=reason)


def send_requested_event(
    request: SendRequest, *, now: datetime, store_text: bool, key: bytes
) -> NewEvent:
    """``message.send_requested``: what was asked, by whom, before Plivo is called."""
    payload: Payload = {
        "RequestId": str(request.request_id),
        "RequestedBy": request.requested_by,
        "To": list(request.dst),
        "Type": request.type,
        "TextLength": str(len(request.text)),
        "TextSHA256": text_hash(request.text),
        "BodySHA256": request.body_hash,
        **_sender(request),
        **_tags(request.tags),
    }
    if store_text:
        payload["Text"] = request.text
    if request.media_urls:
        payload["MediaURLs"] = list(request.media_urls)
    if request.message_expiry is not None:
        payload["MessageExpiry"] = str(request.message_expiry)
    if request.log is not None:
        payload["Log"] = "true" if request.log else "false"
    if request.resent_from is not None:
        payload["ResentFrom"] = str(request.resent_from)
        payload["Attempt"] = str(request.attempt)
    event = NewEvent(
        message_uuid=request.request_id,
        event_type=SEND_REQUESTED,
        status=None,
        occurred_at=now,
        dedup_key=dedup_key("requested", str(request.request_id)),
        payload=payload,
        meta=_meta(f"send requested by {request.requested_by}"),
    )
    return signed(event, key)


def submitted_event(
    request: SendRequest, message_uuid: UUID, *, to: str, api_id: str, now: datetime, key: bytes
) -> NewEvent:
    """``message.submitted``: Plivo accepted the message ``message_uuid`` for ``to``."""
    payload: Payload = {
        "MessageUUID": str(message_uuid),
        SEND_REQUEST_KEY: str(request.request_id),
        "ApiId": api_id,
        "To": to,
        "Type": request.type,
        **_sender(request),
        **_tags(request.tags),
    }
    if request.resent_from is not None:
        payload["ResentFrom"] = str(request.resent_from)
        payload["Attempt"] = str(request.attempt)
    event = NewEvent(
        message_uuid=message_uuid,
        event_type=MESSAGE_SUBMITTED,
        status="submitted",
        occurred_at=now,
        dedup_key=dedup_key("submitted", str(message_uuid)),
        payload=payload,
        meta=_meta(f"accepted by the Plivo API for request {request.request_id}"),
    )
    return signed(event, key)


def rejected_event(
    request: SendRequest, number: str, *, api_id: str, now: datetime, key: bytes
) -> NewEvent:
    """``message.rejected``: Plivo listed ``number`` in the answer's ``invalid_number``."""
    stream = rejected_stream(request.request_id, number)
    event = NewEvent(
        message_uuid=stream,
        event_type=MESSAGE_REJECTED,
        status="rejected",
        occurred_at=now,
        dedup_key=dedup_key("rejected", str(request.request_id), number),
        payload={
            "MessageUUID": str(stream),
            SEND_REQUEST_KEY: str(request.request_id),
            "ApiId": api_id,
            "To": number,
            "Type": request.type,
            "Reason": "invalid_number",
            **_sender(request),
            **_tags(request.tags),
        },
        meta=_meta(f"refused by the Plivo API for request {request.request_id}"),
    )
    return signed(event, key)


def send_failed_event(
    request_id: UUID, *, http_status: int | None, error: str, kind: str, now: datetime, key: bytes
) -> NewEvent:
    """``message.send_failed``: Plivo answered an error (``http_status``; None on a timeout
    or a connection failure) and sent nothing."""
    return _closing(
        SEND_FAILED,
        request_id,
        "failed",
        {
            "HttpStatus": "" if http_status is None else str(http_status),
            "Error": error,
            "ErrorKind": kind,
        },
        reason="the Plivo API answered an error",
        now=now,
        key=key,
    )


def outcome_unknown_event(
    request_id: UUID, *, requested_at: datetime, waited: str, now: datetime, key: bytes
) -> NewEvent:
    """``message.send_outcome_unknown``: no outcome of the request was recorded within
    ``waited`` (the process died between the request and Plivo's answer, or lost it)."""
    return _closing(
        SEND_OUTCOME_UNKNOWN,
        request_id,
        "outcome-unknown",
        {"RequestedAt": requested_at.isoformat(), "WaitedFor": waited},
        reason=f"no outcome recorded within {waited}: Plivo may or may not have sent it",
        now=now,
        key=key,
    )


def _closing(
    event_type: str,
    request_id: UUID,
    kind: str,
    payload: Payload,
    *,
    reason: str,
    now: datetime,
    key: bytes,
) -> NewEvent:
    """An event closing the stream of request ``request_id``: at most one of each kind."""
    event = NewEvent(
        message_uuid=request_id,
        event_type=event_type,
        status=None,
        occurred_at=now,
        dedup_key=dedup_key(kind, str(request_id)),
        payload={"RequestId": str(request_id), **payload},
        meta=_meta(reason),
    )
    return signed(event, key)


def reconciled_event(
    found: PlivoMessage, *, checked_after: int, now: datetime, key: bytes
) -> NewEvent:
    """``message.reconciled``: what Plivo's Message API says of a message whose callbacks
    stopped. Its fields are named as a callback's, so that the status fold reads them alike;
    its time is the lookup's (the Message API gives no time per status). One per message and
    view state (``checked_after``, the last position the view had folded), so that racing
    jobs record one answer, and a later check, after more time without news, another."""
    message_uuid = UUID(found.message_uuid)
    event = NewEvent(
        message_uuid=message_uuid,
        event_type=MESSAGE_RECONCILED,
        status=found.message_state or None,
        occurred_at=now,
        dedup_key=dedup_key("reconciled", str(message_uuid), str(checked_after)),
        payload={
            "MessageUUID": found.message_uuid,
            "Status": found.message_state,
            "ErrorCode": found.error_code,
            "From": found.from_number,
            "To": found.to_number,
            "Type": found.message_type,
            "Units": found.units,
            "TotalRate": found.total_rate,
            "TotalAmount": found.total_amount,
            "MessageTime": found.message_time,
            "CheckedAfterPosition": str(checked_after),
        },
        meta=_meta(PLIVO_API_REASON),
    )
    return signed(event, key)


def resend_scheduled_event(
    failed: UUID,
    resent_as: UUID,
    *,
    request_id: UUID,
    attempt: int,
    error_code: str,
    now: datetime,
    key: bytes,
) -> NewEvent:
    """``message.resend_scheduled`` on the failed message: it was sent again, as
    ``resent_as`` (attempt ``attempt``), by request ``request_id``. One per failed message."""
    event = NewEvent(
        message_uuid=failed,
        event_type=RESEND_SCHEDULED,
        status=None,
        occurred_at=now,
        dedup_key=dedup_key("resend", str(failed)),
        payload={
            "MessageUUID": str(failed),
            "ResentAs": str(resent_as),
            SEND_REQUEST_KEY: str(request_id),
            "Attempt": str(attempt),
            "ErrorCode": error_code,
        },
        meta=_meta(f"error {error_code} is in LEDGER_RESEND_ERROR_CODES: sent again"),
    )
    return signed(event, key)
