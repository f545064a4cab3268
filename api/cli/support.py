"""Support reads: ``ledger audit``, ``ledger status`` and ``ledger messages``."""

from __future__ import annotations

import shlex
from datetime import UTC, datetime
from uuid import UUID

import rich_click as click
from click import get_current_context
from rich.text import Text

from api.cli.audit_view import (
    AuditReport,
    add_summary,
    label_grid,
    render_audit,
    show_number,
    styled_status,
)
from api.cli.common import (
    CommandError,
    Connection,
    pass_settings,
    print_json,
    read,
    show,
    table,
    tag_option,
    with_message_uuid,
)
from api.cli.times import TIME_FORMS, NotATime, parse_when, show_time
from ledger.events import RecordedEvent
from ledger.seals import InclusionProof, inclusion_proofs
from ledger.sends import SendOutcome, outcome_of
from ledger.settings import Settings
from ledger.store import Checkpoint, read_stream
from projections.anomalies import find_anomalies
from projections.queries import InvalidCursor, get_message_status, search_messages
from projections.views import MessagePage, MessageQuery, MessageStatus

_JSON_HELP = "Print JSON (the shape the HTTP API returns) instead of a table."
_NUMBERS_HELP = "Show phone numbers in full (masked as in the logs by default)."


@click.command()
@with_message_uuid
@click.option("--json", "as_json", is_flag=True, help="Print the events as stored, as JSON.")
@click.option("--show-numbers", is_flag=True, help=_NUMBERS_HELP)
@pass_settings
def audit(settings: Settings, *, message_uuid: UUID, as_json: bool, show_numbers: bool) -> None:
    """Show one message's whole story: what it is now, what looks wrong, and every event.

    The header comes from the status view: status, error code and its meaning, sender,
    recipient, charges and time to deliver. Anomalies are stated in words ("delivered
    reported before sent", "no delivery report yet after 3 h", "duplicate callbacks
    ignored: 2"). The timeline lists every event in event time, with Plivo's timestamp,
    when the ledger recorded it and how it was authenticated (v3, v2, system…).

    Examples:

    ```
    ledger audit 83876bdb-2033-4876-bfaf-0ff8693705af
    ledger audit 83876bdb-2033-4876-bfaf-0ff8693705af --show-numbers
    ledger audit 83876bdb-2033-4876-bfaf-0ff8693705af --json | jq '.[].payload'
    ```
    """

    async def query(
        conn: Connection,
    ) -> tuple[
        list[RecordedEvent], list[InclusionProof | None], MessageStatus | None, SendOutcome | None
    ]:
        events = await read_stream(conn, message_uuid)
        seals = await inclusion_proofs(
            conn, [Checkpoint(e.transaction_id, e.position) for e in events]
        )
        view = await get_message_status(conn, message_uuid)
        return events, seals, view, await outcome_of(conn, message_uuid)

    events, seals, view, outcome = read(settings, query)
    if not events:
        raise CommandError(f"the ledger has no events for message {message_uuid}")
    if as_json:
        print_json(events)
        return
    now = datetime.now(UTC)
    report = AuditReport(
        message_uuid=message_uuid,
        events=events,
        seals=seals,
        view=view,
        anomalies=find_anomalies(events, now=now),
        now=now,
        zone=settings.timezone,
        show_numbers=show_numbers,
        outcome=outcome,
    )
    show(render_audit(report))


@click.command()
@with_message_uuid
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
@click.option("--show-numbers", is_flag=True, help=_NUMBERS_HELP)
@pass_settings
def status(settings: Settings, *, message_uuid: UUID, as_json: bool, show_numbers: bool) -> None:
    """Show one message's current status and milestones, from the status view.

    Examples:

    ```
    ledger status 83876bdb-2033-4876-bfaf-0ff8693705af
    ledger status 83876bdb-2033-4876-bfaf-0ff8693705af --json
    ```
    """
    found = read(settings, lambda conn: get_message_status(conn, message_uuid))
    if found is None:
        raise CommandError(
            f"no message {message_uuid} in the status view (try 'ledger audit {message_uuid}')"
        )
    if as_json:
        print_json(found)
        return
    zone = settings.zone
    grid = label_grid()
    grid.add_row("message", str(found.message_uuid))
    add_summary(grid, found, zone=zone, show_numbers=show_numbers)
    grid.add_row("type", found.message_type or "-")
    for milestone, at in (
        ("submitted", found.submitted_at),
        ("queued", found.queued_at),
        ("sent", found.sent_at),
        ("delivered", found.delivered_at),
        ("undelivered", found.undelivered_at),
        ("failed", found.failed_at),
        ("rejected", found.rejected_at),
        ("expired", found.expired_at),
        ("read", found.read_at),
    ):
        if at is not None:
            grid.add_row(f"{milestone} at", show_time(at, zone))
    grid.add_row("events", f"{found.event_count} (last position {found.last_position})")
    show(grid)


