"""Read API for messages: current status and search (from the status view), and the audit
trail (from the ledger itself)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, get
from litestar.params import FromPath, FromQuery, QueryParameter

from api.auth import require_token
from api.problems import Problem, problem_responses
from api.services import Services, services_of
from api.tag_filters import parse_tag_filters
from ledger.events import RecordedEvent
from ledger.seals import InclusionProof, inclusion_proofs
from ledger.store import Checkpoint, read_stream
from projections.progress import has_applied
from projections.queries import InvalidCursor, get_message_status, search_messages
from projections.status import MessageStatusProjector
from projections.views import MessagePage, MessageQuery, MessageStatus

#: The largest page a search returns, whatever ``limit`` asks for.
MAX_PAGE = 500
#: The longest a read-your-writes request waits for the view to catch up.
MAX_WAIT_SECONDS = 5.0
_WAIT_POLL_SECONDS = 0.02


class AuditedEvent(RecordedEvent, frozen=True, kw_only=True):
    """An event exactly as stored, with the proof that it is in the sealed history (None
    until the sealer has sealed it)."""

    seal: InclusionProof | None = None


class MessageEvents(msgspec.Struct, frozen=True):
    """A message's lifecycle: every event in ledger order, as stored, with its seal proof."""

    message_uuid: UUID
    event_count: int
    events: list[AuditedEvent]


def parse_message_uuid(value: str) -> UUID:
    """The path's message UUID, or a 400 that says what a valid one looks like."""
    try:
        return UUID(value)
    except ValueError:
        raise Problem(
            400,
            f"{value[:64]!r} is not a message UUID: expected the MessageUUID Plivo returned, "
            "like 83876bdb-2033-4876-bfaf-0ff8693705af.",
            field="message_uuid",
        ) from None


async def _wait_until_applied(svc: Services, position: int, within: float) -> bool:
    """Poll until the status view includes the event at ``position``; False on timeout."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        async with svc.pool.connection() as conn:
            if await has_applied(conn, MessageStatusProjector.name, position):
                return True
        if asyncio.get_running_loop().time() >= deadline:
            return False
        await asyncio.sleep(_WAIT_POLL_SECONDS)


class MessageController(Controller):
    """``/v1/messages``: what the ledger knows about messages."""

    path = "/v1/messages"
    guards = [require_token]  # noqa: RUF012 - Litestar's declared class attribute
    tags = ["messages"]  # noqa: RUF012
    security = [{"bearer": []}]  # noqa: RUF012

    @get(
        "/",
        summary="Search messages by status, number, tag and time",
        responses=problem_responses(400, 401, 503),
        description="Messages from the status view, newest first (by first event time), "
        "keyset-paginated: pass next_cursor as cursor for the next page.",
    )
    async def search(
        self,
        *,
        request: Request[Any, Any, Any],
        status: FromQuery[str | None] = None,
        from_number: Annotated[
            str | None,
            QueryParameter(
                name="from",
                description="Sender, as Plivo stores it (14155550100) or as dialled "
                "(+14155550100, +1 (415) 555-0100), or an alphanumeric sender id.",
            ),
        ] = None,
        to_number: Annotated[
            str | None,
            QueryParameter(
                name="to",
                description="Recipient, as Plivo stores it (14155550100) or as dialled "
                "(+14155550100, +1 (415) 555-0100).",
            ),
        ] = None,
        error_code: Annotated[
            str | None,
            QueryParameter(description="The current Plivo error code, e.g. 30 (spam)."),
        ] = None,
        since: FromQuery[datetime | None] = None,
        until: FromQuery[datetime | None] = None,
        tag: Annotated[
            list[str] | None,
            QueryParameter(
                description="name=value, e.g. campaign=spring: messages sent with that tag "
                "(repeat for several; all must match)."
            ),
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE)] = 50,
        cursor: FromQuery[str | None] = None,
    ) -> MessagePage:
        """A page of messages matching every filter given."""
        for name, value in (
            ("status", status),
            ("from", from_number),
            ("to", to_number),
            ("error_code", error_code),
        ):
            if value is not None and "\x00" in value:
                raise Problem(400, f"{name} contains a NUL character: send plain text.", field=name)
        try:
            tags = parse_tag_filters(tag or [])
        except ValueError as error:
            raise Problem(400, f"{error}.", field="tag") from None
        query = MessageQuery(
            tags=tags or None,
            status=status,
            from_number=from_number,
            to_number=to_number,
            error_code=error_code,
            since=since,
            until=until,
            limit=limit,
            cursor=cursor,
        )
        try:
            async with services_of(request).pool.connection() as conn:
                return await search_messages(conn, query)
        except InvalidCursor as error:
            raise Problem(400, str(error), field="cursor") from None

    @get(
        "/{message_uuid:str}",
        summary="The current status of one message",
        responses=problem_responses(400, 401, 404, 503),
        description="From the status view. With wait_for_position (the position a callback "
        "was acknowledged with), waits up to wait_seconds for the view to include that event, "
        "so a client can read its own write.",
    )
    async def status(
        self,
        *,
        message_uuid: FromPath[str],
        request: Request[Any, Any, Any],
        wait_for_position: Annotated[int | None, QueryParameter(ge=1)] = None,
        wait_seconds: Annotated[float, QueryParameter(gt=0, le=MAX_WAIT_SECONDS)] = 2.0,
    ) -> Response[MessageStatus]:
        """The message's current status, or 404 if the view has not seen it."""
        svc = services_of(request)
        uuid = parse_message_uuid(message_uuid)
        caught_up = True
        if wait_for_position is not None:
            caught_up = await _wait_until_applied(svc, wait_for_position, wait_seconds)
        async with svc.pool.connection() as conn:
            found = await get_message_status(conn, uuid)
        if found is None:
            raise Problem(404, f"No message {uuid} in the status view yet.")
        # A client that asked to read its write learns whether it did.
        headers = {} if caught_up else {"Ledger-View-Stale": "true"}
        return Response(found, headers=headers)

    @get(
        "/{message_uuid:str}/events",
        summary="The audit trail of one message",
        responses=problem_responses(400, 401, 404, 503),
        description="Every event of the message in ledger order, with the payload exactly as "
        "received, how it was authenticated (with the signature material to re-check it), and "
        "for each sealed event its inclusion proof: block, leaf index, Merkle audit path, block "
        "root and chain hash (see the README's Proof format).",
    )
    async def events(
        self, message_uuid: FromPath[str], request: Request[Any, Any, Any]
    ) -> MessageEvents:
        """Every event of the message, or 404 if the ledger has none."""
        uuid = parse_message_uuid(message_uuid)
        async with services_of(request).pool.connection() as conn:
            events = await read_stream(conn, uuid)
            proofs = await inclusion_proofs(
                conn, [Checkpoint(e.transaction_id, e.position) for e in events]
            )
        if not events:
            raise Problem(404, f"The ledger has no events for message {uuid}.")
        audited = [
            AuditedEvent(**msgspec.structs.asdict(event), seal=proof)
            for event, proof in zip(events, proofs, strict=True)
        ]
        return MessageEvents(uuid, len(audited), audited)
