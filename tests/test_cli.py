"""The ledger command line, run as a real subprocess against the test database."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

from api.simulate import lifecycle, sign
from tests.conftest import CALLBACK_URL, PLIVO_TOKEN

MESSAGE = "0f7b6c1e-3d1a-4c55-9a55-7d1c8f0e2b10"


def ledger(
    *args: str, database_url: str, data_dir: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``ledger ARGS`` with a clean environment pointing at the test database."""
    environment = {
        "PATH": os.environ["PATH"],
        "DATABASE_URL": database_url,
        "LEDGER_DATA_DIR": str(data_dir),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
        cwd=data_dir,
    )


async def record_lifecycle(client: AsyncTestClient[Litestar]) -> list[list[tuple[str, str]]]:
    rng = random.Random(11)
    steps = [
        c
        for c in lifecycle(rng, datetime(2026, 11, 23, 9, tzinfo=UTC), MESSAGE)
        if dict(c)["Status"] in {"queued", "sent", "delivered", "undelivered"}
    ]
    for params in steps:
        signed = sign(params, url=CALLBACK_URL, auth_token=PLIVO_TOKEN)
        response = await client.post("/plivo/status", content=signed.body, headers=signed.headers)
        assert response.status_code == 200
    return steps


async def test_audit_prints_the_lifecycle_as_a_timeline(
    client: AsyncTestClient[Litestar], settings: Any, tmp_path: Path
) -> None:
    steps = await record_lifecycle(client)
    result = ledger("audit", MESSAGE, database_url=settings.database_url, data_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"message {MESSAGE}: {len(steps)} events"
    assert [line.split()[4] for line in lines[1:]] == [dict(s)["Status"] for s in steps]
    assert all("via v3" in line for line in lines[1:])


async def test_audit_json_holds_every_event_with_its_payload(
    client: AsyncTestClient[Litestar], settings: Any, tmp_path: Path
) -> None:
    steps = await record_lifecycle(client)
    result = ledger(
        "audit", MESSAGE, "--json", database_url=settings.database_url, data_dir=tmp_path
    )
    events = json.loads(result.stdout)
    assert [e["payload"] for e in events] == [dict(s) for s in steps]
    assert [e["position"] for e in events] == sorted(e["position"] for e in events)


def test_audit_of_an_unknown_message_says_so_and_fails(database_url: str, tmp_path: Path) -> None:
    result = ledger("audit", MESSAGE, database_url=database_url, data_dir=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == f"ledger: error: the ledger has no events for message {MESSAGE}"


def test_audit_of_a_malformed_uuid_explains_the_expected_shape(
    database_url: str, tmp_path: Path
) -> None:
    result = ledger("audit", "nope", database_url=database_url, data_dir=tmp_path)
    assert result.returncode == 2
    assert "is not a message UUID" in result.stderr


def test_migrate_reports_an_up_to_date_database(database_url: str, tmp_path: Path) -> None:
    result = ledger("migrate", database_url=database_url, data_dir=tmp_path)
    assert (result.returncode, result.stdout.strip()) == (0, "database is up to date")


def test_an_unreachable_database_is_reported_with_what_to_check(tmp_path: Path) -> None:
    dead = "postgresql://postgres@127.0.0.1:9/ledger?connect_timeout=1"
    result = ledger("migrate", database_url=dead, data_dir=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("ledger: error: cannot reach the database at")
    assert "check DATABASE_URL" in result.stderr


def test_a_bad_setting_stops_the_command_with_one_line_naming_it(
    database_url: str, tmp_path: Path
) -> None:
    result = ledger("migrate", database_url=database_url, data_dir=tmp_path, LEDGER_PORT="http")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "ledger: error: LEDGER_PORT='http' is not a whole number: set it to e.g. 1"
    ]


def test_token_generates_one_token_and_shows_the_same_one_afterwards(
    database_url: str, tmp_path: Path
) -> None:
    first = ledger("token", database_url=database_url, data_dir=tmp_path)
    second = ledger("token", database_url=database_url, data_dir=tmp_path)
    assert first.stdout == second.stdout
    assert len(first.stdout.strip()) >= 32
    assert (tmp_path / "api-token").stat().st_mode & 0o777 == 0o600
