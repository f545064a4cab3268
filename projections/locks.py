"""Advisory locks that keep one active runner per view, replay, scheduled job and sealer.

Two-key locks: the first key is a namespace (:class:`Lock`), the second a name's hash. A
session lock lasts until unlocked or until its connection ends, so a process that dies
releases what it held; a transaction lock lasts until the transaction ends.
"""

from __future__ import annotations

import enum
import hashlib
from typing import Any, Literal

import psycopg
from psycopg import sql


class Lock(enum.IntEnum):
    """Namespaces (first key) of the two-key advisory locks; the second key is a name's hash.

    The migration lock uses the one-bigint form, a separate key space.
    """

    RUNNER = 0x1ED60001
    REPLAY = 0x1ED60002
    JOB = 0x1ED60003
    SEALER = 0x1ED60004


def lock_key(name: str) -> int:
    """A stable signed 32-bit key for ``name`` (the second key of a two-key advisory lock)."""
    digest = hashlib.blake2b(name.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


async def try_advisory_lock(
    conn: psycopg.AsyncConnection[Any],
    namespace: Lock,
    name: str,
    *,
    scope: Literal["session", "transaction"] = "session",
) -> bool:
    """Take the advisory lock ``(namespace, name)`` without waiting; True if taken.

    A session lock lasts until unlocked or until the connection ends (so a dead process
    releases it); a transaction lock until the transaction ends.
    """
    function = "pg_try_advisory_lock" if scope == "session" else "pg_try_advisory_xact_lock"
    cursor = await conn.execute(
        sql.SQL("SELECT {}(%s, %s)").format(sql.Identifier(function)),
        (int(namespace), lock_key(name)),
    )
    row = await cursor.fetchone()
    return bool(row and row[0])


async def advisory_unlock(conn: psycopg.AsyncConnection[Any], namespace: Lock, name: str) -> None:
    """Release the session lock ``(namespace, name)`` held on ``conn``. Closing the
    connection releases it too, but only once its server process has exited, a moment
    after the close returns: a standby waiting for the lock takes it sooner this way."""
    await conn.execute("SELECT pg_advisory_unlock(%s, %s)", (int(namespace), lock_key(name)))
