"""``ledger simulate`` against a real server: what it reports, and what a new user does next
(the README's walkthrough: find the message sent to +1 415 555 0100 and read why it failed)."""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ledger.database import connect
from ledger.error_codes import describe_error
from tests.conftest import run_ledger
from tests.reliability.conftest import (
    LedgerServer,
    ServerFleet,
    event_count,
    free_port,
    simulate,
    wait_for_projections,
)

pytestmark = pytest.mark.reliability

AUDIT_LINE = re.compile(r"^  ledger audit ([0-9a-f-]{36})   # (.+)$")


def read_command(server: LedgerServer, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_ledger(*args, cwd=cwd, env=server.environment())


async def test_a_run_reports_appended_and_duplicate_answers_its_seed_and_what_to_audit(
    servers: ServerFleet, database_url: str, tmp_path: Path
) -> None:
    server = servers.create(database_url, name="simulate")
    result = simulate(server.base_url, "--messages 30 --duplicates 0.5 --seed 7", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    stored = await event_count(database_url)
    sent = int(lines[0].split()[1])
    assert lines[1] == f"answers: {stored} appended, {sent - stored} duplicate"
    assert lines[2] == "seed 7 (repeat this run with --seed 7)"
    suggested = [AUDIT_LINE.match(line) for line in lines[lines.index("try next:") + 1 :]]
    assert all(suggested), lines
    await wait_for_projections(database_url)
    for match in suggested:
        assert match is not None
        audit = read_command(server, "audit", match.group(1), cwd=tmp_path)
        assert audit.returncode == 0, audit.stderr
        status_line = next(line for line in audit.stdout.splitlines() if line.startswith("status"))
        assert status_line.split()[1] == match.group(2).split(",")[0]


async def test_the_same_seed_sends_the_same_callbacks_again(
    servers: ServerFleet, database_url: str, tmp_path: Path
) -> None:
    server = servers.create(database_url, name="seed")
    first = simulate(server.base_url, "--messages 10 --seed 42 --duplicates 0", cwd=tmp_path)
    stored = await event_count(database_url)
    again = simulate(server.base_url, "--messages 10 --seed 42 --duplicates 0", cwd=tmp_path)
    assert first.stdout.splitlines()[1] == f"answers: {stored} appended, 0 duplicate"
    assert again.stdout.splitlines()[1] == f"answers: 0 appended, {stored} duplicate"
    assert await event_count(database_url) == stored
    fresh = simulate(server.base_url, "--messages 10 --duplicates 0", cwd=tmp_path)
    assert fresh.stdout.splitlines()[1].endswith(" appended, 0 duplicate")
    assert await event_count(database_url) > stored


async def test_no_simulated_timestamp_is_in_the_future(
    servers: ServerFleet, database_url: str, tmp_path: Path
) -> None:
    server = servers.create(database_url, name="timestamps")
    result = simulate(server.base_url, "--messages 100 --since 5m", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    finished = datetime.now(UTC)
    async with connect(database_url) as conn:
        cursor = await conn.execute("SELECT max(occurred_at), count(*) FROM events")
        newest, events = await cursor.fetchone() or (None, 0)
    assert events > 200
    assert newest is not None
    assert newest <= finished


async def test_a_new_user_finds_the_message_sent_to_a_number_and_reads_why_it_failed(
    servers: ServerFleet, database_url: str, tmp_path: Path
) -> None:
    server = servers.create(database_url, name="walkthrough")
    sent = simulate(
        server.base_url, "--messages 20 --to +14155550100 --since yesterday", cwd=tmp_path
    )
    assert sent.returncode == 0, sent.stderr
    assert "  ledger messages --to +14155550100 --since yesterday" in sent.stdout.splitlines()
    await wait_for_projections(database_url)
    found = read_command(
        server, "messages", "--to", "+1 415 555 0100", "--since", "yesterday", cwd=tmp_path
    )
    assert found.returncode == 0, found.stderr
    rows = [line.split() for line in found.stdout.splitlines()[2:]]
    by_status = {row[3]: row[2] for row in rows}
    assert sorted(by_status) == ["delivered", "failed", "sent", "undelivered"]
    audit = read_command(server, "audit", by_status["undelivered"], cwd=tmp_path)
    error = next(line for line in audit.stdout.splitlines() if line.startswith("error"))
    explained = re.fullmatch(r"error +(\d+): (.+)", error)
    assert explained is not None, error
    assert explained.group(2) == describe_error(explained.group(1))  # the code's meaning


def test_a_server_that_is_down_is_named_with_what_to_start(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = simulate(url, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"ledger: error: connection refused: is 'ledger serve' running at {url}?"
    ]


async def test_refused_signatures_point_at_the_public_url(
    servers: ServerFleet, database_url: str, tmp_path: Path
) -> None:
    server = servers.create(database_url, name="wrong-url")
    result = simulate(
        server.base_url, "--messages 3", cwd=tmp_path, public_url="http://localhost:8000"
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "ledger: error: signature refused: do LEDGER_PUBLIC_URL and PLIVO_AUTH_TOKEN match "
        "the server's? (signed with them for http://localhost:8000/plivo/status)"
    ]
    assert await event_count(database_url) == 0
