"""The floor under ``ledger verify``: read every event once, in fence order, through the same
server-side cursor verify streams them with, and do nothing with them.

    python -m bench.read_floor DATABASE_URL
"""

from __future__ import annotations

import asyncio
import sys

from ledger.database import connect
from ledger.seals import events_in_order
from ledger.store import Checkpoint


async def read_all(url: str) -> int:
    """How many events a single sequential read returns."""
    count = 0
    async with connect(url) as conn, conn.transaction():
        await conn.execute("SET LOCAL statement_timeout = 0")
        async for _ in events_in_order(conn, Checkpoint()):
            count += 1
    return count


if __name__ == "__main__":
    print(asyncio.run(read_all(sys.argv[1])))
