"""Proving the ledger: ``ledger verify`` and ``ledger seal``."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import rich_click as click
from rich.console import Group, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from api.cli.common import (
    CommandError,
    Connection,
    database,
    output_console,
    pass_settings,
    print_json,
    read,
    require_migrated,
    show,
    table,
)
from ledger.database import connect
from ledger.durations import parse_duration
from ledger.seals import Block, Head, HeadError, last_block, seal_settled
from ledger.settings import Settings
from ledger.system_events import system_key
from ledger.verify import PROOF_DESCRIPTIONS, Credentials, VerifyReport
from ledger.verify_parallel import default_jobs, verify_in_parallel
from projections.locks import Lock, try_advisory_lock
from projections.sealer import SEALER_LOCK_NAME

#: Exit status of ``ledger verify`` when it finds anything wrong (2 stays for usage errors).
FOUND_PROBLEMS = 1


def credentials(settings: Settings) -> Credentials:
    """Every token and key signatures are re-checked with: current and retired Plivo auth
    tokens, the main account's, and the system key."""
    retired = settings.plivo_retired_auth_tokens
    return Credentials(
        auth_tokens=(*settings.plivo_auth_tokens, *retired),
        main_auth_tokens=(*settings.plivo_main_auth_tokens, *retired),
        system_keys=(system_key(settings),),
    )


def _witness(line: str | None, file: Path | None) -> Head | None:
    if line is not None and file is not None:
        raise click.UsageError("give the head as --head LINE or --head-file FILE, not both")
    if file is not None:
        try:
            lines = [text for text in file.read_text("utf-8").splitlines() if text.strip()]
        except OSError as error:
            raise CommandError(f"cannot read {file}: {error.strerror}") from None
        if not lines:
            raise CommandError(f"{file} holds no seal head: keep 'ledger seal head' lines in it")
        line = lines[-1]  # a file of published heads: the newest is the last line
    if line is None:
        return None
    try:
        return Head.parse(line)
    except HeadError as error:
        raise click.BadParameter(str(error), param_hint="--head") from None


def _grace(value: str) -> timedelta:
    try:
        return parse_duration(value)
    except ValueError as error:
        raise click.BadParameter(
            f"{value!r} {error}: give it like 90s, 5m or 1h", param_hint="--unsealed-grace"
        ) from None


def _render(report: VerifyReport) -> Group:
    verdict = (
        Text("intact: every event, seal and signature checks out", style="bold green")
        if report.intact
        else Text(f"{report.finding_count:,} problem(s) found", style="bold red")
    )
    sealed = f"{report.sealed_events:,} sealed in {report.blocks:,} block(s)"
    summary = table("checked", "")
    summary.add_row("events", f"{report.events:,} ({sealed}, {report.unsealed_events:,} not yet)")
    if report.blocks:
        last = report.first_block + report.blocks - 1
        summary.add_row("blocks", f"{report.first_block:,} to {last:,}")
    for proof, description in PROOF_DESCRIPTIONS.items():
        if count := report.proofs.get(proof, 0):
            summary.add_row("origin", f"{count:,} {description}")
    if report.head is not None:
        summary.add_row("head", report.head.line())
    if report.witness is not None:
        summary.add_row(
            "external head",
            f"block {report.witness.block}: "
            + ("the ledger extends it" if report.extends_witness else "NOT extended"),
        )
    summary.add_row("time", f"{report.seconds:.1f} s")
    parts: list[RenderableType] = [verdict, summary]
    if report.findings:
        found = table("kind", "position", "block", "what", right=("position", "block"))
        for finding in report.findings:
            found.add_row(
                finding.kind,
                "-" if finding.position is None else str(finding.position),
                "-" if finding.block is None else str(finding.block),
                finding.detail,
            )
        parts.append(found)
        if report.finding_count > len(report.findings):
            parts.append(Text(f"… and {report.finding_count - len(report.findings):,} more"))
    return Group(*parts)


