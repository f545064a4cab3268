"""``ledger simulate``: realistic signed callback traffic against a running server."""

from __future__ import annotations

import asyncio
import secrets
import shlex
from datetime import UTC, datetime

import httpx
import rich_click as click

from api.cli.common import CommandError, pass_settings, show
from api.cli.times import TIME_FORMS, NotATime, parse_when
from api.simulate import LONGEST_LIFECYCLE, plan_traffic, send
from ledger.phone_numbers import normalise_number
from ledger.settings import Settings

#: What the server answers a callback it took: stored now, or stored before.
_RESULTS = ("appended", "duplicate")
#: How many messages of each outcome the run suggests auditing.
_SAMPLES_PER_OUTCOME = 1
_OUTCOME_WORDS = {
    "delivered": "delivered",
    "undelivered": "undelivered, with an error code",
    "failed": "failed, with an error code",
    "sent": "sent, no delivery report",
}


async def _check_reachable(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:
        try:
            await client.get("/health")
        except httpx.TransportError:
            raise CommandError(
                f"connection refused: is 'ledger serve' running at {base_url}?"
            ) from None


@click.command()
@click.option("--url", help="The server's base URL (default http://LEDGER_HOST:LEDGER_PORT).")
@click.option(
    "--messages",
    type=click.IntRange(1, 1_000_000),
    default=100,
    show_default=True,
    help="Messages with random outcomes.",
)
@click.option(
    "--to",
    "recipients",
    multiple=True,
    metavar="NUMBER",
    help="Also send NUMBER one message of each outcome (delivered, undelivered, failed, "
    "sent with no report); repeatable.",
)
@click.option(
    "--since",
    metavar="WHEN",
    default="1h",
    show_default=True,
    help=f"Messages are sent between WHEN and now: {TIME_FORMS}.",
)
@click.option(
    "--duplicates",
    type=click.FloatRange(0, 1),
    default=0.1,
    show_default=True,
    help="Share of callbacks sent a second time, as Plivo's retries are.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=16,
    show_default=True,
    help="Concurrent clients.",
)
@click.option("--seed", type=int, help="Repeat an earlier run (each run prints its seed).")
@pass_settings
def simulate(
    settings: Settings,
    *,
    url: str | None,
    messages: int,
    recipients: tuple[str, ...],
    since: str,
    duplicates: float,
    concurrency: int,
    seed: int | None,
) -> None:
    """Send realistic signed Plivo callbacks to a running server.

    Each message goes through queued, sent and delivered, undelivered (with an error code)
    or failed, or stays sent; callbacks are shuffled and some sent twice, as Plivo's
    retries are. They are signed (V3) with PLIVO_AUTH_TOKEN for LEDGER_PUBLIC_URL, as
    Plivo would sign them, so set both as the server has them. All timestamps are in the
    past. The run prints its seed and a few messages to audit.

    Examples:

    ```
    ledger simulate --messages 200
    ledger simulate --to +14155550100 --since yesterday
    ledger simulate --messages 1000 --since 7d --seed 42
    ```
    """

    if not settings.plivo_auth_tokens:
        raise CommandError(
            "PLIVO_AUTH_TOKEN is not set: simulate signs with the same token as the server"
        )
    now = datetime.now(UTC)
    try:
        start = parse_when(since, now=now, zone=settings.zone)
    except NotATime as error:
        raise CommandError(f"--since {error}") from None
    # The last callback of a message sent at the end of the window is still in the past.
    window = now - LONGEST_LIFECYCLE - start
    if window.total_seconds() < 1:
        raise CommandError(
            f"--since {since!r} leaves no time for the callbacks (a lifecycle takes up to "
            f"{LONGEST_LIFECYCLE.total_seconds():.0f} s): give 5m or earlier"
        )
    seed = secrets.randbits(32) if seed is None else seed
    base = (url or f"http://{settings.host}:{settings.port}").rstrip("/")
    callback_url = f"{settings.callback_base_url}/plivo/status"
    traffic = plan_traffic(
        messages=messages,
        url=callback_url,
        auth_token=settings.plivo_auth_tokens[0],
        duplicate_ratio=duplicates,
        seed=seed,
        start=start,
        spread=window,
        recipients=[normalise_number(number) for number in recipients],
    )
    asyncio.run(_check_reachable(base))
    report = asyncio.run(send(traffic.callbacks, base_url=base, concurrency=concurrency))
    rate = report.sent / report.seconds if report.seconds else 0.0
    show(
        f"sent {report.sent} callbacks for {traffic.messages} messages "
        f"({traffic.duplicates} sent twice) to {base} in {report.seconds:.2f}s, {rate:,.0f}/s"
    )
    answers = [f"{report.by_result.get(result, 0)} {result}" for result in _RESULTS]
    answers += [f"{n} {result}" for result, n in report.by_result.items() if result not in _RESULTS]
    answers += [
        f"{n} × {f'HTTP {code}' if code else 'no answer'}"
        for code, n in report.by_status.items()
        if code != 200
    ]
    show(f"answers: {', '.join(answers)}")
    show(f"seed {seed} (repeat this run with --seed {seed})")
    if report.by_status.get(403):
        raise CommandError(
            "signature refused: do LEDGER_PUBLIC_URL and PLIVO_AUTH_TOKEN match the "
            f"server's? (signed with them for {callback_url})"
        )
    if set(report.by_status) - {200}:
        raise CommandError("some callbacks were not acknowledged (see the answers above)")
    show("try next:")
    shown: dict[str, int] = {}
    for message_uuid, outcome in traffic.outcomes.items():
        if shown.get(outcome, 0) < _SAMPLES_PER_OUTCOME:
            shown[outcome] = shown.get(outcome, 0) + 1
            show(f"  ledger audit {message_uuid}   # {_OUTCOME_WORDS[outcome]}")
    for number in recipients:
        show(f"  {shlex.join(['ledger', 'messages', '--to', number, '--since', since])}")