def _when(option: str, text: str | None, *, now: datetime, settings: Settings) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_when(text, now=now, zone=settings.zone)
    except NotATime as error:
        raise CommandError(f"{option} {error}") from None


@click.command()
@click.option("--to", "to_number", metavar="NUMBER", help="Recipient, written any way.")
@click.option("--from", "from_number", metavar="NUMBER", help="Sender (or sender id).")
@click.option("--status", "current_status", help="Current status, e.g. undelivered.")
@click.option("--error-code", metavar="CODE", help="Current Plivo error code, e.g. 30.")
@click.option("--since", metavar="WHEN", help=f"First event at or after WHEN: {TIME_FORMS}.")
@click.option("--until", metavar="WHEN", help="First event before WHEN (same forms).")
@click.option(
    "--limit", type=click.IntRange(1, 500), default=20, show_default=True, help="Page size."
)
@click.option("--cursor", help="Where the next page starts (printed under each full page).")
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
@click.option("--show-numbers", is_flag=True, help=_NUMBERS_HELP)
@tag_option
@pass_settings
def messages(
    settings: Settings,
    *,
    to_number: str | None,
    from_number: str | None,
    current_status: str | None,
    error_code: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
    show_numbers: bool,
    tags: dict[str, str],
) -> None:
    """Find messages by number, status, error code, tag and time, newest first.

    Numbers match however they are written: +14155550100, 14155550100, "+1 415 555 0100"
    and "+1 (415) 555-0100" all find what Plivo stores (14155550100). Times are in
    LEDGER_TIMEZONE unless they carry an offset; today and yesterday mean that day's
    midnight, 24h or 7d that long ago. A full page ends with the command for the next one.

    Examples:

    ```
    ledger messages --to "+1 415 555 0100" --since yesterday
    ledger messages --status undelivered --error-code 30 --since 7d
    ledger messages --from 14155550100 --since 2026-11-23 --until 2026-11-24
    ledger messages --tag campaign=spring --status failed
    ```
    """
    now = datetime.now(UTC)
    query = MessageQuery(
        tags=tags or None,
        status=current_status,
        from_number=from_number,
        to_number=to_number,
        error_code=error_code,
        since=_when("--since", since, now=now, settings=settings),
        until=_when("--until", until, now=now, settings=settings),
        limit=limit,
        cursor=cursor,
    )
    if query.since and query.until and query.since >= query.until:
        raise CommandError("--since is not before --until: give an earlier --since")

    async def search(conn: Connection) -> MessagePage:
        try:
            return await search_messages(conn, query)
        except InvalidCursor as error:
            raise CommandError(f"--cursor: {error}") from None

    page = read(settings, search)
    if as_json:
        print_json(page)
        return
    if not page.items:
        show("no messages match" + (" on this page" if cursor else ""))
        return
    rows = table(
        f"first event ({settings.timezone})",
        "message",
        "status",
        "error",
        "from",
        "to",
        "events",
        right=("events",),
    )
    for item in page.items:
        rows.add_row(
            show_time(item.first_event_at, settings.zone),
            str(item.message_uuid),
            styled_status(item.status),
            item.error_code or "",
            show_number(item.from_number, show_numbers=show_numbers),
            show_number(item.to_number, show_numbers=show_numbers),
            str(item.event_count),
        )
    show(rows)
    if page.next_cursor:
        show(Text(f"next page: {_next_page(get_current_context(), page)}"))


def _next_page(ctx: click.Context, page: MessagePage) -> str:
    """The command line that asks for the page after ``page``: the same filters, its cursor."""
    again = ctx.command_path.split()
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        if param.name == "cursor" or value in (None, False, {}) or value == param.default:
            continue
        if isinstance(value, dict):  # --tag, repeated
            for name, wanted in value.items():
                again += [param.opts[0], f"{name}={wanted}"]
            continue
        again.append(param.opts[0])
        if value is not True:
            again.append(str(value))
    return shlex.join([*again, "--cursor", page.next_cursor or ""])
