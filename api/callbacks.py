"""``/plivo/status``: Plivo's status callbacks, acknowledged only once durably appended.

The order of the checks is the point: what costs nothing comes first. A request declaring a
body over the limit, or without any signature header, is refused before its body is read;
one with more fields than a callback could carry is refused before it is decoded; only then
is the signature computed, and only a signed callback reaches the database, where its nonce
is pinned to its body.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Literal

import msgspec
from litestar import MediaType, Request, route
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.openapi.datastructures import ResponseSpec
from litestar.response.base import ASGIResponse

from api.callback_schema import CallbackOperation, operation_id
from api.problems import Problem, problem_responses, problem_spec
from api.services import Services, services_of
from api.telemetry import ACK_SECONDS, CALLBACK_OUTCOMES
from ledger.callbacks import CallbackError, Params, parse_form, parse_json, parse_query, to_event
from ledger.database import DatabaseUnavailable
from ledger.events import EventMeta
from ledger.settings import Settings
from ledger.signatures import (
    SignatureError,
    has_signature_headers,
    verify_signature,
)
from ledger.store import Append, NonceGuard

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = "5"


class CallbackAccepted(msgspec.Struct, frozen=True):
    """The answer to an accepted callback."""

    result: Literal["appended", "duplicate"]
    position: int


async def _params(request: Request[Any, Any, Any], max_fields: int) -> Params:
    if request.method == "GET":
        return parse_query(request.scope["query_string"].decode("latin-1"), max_fields=max_fields)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "application/x-www-form-urlencoded":
        return parse_form(await request.body(), max_fields=max_fields)
    if media_type == "application/json":
        return parse_json(await request.body(), max_fields=max_fields)
    CALLBACK_OUTCOMES["unsupported_media_type"].inc()
    raise Problem(
        415,
        f"Content-Type {media_type or '(none)'!r} is not accepted: send "
        "application/x-www-form-urlencoded (as Plivo does) or application/json.",
    )


def signed_url(request: Request[Any, Any, Any], base_url: str) -> str:
    """The URL Plivo called, as it signed it: the configured public base URL (behind a TLS
    proxy the app sees another scheme and host) + the path and query exactly as received,
    before any routing normalisation (``/plivo/status/``, ``//plivo/status`` and
    ``/plivo/%73tatus`` all reach this route, and each is signed as what it is)."""
    raw_path: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
    path = raw_path.partition(b"?")[0].decode("latin-1")
    query = request.scope["query_string"].decode("latin-1")
    return f"{base_url}{path}" + (f"?{query}" if query else "")


@route(
    # Litestar routes /plivo/status/ and //plivo/status here too; signed_url keeps them apart.
    "/plivo/status",
    http_method=["GET", "POST"],
    # The route reads its fields and headers itself: their description is added here.
    operation_class=CallbackOperation,
    operation_id=operation_id,
    summary="Receive a Plivo message status callback",
    description=(
        "Plivo calls this URL on every status change of a message. The callback is checked "
        "against its V3 or V2 signature, stored as an immutable event, and answered 200 only "
        "after the commit. Retries are recognised and answered 200 without a second event."
    ),
    tags=["callbacks"],
    status_code=200,
    responses={
        # The handler answers with ready-encoded bytes (see _accepted); this is their shape.
        200: ResponseSpec(CallbackAccepted, description="Stored, or recognised as a retry."),
        **problem_responses(400, 413, 415, 503),
        403: problem_spec(
            403,
            "No signature header, a signature that does not match (V3 or V2), or a nonce "
            "already used with a different body.",
        ),
    },
)
async def receive_status(request: Request[Any, Any, Any]) -> ASGIResponse:
    """Validate, authenticate and append one status callback."""
    started = time.perf_counter()
    try:
        return await _receive(request, services_of(request))
    finally:
        ACK_SECONDS.observe(time.perf_counter() - started)


def _refuse_signature(request_id: str, reason: str) -> Problem:
    CALLBACK_OUTCOMES["bad_signature"].inc()
    log.warning("refused callback %s: %s", request_id, reason)
    return Problem(403, f"{reason}.")


def _authenticate(
    request: Request[Any, Any, Any], settings: Settings, params: Params, request_id: str
) -> tuple[EventMeta, NonceGuard | None]:
    """How the callback was authenticated (with the material to re-check it later), and the
    nonce it must not reuse for another body."""
    client = request.client  # built from the scope on every access
    remote_addr = client.host if client else None
    if settings.skip_signatures:
        return EventMeta("plivo", "unsigned", request_id=request_id, remote_addr=remote_addr), None
    url = signed_url(request, settings.callback_base_url)
    try:
        check = verify_signature(
            method=request.method,
            url=url,
            params=params,
            headers=request.headers,
            auth_tokens=settings.plivo_auth_tokens,
            main_auth_tokens=settings.plivo_main_auth_tokens,
        )
    except SignatureError as error:
        raise _refuse_signature(request_id, error.reason) from None
    meta = EventMeta(
        "plivo",
        check.scheme,
        nonce=check.nonce,
        method=request.method,
        signed_url=url,
        signatures=check.headers,
        request_id=request_id,
        remote_addr=remote_addr,
    )
    return meta, NonceGuard(check.family, check.nonce, check.body_digest)


_encode = msgspec.json.Encoder().encode


def _accepted(outcome: Literal["appended", "duplicate"], position: int) -> ASGIResponse:
    """The 200, encoded here: every callback Plivo sends is answered with one, and going
    through Litestar's ``Response`` (serialisation, then header handling) cost about 45 µs
    of the ~250 µs of CPU a callback takes in the app."""
    body = _encode(CallbackAccepted(outcome, position))
    return ASGIResponse(body=body, media_type=MediaType.JSON)


async def _receive(request: Request[Any, Any, Any], svc: Services) -> ASGIResponse:
    settings = svc.settings
    request_id = uuid.uuid4().hex
    declared = request.content_length
    if declared is not None and declared > settings.max_body_bytes:
        raise RequestEntityTooLarge  # as Litestar would on reading the body, but sooner
    if not settings.skip_signatures and not has_signature_headers(request.headers):
        raise _refuse_signature(
            request_id,
            "missing X-Plivo-Signature-V3 or X-Plivo-Signature-V2 header: this endpoint only "
            "accepts callbacks signed by Plivo",
        )
    try:
        params = await _params(request, settings.max_fields)
    except CallbackError as error:
        CALLBACK_OUTCOMES["malformed"].inc()
        raise Problem(400, error.detail, field=error.field) from None

    meta, guard = _authenticate(request, settings, params, request_id)
    try:
        event = to_event(params, meta=meta, timestamps_tz=settings.plivo_zone)
    except CallbackError as error:
        CALLBACK_OUTCOMES["malformed"].inc()
        raise Problem(400, error.detail, field=error.field) from None

    try:
        result = await svc.committer.append(Append(event, guard))
    except DatabaseUnavailable:
        CALLBACK_OUTCOMES["unavailable"].inc()
        raise Problem(
            503,
            "The ledger cannot store callbacks right now; nothing was stored. Retry later.",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        ) from None

    if result.outcome == "nonce_reused":
        CALLBACK_OUTCOMES["nonce_reused"].inc()
        log.warning("refused callback %s: nonce already used for another body", request_id)
        raise Problem(
            403,
            "This signature nonce was already used with a different body: a nonce signs "
            "exactly one callback.",
        )
    CALLBACK_OUTCOMES[result.outcome].inc()
    assert result.position is not None  # appended and duplicate events always have one
    return _accepted(result.outcome, result.position)
