"""``POST /v1/messages``: send one message to one or many recipients through Plivo, recorded
in the ledger before and after (see :mod:`ledger.sends`)."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Final, Literal
from uuid import UUID

import msgspec
from litestar import Request, Response, post
from litestar.params import HeaderParameter, JSONBody

from api.auth import require_send_token
from api.problems import Problem, problem_responses, problem_spec
from api.services import services_of
from api.telemetry import SENDS
from ledger.events import TAG_NAME
from ledger.send_events import SendRequest, request_id_for
from ledger.sends import (
    IdempotencyConflict,
    RejectedNumber,
    SendOutcome,
    SentMessage,
    body_hash,
    callback_url,
    send,
)
from ledger.system_events import system_key

#: The most recipients one request may name.
MAX_RECIPIENTS: Final = 1000
MAX_TAGS: Final = 20
_MAX_TAG_VALUE: Final = 256
_MAX_IDEMPOTENCY_KEY: Final = 255


class SendBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A message to send: from ``src`` (a number or sender id) or ``powerpack_uuid``
    (exactly one), to ``dst`` (one number or a list), with ``text``; ``type`` ``mms`` with
    ``media_urls``. ``tags`` (name → value, e.g. ``{"campaign": "spring"}``) follow every
    message into the status view, search and metrics. ``message_expiry`` (seconds, 5 to 10799)
    and ``log`` are passed to Plivo as they are."""

    dst: str | list[str]
    text: str = ""
    src: str | None = None
    powerpack_uuid: str | None = None
    type: Literal["sms", "mms"] = "sms"
    media_urls: list[str] = []
    tags: dict[str, str] = {}
    message_expiry: Annotated[int, msgspec.Meta(ge=5, le=10799)] | None = None
    log: bool | None = None


class SendAccepted(msgspec.Struct, frozen=True):
    """Plivo accepted the request: one message per recipient it took, each with the ledger
    position of its ``message.submitted`` event, and the numbers it refused. Follow each
    message with ``GET /v1/messages/{message_uuid}/events`` or ``ledger audit``."""

    request_id: UUID
    request_position: int
    api_id: str | None
    messages: list[SentMessage]
    rejected: list[RejectedNumber]


class InvalidSend(ValueError):
    """A send request that cannot be sent: ``field`` names the input at fault."""

    def __init__(self, detail: str, field: str) -> None:
        super().__init__(detail)
        self.field = field


def _recipients(body: SendBody) -> list[str]:
    given = [body.dst] if isinstance(body.dst, str) else list(body.dst)
    numbers = [number.strip() for number in given]
    if not numbers or any(not number for number in numbers):
        raise InvalidSend("dst names no recipient: give a number or a list of numbers.", "dst")
    if len(numbers) > MAX_RECIPIENTS:
        raise InvalidSend(
            f"dst names {len(numbers)} recipients: send at most {MAX_RECIPIENTS} per request.",
            "dst",
        )
    if len(set(numbers)) != len(numbers):
        raise InvalidSend("dst names a recipient twice: name each one once.", "dst")
    return numbers


def _check(body: SendBody) -> None:
    if (body.src is None) == (body.powerpack_uuid is None):
        raise InvalidSend("Give exactly one of src and powerpack_uuid.", "src")
    if body.media_urls and body.type != "mms":
        raise InvalidSend("media_urls need type mms: set type to mms or drop them.", "media_urls")
    if not body.text and not body.media_urls:
        raise InvalidSend("The message is empty: give text (or media_urls for an MMS).", "text")
    if len(body.tags) > MAX_TAGS:
        raise InvalidSend(f"{len(body.tags)} tags: give at most {MAX_TAGS}.", "tags")
    for name, value in body.tags.items():
        if not TAG_NAME.fullmatch(name):
            raise InvalidSend(
                f"Tag name {name[:64]!r} is not a plain word: use letters, digits, '_', '.' "
                "or '-' (at most 64).",
                "tags",
            )
        if len(value) > _MAX_TAG_VALUE:
            raise InvalidSend(f"Tag {name} is longer than {_MAX_TAG_VALUE} characters.", "tags")


