"""Operations endpoints, no token: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import msgspec
from litestar import MediaType, Response, get
from litestar.di import NamedDependency, Provide

from api.services import Services, services
from api.telemetry import exposition
from ledger.migrate import pending_migrations


class Health(msgspec.Struct, frozen=True):
    """The process is up."""

    status: str = "ok"


class Readiness(msgspec.Struct, frozen=True):
    """Whether this process can do its job, and why not."""

    ready: bool
    database: str
    pending_migrations: list[str]


@get("/health", summary="The process is up", tags=["ops"])
async def health() -> Health:
    """Always 200 while the process serves requests."""
    return Health()


@get(
    "/ready",
    summary="The database is reachable and migrated",
    tags=["ops"],
    dependencies={"svc": Provide(services, sync_to_thread=False)},
)
async def ready(svc: NamedDependency[Services]) -> Response[Readiness]:
    """200 when the database answers and every migration is applied, else 503 with reasons."""
    try:
        async with svc.pool.connection(timeout=2.0) as conn:
            pending = [f"{m.version:03d}_{m.name}" for m in await pending_migrations(conn)]
    except Exception as error:  # any failure here means "not ready", with the reason shown
        body = Readiness(False, f"unreachable: {type(error).__name__}", [])
        return Response(body, status_code=503)
    body = Readiness(not pending, "ok", pending)
    return Response(body, status_code=200 if body.ready else 503)


@get("/metrics", summary="Prometheus metrics", tags=["ops"], media_type=MediaType.TEXT)
async def metrics() -> Response[bytes]:
    """The service's counters and histograms in Prometheus text format."""
    body, content_type = exposition()
    return Response(body, media_type=content_type)
