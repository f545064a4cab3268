"""How ``ledger audit`` shows one message to support staff: a header of what the message is
now, the anomalies in words, then its timeline in event time.

Each part is its own function returning a rich renderable, so that more can be shown (seal
and proof lines, say) without touching the others.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID
from zoneinfo import ZoneInfo

import msgspec
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from api.cli.common import table
from api.cli.times import show_time
from api.logs import mask_phone_numbers
from ledger.durations import describe_duration
from ledger.error_codes import describe_error
from ledger.events import RecordedEvent
from ledger.seals import InclusionProof
from ledger.sends import SendOutcome
from projections.anomalies import Anomaly
from projections.views import MessageStatus

#: How each status is coloured on a terminal.
STATUS_STYLES = {
    "delivered": "green",
    "read": "green",
    "undelivered": "red",
    "failed": "red",
    "rejected": "red",
    "expired": "yellow",
}
#: Final statuses of a message that was not delivered.
NOT_DELIVERED = frozenset({"undelivered", "failed", "rejected", "expired"})


class AuditReport(msgspec.Struct, frozen=True, kw_only=True):
    """Everything ``ledger audit`` shows: the message's events as stored, its row in the
    status view (None if the view has not seen it) and what is odd about it."""

    message_uuid: UUID
    events: list[RecordedEvent]
    #: Each event's seal proof (aligned with ``events``), None while it is not sealed.
    seals: list[InclusionProof | None]
    view: MessageStatus | None
    anomalies: list[Anomaly]
    now: datetime
    zone: str
    show_numbers: bool = False
    #: When the stream is a send request's own: what became of it.
    outcome: SendOutcome | None = None


def render_audit(report: AuditReport) -> RenderableType:
    """The whole audit: header, anomalies, timeline."""
    return Group(header(report), Text(""), anomalies(report), Text(""), timeline(report))


def styled_status(status: str | None) -> Text:
    """A status in its colour (a span, so that text appended to it keeps its own style);
    ``-`` when there is none."""
    return Text.assemble((status or "-", STATUS_STYLES.get(status or "", "")))


def show_number(number: str | None, *, show_numbers: bool) -> str:
    """A phone number masked as in the logs (``14…00``), or in full with ``show_numbers``."""
    if not number:
        return "-"
    return number if show_numbers else mask_phone_numbers(number)


def _time_to_deliver(view: MessageStatus) -> str:
    if view.delivered_at is None:
        return "not delivered" if view.status in NOT_DELIVERED else "not yet"
    took = view.delivered_at - view.first_event_at
    if took < timedelta(minutes=2):
        return f"{took.total_seconds():.1f} s after the first event"
    return f"{describe_duration(took)} after the first event"


def add_summary(
    grid: Table, view: MessageStatus, *, zone: ZoneInfo, show_numbers: bool = False
) -> None:
    """Add the rows saying what a message is now: status, error and its meaning, numbers,
    charges and time to deliver (``ledger audit`` and ``ledger status`` both show them)."""
    status = styled_status(view.status)
    status.append(f" since {show_time(view.status_at, zone)} ({zone.key})")
    grid.add_row("status", status)
    error = f"{view.error_code}: {view.error_description}" if view.error_code else "none"
    grid.add_row("error", error)
    grid.add_row("from", show_number(view.from_number, show_numbers=show_numbers))
    grid.add_row("to", show_number(view.to_number, show_numbers=show_numbers))
    units = "-" if view.units is None else f"{view.units} unit{'s' * (view.units != 1)}"
    amount = "-" if view.total_amount is None else str(view.total_amount)
    grid.add_row("charges", f"{units}, amount {amount}")
    grid.add_row("delivered", _time_to_deliver(view))
    _add_send(grid, view)


def _add_send(grid: Table, view: MessageStatus) -> None:
    """The rows a sent message adds: its request, tags, resend links and parts."""
    if view.send_request_id:
        grid.add_row(
            "sent by", f"request {view.send_request_id} (ledger audit {view.send_request_id})"
        )
    if view.tags:
        grid.add_row("tags", ", ".join(f"{k}={v}" for k, v in sorted(view.tags.items())))
    if view.resent_from:
        grid.add_row("resent from", f"{view.resent_from} (ledger audit {view.resent_from})")
    if view.resent_as:
        grid.add_row("resent as", f"{view.resent_as} (ledger audit {view.resent_as})")
    if view.parent_message_uuid:
        grid.add_row("part of", view.parent_message_uuid)
    for part in view.parts:
        grid.add_row("part", Text.assemble(f"{part.message_uuid} ", styled_status(part.status)))


def _add_request(grid: Table, outcome: SendOutcome, *, show_numbers: bool) -> None:
    """The rows of a send request's own stream: what became of it, and where to look next."""
    grid.add_row("send request", styled_status(outcome.state))
    if outcome.failure is not None:
        grid.add_row("why", outcome.failure.detail)
    for message in outcome.messages:
        grid.add_row("message", f"{message.message_uuid} (ledger audit {message.message_uuid})")
    for rejected in outcome.rejected:
        number = show_number(rejected.number, show_numbers=show_numbers)
        grid.add_row("rejected", f"{number} (ledger audit {rejected.message_uuid})")


