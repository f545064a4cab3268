"""Running the service: ``ledger serve``, ``ledger worker`` and ``ledger migrate``."""

from __future__ import annotations

import asyncio
import logging
import sys

import msgspec
import rich_click as click

from api.cli.common import CommandError, databases, pass_settings
from api.logs import configure_logging
from ledger.database import DatabaseUrls, connect, connections_accepted, redact
from ledger.migrate import migrate as apply_migrations
from ledger.migrate import unknown_migrations
from ledger.roles import admit_service_login, service_privileges, user_of
from ledger.settings import Settings, require_callback_auth, require_coherent_sending
from ledger.tokens import ensure_api_tokens, token_path

log = logging.getLogger("ledger")


async def _migrate(urls: DatabaseUrls) -> list[str]:
    """Apply pending migrations as the owner, and admit the service's login to the service
    role (see :mod:`ledger.roles`)."""
    async with connect(urls.owner) as conn:
        applied = [f"{m.version:03d}_{m.name}" for m in await apply_migrations(conn)]
        if unknown := await unknown_migrations(conn):
            # A warning, not a refusal: a rolled-back deploy must be able to start.
            log.warning(
                "the database has migrations this release does not ship (%s): a newer "
                "release migrated it; run that release or a newer one as soon as you can",
                ", ".join(unknown),
            )
        if (login := user_of(urls.service)) is not None:
            await admit_service_login(conn, login)
    return applied


async def _prepare(urls: DatabaseUrls, connections: int, layout: str) -> list[str]:
    """Migrate, then warn when the service itself could rewrite history, or when its
    ``connections`` (those of ``layout``, in words) could be more than the server accepts."""
    applied = await _migrate(urls)
    async with connect(urls.service) as conn:
        privileges = await service_privileges(conn)
        accepted = await connections_accepted(conn)
    if connections > accepted:
        # A warning: pools only grow under load, and other clients share the server.
        log.warning(
            "%s may open up to %d database connections, but the server accepts %d "
            "(max_connections less the reserved ones): under load some requests would fail; "
            "lower LEDGER_WORKERS or LEDGER_POOL_SIZE, or raise max_connections",
            layout,
            connections,
            accepted,
        )
    if privileges.can_alter_history:
        log.warning(
            "the service connects as %s, which owns the ledger or is a superuser: it could "
            "rewrite history ('ledger verify' would still catch it). Run it as a member of "
            "ledger_service and migrate with LEDGER_OWNER_DATABASE_URL (README: Least "
            "privilege)",
            privileges.role,
        )
    return applied


def _say(line: str) -> None:
    print(f"ledger: {line}", flush=True)


def _announce_database(settings: Settings, url: str, applied: list[str]) -> None:
    """Where the data is (named only when it lives here, in the embedded server) and what
    migrations were applied, once."""
    if settings.database_url:
        _say(f"database: {redact(url)}")
    else:
        _say(f"database: embedded PostgreSQL, data in {settings.data_dir}")
    if applied:
        _say(f"applied migrations {', '.join(applied)}")


@click.command()
@click.option("--host", help="Address to listen on (LEDGER_HOST, default 127.0.0.1).")
@click.option(
    "--port", type=click.IntRange(1, 65535), help="Port to listen on (LEDGER_PORT, default 8000)."
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    help="HTTP worker processes (LEDGER_WORKERS, default 1).",
)
@pass_settings
def serve(settings: Settings, *, host: str | None, port: int | None, workers: int | None) -> None:
    """Migrate, then serve the API and keep the views current, until Ctrl-C or SIGTERM.

    Runs N HTTP worker processes and one projector process beside them; either is replaced
    if it dies. Uses the embedded PostgreSQL (data in LEDGER_DATA_DIR) unless DATABASE_URL
    is set. Refuses to start if anything already listens on the port. On SIGTERM it stops
    taking requests, finishes in-flight appends and the projector's batch, and exits 0.

    Examples:

    ```
    PLIVO_AUTH_TOKEN=… ledger serve
    ledger serve --port 9000 --workers 2
    LEDGER_PUBLIC_URL=https://ledger.example.com ledger serve --host 0.0.0.0
    ```
    """
    from api.app import http_worker_connections
    from api.background import background_connections
    from api.serve import PortUnavailable, ensure_port_free
    from api.serve import serve as serve_forever

    settings = msgspec.structs.replace(
        settings,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers or settings.workers,
    )
    configure_logging(settings.log_level)  # one plain line per record, as the workers log
    require_callback_auth(settings)
    require_coherent_sending(settings)
    try:
        ensure_port_free(settings.host, settings.port)
    except PortUnavailable as error:
        raise CommandError(str(error)) from None
    tokens, created = ensure_api_tokens(settings)
    per_worker, projector = http_worker_connections(settings), background_connections(settings)
    layout = (
        f"ledger serve ({settings.workers} HTTP worker{'s' * (settings.workers > 1)}"
        f" x {per_worker}, and {projector} for the projector process)"
    )
    connections = settings.workers * per_worker + projector
    with databases(settings, create=True) as urls:
        applied = asyncio.run(_prepare(urls, connections, layout))
        _announce_database(settings, urls.service, applied)
        if created:
            _say(f"generated read-API token {tokens[0]} (stored in {token_path(settings)})")
        if settings.skip_signatures:
            _say("WARNING: signature checks are OFF (LEDGER_INSECURE_SKIP_SIGNATURES)")
        _say(
            f"listening on http://{settings.host}:{settings.port} "
            f"({settings.workers} HTTP worker{'s' * (settings.workers > 1)} + 1 projector "
            "process); "
            f"Plivo callback URL: {settings.callback_base_url}/plivo/status"
        )
        serve_forever(settings, urls.service)


@click.command()
@pass_settings
def worker(settings: Settings) -> None:
    """Keep the views current and run the scheduled jobs, without the HTTP server.

    For scale-out: any number may run beside 'ledger serve'; one is active per view, the
    others take over if it stops. Migrates first, like serve.

    Examples:

    ```
    DATABASE_URL=postgresql://ledger@db/ledger ledger worker
    ```
    """
    from api.background import background_connections, run_worker

    configure_logging(settings.log_level)
    require_coherent_sending(settings)
    connections = background_connections(settings)
    with databases(settings, create=True) as urls:
        applied = asyncio.run(_prepare(urls, connections, "ledger worker"))
        _announce_database(settings, urls.service, applied)
        _say("worker running the projectors and scheduled jobs")
        run_worker(settings, urls.service)


@click.command()
@pass_settings
def migrate(settings: Settings) -> None:
    """Apply pending database migrations (safe to run from several processes at once).

    serve and worker migrate on start; run this to migrate ahead of a deploy.

    Examples:

    ```
    ledger migrate
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/ledger ledger migrate
    ```
    """
    with databases(settings, create=True) as urls:
        applied = asyncio.run(_migrate(urls))
    print(f"applied {', '.join(applied)}" if applied else "database is up to date")
    sys.stdout.flush()
