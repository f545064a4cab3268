"""Firing delivery-drop alerts: ``GET /v1/alerts``."""

from __future__ import annotations

from litestar import get
from litestar.di import NamedDependency, Provide

from api.auth import require_token
from api.problems import problem_responses
from api.services import Services, services
from projections.alerts import Alerts, firing_alerts


@get(
    "/v1/alerts",
    summary="Firing delivery-drop alerts",
    description="Groups (a destination country, a carrier in a country, a sender) whose "
    "delivery rate over the last 60 minutes is below the same hour's rate over the previous "
    "7 days by LEDGER_ALERT_DROP, with at least LEDGER_ALERT_MIN_MESSAGES final outcomes in "
    "both; re-evaluated every LEDGER_ALERT_EVERY. carrier or sender null: every one. Largest "
    "drop first.",
    guards=[require_token],
    dependencies={"svc": Provide(services, sync_to_thread=False)},
    tags=["metrics"],
    security=[{"bearer": []}],
    responses=problem_responses(401, 503),
)
async def list_alerts(svc: NamedDependency[Services]) -> Alerts:
    """The alerts the last evaluation left firing."""
    async with svc.pool.connection() as conn:
        return Alerts(alerts=await firing_alerts(conn))
