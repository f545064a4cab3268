"""``GET /v1/error-codes``: what each Plivo error code means, for reports and the dashboard."""

from __future__ import annotations

import msgspec
from litestar import get

from api.auth import require_token
from api.problems import problem_responses
from ledger.error_codes import ERROR_CODES


class ErrorCode(msgspec.Struct, frozen=True):
    """One documented Plivo ``ErrorCode`` and its meaning."""

    code: str
    meaning: str


@get(
    "/v1/error-codes",
    summary="Plivo's error codes and their meanings",
    description="Every documented Plivo message error code, as counted in the metrics' "
    "error_codes, with what it means (see PLIVO.md).",
    guards=[require_token],
    tags=["metrics"],
    security=[{"bearer": []}],
    responses=problem_responses(401),
    sync_to_thread=False,
)
def error_codes() -> list[ErrorCode]:
    """The table, in code order."""
    return [ErrorCode(code, meaning) for code, meaning in ERROR_CODES.items()]
