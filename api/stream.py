"""``GET /v1/stream``: the ledger's events as Server-Sent Events, resumable by fence checkpoint.

Every event that passes the transaction-id fence is sent once, in fence order, with the SSE
``id`` ``<transaction id>-<position>``: its checkpoint. A client that reconnects with
``Last-Event-ID`` (browsers' ``EventSource`` does by itself) gets exactly what follows it,
read from the ledger, so it works across restarts and from any server process.

A stream first catches up from the ledger in pages, then joins the process's
:class:`~api.feed_hub.FeedHub` and reads the ledger once more up to the fence (so nothing
between the two is missed), then follows the hub, skipping what it already sent.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Final
from uuid import UUID

import msgspec
from litestar import Request, get
from litestar.params import HeaderParameter, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from api.auth import require_token_or_query
from api.feed_hub import FeedHub, Subscriber
from api.logs import mask_phone_numbers
from api.messages import parse_message_uuid
from api.problems import Problem, problem_responses
from api.services import Services, services_of
from ledger.feed import FeedEvent, FeedFilter, read_feed
from ledger.phone_numbers import normalise_number
from ledger.store import Checkpoint

#: Events per catch-up read of the ledger.
CATCH_UP_PAGE: Final = 500
#: A comment this often keeps idle connections open through proxies.
KEEPALIVE_SECONDS: Final = 15.0
#: What a browser's EventSource waits before reconnecting (ms).
RETRY_MS: Final = 2000
_EVENT_ID = re.compile(r"(\d{1,20})-(\d{1,20})")
#: The last message of a stream the server ended because it is stopping. Browsers'
#: EventSource reconnects by itself, with Last-Event-ID.
_STOPPING: Final = ServerSentEventMessage(
    data=None, comment="server stopping: reconnect with Last-Event-ID to resume"
)


class StreamEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One event of the live feed (the SSE ``data``): ``recipient`` is masked."""

    position: int
    message_uuid: UUID
    event_type: str
    status: str | None
    occurred_at: datetime | None
    recorded_at: datetime
    recipient: str | None


class StreamDropped(msgspec.Struct, frozen=True, kw_only=True):
    """The ``error`` event before a too-slow client is disconnected."""

    error: str
    last_event_id: str | None


_encode = msgspec.json.Encoder().encode


def event_id(checkpoint: Checkpoint) -> str:
    """The SSE id of the event at ``checkpoint``."""
    return f"{checkpoint.transaction_id}-{checkpoint.position}"


def parse_event_id(value: str) -> Checkpoint:
    """The checkpoint an SSE id names, or a 400 that says what one looks like."""
    match = _EVENT_ID.fullmatch(value.strip())
    if match is None:
        raise Problem(
            400,
            f"Last-Event-ID {value[:64]!r} is not a stream event id: send the id of the last "
            "event received, like 1234-5678 (transaction id - position), or none to start now.",
            field="last_event_id",
        )
    return Checkpoint(int(match[1]), int(match[2]))


class _Encoded(ServerSentEventMessage):
    """Messages already in wire form: Litestar sends what :meth:`encode` returns."""

    def __init__(self, raw: bytes) -> None:
        super().__init__()
        self.raw = raw

    def encode(self) -> bytes:
        """The messages as they go on the wire."""
        return self.raw


def wire(event: FeedEvent) -> bytes:
    """One event as an SSE message (the hub renders each once, for every client)."""
    data = StreamEvent(
        position=event.position,
        message_uuid=event.message_uuid,
        event_type=event.event_type,
        status=event.status,
        occurred_at=event.occurred_at,
        recorded_at=event.recorded_at,
        recipient=mask_phone_numbers(event.to_number) if event.to_number else None,
    )
    return ServerSentEventMessage(
        data=_encode(data).decode(), id=event_id(event.checkpoint), event="ledger_event"
    ).encode()


def _messages(wires: list[bytes]) -> _Encoded:
    """Several events in one chunk: one write per page or wake-up, not one per event."""
    return _Encoded(b"".join(wires))


