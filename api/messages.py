"""Read API for single messages: the audit trail (and, from the views, the current status)."""

from __future__ import annotations

from uuid import UUID

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath

from api.auth import require_token
from api.problems import Problem
from api.services import Services, services
from ledger.events import RecordedEvent
from ledger.store import read_stream


class MessageEvents(msgspec.Struct, frozen=True):
    """A message's lifecycle: every event in ledger order, as stored."""

    message_uuid: UUID
    event_count: int
    events: list[RecordedEvent]


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


class MessageController(Controller):
    """``/v1/messages``: what the ledger knows about messages."""

    path = "/v1/messages"
    guards = [require_token]  # noqa: RUF012 - Litestar's declared class attribute
    dependencies = {"svc": Provide(services, sync_to_thread=False)}  # noqa: RUF012
    tags = ["messages"]  # noqa: RUF012
    security = [{"bearer": []}]  # noqa: RUF012

    @get(
        "/{message_uuid:str}/events",
        summary="The audit trail of one message",
        description="Every event of the message in ledger order, with the payload exactly as "
        "received and how it was authenticated.",
    )
    async def events(
        self, message_uuid: FromPath[str], svc: NamedDependency[Services]
    ) -> MessageEvents:
        """Every event of the message, or 404 if the ledger has none."""
        uuid = parse_message_uuid(message_uuid)
        async with svc.pool.connection() as conn:
            events = await read_stream(conn, uuid)
        if not events:
            raise Problem(404, f"The ledger has no events for message {uuid}.")
        return MessageEvents(uuid, len(events), events)
