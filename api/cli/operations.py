"""Operators' tools: ``ledger replay`` and ``ledger token``."""

from __future__ import annotations

import logging
import sys

import rich_click as click
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from api.cli.common import CommandError, Connection, output_console, pass_settings, read
from ledger.settings import Settings
from ledger.tokens import ensure_api_tokens, token_path
from projections.registry import PROJECTORS, build_projectors
from projections.replay import DEFAULT_JOBS, ReplayInProgress, ReplayReport, replay_views


def replay_progress() -> Progress:
    """A progress bar on stderr, advancing chunk by chunk (the spinner and the clock move
    between chunks too); not drawn when stderr is not a terminal."""
    console = output_console(stderr=True)
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("events"),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    )


@click.command()
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=DEFAULT_JOBS,
    show_default=True,
    help="Database connections building at once (about one per core of the database server).",
)
@click.option(
    "--projection",
    type=click.Choice([projector.name for projector in PROJECTORS]),
    multiple=True,
    help="Rebuild only this view; repeat it for several (default: every view).",
)
@pass_settings
def replay(settings: Settings, *, projection: tuple[str, ...], jobs: int) -> None:
    """Rebuild the views from the ledger's events and swap them in, without downtime.

    The ledger is read once for every view rebuilt, into new tables, chunk by chunk; each
    view is then caught up and swapped in within one short transaction. The service keeps
    serving, ingesting and projecting meanwhile. Dead letters are retried. A progress bar
    shows on a terminal; each view's result is printed once.

    Examples:

    ```
    ledger replay
    ledger replay --projection message_status
    ledger replay --projection message_status --projection daily_delivery_metrics
    ledger replay --jobs 4
    ```
    """
    projectors = build_projectors(settings)
    if projection:
        # In the registry's order, each once, however the options were given.
        projectors = tuple(p for p in projectors if p.name in projection)
    # replay logs each start and result at INFO for the service's logs; here the command
    # prints the result itself, once.
    logging.getLogger("projections.replay").setLevel(logging.WARNING)

    async def rebuild(conn: Connection) -> list[ReplayReport]:
        with replay_progress() as progress:
            task = progress.add_task(", ".join(p.name for p in projectors), total=None)

            def advance(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            return await replay_views(conn, projectors, jobs=jobs, on_progress=advance)

    try:
        reports = read(settings, rebuild)
    except ReplayInProgress as error:
        raise CommandError(f"{error}: wait for it to finish") from None
    for report in reports:
        extra = f", {report.dead_letters} dead letters" if report.dead_letters else ""
        extra += f", {report.resolved} dead letters resolved" if report.resolved else ""
        print(
            f"replayed {report.projector}: {report.events:,} events in {report.seconds:.2f}s "
            f"({report.events_per_second:,.0f} events/s){extra}",
            flush=True,
        )


@click.command()
@pass_settings
def token(settings: Settings) -> None:
    """Show the read-API token, generating one if there is none yet.

    The token lives in LEDGER_DATA_DIR/api-token (mode 600), the same file whatever
    directory you run this in; LEDGER_API_TOKENS, if set, wins.

    Examples:

    ```
    curl -H "Authorization: Bearer $(ledger token)" localhost:8000/v1/messages
    ```
    """
    tokens, created = ensure_api_tokens(settings)
    if settings.api_tokens:
        print("tokens come from LEDGER_API_TOKENS:", file=sys.stderr)
    elif created:
        print(f"generated a new token, stored in {token_path(settings)}:", file=sys.stderr)
    for value in tokens:
        print(value)
