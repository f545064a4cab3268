"""``ledger messages``: support finds a message by phone number and time, not by UUID."""

from __future__ import annotations

import json
import random
import shlex
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

from api.simulate import lifecycle
from tests.conftest import wait_for_views
from tests.test_cli import ledger, post

NUMBER = "14155550100"
Client = AsyncTestClient[Litestar]


async def send_messages(
    client: Client, database_url: str, *sends: tuple[datetime, str, str]
) -> list[str]:
    """One lifecycle per (time, recipient, outcome); returns the message UUIDs."""
    uuids: list[str] = []
    last = 0
    for n, (at, recipient, outcome) in enumerate(sends):
        steps = lifecycle(random.Random(n), at, outcome=outcome, to_number=recipient)
        uuids.append(dict(steps[0])["MessageUUID"])
        last = max(last, await post(client, *steps))
    await wait_for_views(database_url, last)
    return uuids


def rows(stdout: str) -> list[list[str]]:
    """The result table's rows split into words (the first event time is two)."""
    lines = stdout.splitlines()
    return [line.split() for line in lines[2:] if line.strip() and not line.startswith("next")]


async def test_a_recipient_is_found_by_any_written_form_since_yesterday(
    client: Client, settings: Any, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    recent, _, _ = await send_messages(
        client,
        settings.database_url,
        (now - timedelta(hours=2), NUMBER, "undelivered"),
        (now - timedelta(hours=2), "14155550199", "delivered"),
        (now - timedelta(days=3), NUMBER, "delivered"),
    )
    result = ledger(
        "messages",
        "--to",
        "+1 (415) 555-0100",
        "--since",
        "yesterday",
        database_url=settings.database_url,
        data_dir=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    [row] = rows(result.stdout)
    assert row[2:4] == [recent, "undelivered"]
    assert row[-2:] == ["14…00", "3"]  # the recipient, masked; three events
    assert NUMBER not in result.stdout


async def test_a_full_page_ends_with_the_command_for_the_next_one(
    client: Client, settings: Any, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    sent = await send_messages(
        client,
        settings.database_url,
        *((now - timedelta(minutes=30 + n), NUMBER, "delivered") for n in range(3)),
    )
    first = ledger(
        "messages",
        "--to",
        NUMBER,
        "--limit",
        "2",
        database_url=settings.database_url,
        data_dir=tmp_path,
    )
    assert [row[2] for row in rows(first.stdout)] == sent[:2]
    next_line = first.stdout.splitlines()[-1]
    assert next_line.startswith("next page: ledger messages --to 14155550100 --limit 2 --cursor ")
    command = shlex.split(next_line.removeprefix("next page: "))
    second = ledger(*command[1:], database_url=settings.database_url, data_dir=tmp_path)
    assert [row[2] for row in rows(second.stdout)] == sent[2:]
    assert "next page" not in second.stdout


async def test_messages_json_is_the_page_the_api_returns(
    client: Client, settings: Any, auth: dict[str, str], tmp_path: Path
) -> None:
    await send_messages(
        client, settings.database_url, (datetime.now(UTC) - timedelta(hours=1), NUMBER, "failed")
    )
    result = ledger(
        "messages",
        "--status",
        "failed",
        "--json",
        database_url=settings.database_url,
        data_dir=tmp_path,
    )
    api = await client.get("/v1/messages", params={"status": "failed", "limit": 20}, headers=auth)
    assert json.loads(result.stdout) == api.json()


def test_no_match_is_said_in_words(database_url: str, tmp_path: Path) -> None:
    result = ledger("messages", "--to", NUMBER, database_url=database_url, data_dir=tmp_path)
    assert (result.returncode, result.stdout) == (0, "no messages match\n")


def test_a_time_that_cannot_be_read_is_refused_with_the_forms_it_takes(
    database_url: str, tmp_path: Path
) -> None:
    result = ledger(
        "messages", "--since", "last week", database_url=database_url, data_dir=tmp_path
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "ledger: error: --since 'last week' is not a time: write it like 2026-11-23, "
        "'2026-11-23 09:30', 24h, 7d, today or yesterday"
    ]
