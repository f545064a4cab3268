"""The ``ledger`` command line: serve, migrate, audit, replay, simulate and friends."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn
from uuid import UUID

import msgspec
import psycopg

from api.logs import configure_logging
from ledger.database import connect, database_url, redact
from ledger.migrate import migrate
from ledger.settings import Settings, SettingsError, load_settings, require_callback_auth
from ledger.store import read_stream
from ledger.tokens import ensure_api_tokens, token_path


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
