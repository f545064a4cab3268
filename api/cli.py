"""The ``ledger`` command line: serve, migrate, audit, replay, simulate and friends."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime
from typing import Any, NoReturn
from uuid import UUID

import msgspec
import psycopg

from api.logs import configure_logging
from api.progress_bar import ProgressBar
from api.reports import RangeError, check_range, metrics_csv
from ledger.database import connect, database_url, redact
from ledger.migrate import migrate
from ledger.settings import Settings, SettingsError, load_settings, require_callback_auth
from ledger.store import read_stream
from ledger.tokens import ensure_api_tokens, token_path
from projections.base import Projector
from projections.queries import daily_metrics, get_message_status
from projections.registry import build_projectors, projector_named
from projections.replay import ReplayInProgress, ReplayReport, replay
from projections.views import DailyMetrics, MessageStatus


class CommandError(Exception):
    """A failure the user can act on; the message says what went wrong and what to do."""


def fail(message: str) -> NoReturn:
    """Print ``ledger: error: …`` and exit with status 2."""
    print(f"ledger: error: {message}", file=sys.stderr)
    raise SystemExit(2)


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[str]:
    """The database URL (embedded server started if needed), with a clear error if unreachable."""
    try:
        with database_url(settings) as url:
            yield url
    except psycopg.OperationalError as error:
        where = redact(settings.database_url) if settings.database_url else "the embedded server"
        raise CommandError(
            f"cannot reach the database at {where}: {str(error).strip().splitlines()[0]}; "
            "check DATABASE_URL and that the server is running"
        ) from None


async def _migrate(url: str) -> list[str]:
    async with connect(url) as conn:
        return [f"{m.version:03d}_{m.name}" for m in await migrate(conn)]


def cmd_migrate(settings: Settings, _: argparse.Namespace) -> None:
    """Apply pending migrations."""
    with database(settings) as url:
        applied = asyncio.run(_migrate(url))
    print(f"applied {', '.join(applied)}" if applied else "database is up to date")


def cmd_serve(settings: Settings, args: argparse.Namespace) -> None:
    """Migrate, then serve the API (and run projectors) until interrupted."""
    from api.serve import serve

    settings = msgspec.structs.replace(
        settings,
        host=args.host or settings.host,
        port=args.port or settings.port,
        workers=args.workers or settings.workers,
    )
    require_callback_auth(settings)
    tokens, created = ensure_api_tokens(settings)
    with database(settings) as url:
        applied = asyncio.run(_migrate(url))
        where = "embedded PostgreSQL" if not settings.database_url else redact(url)
        print(f"ledger: database: {where}; data in {settings.data_dir.resolve()}")
        if applied:
            print(f"ledger: applied migrations {', '.join(applied)}")
        if created:
            print(
                f"ledger: generated read-API token {tokens[0]} (stored in {token_path(settings)})"
            )
        if settings.skip_signatures:
            print("ledger: WARNING: signature checks are OFF (LEDGER_INSECURE_SKIP_SIGNATURES)")
        print(
            f"ledger: listening on http://{settings.host}:{settings.port} "
            f"({settings.workers} worker{'s' * (settings.workers > 1)}); "
            f"Plivo callback URL: {settings.callback_base_url}/plivo/status"
        )
        sys.stdout.flush()
        serve(settings, url)


async def _audit(url: str, message_uuid: UUID) -> list[Any]:
    async with connect(url) as conn:
        return await read_stream(conn, message_uuid)


def cmd_audit(settings: Settings, args: argparse.Namespace) -> None:
    """Print one message's lifecycle, event by event."""
    message_uuid = parse_uuid(args.message_uuid)
    with database(settings) as url:
        events = asyncio.run(_audit(url, message_uuid))
    if not events:
        raise CommandError(f"the ledger has no events for message {message_uuid}")
    if args.json:
        sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(events)) + b"\n")
        return
    print(f"message {message_uuid}: {len(events)} event{'s' * (len(events) != 1)}")
    for event in events:
        occurred = event.occurred_at.isoformat(" ", "milliseconds") if event.occurred_at else "-"
        error = event.payload.get("ErrorCode") or ""
        print(
            f"  #{event.position:<8} {occurred:<30} {event.event_type:<22} "
            f"{event.status or '-':<12} {('error ' + str(error)) if error else '':<10} "
            f"via {event.meta.signature:<6} "
            f"recorded {event.recorded_at.isoformat(' ', 'milliseconds')}"
        )


