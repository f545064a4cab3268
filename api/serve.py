"""Run the app under the production ASGI server (granian): N HTTP worker processes, and one
projector process beside them.

The HTTP workers only answer requests; the projector process (:mod:`api.projector_process`)
keeps the views current and runs the scheduled jobs and the sealer. Granian respawns an HTTP
worker that dies; :class:`api.supervisor.Supervisor` restarts the projector process. On
SIGTERM or SIGINT the workers end their live-feed streams and drain their in-flight requests
(for at most :data:`WORKER_STOP_SECONDS`), the projector finishes its current batch, in
parallel, and nothing of the server outlives it.
"""

from __future__ import annotations

import contextlib
import errno
import multiprocessing
import os
import shutil
import socket
import sys
import tempfile
from typing import Any

from granian.constants import Interfaces
from granian.http import HTTP1Settings
from granian.server.mp import MPServer

from api.feed_hub import END_STREAMS_SIGNAL
from api.supervisor import Supervisor
from ledger.settings import Settings

#: How long a stopping projector may take to finish its batch before it is killed. Its own
#: runner cancels a batch still running after 5 s, so this is only ever reached if it hangs.
PROJECTOR_STOP_SECONDS = 30.0
#: How long a stopping HTTP worker may drain its in-flight requests before it is killed.
#: Granian would otherwise wait for ever on a client that keeps a response open. A request
#: cut short was never answered 200, so Plivo retries it.
WORKER_STOP_SECONDS = 10


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


class SupervisingServer(MPServer):
    """Granian's multi-process server, that also stops the supervised children as soon as
    it is signalled, so that they stop while the HTTP workers drain, not after."""

    supervised: tuple[Supervisor, ...] = ()

    def signal_handler_interrupt(self, *args: Any, **kwargs: Any) -> None:
        for supervisor in self.supervised:
            supervisor.stop()
        # Granian's workers are this process's only multiprocessing children; each ends its
        # streams before granian asks it to drain (granian's main loop waits for this
        # handler to return). Only on the first signal: a worker past its lifespan no
        # longer handles END_STREAMS_SIGNAL, whose default action would kill it.
        if not self.interrupt_signal:
            for worker in multiprocessing.active_children():
                if worker.pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(worker.pid, END_STREAMS_SIGNAL)
        super().signal_handler_interrupt(*args, **kwargs)  # type: ignore[no-untyped-call]


def asgi_server(
    target: str, *, host: str, port: int, workers: int, client_timeout: float = 30.0
) -> SupervisingServer:
    """Granian serving the ASGI app factory ``target`` ("module:function") as in production.

    ``client_timeout`` bounds how long a client may take to send a request's headers, and
    how long an idle keep-alive connection stays open. The benchmarks serve their no-op
    baseline app with this too, so that the handler is the only difference between the two.
    """
    return SupervisingServer(
        target,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        factory=True,
        log_access=False,
        backlog=2048,
        http1_settings=HTTP1Settings(header_read_timeout=round(client_timeout * 1000)),
        # A worker that dies (a crash, the OOM killer, kill -9) is replaced; one that keeps
        # dying within seconds of its start stops the server instead (granian's crash loop).
        respawn_failed_workers=True,
        workers_kill_timeout=WORKER_STOP_SECONDS,
    )


def projector_supervisor() -> Supervisor:
    """The supervisor of the projector process, which inherits this process's environment."""
    command = [sys.executable, "-m", "api.projector_process", str(os.getpid())]
    return Supervisor("projector", command)


def serve(settings: Settings, database_url: str) -> None:
    """Serve until SIGINT/SIGTERM; workers drain in-flight requests before exiting, and the
    projector process finishes its current batch.

    Workers and the projector are separate processes that build their settings from the
    environment, so the resolved database URL and listening address are handed to them there.
    """
    os.environ["DATABASE_URL"] = database_url
    os.environ["LEDGER_HOST"] = settings.host
    os.environ["LEDGER_PORT"] = str(settings.port)
    # Every process records its own metrics (the projector's too); a scrape of any HTTP
    # worker must see all of them. Set before any of them imports prometheus_client.
    metrics_dir = tempfile.mkdtemp(prefix="ledger-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    # Workers start as fresh interpreters, not forks: a fork while the supervisor's thread
    # holds a lock (writing a log line, starting the projector) would leave that lock held
    # forever in the worker, which then hangs on its first use of it.
    multiprocessing.set_start_method("spawn", force=True)
    projector = projector_supervisor()
    server = asgi_server(
        "api.asgi:app",
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        client_timeout=settings.client_timeout.total_seconds(),
    )
    server.supervised = (projector,)
    # Started once granian handles SIGTERM (so that a signal never leaves it unsupervised),
    # joined once the HTTP workers have drained.
    server.on_startup(projector.start)
    server.on_shutdown(lambda: projector.join(PROJECTOR_STOP_SECONDS))
    try:
        server.serve()
    finally:
        projector.join(PROJECTOR_STOP_SECONDS)
        shutil.rmtree(metrics_dir, ignore_errors=True)
