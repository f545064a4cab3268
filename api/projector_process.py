"""The projector process ``ledger serve`` runs beside its HTTP workers:
``python -m api.projector_process SERVER_PID``.

It does what ``ledger worker`` does (the catch-up runner, the scheduled jobs and the sealer;
see :mod:`api.background`), configured from the environment ``ledger serve`` hands it, and
runs under :class:`api.supervisor.Supervisor`, which restarts it if it dies. SIGTERM or
SIGINT stops it after its current batch, exit status 0; it also stops if the server that
started it (``SERVER_PID``) is gone.
"""

from __future__ import annotations

import signal
import sys

from api.background import run_worker
from api.logs import configure_logging
from api.orphans import stop_with_parent
from api.telemetry import PROJECTOR_STARTS
from ledger.settings import SettingsError, load_settings


def main(server_pid: int) -> None:
    """Project until signalled, or until process ``server_pid`` is gone."""
    stop_with_parent(server_pid)
    settings = load_settings()
    configure_logging(settings.log_level)
    if not settings.database_url:
        raise SettingsError(
            "DATABASE_URL is not set: the projector process needs it (ledger serve sets it)"
        )
    PROJECTOR_STARTS.inc()
    run_worker(settings, settings.database_url)
    # Stopped cleanly: a late signal (the server's, after the process group's own) must not
    # turn exit status 0 into "killed by SIGTERM" while the interpreter exits.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


if __name__ == "__main__":
    main(int(sys.argv[1]))