async def _status(url: str, message_uuid: UUID) -> MessageStatus | None:
    async with connect(url) as conn:
        return await get_message_status(conn, message_uuid)


def cmd_status(settings: Settings, args: argparse.Namespace) -> None:
    """Print one message's current status from the status view."""
    message_uuid = parse_uuid(args.message_uuid)
    with database(settings) as url:
        found = asyncio.run(_status(url, message_uuid))
    if found is None:
        raise CommandError(f"no message {message_uuid} in the status view (try 'ledger audit')")
    error = f"{found.error_code} ({found.error_description})" if found.error_code else "-"
    rows = [
        ("message", str(found.message_uuid)),
        ("status", f"{found.status or '-'} since {_when(found.status_at)}"),
        ("error", error),
        ("from → to", f"{found.from_number or '-'} → {found.to_number or '-'}"),
        (
            "type, units",
            f"{found.message_type or '-'}, {found.units if found.units is not None else '-'}",
        ),
        ("amount", str(found.total_amount) if found.total_amount is not None else "-"),
        *(
            (milestone, _when(at))
            for milestone, at in (
                ("queued", found.queued_at),
                ("sent", found.sent_at),
                ("delivered", found.delivered_at),
                ("undelivered", found.undelivered_at),
                ("failed", found.failed_at),
                ("expired", found.expired_at),
            )
            if at is not None
        ),
        ("events", f"{found.event_count} (last position {found.last_position})"),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


def _when(at: datetime) -> str:
    return at.isoformat(" ", "milliseconds")


async def _metrics(url: str, start: date, end: date) -> list[DailyMetrics]:
    async with connect(url) as conn:
        return await daily_metrics(conn, start, end)


def cmd_metrics(settings: Settings, args: argparse.Namespace) -> None:
    """Print daily delivery metrics as a table (or CSV)."""
    try:
        check_range(args.start, args.end, settings.metrics_max_days)
    except RangeError as error:
        raise CommandError(str(error)) from None
    with database(settings) as url:
        rows = asyncio.run(_metrics(url, args.start, args.end))
    if args.csv:
        sys.stdout.write(metrics_csv(rows))
        return
    if not rows:
        print(f"no messages between {args.start} and {args.end}")
        return
    header = (
        "day",
        "messages",
        "delivered",
        "undeliv.",
        "failed",
        "rate",
        "p50 s",
        "p95 s",
        "amount",
    )
    table = [header] + [
        (
            row.day.isoformat(),
            str(row.messages),
            str(row.statuses.get("delivered", 0)),
            str(row.statuses.get("undelivered", 0)),
            str(row.statuses.get("failed", 0)),
            "-" if row.delivery_rate is None else f"{row.delivery_rate:.1%}",
            "-" if row.p50_seconds is None else f"{row.p50_seconds:.1f}",
            "-" if row.p95_seconds is None else f"{row.p95_seconds:.1f}",
            str(row.total_amount),
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print("  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)))


async def _replay(url: str, projectors: Sequence[Projector], show: bool) -> list[ReplayReport]:
    reports = []
    async with connect(url) as conn:
        for projector in projectors:
            bar = ProgressBar(projector.name, enabled=show)
            reports.append(await replay(conn, projector, on_progress=bar.update))
            bar.finish()
    return reports


def cmd_replay(settings: Settings, args: argparse.Namespace) -> None:
    """Rebuild views from the ledger and swap them in; the service may keep running."""
    projectors = build_projectors(settings)
    if args.projection:
        try:
            projectors = (projector_named(args.projection, projectors),)
        except KeyError as error:
            raise CommandError(str(error.args[0])) from None
    with database(settings) as url:
        try:
            reports = asyncio.run(_replay(url, projectors, sys.stderr.isatty()))
        except ReplayInProgress as error:
            raise CommandError(f"{error}: wait for it to finish") from None
    for report in reports:
        extra = f", {report.dead_letters} dead letters" if report.dead_letters else ""
        extra += f", {report.resolved} dead letters resolved" if report.resolved else ""
        print(
            f"replayed {report.projector}: {report.events:,} events in {report.seconds:.2f}s "
            f"({report.events_per_second:,.0f} events/s){extra}"
        )


def cmd_worker(settings: Settings, _: argparse.Namespace) -> None:
    """Run the projectors and scheduled jobs without the HTTP server, until interrupted."""
    from api.background import run_worker

    with database(settings) as url:
        asyncio.run(_migrate(url))
        where = redact(url) if settings.database_url else "the embedded PostgreSQL"
        print(f"ledger: worker running the projectors and scheduled jobs on {where}")
        sys.stdout.flush()
        run_worker(settings, url)


def cmd_token(settings: Settings, _: argparse.Namespace) -> None:
    """Show the read-API token(s), generating one if none exists."""
    tokens, created = ensure_api_tokens(settings)
    if settings.api_tokens:
        print("tokens come from LEDGER_API_TOKENS:", file=sys.stderr)
    elif created:
        print(f"generated a new token, stored in {token_path(settings)}:", file=sys.stderr)
    for token in tokens:
        print(token)


def cmd_simulate(settings: Settings, args: argparse.Namespace) -> None:
    """Send realistic signed callback traffic to a running server."""
    from api.simulate import plan_traffic, send

    if not settings.plivo_auth_tokens:
        raise CommandError(
            "PLIVO_AUTH_TOKEN is not set: simulate signs with the same token as the server"
        )
    base = args.url or f"http://{settings.host}:{settings.port}"
    traffic = plan_traffic(
        messages=args.messages,
        url=f"{settings.callback_base_url}/plivo/status",
        auth_token=settings.plivo_auth_tokens[0],
        duplicate_ratio=args.duplicates,
        seed=args.seed,
    )
    report = asyncio.run(send(traffic.callbacks, base_url=base, concurrency=args.concurrency))
    rate = report.sent / report.seconds if report.seconds else 0.0
    answers = ", ".join(f"{code or 'no answer'}×{n}" for code, n in report.by_status.items())
    print(
        f"sent {report.sent} callbacks for {traffic.messages} messages "
        f"({traffic.duplicates} duplicates) in {report.seconds:.2f}s, {rate:,.0f}/s; "
        f"answers: {answers}"
    )
    if set(report.by_status) != {200}:
        raise CommandError("some callbacks were not acknowledged (see answers above)")


def parse_uuid(value: str) -> UUID:
    """A message UUID from the command line, or a clear error."""
    try:
        return UUID(value)
    except ValueError:
        raise CommandError(
            f"{value!r} is not a message UUID (like 83876bdb-2033-4876-bfaf-0ff8693705af)"
        ) from None


Command = Callable[[Settings, argparse.Namespace], None]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="ledger", description="An event-sourced ledger of Plivo delivery callbacks."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Command, help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(handler=handler)
        return command

    serve = add("serve", cmd_serve, "migrate, then serve the API and run the projectors")
    serve.add_argument("--host", help="address to listen on (LEDGER_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (LEDGER_PORT, default 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (LEDGER_WORKERS, default 1)")
    add("migrate", cmd_migrate, "apply pending database migrations")
    audit = add("audit", cmd_audit, "show every event of one message")
    audit.add_argument("message_uuid", metavar="MESSAGE_UUID")
    audit.add_argument("--json", action="store_true", help="print the events as JSON")
    add("worker", cmd_worker, "run the projectors and scheduled jobs without the HTTP server")
    status = add("status", cmd_status, "show one message's current status")
    status.add_argument("message_uuid", metavar="MESSAGE_UUID")
    metrics = add("metrics", cmd_metrics, "show daily delivery metrics")
    metrics.add_argument("--start", type=date.fromisoformat, required=True, help="YYYY-MM-DD")
    metrics.add_argument("--end", type=date.fromisoformat, required=True, help="YYYY-MM-DD")
    metrics.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    replay_cmd = add("replay", cmd_replay, "rebuild the views from the events, without downtime")
    replay_cmd.add_argument(
        "--projection", help="only this view (message_status, daily_delivery_metrics)"
    )
    add("token", cmd_token, "show the read-API token (generating one if needed)")
    simulate = add("simulate", cmd_simulate, "send realistic signed callbacks to a running server")
    simulate.add_argument("--url", help="server base URL (default http://LEDGER_HOST:LEDGER_PORT)")
    simulate.add_argument("--messages", type=int, default=100, help="messages to simulate (100)")
    simulate.add_argument("--concurrency", type=int, default=16, help="concurrent clients (16)")
    simulate.add_argument("--duplicates", type=float, default=0.1, help="share of retries (0.1)")
    simulate.add_argument("--seed", type=int, default=0, help="random seed (0)")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``ledger`` command."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        configure_logging(settings.log_level)
        args.handler(settings, args)
    except (SettingsError, CommandError) as error:
        fail(str(error))
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