async def _follow(
    svc: Services, hub: FeedHub, only: FeedFilter, start: Checkpoint | None
) -> AsyncIterator[ServerSentEventMessage]:
    """The stream's messages: catch-up from ``start`` (None: from now), then live."""
    opening = ServerSentEventMessage(data=None, comment="ledger live feed", retry=RETRY_MS)
    subscriber = Subscriber(only, hub.buffer)
    after = start
    try:
        if after is not None:
            yield opening
            # Most of the history first, outside the hub, so a long catch-up cannot overflow
            # the subscriber's buffer.
            async for page in _catch_up(svc, hub, only, after):
                after = page[-1].checkpoint
                yield _messages([wire(event) for event in page])
        joined = await hub.join(subscriber)
        if after is None:
            # Sent once joined: a client that starts "from now" knows when now was.
            yield opening
            after = joined
        async for page in _catch_up(svc, hub, only, after):
            after = page[-1].checkpoint
            yield _messages([wire(event) for event in page])
        while True:
            taken = await subscriber.take(KEEPALIVE_SECONDS)
            if subscriber.dropped:
                yield _dropped(hub.buffer, after)
                return
            # What the catch-up already sent is skipped: fence order makes that one test.
            fresh = [rendered for rendered in taken if rendered.event.checkpoint > after]
            if fresh:
                after = fresh[-1].event.checkpoint
                yield _messages([rendered.wire for rendered in fresh])
            elif subscriber.ended:
                yield _STOPPING
                return
            elif not taken:
                yield ServerSentEventMessage(data=None, comment="keepalive")
    finally:
        hub.leave(subscriber)


async def _catch_up(
    svc: Services, hub: FeedHub, only: FeedFilter, after: Checkpoint
) -> AsyncIterator[list[FeedEvent]]:
    """Every settled event after ``after`` that passes ``only``, up to the fence, by pages;
    no more once the server is stopping (the stream then ends, and its client resumes)."""
    while not hub.ending:
        async with svc.pool.connection() as conn:
            page = await read_feed(conn, after, CATCH_UP_PAGE, only)
        if page:
            yield page
        if len(page) < CATCH_UP_PAGE:
            return
        after = page[-1].checkpoint


def _dropped(buffer: int, after: Checkpoint) -> ServerSentEventMessage:
    last = event_id(after) if after != Checkpoint() else None
    return ServerSentEventMessage(
        event="error",
        data=_encode(
            StreamDropped(
                error=f"this client fell {buffer} events behind and is disconnected: reconnect "
                "with Last-Event-ID set to the last id received to resume from there",
                last_event_id=last,
            )
        ).decode(),
    )


@get(
    "/v1/stream",
    summary="The ledger's events, live, as Server-Sent Events",
    description="Every event that passes the transaction-id fence, in fence order, as SSE "
    "events of type ledger_event whose id is the event's checkpoint "
    "(<transaction id>-<position>). Resume with the Last-Event-ID header (or last_event_id) "
    "set to the last id received (0-0: from the ledger's first event); without either, the "
    "stream starts at the ledger's head. "
    "A client that falls LEDGER_STREAM_BUFFER events behind gets an 'error' event and is "
    "disconnected. Browsers' EventSource, which cannot send headers, may pass the token as "
    "?token=.",
    guards=[require_token_or_query],
    tags=["stream"],
    security=[{"bearer": []}],
    responses=problem_responses(400, 401, 503),
)
async def stream(
    *,
    request: Request[Any, Any, Any],
    message_uuid: Annotated[
        str | None, QueryParameter(description="Only this message's events.")
    ] = None,
    status: Annotated[
        str | None, QueryParameter(description="Only events reporting this status.")
    ] = None,
    to_number: Annotated[
        str | None,
        QueryParameter(
            name="to",
            description="Only events of messages to this recipient, as Plivo stores it "
            "(14155550100) or as dialled (+14155550100, +1 (415) 555-0100).",
        ),
    ] = None,
    last_event_id_header: Annotated[
        str | None,
        HeaderParameter(
            name="Last-Event-ID",
            description="The id of the last event received: resume right after it.",
        ),
    ] = None,
    last_event_id: Annotated[
        str | None,
        QueryParameter(description="As the Last-Event-ID header (which wins if both are sent)."),
    ] = None,
    token: Annotated[
        str | None,
        QueryParameter(description="The read-API token, for clients that cannot send headers."),
    ] = None,
) -> ServerSentEvent:
    """Stream events after the given id (or from now) that pass every filter given."""
    for name, value in (("status", status), ("to", to_number)):
        if value is not None and "\x00" in value:
            raise Problem(400, f"{name} contains a NUL character: send plain text.", field=name)
    only = FeedFilter(
        message_uuid=parse_message_uuid(message_uuid) if message_uuid else None,
        status=status.strip().lower() if status else None,
        to_number=normalise_number(to_number) if to_number else None,
    )
    resume = last_event_id_header or last_event_id
    after = parse_event_id(resume) if resume else None
    svc = services_of(request)
    hub: FeedHub = svc.feed
    return ServerSentEvent(
        _follow(svc, hub, only, after),
        # A stream ends only when dropped or when the server stops: the connection goes with it.
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no", "Connection": "close"},
    )
