"""The Litestar application: routes, OpenAPI, error handling and the process lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, Final

import psycopg
from litestar import Litestar, Request, Response
from litestar.exceptions import HTTPException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.plugins.problem_details import ProblemDetailsPlugin
from psycopg_pool import PoolTimeout, TooManyRequests

from api.alerts import list_alerts
from api.background import background_work
from api.body_limit import drain_oversized_bodies
from api.breakdown import metrics_breakdown
from api.callbacks import receive_status
from api.dashboard import dashboard
from api.error_codes import error_codes
from api.feed_hub import END_STREAMS_SIGNAL, FeedHub
from api.messages import MessageController
from api.openapi import openapi_config, static_assets
from api.ops import health, metrics, ready
from api.problems import Problem, problem_from_http_exception, problem_from_unexpected
from api.reports import daily, daily_by_tag
from api.seals import SealController
from api.sends import send_message
from api.services import Services
from api.slow_clients import SilentConnectionReaper, body_deadline
from api.stream import stream, wire
from api.telemetry import APPEND_BATCH, CALLBACK_OUTCOMES
from ledger.database import create_pool
from ledger.group_commit import GroupCommitter
from ledger.sends import plivo_api_for
from ledger.settings import Settings
from ledger.tokens import ensure_api_tokens

log = logging.getLogger(__name__)


def _database_unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.warning("database unavailable on %s: %s", request.url.path, type(exc).__name__)
    return Problem(
        503, "The database is unavailable right now. Retry later.", headers={"Retry-After": "5"}
    ).to_response(request)


def _too_large(request: Request[Any, Any, Any], exc: RequestEntityTooLarge) -> Response[Any]:
    # Litestar refuses the body before any handler runs: the callback's refusal is counted here.
    if request.route_handler.fn is receive_status.fn:  # the app holds a copy of the handler
        CALLBACK_OUTCOMES["too_large"].inc()
        log.warning("refused callback: body over the size limit")
    return problem_from_http_exception(request, exc)


#: Connections for ``/ready`` and ``/metrics``, apart from the ingest and read pools.
OPS_POOL_SIZE: Final = 2


def http_worker_connections(settings: Settings) -> int:
    """The most database connections one HTTP worker opens: its ingest, read and ops pools
    full, and the live feed's listener."""
    return settings.append_flushers + settings.pool_size + OPS_POOL_SIZE + 1


def create_app(
    settings: Settings,
    database_url: str,
    *,
    run_projectors: bool = True,
    serving_port: int | None = None,
) -> Litestar:
    """The app for one process, talking to the database at ``database_url``.

    With ``run_projectors`` the process also keeps the views current and runs the scheduled
    jobs (one process doing everything); without, it only answers requests, as the HTTP
    workers of ``ledger serve`` do (its projector process, or ``ledger worker``, projects).
    ``serving_port`` is the port a server worker accepts connections on: connections there
    that stay silent past ``LEDGER_CLIENT_TIMEOUT`` are closed (:mod:`api.slow_clients`).
    """
    client_timeout = settings.client_timeout.total_seconds()

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # Half the append budget waiting for a flusher, half for the statement itself: a
        # stalled database answers 503 within LEDGER_APPEND_TIMEOUT, inside Plivo's 8 s.
        half_budget = settings.append_timeout.total_seconds() / 2
        ingest_pool = create_pool(
            database_url,
            size=settings.append_flushers,
            name="ingest",
            statement_timeout=half_budget,
            timeout=half_budget,
        )
        pool = create_pool(database_url, size=settings.pool_size, name="reads")
        ops_pool = create_pool(
            database_url,
            size=OPS_POOL_SIZE,
            name="ops",
            statement_timeout=2.0,
            timeout=1.0,
            check=True,
        )
        for opening in (ingest_pool, pool, ops_pool):
            await opening.open(wait=False)
        committer = GroupCommitter(
            ingest_pool,
            max_batch=settings.append_batch_max,
            flushers=settings.append_flushers,
            queue_timeout=half_budget,
            on_batch=APPEND_BATCH.observe,
        )
        await committer.start()
        tokens, _ = ensure_api_tokens(settings)
        reaper = (
            SilentConnectionReaper(serving_port, client_timeout)
            if serving_port is not None
            else None
        )
        if reaper is not None:
            reaper.start()
        feed = FeedHub(pool, database_url, buffer=settings.stream_buffer, render=wire)
        await feed.start()
        if serving_port is not None:
            # A server worker drains before it stops, and an open stream never ends by
            # itself: ledger serve signals this as it begins to stop (api/serve.py). Left
            # in place to the end: without it, the signal's default action kills.
            asyncio.get_running_loop().add_signal_handler(END_STREAMS_SIGNAL, feed.end_streams)
        plivo = plivo_api_for(settings)
        app.state.services = Services(
            settings, pool, ops_pool, committer, tokens, feed, settings.send_tokens, plivo
        )
        try:
            async with contextlib.AsyncExitStack() as background:
                if run_projectors:
                    await background.enter_async_context(
                        background_work(settings, database_url, pool)
                    )
                yield
        finally:
            if reaper is not None:
                reaper.stop()
            await feed.stop()
            # In-flight appends finish before the pools go: every 200 was a commit.
            await committer.close()
            for closing in (ingest_pool, pool, ops_pool):
                await closing.close()
            if plivo is not None:
                plivo.close()

    return Litestar(
        route_handlers=[
            receive_status,
            MessageController,
            send_message,
            SealController,
            daily,
            daily_by_tag,
            metrics_breakdown,
            list_alerts,
            error_codes,
            stream,
            health,
            ready,
            metrics,
            static_assets(),
            dashboard(),
        ],
        lifespan=[lifespan],
        # Logging is configured by api.logs (level from LEDGER_LOG_LEVEL, phone numbers
        # masked); Litestar's default config would replace that handler and reset the level.
        logging_config=None,
        request_max_body_size=settings.max_body_bytes,
        # Outermost first: no body, however large, may take longer than the client timeout.
        middleware=[body_deadline(client_timeout), drain_oversized_bodies(settings.max_body_bytes)],
        # Problem (a ProblemDetailsException) is answered by the plugin; the rest are mapped.
        plugins=[ProblemDetailsPlugin()],
        exception_handlers={
            HTTPException: problem_from_http_exception,
            RequestEntityTooLarge: _too_large,
            psycopg.OperationalError: _database_unavailable,
            PoolTimeout: _database_unavailable,
            TooManyRequests: _database_unavailable,
            Exception: problem_from_unexpected,
        },
        openapi_config=openapi_config(),
    )
