"""The shapes of ledger events, on their way in and on their way out."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Final, Literal
from uuid import UUID

import msgspec

#: A callback's fields exactly as received. A key sent more than once keeps every value, in order.
Payload = dict[str, str | list[str]]

STATUS_REPORTED = "plivo.status_reported"
MESSAGE_SUBMITTED = "message.submitted"
MESSAGE_EXPIRED = "message.expired"
#: Sending (see :mod:`ledger.sends`). A send request is a stream of its own, keyed by the
#: request id (a UUID): ``send_requested`` opens it, and ``send_failed`` or
#: ``send_outcome_unknown`` close it when Plivo gave no message. Each message Plivo accepted
#: gets ``submitted`` on its own stream, each number it refused ``rejected`` (on a stream
#: derived from the request and the number), both naming the request in ``SendRequest``.
SEND_REQUESTED = "message.send_requested"
SEND_FAILED = "message.send_failed"
SEND_OUTCOME_UNKNOWN = "message.send_outcome_unknown"
MESSAGE_REJECTED = "message.rejected"
#: Plivo's Message API's answer for a message whose callbacks stopped (reconciliation).
MESSAGE_RECONCILED = "message.reconciled"
#: On a failed message: it was sent again, as the message named in ``ResentAs``.
RESEND_SCHEDULED = "message.resend_scheduled"
#: The events of a send request's own stream: no message's row folds them.
SEND_REQUEST_EVENTS: Final = (SEND_REQUESTED, SEND_FAILED, SEND_OUTCOME_UNKNOWN)
#: Payload keys of send events: the request a message came from, and its tags
#: (``tag.<name>``).
SEND_REQUEST_KEY: Final = "SendRequest"
TAG_PREFIX: Final = "tag."
#: What a tag name may be: a plain word, so that ``name=value`` filters always parse.
TAG_NAME: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")

SignatureScheme = Literal["v3", "v3-ma", "v2", "v2-ma", "unsigned", "system"]


class EventMeta(msgspec.Struct, frozen=True, omit_defaults=True):
    """How an event reached the ledger: who sent it, and what proves it.

    A Plivo event keeps its signature material, so that ``ledger verify`` can re-check it at
    any time against the configured auth tokens: the ``method`` and exact ``signed_url``
    that were verified, the ``nonce``, and the signature headers as received (``signatures``,
    by header name). Never a token. A system event carries ``mac``, an HMAC of its content
    under the service's system key (see :mod:`ledger.system_events`).
    """

    source: Literal["plivo", "system"]
    signature: SignatureScheme
    nonce: str | None = None
    method: str | None = None
    signed_url: str | None = None
    signatures: dict[str, str] | None = None
    request_id: str | None = None
    remote_addr: str | None = None
    reason: str | None = None
    mac: str | None = None


class NewEvent(msgspec.Struct, frozen=True):
    """An event about to be appended. ``dedup_key`` makes the append idempotent."""

    message_uuid: UUID
    event_type: str
    status: str | None
    occurred_at: datetime | None
    dedup_key: bytes
    payload: Payload
    meta: EventMeta


class RecordedEvent(msgspec.Struct, frozen=True):
    """An event as stored in the ledger, with its global position."""

    position: int
    transaction_id: int
    message_uuid: UUID
    event_type: str
    status: str | None
    occurred_at: datetime | None
    recorded_at: datetime
    dedup_key: bytes
    payload: Payload
    meta: EventMeta