def label_grid() -> Table:
    """Two columns, a bold label and its value."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    return grid


def header(report: AuditReport) -> RenderableType:
    """The message as it is now, from the status view, and how many events the ledger has."""
    grid = label_grid()
    grid.add_row("message", str(report.message_uuid))
    view = report.view
    if report.outcome is not None:
        _add_request(grid, report.outcome, show_numbers=report.show_numbers)
    elif view is None:
        grid.add_row("status", "not in the status view yet: its projector is behind")
    else:
        add_summary(grid, view, zone=ZoneInfo(report.zone), show_numbers=report.show_numbers)
    newest = max(event.position for event in report.events)
    events = f"{len(report.events)} in the ledger (last position {newest})"
    if view is not None and view.last_position < newest:
        events += f"; the status view has applied up to position {view.last_position}"
    grid.add_row("events", events)
    return grid


def anomalies(report: AuditReport) -> RenderableType:
    """Each anomaly on a line of its own, or a line saying there is none."""
    if not report.anomalies:
        return Text("no anomalies")
    lines = Text("anomalies:\n")
    for anomaly in report.anomalies:
        lines.append(f"  ! {anomaly.text}\n", style="yellow")
    lines.rstrip()
    return lines


def _error_of(event: RecordedEvent) -> str:
    code = event.payload.get("ErrorCode")
    return code if isinstance(code, str) and describe_error(code) else ""


def _sequence_of(event: RecordedEvent) -> str:
    sequence = event.payload.get("Sequence")
    return sequence if isinstance(sequence, str) else ""


def timeline(report: AuditReport) -> RenderableType:
    """Every event in event time (Plivo's own timestamp, else when we recorded it), with when
    it was recorded, how it was authenticated and which sealed block holds it."""
    zone = ZoneInfo(report.zone)
    rows = table(
        "position",
        f"Plivo time ({report.zone})",
        "recorded",
        "status",
        "seq",
        "error",
        "sealed",
        "signature",
        right=("position", "seq"),
    )
    ordered = sorted(
        zip(report.events, report.seals, strict=True),
        key=lambda pair: (pair[0].occurred_at or pair[0].recorded_at, pair[0].position),
    )
    for event, seal in ordered:
        # An event that reports no status is named by its type (message.send_requested…).
        status = styled_status(event.status) if event.status else Text(event.event_type)
        if event.meta.source == "system":
            status.append(f" ({event.meta.reason or 'set by the ledger'})", style="dim")
        rows.add_row(
            str(event.position),
            show_time(event.occurred_at, zone),
            show_time(event.recorded_at, zone),
            status,
            _sequence_of(event),
            _error_of(event),
            f"block {seal.block}" if seal else Text("not yet", style="dim"),
            event.meta.signature,
        )
    return Group(Text("timeline, in event time:"), rows)