@click.command()
@click.option(
    "--since",
    "since_block",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Start at this block (its predecessor's chain is taken as given).",
)
@click.option(
    "--head", "head_line", metavar="LINE", help="A head kept earlier ('ledger seal head')."
)
@click.option(
    "--head-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="A file of heads (e.g. LEDGER_SEAL_HEAD_FILE): its last line is checked.",
)
@click.option(
    "--unsealed-grace",
    default="5m",
    show_default=True,
    help="Report events older than this that no block covers yet.",
)
@click.option(
    "--jobs",
    type=click.IntRange(1, 64),
    default=default_jobs(),
    show_default=True,
    help="Processes to verify with (each takes a range of blocks).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_settings
def verify(
    settings: Settings,
    *,
    since_block: int,
    head_line: str | None,
    head_file: Path | None,
    unsealed_grace: str,
    jobs: int,
    as_json: bool,
) -> int:
    """Prove the ledger: recompute every leaf, root and chain link from the events, and
    re-check every stored Plivo signature, nonce pin and system MAC.

    Exit status 0 when intact, 1 when anything is wrong: the first bad positions are named
    with their kind (altered, deleted, inserted, reordered, unsealed). With --head, also
    proves the ledger still extends a head kept outside the database, which catches even a
    superuser who rewrote events and seals together. Retired auth tokens
    (PLIVO_RETIRED_AUTH_TOKENS) still prove the events they signed.

    Examples:

    ```
    ledger verify
    ledger verify --head "$(cat last-head.txt)"
    ledger verify --head-file /var/lib/ledger/heads.log --since 1200
    ```
    """
    witness = _witness(head_line, head_file)
    grace = _grace(unsealed_grace)
    errors = output_console(stderr=True)
    progress = Progress(
        TextColumn("verifying"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("events"),
        TimeElapsedColumn(),
        console=errors,
        disable=not errors.is_terminal or as_json,
        transient=True,
    )

    async def check(url: str) -> VerifyReport:
        async with connect(url) as conn:
            await require_migrated(conn)
        with progress:
            task = progress.add_task("verify", total=None)
            try:
                return await verify_in_parallel(
                    url,
                    credentials(settings),
                    jobs=jobs,
                    since_block=since_block,
                    witness=witness,
                    unsealed_grace=grace,
                    on_progress=lambda done, total: progress.update(
                        task, completed=done, total=total
                    ),
                )
            except ValueError as error:
                raise CommandError(f"{error}: choose a --since that exists") from None

    with database(settings) as url:
        report = asyncio.run(check(url))
    if as_json:
        print_json(report)
    else:
        show(_render(report))
    return 0 if report.intact else FOUND_PROBLEMS


@click.group()
def seal() -> None:
    """The sealed history's head, to keep outside the database, and sealing on demand."""


@seal.command()
@pass_settings
def head(settings: Settings) -> None:
    """Print the newest block's head as one line: keep it outside the database (a file, a
    ticket, a mail), then prove the ledger still extends it with 'ledger verify --head'.

    Examples:

    ```
    ledger seal head >> ~/ledger-heads.txt
    ledger verify --head "$(tail -1 ~/ledger-heads.txt)"
    ```
    """
    block = read(settings, last_block)
    if block is None:
        raise CommandError(
            "nothing is sealed yet: the running service seals within seconds, or run "
            "'ledger seal now'"
        )
    print(block.head.line(), flush=True)


@seal.command()
@pass_settings
def now(settings: Settings) -> None:
    """Seal every settled event now, when the service (and its sealer) is not running.

    Examples:

    ```
    ledger seal now && ledger seal head
    ```
    """

    async def seal_all(conn: Connection) -> list[Block]:
        if not await try_advisory_lock(conn, Lock.SEALER, SEALER_LOCK_NAME):
            raise CommandError(
                "a running service's sealer holds the ledger: it seals within seconds, so "
                "there is nothing to do here"
            )
        return await seal_settled(conn, block_events=settings.seal_block_events)

    blocks = read(settings, seal_all)
    sealed = sum(block.event_count for block in blocks)
    print(f"sealed {sealed:,} events in {len(blocks):,} new block(s)", flush=True)
