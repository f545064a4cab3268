"""``ledger send``: send a message through Plivo from the command line, as POST /v1/messages
does (the same checks, the same events in the ledger)."""

from __future__ import annotations

import asyncio
import getpass
from typing import Literal

import rich_click as click
from rich.console import Group
from rich.text import Text

from api.cli.common import (
    CommandError,
    database,
    pass_settings,
    print_json,
    require_migrated,
    show,
    table,
    tag_values,
)
from api.sends import InvalidSend, SendBody, send_request_for
from ledger.database import connect, create_pool
from ledger.send_events import SendRequest
from ledger.sends import SendOutcome, callback_url, plivo_api_for, send
from ledger.settings import Settings
from ledger.system_events import system_key


async def _send(settings: Settings, url: str, request: SendRequest) -> SendOutcome:
    async with connect(url) as conn:
        await require_migrated(conn)
    api = plivo_api_for(settings)
    if api is None:
        raise CommandError(
            "sending needs Plivo credentials: set PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN"
        )
    pool = create_pool(url, size=2, name="send")
    await pool.open(wait=True)
    try:
        return await send(
            pool,
            api,
            request,
            callback_url=callback_url(settings),
            store_text=settings.store_text,
            key=system_key(settings),
        )
    finally:
        await pool.close()
        api.close()


@click.command(name="send")
@click.option("--from", "src", metavar="NUMBER", help="Sender number or sender id.")
@click.option("--powerpack", metavar="UUID", help="Send from a Plivo powerpack instead.")
@click.option("--to", "dst", required=True, metavar="N[,N…]", help="Recipients, comma-separated.")
@click.option("--text", default="", help="The message text.")
@click.option("--media", multiple=True, metavar="URL", help="A media URL (repeat): sends an MMS.")
@click.option(
    "--idempotency-key", metavar="KEY", help="Run again with the same key: never sends twice."
)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@click.option(
    "--tag",
    "tags",
    metavar="NAME=VALUE",
    multiple=True,
    callback=tag_values,
    help="Tag the messages, e.g. campaign=spring (repeat for several).",
)
@pass_settings
def send_command(
    settings: Settings,
    *,
    src: str | None,
    powerpack: str | None,
    dst: str,
    text: str,
    media: tuple[str, ...],
    idempotency_key: str | None,
    as_json: bool,
    tags: dict[str, str],
) -> None:
    """Send a message through Plivo and record it in the ledger from the start.

    The request is recorded first (message.send_requested), then sent with this ledger's
    callback URL (LEDGER_PUBLIC_URL/plivo/status), then each accepted message is recorded
    (message.submitted) and each number Plivo refused (message.rejected). Prints each
    message's UUID and the command that follows it. Tags follow the messages into search
    and metrics (ledger messages --tag, ledger metrics --tag).

    Examples:

    ```
    ledger send --from 14155550100 --to 919876543210 --text "Your code is 1234"
    ledger send --from 14155550100 --to 919876543210,919876543211 --text Hi --tag campaign=spring
    ledger send --from 14155550100 --to 14155550111 --media https://example.com/a.png
    ```
    """
    kind: Literal["sms", "mms"] = "mms" if media else "sms"
    body = SendBody(
        dst=[number for number in dst.split(",") if number.strip()],
        text=text,
        src=src,
        powerpack_uuid=powerpack,
        type=kind,
        media_urls=list(media),
        tags=tags,
    )
    try:
        request = send_request_for(
            body, requested_by=f"cli:{getpass.getuser()}", key=idempotency_key
        )
    except InvalidSend as error:
        option = {"src": "--from", "dst": "--to", "text": "--text", "media_urls": "--media"}
        raise CommandError(f"{option.get(error.field, '--' + error.field)}: {error}") from None
    with database(settings) as url:
        outcome = asyncio.run(_send(settings, url, request))
    if as_json:
        print_json(outcome)
    if outcome.failure is not None:
        raise CommandError(outcome.failure.detail)
    if outcome.state == "pending":
        raise CommandError(
            f"send request {outcome.request_id} is still waiting for Plivo: run this again "
            "with the same --idempotency-key in a few seconds"
        )
    if as_json:
        return
    rows = table("message", "to", "position", right=("position",))
    for message in outcome.messages:
        rows.add_row(str(message.message_uuid), message.to or "-", str(message.position))
    for rejected in outcome.rejected:
        rows.add_row(Text(f"rejected: {rejected.number}", style="red"), "", str(rejected.position))
    follow = Text("\n".join(f"ledger audit {m.message_uuid}" for m in outcome.messages))
    show(
        Group(
            Text(f"send request {outcome.request_id} (ledger audit {outcome.request_id})"),
            rows,
            Text("follow each message with:"),
            follow,
        )
    )
