"""A database that stalls (a lock held on the ledger) gets quick 503s, well inside Plivo's 8 s
answer timeout, and nothing is stored for them; service resumes when the lock goes."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import psycopg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.simulate import SignedCallback, lifecycle, sign
from ledger.settings import Settings
from tests.conftest import CALLBACK_URL, PLIVO_TOKEN, count_events

APPEND_TIMEOUT = timedelta(seconds=2)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[AsyncTestClient[Litestar]]:
    fast = msgspec.structs.replace(settings, append_timeout=APPEND_TIMEOUT)
    assert fast.database_url is not None
    async with AsyncTestClient(create_app(fast, fast.database_url)) as test_client:
        yield test_client


def callbacks(count: int) -> list[SignedCallback]:
    rng = random.Random(5)
    start = datetime(2026, 11, 23, tzinfo=UTC)
    return [
        sign(lifecycle(rng, start)[0], url=CALLBACK_URL, auth_token=PLIVO_TOKEN)
        for _ in range(count)
    ]


async def timed_post(
    client: AsyncTestClient[Litestar], callback: SignedCallback
) -> tuple[int, float]:
    started = time.monotonic()
    response = await client.post("/plivo/status", content=callback.body, headers=callback.headers)
    return response.status_code, time.monotonic() - started


@pytest.fixture
async def locked_ledger(database_url: str) -> AsyncIterator[Any]:
    """An open transaction holding ACCESS EXCLUSIVE on events, released on demand (on a
    connection without the service's idle-transaction limit)."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as holder:
        transaction = holder.transaction()
        await transaction.__aenter__()
        await holder.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        released = asyncio.Event()

        async def release() -> None:
            if not released.is_set():
                released.set()
                await transaction.__aexit__(None, None, None)

        yield release
        await release()


async def test_callbacks_behind_a_held_lock_get_503_within_the_append_timeout(
    client: AsyncTestClient[Litestar], locked_ledger: Any, database_url: str
) -> None:
    answers = await asyncio.gather(*(timed_post(client, c) for c in callbacks(6)))

    assert {status for status, _ in answers} == {503}
    assert max(seconds for _, seconds in answers) < APPEND_TIMEOUT.total_seconds() + 1.0
    await locked_ledger()
    assert await count_events(database_url) == 0


async def test_ready_answers_503_within_three_seconds_while_the_ledger_is_locked(
    client: AsyncTestClient[Litestar], locked_ledger: Any
) -> None:
    started = time.monotonic()
    response = await client.get("/ready")

    assert response.status_code == 503
    assert time.monotonic() - started < 3.0


async def test_callbacks_are_stored_again_once_the_lock_is_released(
    client: AsyncTestClient[Litestar], locked_ledger: Any, database_url: str
) -> None:
    before, after = callbacks(2)
    assert (await timed_post(client, before))[0] == 503

    await locked_ledger()

    assert (await timed_post(client, after))[0] == 200
    assert await count_events(database_url) == 1
