"""Migrations are applied in order, exactly once, even by processes racing at start."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg

from ledger.database import connect
from ledger.migrate import available_migrations, migrate, pending_migrations


async def test_a_migrated_database_has_nothing_pending(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    assert await pending_migrations(conn) == []


async def test_migrating_again_applies_nothing(conn: psycopg.AsyncConnection[Any]) -> None:
    assert await migrate(conn) == []


async def test_concurrent_migrations_apply_each_file_once(server_url: str) -> None:
    from tests.conftest import database_url_for

    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS ledger_race WITH (FORCE)")
        admin.execute("CREATE DATABASE ledger_race")
    url = database_url_for(server_url, "ledger_race")
    try:

        async def run() -> int:
            async with connect(url) as conn:
                return len(await migrate(conn))

        applied = await asyncio.gather(*(run() for _ in range(3)))
        assert sorted(applied) == [0, 0, len(available_migrations())]
        async with connect(url) as conn:
            rows = await (
                await conn.execute("SELECT version FROM schema_migrations ORDER BY 1")
            ).fetchall()
        assert [row[0] for row in rows] == [m.version for m in available_migrations()]
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute("DROP DATABASE IF EXISTS ledger_race WITH (FORCE)")
