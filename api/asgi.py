"""ASGI entry point for server worker processes: the app, configured from the environment.

``ledger serve`` starts the database (or checks ``DATABASE_URL``), migrates, and then points
each worker here with ``DATABASE_URL`` set. These workers only answer requests: the views are
kept current by the projector process ``ledger serve`` runs beside them. The app can also be
served directly, e.g. ``granian --interface asgi --factory api.asgi:app``, when
``DATABASE_URL`` is set; then run ``ledger worker`` beside it to keep the views current.
"""

from __future__ import annotations

import multiprocessing

from litestar import Litestar

from api.app import create_app
from api.logs import configure_logging
from api.orphans import stop_with_parent
from ledger.settings import SettingsError, load_settings


def app() -> Litestar:
    """Build the app from the environment; refuse to start without a database URL."""
    settings = load_settings()
    configure_logging(settings.log_level)
    if (server := multiprocessing.parent_process()) is not None and server.pid is not None:
        stop_with_parent(server.pid)  # a worker never outlives the server that started it
    if not settings.database_url:
        raise SettingsError(
            "DATABASE_URL is not set: worker processes need it (ledger serve sets it for them)"
        )
    return create_app(
        settings, settings.database_url, run_projectors=False, serving_port=settings.port
    )
