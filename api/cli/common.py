"""What every ``ledger`` command shares: settings, the database, errors and output."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Concatenate, NoReturn, ParamSpec, TypeVar
from uuid import UUID

import msgspec
import psycopg
import rich_click as click
from rich import box
from rich.console import Console, RenderableType
from rich.table import Table

from api.logs import configure_logging
from api.tag_filters import parse_tag_filters
from ledger.database import DatabaseUrls, connect, database_urls, redact
from ledger.migrate import pending_migrations
from ledger.settings import Settings, load_settings

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

Connection = psycopg.AsyncConnection[Any]

#: Width for output that goes to a pipe or file: tables keep their natural width there
#: (rich would otherwise fold them to 80 columns), and a table is never padded wider.
PIPE_WIDTH = 240


class CommandError(Exception):
    """A failure the user can act on; the message says what went wrong and what to do."""


def fail(message: str) -> NoReturn:
    """Print ``ledger: error: …`` on stderr and exit with status 2."""
    print(f"ledger: error: {message}", file=sys.stderr)
    raise SystemExit(2)


@functools.cache
def output_console(*, stderr: bool = False) -> Console:
    """The console for results (stdout) or for logs and progress (stderr): colour on a
    terminal, plain text of natural width when piped (``NO_COLOR`` is honoured too). One of
    each per process, so that logs and a progress bar share a display."""
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console = Console(stderr=stderr, highlight=False, width=PIPE_WIDTH)
    return console


def pass_settings(command: Callable[Concatenate[Settings, P], R]) -> Callable[P, R]:
    """Give a command the settings (read the same way by every command) and set up logging
    (through rich on a terminal, one plain line per record otherwise).

    Settings are read when the command runs, not when the group parses its arguments, so
    that ``ledger COMMAND --help`` works whatever the environment holds.
    """

    @functools.wraps(command)
    def with_settings(*args: P.args, **kwargs: P.kwargs) -> R:
        settings = load_settings()
        errors = output_console(stderr=True)
        # On a terminal, logs go through rich so that they print above a progress bar.
        configure_logging(settings.log_level, console=errors if errors.is_terminal else None)
        return command(settings, *args, **kwargs)

    return with_settings


@contextlib.contextmanager
def databases(settings: Settings, *, create: bool = False) -> Iterator[DatabaseUrls]:
    """Where the service connects and where migrations run (the embedded server started if
    needed), with a clear error if the database cannot be reached.

    Without ``create``, a command refuses to create an embedded database where there is none:
    a read from the wrong data directory would otherwise start an empty one.
    """
    pgdata = settings.data_dir / "postgres"
    if not settings.database_url and not create and not pgdata.is_dir():
        raise CommandError(
            f"no ledger database in {settings.data_dir}: start the service once with "
            "'ledger serve' (it creates one there), or set DATABASE_URL or LEDGER_DATA_DIR"
        )
    try:
        with database_urls(settings) as urls:
            yield urls
    except psycopg.OperationalError as error:
        where = redact(settings.database_url) if settings.database_url else "the embedded server"
        raise CommandError(
            f"cannot reach the database at {where}: {str(error).strip().splitlines()[0]}; "
            "check DATABASE_URL and that the server is running"
        ) from None


@contextlib.contextmanager
def database(settings: Settings, *, create: bool = False) -> Iterator[str]:
    """The URL the service (and every read command) connects to: see :func:`databases`."""
    with databases(settings, create=create) as urls:
        yield urls.service


async def require_migrated(conn: Connection) -> None:
    """Refuse to read a database the migrations have not (all) been applied to."""
    pending = await pending_migrations(conn)
    if not pending:
        return
    names = ", ".join(f"{migration.version:03d}_{migration.name}" for migration in pending)
    raise CommandError(
        f"the database is not migrated (pending: {names}): run 'ledger migrate' first"
    )


def read(settings: Settings, query: Callable[[Connection], Awaitable[T]]) -> T:
    """Run ``query`` on one connection to the ledger's (existing, migrated) database."""

    async def run(url: str) -> T:
        async with connect(url) as conn:
            await require_migrated(conn)
            return await query(conn)

    with database(settings) as url:
        return asyncio.run(run(url))


def show(renderable: RenderableType) -> None:
    """Print ``renderable`` on stdout: styled on a terminal; when piped, plain lines without
    the padding rich gives every cell, so that scripts and diffs see clean text."""
    console = output_console()
    if console.is_terminal:
        console.print(renderable)
        return
    with console.capture() as captured:
        console.print(renderable)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))
    sys.stdout.flush()


def print_json(value: Any) -> None:
    """``value`` as indented JSON on stdout, encoded as the HTTP API encodes it."""
    sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(value)) + b"\n")
    sys.stdout.flush()


def table(*columns: str, right: tuple[str, ...] = ()) -> Table:
    """A table with a bold header row; the ``right`` columns (numbers) align right."""
    grid = Table(box=box.SIMPLE_HEAD, pad_edge=False, header_style="bold", show_edge=False)
    for column in columns:
        grid.add_column(column, justify="right" if column in right else "left")
    return grid


def message_uuid_argument(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> UUID | None:
    """Click callback: a MESSAGE_UUID argument as a UUID, or a usage error showing what one
    looks like."""
    if value is None:
        return None
    try:
        return UUID(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a message UUID (like 83876bdb-2033-4876-bfaf-0ff8693705af)",
            ctx=ctx,
            param=param,
        ) from None


def with_message_uuid(command: Callable[P, R]) -> Callable[P, R]:
    """The ``MESSAGE_UUID`` argument of a command about one message."""
    return click.argument("message_uuid", callback=message_uuid_argument)(command)


def tag_values(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str]:
    """Click callback: repeated ``--tag name=value`` as a dict, or a usage error."""
    try:
        return parse_tag_filters(values)
    except ValueError as error:
        raise click.BadParameter(str(error), ctx=ctx, param=param) from None


def tag_option(command: Callable[P, R]) -> Callable[P, R]:
    """``--tag name=value`` (repeatable), given to the command as ``tags``, a dict."""
    return click.option(
        "--tag",
        "tags",
        metavar="NAME=VALUE",
        multiple=True,
        callback=tag_values,
        help="Only messages sent with this tag, e.g. campaign=spring (repeat: all must match).",
    )(command)
