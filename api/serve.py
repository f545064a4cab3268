"""Run the app under the production ASGI server (granian), with N worker processes."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import tempfile

from granian.constants import Interfaces
from granian.http import HTTP1Settings
from granian.server.mp import MPServer

from ledger.settings import Settings


class PortUnavailable(Exception):
    """The address to serve on cannot be bound; the message says why and what to do."""


def ensure_port_free(host: str, port: int) -> None:
    """Refuse to serve where something already listens.

    Granian binds with SO_REUSEPORT, so a second server on a taken port would start without
    error and the kernel would split the traffic between the two (with two databases, each
    would hold part of it). A plain bind, without SO_REUSEPORT, fails if anything holds the
    port, whichever program it is. SO_REUSEADDR only lets it past connections of a server
    that just stopped (TIME_WAIT), as granian itself gets past them.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as error:
        raise PortUnavailable(
            f"cannot listen on {host}:{port}: {error.strerror}: set --host or LEDGER_HOST to "
            "an address of this machine, e.g. 127.0.0.1 or 0.0.0.0"
        ) from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise PortUnavailable(
                    f"port {port} on {host} is already in use (by another 'ledger serve' or "
                    "another program): stop it, or choose another port with --port or "
                    "LEDGER_PORT"
                ) from None
            raise PortUnavailable(
                f"cannot listen on {host}:{port}: {error.strerror}: choose another address "
                "with --host/--port (ports below 1024 need privileges)"
            ) from None


def asgi_server(
    target: str, *, host: str, port: int, workers: int, client_timeout: float = 30.0
) -> MPServer:
    """Granian serving the ASGI app factory ``target`` ("module:function") as in production.

    ``client_timeout`` bounds how long a client may take to send a request's headers, and
    how long an idle keep-alive connection stays open. The benchmarks serve their no-op
    baseline app with this too, so that the handler is the only difference between the two.
    """
    return MPServer(
        target,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        factory=True,
        log_access=False,
        backlog=2048,
        http1_settings=HTTP1Settings(header_read_timeout=round(client_timeout * 1000)),
    )


def serve(settings: Settings, database_url: str) -> None:
    """Serve until SIGINT/SIGTERM; workers drain in-flight requests before exiting.

    Workers are separate processes that build the app from the environment, so the resolved
    database URL and listening address are handed to them there.
    """
    os.environ["DATABASE_URL"] = database_url
    os.environ["LEDGER_HOST"] = settings.host
    os.environ["LEDGER_PORT"] = str(settings.port)
    metrics_dir = None
    if settings.workers > 1:
        # Each worker records its own metrics; a scrape must see the sum of all of them.
        metrics_dir = tempfile.mkdtemp(prefix="ledger-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        asgi_server(
            "api.asgi:app",
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            client_timeout=settings.client_timeout.total_seconds(),
        ).serve()
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
