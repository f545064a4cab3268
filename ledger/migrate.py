"""Apply the numbered SQL files in ``migrations/`` in order, each exactly once."""

from __future__ import annotations

import functools
import logging
from importlib import resources
from typing import Any

import msgspec
import psycopg

log = logging.getLogger(__name__)

# Any constant works; it only has to be the same in every process that migrates.
_MIGRATION_LOCK = 0x1ED6E2_0001


class Migration(msgspec.Struct, frozen=True):
    """One migration file: its number, name and SQL."""

    version: int
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    """Every migration shipped with the code, ordered by number."""
    return list(_shipped_migrations())


@functools.cache
def _shipped_migrations() -> tuple[Migration, ...]:
    """The migration files, read once per process (``/ready`` asks on every probe)."""
    found = []
    for entry in resources.files("migrations").iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.partition("_")
            found.append(
                Migration(int(number), rest.removesuffix(".sql"), entry.read_text("utf-8"))
            )
    return tuple(sorted(found, key=lambda migration: migration.version))


async def applied_versions(conn: psycopg.AsyncConnection[Any]) -> set[int]:
    """Versions recorded as applied; empty on a database never migrated."""
    exists = await (
        await conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
    ).fetchone()
    if not exists or not exists[0]:
        return set()
    rows = await (await conn.execute("SELECT version FROM schema_migrations")).fetchall()
    return {row[0] for row in rows}


async def pending_migrations(conn: psycopg.AsyncConnection[Any]) -> list[Migration]:
    """Migrations shipped with the code but not yet applied to this database."""
    done = await applied_versions(conn)
    return [migration for migration in _shipped_migrations() if migration.version not in done]


async def unknown_migrations(conn: psycopg.AsyncConnection[Any]) -> list[str]:
    """Migrations applied to this (migrated) database that this code does not ship
    (``003_runner`` form): a newer release migrated it, and this one is running against a
    schema it does not know (a rolled-back deploy)."""
    shipped = [migration.version for migration in _shipped_migrations()]
    cursor = await conn.execute(
        "SELECT version, name FROM schema_migrations WHERE version <> ALL(%s) ORDER BY version",
        (shipped,),
    )
    return [f"{version:03d}_{name}" for version, name in await cursor.fetchall()]


async def migrate(conn: psycopg.AsyncConnection[Any]) -> list[Migration]:
    """Apply pending migrations, each in its own transaction; return those applied.

    A session advisory lock serialises processes that start at the same time: the second
    waits, then finds nothing left to do.
    """
    await conn.set_autocommit(True)
    await conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        applied = []
        for migration in await pending_migrations(conn):
            async with conn.transaction():
                await conn.execute(migration.sql.encode())
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
            # Callers report what was applied once, in their own words (see `ledger serve`).
            log.debug("applied migration %03d_%s", migration.version, migration.name)
            applied.append(migration)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
