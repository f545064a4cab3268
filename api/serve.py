"""Run the app under the production ASGI server (granian), with N worker processes."""

from __future__ import annotations

import os
import shutil
import tempfile

from granian.constants import Interfaces
from granian.http import HTTP1Settings
from granian.server.mp import MPServer

from ledger.settings import Settings


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
