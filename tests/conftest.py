"""Shared fixtures: a real PostgreSQL for every test, each test on a fresh migrated database.

The server comes from ``LEDGER_TEST_DATABASE_URL`` if set, else from testcontainers when a
Docker engine answers, else from the embedded server. A template database is migrated once
per session; each test gets its own copy, which is cheap and leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec
import psycopg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from psycopg_pool import AsyncConnectionPool

from api.app import create_app
from api.services import Services
from api.simulate import lifecycle, sign
from ledger.database import connect, create_pool, embedded_server
from ledger.migrate import migrate
from ledger.settings import Settings
from ledger.store import Checkpoint
from projections.registry import PROJECTORS
from projections.replay import replay_views
from tests.fake_plivo import AUTH_ID, FakePlivo, fake_plivo

_TEMPLATE = f"ledger_template_{os.getpid()}"
_counter = itertools.count()


def _docker_postgres() -> contextlib.AbstractContextManager[str] | None:
    """A testcontainers Postgres if a Docker engine answers, else None."""
    try:
        import docker

        docker.from_env(timeout=2).ping()
    except Exception:
        return None
    from testcontainers.postgres import PostgresContainer

    @contextlib.contextmanager
    def running() -> Iterator[str]:
        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield container.get_connection_url()

    return running()


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """Admin URL of the PostgreSQL server the suite runs against."""
    if url := os.environ.get("LEDGER_TEST_DATABASE_URL"):
        yield url
        return
    if (container := _docker_postgres()) is not None:
        with container as url:
            yield url
        return
    with (
        tempfile.TemporaryDirectory(prefix="ledger-test-pg-") as root,
        embedded_server(Path(root) / "data", delete=True) as url,
    ):
        yield url


def database_url_for(server_url: str, dbname: str) -> str:
    """The URL of another database on the same server."""
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{dbname}"))


@pytest.fixture(scope="session")
def template_database(server_url: str) -> Iterator[str]:
    """A database migrated once per session, its views built as a service's first start
    builds them (so a test's app finds them current instead of building each one again);
    tests copy it."""
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{_TEMPLATE}"')
        admin.execute(f'CREATE DATABASE "{_TEMPLATE}"')

    async def _migrate() -> None:
        async with connect(database_url_for(server_url, _TEMPLATE)) as conn:
            await migrate(conn)
            await replay_views(conn, PROJECTORS)

    asyncio.run(_migrate())
    yield _TEMPLATE
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{_TEMPLATE}" WITH (FORCE)')


@contextlib.contextmanager
def _database(server_url: str, prefix: str, template: str | None = None) -> Iterator[str]:
    """A database of its own (a copy of ``template``, else empty), dropped afterwards."""
    name = f"{prefix}_{os.getpid()}_{next(_counter)}"
    copy = f' TEMPLATE "{template}"' if template else ""
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"{copy}')
    try:
        yield database_url_for(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(server_url: str, template_database: str) -> Iterator[str]:
    """URL of a fresh, migrated database for this test alone."""
    with _database(server_url, "ledger_test", template_database) as url:
        yield url


@pytest.fixture
def empty_database_url(server_url: str) -> Iterator[str]:
    """URL of a database of its own that no migration has touched."""
    with _database(server_url, "ledger_empty") as url:
        yield url


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    """An open connection pool on this test's database, configured like the service's."""
    pool = create_pool(database_url, size=8, name="test")
    await pool.open(wait=True)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """One autocommit connection on this test's database."""
    async with connect(database_url) as connection:
        yield connection


PLIVO_TOKEN = "test-plivo-auth-token"
API_TOKEN = "test-read-api-token"
SYSTEM_KEY = b"test-system-key"
PUBLIC_URL = "https://ledger.example.com"
CALLBACK_URL = f"{PUBLIC_URL}/plivo/status"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Service settings for this test's database, with known Plivo and read-API tokens."""
    return Settings(
        database_url=database_url,
        data_dir=tmp_path,
        public_url=PUBLIC_URL,
        plivo_auth_tokens=(PLIVO_TOKEN,),
        api_tokens=(API_TOKEN,),
        system_key=SYSTEM_KEY.decode(),
    )


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """The real ASGI app, lifespan included, on this test's database."""
    assert settings.database_url is not None
    async with AsyncTestClient(create_app(settings, settings.database_url)) as test_client:
        yield test_client


@pytest.fixture
async def client_without_projectors(
    settings: Settings,
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """The real ASGI app without its background work (no projectors, sealer or jobs): the
    views stay behind the ledger, and a test projects and seals exactly when it chooses."""
    assert settings.database_url is not None
    app = create_app(settings, settings.database_url, run_projectors=False)
    async with AsyncTestClient(app) as test_client:
        yield test_client


@pytest.fixture
async def client_with_small_pools(
    settings: Settings,
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """The app without background work, with read and ingest pools of two connections
    each: small enough for a test to take every connection."""
    assert settings.database_url is not None
    small = msgspec.structs.replace(settings, pool_size=2, append_flushers=2)
    app = create_app(small, settings.database_url, run_projectors=False)
    async with AsyncTestClient(app) as test_client:
        yield test_client


@contextlib.asynccontextmanager
async def every_connection_taken(client: AsyncTestClient[Litestar]) -> AsyncIterator[None]:
    """Hold every connection of the app's read and ingest pools, as a read or ingest surge
    would: only the operations pool is left."""
    services: Services = client.app.state.services
    async with contextlib.AsyncExitStack() as held:
        for pool in (services.pool, services.committer.pool):
            for _ in range(pool.max_size):
                await held.enter_async_context(pool.connection())
        yield


async def post_lifecycles(
    client: AsyncTestClient[Litestar], messages: int = 3, *, seed: int = 7
) -> list[str]:
    """Post every signed callback of ``messages`` simulated lifecycles; their message UUIDs."""
    rng = random.Random(seed)
    start = datetime(2026, 11, 23, 9, tzinfo=UTC)
    uuids = []
    for _ in range(messages):
        for params in lifecycle(rng, start):
            signed = sign(params, url=CALLBACK_URL, auth_token=PLIVO_TOKEN)
            response = await client.post(
                "/plivo/status", content=signed.body, headers=signed.headers
            )
            assert response.status_code == 200, response.text
        uuids.append(signed.message_uuid)
    return uuids


SEND_TOKEN = "test-send-token"


@pytest.fixture
def plivo() -> Iterator[FakePlivo]:
    """A fake Plivo REST API on loopback (:mod:`tests.fake_plivo`)."""
    with fake_plivo() as fake:
        yield fake


@pytest.fixture
def send_settings(settings: Settings, plivo: FakePlivo) -> Settings:
    """``settings`` with sending configured: a send token, Plivo credentials, and the SDK
    pointed at the fake Plivo API."""
    return msgspec.structs.replace(
        settings,
        plivo_auth_id=AUTH_ID,
        send_tokens=(SEND_TOKEN,),
        plivo_api_url=plivo.url,
        send_timeout=timedelta(seconds=2),
    )


@pytest.fixture
async def send_client(send_settings: Settings) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """The real ASGI app with sending configured, lifespan included."""
    assert send_settings.database_url is not None
    async with AsyncTestClient(create_app(send_settings, send_settings.database_url)) as client:
        yield client


@pytest.fixture
def send_auth() -> dict[str, str]:
    """Headers that pass the send guard."""
    return {"Authorization": f"Bearer {SEND_TOKEN}"}


@pytest.fixture
def auth() -> dict[str, str]:
    """Headers that pass the read API's token check."""
    return {"Authorization": f"Bearer {API_TOKEN}"}


async def ledger_head(conn: psycopg.AsyncConnection[Any]) -> Checkpoint:
    """The newest event's place in fence order (the zero checkpoint on an empty ledger)."""
    cursor = await conn.execute(
        "SELECT transaction_id::text::bigint, position FROM events"
        " ORDER BY transaction_id DESC, position DESC LIMIT 1"
    )
    row = await cursor.fetchone()
    return Checkpoint(row[0], row[1]) if row else Checkpoint()


async def count_events(database_url: str) -> int:
    """How many events the ledger holds."""
    async with connect(database_url) as connection:
        row = await (await connection.execute("SELECT count(*) FROM events")).fetchone()
    assert row is not None
    return int(row[0])


async def wait_for_views(database_url: str, position: int, *, within: float = 10.0) -> None:
    """Wait until every view has applied the event at ``position``."""
    from projections.progress import has_applied
    from projections.registry import PROJECTORS

    deadline = asyncio.get_running_loop().time() + within
    async with connect(database_url) as connection:
        while True:
            applied = [await has_applied(connection, p.name, position) for p in PROJECTORS]
            if all(applied):
                return
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"the views did not apply position {position} in {within} s")
            await asyncio.sleep(0.02)


def run_ledger(
    *args: str, cwd: Path, env: Mapping[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``ledger ARGS`` (as ``python -m api.cli``) in ``cwd`` with only ``env`` and PATH, as a
    person would from a shell; stdout and stderr are pipes, so the output is the plain text
    a script sees."""
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], **env},
        timeout=timeout,
        check=False,
        cwd=cwd,
    )
