"""``ledger verify`` and ``ledger seal``, run as an operator runs them, against a real ledger."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import psycopg
from litestar import Litestar
from litestar.testing import AsyncTestClient

from ledger.seals import Head
from tests.conftest import PLIVO_TOKEN, SYSTEM_KEY, post_lifecycles, run_ledger

Client = AsyncTestClient[Litestar]


def ledger(
    *args: str, database_url: str, tmp_path: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    return run_ledger(
        *args,
        cwd=tmp_path,
        env={
            "DATABASE_URL": database_url,
            "LEDGER_DATA_DIR": str(tmp_path),
            "PLIVO_AUTH_TOKEN": PLIVO_TOKEN,
            "LEDGER_SYSTEM_KEY": SYSTEM_KEY.decode(),
            **env,
        },
    )


async def sealed(client: Client, database_url: str, tmp_path: Path) -> str:
    """Ingest a few lifecycles, seal them with the CLI; the head line it then prints."""
    await post_lifecycles(client)
    sealing = ledger("seal", "now", database_url=database_url, tmp_path=tmp_path)
    assert sealing.returncode == 0, sealing.stderr
    assert sealing.stdout.startswith("sealed ")
    head = ledger("seal", "head", database_url=database_url, tmp_path=tmp_path)
    assert head.returncode == 0, head.stderr
    return head.stdout.strip()


async def test_verify_of_an_intact_ledger_exits_0_and_says_so(
    client_without_projectors: Client, database_url: str, tmp_path: Path
) -> None:
    head = await sealed(client_without_projectors, database_url, tmp_path)
    assert Head.parse(head).total_events > 0

    result = ledger("verify", "--head", head, database_url=database_url, tmp_path=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "intact" in result.stdout
    assert "the ledger extends it" in result.stdout


async def test_verify_names_the_tampered_position_and_exits_1(
    client_without_projectors: Client,
    database_url: str,
    tmp_path: Path,
    conn: psycopg.AsyncConnection[Any],
) -> None:
    await sealed(client_without_projectors, database_url, tmp_path)
    async with conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute("UPDATE events SET status = 'tampered' WHERE position = 3")

    result = ledger("verify", "--json", database_url=database_url, tmp_path=tmp_path)

    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert [(f["kind"], f["position"]) for f in report["findings"]] == [("altered", 3)]


async def test_verify_with_a_head_file_checks_its_last_line(
    client_without_projectors: Client, database_url: str, tmp_path: Path
) -> None:
    head = await sealed(client_without_projectors, database_url, tmp_path)
    heads = tmp_path / "heads.log"
    heads.write_text(
        f"ledger-seal-head v1 block=99 events=1 root={'0' * 64} chain={'0' * 64}\n{head}\n"
    )

    result = ledger(
        "verify", "--head-file", str(heads), database_url=database_url, tmp_path=tmp_path
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_a_malformed_head_is_a_usage_error_in_one_line(database_url: str, tmp_path: Path) -> None:
    result = ledger("verify", "--head", "not a head", database_url=database_url, tmp_path=tmp_path)

    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("ledger: error: ")
    assert "ledger seal head" in line


def test_seal_head_before_anything_is_sealed_says_what_to_do(
    database_url: str, tmp_path: Path
) -> None:
    result = ledger("seal", "head", database_url=database_url, tmp_path=tmp_path)

    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "ledger: error: nothing is sealed yet: the running service seals within seconds, or "
        "run 'ledger seal now'"
    ]