def send_request_for(body: SendBody, *, requested_by: str, key: str | None) -> SendRequest:
    """The ledger's record of ``body``, once it is known to be sendable (else
    :class:`InvalidSend`); its id derived from the idempotency ``key`` if there is one."""
    _check(body)
    recipients = _recipients(body)
    document = msgspec.to_builtins(msgspec.structs.replace(body, dst=recipients))
    return SendRequest(
        request_id=request_id_for(key),
        src=body.src,
        powerpack_uuid=body.powerpack_uuid,
        dst=recipients,
        text=body.text,
        type=body.type,
        media_urls=list(body.media_urls),
        tags=dict(body.tags),
        message_expiry=body.message_expiry,
        log=body.log,
        requested_by=requested_by,
        body_hash=body_hash(document),
        idempotency_key=key,
    )


def _checked_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not key.strip() or len(key) > _MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise Problem(
            400,
            f"The Idempotency-Key header must be 1 to {_MAX_IDEMPOTENCY_KEY} printable "
            "characters, e.g. a UUID.",
            field="Idempotency-Key",
        )
    return key


def token_fingerprint(request: Request[Any, Any, Any]) -> str:
    """Who asked: the first 12 hex digits of the SHA-256 of the bearer token (never the
    token itself)."""
    token = request.headers.get("authorization", "").partition(" ")[2].strip()
    return f"token:{hashlib.sha256(token.encode()).hexdigest()[:12]}"


def _answer(outcome: SendOutcome) -> Response[SendAccepted]:
    SENDS.labels(outcome.state).inc()
    if outcome.state == "pending":
        raise Problem(
            409,
            f"Send request {outcome.request_id} with this Idempotency-Key is still waiting "
            "for Plivo: retry in a few seconds with the same key.",
            headers={"Retry-After": "2"},
            request_id=str(outcome.request_id),
        )
    if outcome.failure is not None:
        raise Problem(
            outcome.failure.answer_status,
            outcome.failure.detail,
            request_id=str(outcome.request_id),
            plivo_status=outcome.failure.http_status,
            error_kind=outcome.failure.kind,
        )
    accepted = SendAccepted(
        request_id=outcome.request_id,
        request_position=outcome.request_position,
        api_id=outcome.api_id,
        messages=outcome.messages,
        rejected=outcome.rejected,
    )
    return Response(accepted, status_code=202)


@post(
    "/v1/messages",
    guards=[require_send_token],
    summary="Send a message through Plivo",
    description="Records the request in the ledger, sends it through Plivo with this ledger's "
    "callback URL (so every status comes back signed here), and records each message Plivo "
    "accepted (message.submitted) and each number it refused (message.rejected). With an "
    "Idempotency-Key, a retry with the same body answers the first request's outcome and "
    "never sends twice; the same key with another body is 422.",
    tags=["messages"],
    security=[{"bearer": []}],
    status_code=202,
    responses={
        **problem_responses(400, 401, 503),
        403: problem_spec(403, "A read token, which may not send."),
        409: problem_spec(
            409, "The first request with this Idempotency-Key is still waiting for Plivo."
        ),
        422: problem_spec(422, "This Idempotency-Key was used with another body."),
        502: problem_spec(
            502,
            "Plivo failed, refused the credentials, or did not answer: the detail says what to do.",
        ),
    },
)
async def send_message(
    request: Request[Any, Any, Any],
    data: JSONBody[SendBody],
    idempotency_key: Annotated[
        str | None,
        HeaderParameter(
            name="Idempotency-Key",
            description="Any unique string (e.g. a UUID): a retry with the same key and body "
            "never sends twice.",
        ),
    ] = None,
) -> Response[SendAccepted]:
    """Send ``data``; 202 with the messages Plivo accepted."""
    try:
        send_request = send_request_for(
            data, requested_by=token_fingerprint(request), key=_checked_key(idempotency_key)
        )
    except InvalidSend as error:
        raise Problem(400, str(error), field=error.field) from None
    svc = services_of(request)
    if svc.plivo is None:
        raise Problem(
            503,
            "Sending is not configured: the operator must set PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN.",
        )
    settings = svc.settings
    try:
        outcome = await send(
            svc.pool,
            svc.plivo,
            send_request,
            callback_url=callback_url(settings),
            store_text=settings.store_text,
            key=system_key(settings),
        )
    except IdempotencyConflict:
        SENDS.labels("conflict").inc()
        raise Problem(
            422,
            "This Idempotency-Key was already used with another request body: use a new key "
            "for a new message, or resend exactly the first body.",
            field="Idempotency-Key",
        ) from None
    return _answer(outcome)
