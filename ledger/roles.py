"""Least privilege: the service runs as a role that may append to history but never change it.

Migrations (run as the ledger's owner) create the group role ``ledger_service`` with INSERT
and SELECT on the history tables (events, nonces, seals) and ownership of the disposable
views. The service connects as a login that is a member of it:

* on the embedded server, ``ledger_app``, created here and admitted by ``ledger migrate``;
* on your own server, the user in ``DATABASE_URL``, admitted by ``ledger migrate`` when it
  runs as another role (``LEDGER_OWNER_DATABASE_URL``).

Only the owner (or a superuser) can update, delete, truncate or alter history, or switch its
triggers off; :func:`service_privileges` tells whether the service's own role can.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import quote, urlsplit, urlunsplit

import msgspec
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

#: The group role every service login is a member of (created by migration 004).
SERVICE_ROLE: Final = "ledger_service"
#: The login the service uses on the embedded server.
EMBEDDED_SERVICE_LOGIN: Final = "ledger_app"


class ServicePrivileges(msgspec.Struct, frozen=True):
    """What the role a connection runs as may do to history."""

    role: str
    superuser: bool
    owns_history: bool
    member_of_service_role: bool

    @property
    def can_alter_history(self) -> bool:
        """Whether this role could rewrite the ledger behind its triggers."""
        return self.superuser or self.owns_history


def user_of(url: str) -> str | None:
    """The user a libpq URL connects as (None: the operating system user's name)."""
    user = conninfo_to_dict(url).get("user")
    return str(user) if user else None


def as_user(url: str, user: str) -> str:
    """The libpq URL ``url`` (``postgresql://…``), connecting as ``user`` with no password
    instead (it stays a URL: that is the form DATABASE_URL takes)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{quote(user, safe='')}@{host}"))


def ensure_login(url: str, login: str) -> None:
    """Create the login ``login`` if missing, connected as a superuser at ``url`` (the
    embedded server, whose local connections are trusted, needs no password)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "DO $$ BEGIN CREATE ROLE {} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; "
                "END $$"
            ).format(sql.Identifier(login))
        )


async def admit_service_login(conn: psycopg.AsyncConnection[Any], login: str) -> bool:
    """Make ``login`` a member of :data:`SERVICE_ROLE` (as the owner, after migrating);
    whether it is one now. A login that is the owner itself is left as it is."""
    cursor = await conn.execute(
        "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = %s),"
        " EXISTS (SELECT FROM pg_roles WHERE rolname = %s), current_user = %s",
        (SERVICE_ROLE, login, login),
    )
    row = await cursor.fetchone()
    if row is None or not row[0] or not row[1] or row[2]:
        return False
    await conn.execute(
        sql.SQL("GRANT {} TO {}").format(sql.Identifier(SERVICE_ROLE), sql.Identifier(login))
    )
    return True


async def give_to_owner_of(
    conn: psycopg.AsyncConnection[Any], table: str, *, schema: str, like: str
) -> None:
    """Make ``schema.table`` belong to whoever owns the table of that name in the schema
    ``like``: a table a login creates is its own, and a view rebuilt by one login (one
    process) could not be rebuilt by the next unless it belongs, like the view it replaces,
    to their shared role."""
    cursor = await conn.execute(
        "SELECT tableowner FROM pg_tables WHERE schemaname = %s"
        " AND tablename = %s AND tableowner <> current_user",
        (like, table),
    )
    row = await cursor.fetchone()
    if row is not None:
        await conn.execute(
            sql.SQL("ALTER TABLE {} OWNER TO {}").format(
                sql.Identifier(schema, table), sql.Identifier(row[0])
            )
        )


async def service_privileges(conn: psycopg.AsyncConnection[Any]) -> ServicePrivileges:
    """The privileges over history of the role ``conn`` runs as."""
    cursor = await conn.execute(
        "SELECT current_user, r.rolsuper,"
        " pg_has_role(current_user, (SELECT tableowner FROM pg_tables"
        "   WHERE schemaname = 'public' AND tablename = 'events'), 'USAGE'),"
        " CASE WHEN EXISTS (SELECT FROM pg_roles WHERE rolname = %s)"
        "   THEN pg_has_role(current_user, %s, 'USAGE') ELSE false END"
        " FROM pg_roles AS r WHERE r.rolname = current_user",
        (SERVICE_ROLE, SERVICE_ROLE),
    )
    row = await cursor.fetchone()
    assert row is not None  # current_user is always a role
    return ServicePrivileges(
        role=row[0], superuser=row[1], owns_history=bool(row[2]), member_of_service_role=row[3]
    )
