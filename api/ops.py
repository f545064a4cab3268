"""Operations endpoints, no token: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import msgspec
import psycopg
from litestar import MediaType, Request, Response, get
from litestar.openapi.datastructures import ResponseSpec
from psycopg_pool import PoolTimeout

from api.logs import mask_phone_numbers
from api.services import Services, services_of
from api.telemetry import (
    ALERT_DELIVERIES_PENDING,
    DEAD_LETTERS,
    DELIVERY_ALERT_DROP,
    DELIVERY_ALERTS,
    PROJECTOR_EVENTS_BEHIND,
    PROJECTOR_SECONDS_BEHIND,
    SEAL_LAG_SECONDS,
    SEALED_POSITION,
    SEND_OUTCOMES_UNKNOWN,
    exposition,
)
from ledger.migrate import pending_migrations
from ledger.seals import SealProgress, seal_progress
from ledger.sends import unknown_outcomes
from ledger.settings import Settings
from projections.alert_deliveries import pending as pending_deliveries
from projections.alerts import EVERY, firing_alerts
from projections.progress import ProjectorLag, projector_lag
from projections.registry import build_projectors


class Health(msgspec.Struct, frozen=True):
    """The process is up."""

    status: str = "ok"


class Readiness(msgspec.Struct, frozen=True):
    """Whether this process can take callbacks, and how far behind the views are.

    Readiness depends on the database and migrations only: a lagging view does not stop
    ingest, so it is reported here (and in /metrics) without failing the check. Neither do
    ``send_outcomes_unknown``, the send requests whose outcome the ledger does not know (a
    process died while Plivo was answering: see ``ledger audit`` of each), which need an
    operator's look.
    """

    ready: bool
    database: str
    pending_migrations: list[str]
    projectors: list[ProjectorLag]
    seal: SealProgress | None
    send_outcomes_unknown: int = 0


@get("/health", summary="The process is up", tags=["ops"])
async def health() -> Health:
    """Always 200 while the process serves requests."""
    return Health()


@get(
    "/ready",
    summary="The database is reachable and migrated",
    tags=["ops"],
    responses={
        503: ResponseSpec(
            Readiness,
            description="Not ready: the database does not answer (`database` says why) or "
            "migrations are pending (`pending_migrations`).",
            generate_examples=False,
        )
    },
)
async def ready(request: Request[Any, Any, Any]) -> Response[Readiness]:
    """200 when the database answers and every migration is applied, else 503 with reasons."""
    svc = services_of(request)
    try:
        async with svc.ops_pool.connection() as conn:
            pending = [f"{m.version:03d}_{m.name}" for m in await pending_migrations(conn)]
            lag = [] if pending else await _lag(conn, svc)
            sealing = None if pending else await _seal(conn)
            unknown = 0 if pending else await _unknown_outcomes(conn)
    except Exception as error:  # any failure here means "not ready", with the reason shown
        body = Readiness(False, f"unreachable: {type(error).__name__}", [], [], None)
        return Response(body, status_code=503)
    body = Readiness(not pending, "ok", pending, lag, sealing, unknown)
    return Response(body, status_code=200 if body.ready else 503)


async def _lag(conn: psycopg.AsyncConnection[Any], svc: Services) -> list[ProjectorLag]:
    """Every projector's lag, also recorded in the Prometheus gauges."""
    lags = await projector_lag(conn, _projector_names(svc.settings))
    for lag in lags:
        PROJECTOR_EVENTS_BEHIND.labels(lag.projector).set(lag.events_behind)
        PROJECTOR_SECONDS_BEHIND.labels(lag.projector).set(lag.seconds_behind)
        DEAD_LETTERS.labels(lag.projector).set(lag.dead_letters)
    return lags


@functools.cache
def _projector_names(settings: Settings) -> tuple[str, ...]:
    """The projectors' names, found once: building the projectors on every probe or scrape
    would redo their set-up work just to read their names."""
    return tuple(projector.name for projector in build_projectors(settings))


async def _seal(conn: psycopg.AsyncConnection[Any]) -> SealProgress:
    """The sealer's progress, also recorded in the Prometheus gauges."""
    progress = await seal_progress(conn)
    SEALED_POSITION.set(progress.sealed_position)
    SEAL_LAG_SECONDS.set(progress.seconds_behind)
    return progress


async def _unknown_outcomes(conn: psycopg.AsyncConnection[Any]) -> int:
    """Send requests of unknown outcome, also recorded in the Prometheus gauge."""
    unknown = await unknown_outcomes(conn)
    SEND_OUTCOMES_UNKNOWN.set(unknown)
    return unknown


async def _alerts(conn: psycopg.AsyncConnection[Any]) -> None:
    """The firing delivery-drop alerts, as gauges (senders masked like phone numbers in
    logs), and the webhook deliveries still pending."""
    ALERT_DELIVERIES_PENDING.set(await pending_deliveries(conn))
    alerts = await firing_alerts(conn)
    DELIVERY_ALERTS.set(len(alerts))
    DELIVERY_ALERT_DROP.clear()
    for alert in alerts:
        DELIVERY_ALERT_DROP.labels(
            alert.country or EVERY,
            alert.carrier or EVERY,
            mask_phone_numbers(alert.sender) if alert.sender else EVERY,
        ).set(alert.drop)


@get(
    "/metrics",
    summary="Prometheus metrics",
    tags=["ops"],
    media_type=MediaType.TEXT,
)
async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The service's counters and histograms, and the views' lag, in Prometheus text format."""
    svc = services_of(request)
    with contextlib.suppress(psycopg.Error, PoolTimeout):
        async with svc.ops_pool.connection() as conn:
            await _lag(conn, svc)
            await _seal(conn)
            await _unknown_outcomes(conn)
            await _alerts(conn)
    body, content_type = exposition()
    # Set as a header: given as media_type, Litestar would append a second charset.
    return Response(body, headers={"content-type": content_type})
