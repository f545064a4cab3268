"""The service's role may read and append history, and run everything the service does, but
it may never change history: only the owner, who runs migrations, can."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgspec
import psycopg
import pytest
from litestar.testing import AsyncTestClient

from api.app import create_app
from ledger.database import connect
from ledger.migrate import available_migrations, migrate
from ledger.roles import SERVICE_ROLE, admit_service_login, as_user, service_privileges
from ledger.seals import seal_settled
from ledger.settings import Settings
from ledger.verify import Credentials, verify_ledger
from projections.registry import build_projectors
from projections.replay import replay
from tests.conftest import PLIVO_TOKEN, SYSTEM_KEY, database_url_for, post_lifecycles

_logins = itertools.count()

#: What no one but the owner may do to history, table by table.
FORBIDDEN = [
    "UPDATE {table} SET {column} = {column}",
    "DELETE FROM {table}",
    "TRUNCATE {table}",
    "ALTER TABLE {table} DISABLE TRIGGER USER",
    "ALTER TABLE {table} ADD COLUMN forged text",
    "DROP TABLE {table}",
    "CREATE TRIGGER forged BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION"
    " refuse_changes_to_history()",
]
HISTORY = [("events", "status"), ("callback_nonces", "nonce"), ("seals", "root")]


@pytest.fixture
def service_url(server_url: str, database_url: str) -> Iterator[str]:
    """A fresh login admitted to the service role, as `ledger migrate` admits the service's."""
    login = f"ledger_test_service_{os.getpid()}_{next(_logins)}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{login}" LOGIN'.encode())
    with psycopg.connect(database_url, autocommit=True) as owner:
        owner.execute(f'GRANT "{SERVICE_ROLE}" TO "{login}"'.encode())
    yield as_user(database_url, login)
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'DROP OWNED BY "{login}" CASCADE'.encode())
    with psycopg.connect(database_url, autocommit=True) as owner:
        owner.execute(f'DROP OWNED BY "{login}" CASCADE'.encode())
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'DROP ROLE "{login}"'.encode())


@pytest.fixture
async def service(service_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with connect(service_url) as conn:
        yield conn


@pytest.mark.parametrize(("table", "column"), HISTORY)
@pytest.mark.parametrize("statement", FORBIDDEN)
async def test_the_service_role_cannot_change_history(
    service: psycopg.AsyncConnection[Any], table: str, column: str, statement: str
) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        await service.execute(statement.format(table=table, column=column).encode())


async def test_the_service_role_cannot_switch_the_triggers_off_for_its_session(
    service: psycopg.AsyncConnection[Any],
) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        await service.execute("SET session_replication_role = replica")


async def test_the_service_role_is_reported_as_unable_to_alter_history(
    service: psycopg.AsyncConnection[Any], conn: psycopg.AsyncConnection[Any]
) -> None:
    as_service = await service_privileges(service)
    as_owner = await service_privileges(conn)

    assert (as_service.can_alter_history, as_service.member_of_service_role) == (False, True)
    assert as_owner.can_alter_history


async def test_the_whole_service_runs_as_its_role(
    service_url: str, settings: Settings, conn: psycopg.AsyncConnection[Any]
) -> None:
    as_service = msgspec.structs.replace(settings, database_url=service_url)
    app = create_app(as_service, service_url, run_projectors=False)
    async with AsyncTestClient(app) as client:
        await post_lifecycles(client, messages=3)
    async with connect(service_url) as service:
        for projector in build_projectors(as_service):
            assert (await replay(service, projector)).events > 0
        assert await seal_settled(service, block_events=4)
        credentials = Credentials((PLIVO_TOKEN,), (), (SYSTEM_KEY,))
        assert (await verify_ledger(service, credentials)).intact
    cursor = await conn.execute(
        "SELECT DISTINCT tableowner FROM pg_tables WHERE tablename IN"
        " ('message_status', 'daily_delivery_facts', 'daily_delivery_counts')"
    )
    # Rebuilt views belong to the role, not to the login: any other login may replay them.
    assert await cursor.fetchall() == [(SERVICE_ROLE,)]


async def test_migrate_admits_the_service_login_to_the_service_role(
    server_url: str, conn: psycopg.AsyncConnection[Any]
) -> None:
    login = f"ledger_test_admitted_{os.getpid()}_{next(_logins)}"
    await conn.execute(f'CREATE ROLE "{login}" LOGIN'.encode())
    try:
        assert await admit_service_login(conn, login)
        cursor = await conn.execute("SELECT pg_has_role(%s, %s, 'MEMBER')", (login, SERVICE_ROLE))
        assert await cursor.fetchone() == (True,)
    finally:
        await conn.execute(f'DROP ROLE "{login}"'.encode())


@pytest.fixture
def owned_database(server_url: str) -> Iterator[tuple[str, str]]:
    """A fresh, empty database owned by a role that is not a superuser, set up as the README
    says; its owner's URL and a service login's name."""
    n = next(_logins)
    owner, login, name = (
        f"ledger_test_{kind}_{os.getpid()}_{n}" for kind in ("owner", "app", "db")
    )
    with psycopg.connect(server_url, autocommit=True) as admin:
        for statement in (
            f'CREATE ROLE "{owner}" LOGIN',
            f'CREATE ROLE "{login}" LOGIN',
            "DO $$ BEGIN CREATE ROLE ledger_service NOLOGIN;"
            " EXCEPTION WHEN duplicate_object THEN NULL; END $$",
            f'GRANT ledger_service TO "{owner}" WITH ADMIN OPTION',
            f'CREATE DATABASE "{name}" OWNER "{owner}"',
        ):
            admin.execute(statement.encode())
    yield as_user(database_url_for(server_url, name), owner), login
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())
        for role in (login, owner):
            admin.execute(f'DROP ROLE IF EXISTS "{role}"'.encode())


async def test_a_non_superuser_owner_migrates_and_admits_a_login_that_cannot_change_history(
    owned_database: tuple[str, str],
) -> None:
    owner_url, login = owned_database
    async with connect(owner_url) as owner:
        applied = await migrate(owner)
        assert applied == available_migrations()
        assert await admit_service_login(owner, login)

    async with connect(as_user(owner_url, login)) as service:
        privileges = await service_privileges(service)
        assert (privileges.can_alter_history, privileges.member_of_service_role) == (False, True)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await service.execute("DELETE FROM events")
        assert (await replay(service, build_projectors(Settings())[0])).events == 0
