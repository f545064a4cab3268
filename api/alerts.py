"""Firing delivery-drop alerts: ``GET /v1/alerts``."""

from __future__ import annotations

from typing import Any

from litestar import Request, get

from api.auth import require_token
from api.problems import problem_responses
from api.services import services_of
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
    tags=["metrics"],
    security=[{"bearer": []}],
    responses=problem_responses(401, 503),
)
async def list_alerts(request: Request[Any, Any, Any]) -> Alerts:
    """The alerts the last evaluation left firing."""
    async with services_of(request).pool.connection() as conn:
        return Alerts(alerts=await firing_alerts(conn))
