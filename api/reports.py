"""Daily delivery metrics for analysts: ``GET /v1/metrics/daily`` as JSON or CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import date
from typing import Annotated, Any, Final

from litestar import Request, Response, get
from litestar.params import FromQuery, QueryParameter

from api.auth import require_token
from api.problems import Problem, problem_responses
from api.services import services_of
from ledger.error_codes import ERROR_CODES
from projections.fold import STATUS_RANKS
from projections.queries import daily_metrics
from projections.views import NO_STATUS, DailyMetrics

CSV = "text/csv"


class RangeError(ValueError):
    """A date range that cannot be served; the message says how to fix it."""


def check_range(start: date, end: date, max_days: int) -> None:
    """Refuse a reversed range or one longer than ``max_days`` days."""
    if start > end:
        raise RangeError(f"start {start} is after end {end}: give start <= end")
    days = (end - start).days + 1
    if days > max_days:
        raise RangeError(
            f"the range holds {days} days, more than the {max_days} allowed: ask for a shorter "
            "range (LEDGER_METRICS_MAX_DAYS sets the limit)"
        )


#: The CSV's status columns: every status Plivo documents (and our own ``expired``), in
#: precedence order, then messages with no status yet and any status not listed here.
CSV_STATUSES: Final = (*STATUS_RANKS, NO_STATUS)
#: The CSV's error-code columns: every code of :data:`ledger.error_codes.ERROR_CODES`, then
#: any other code.
CSV_ERROR_CODES: Final = tuple(ERROR_CODES)
#: The CSV's header, whatever the range holds.
CSV_COLUMNS: Final = (
    "day",
    "messages",
    "delivery_rate",
    "units",
    "total_amount",
    "p50_seconds",
    "p95_seconds",
    *(f"status_{status}" for status in CSV_STATUSES),
    "status_other",
    *(f"error_{code}" for code in CSV_ERROR_CODES),
    "error_other",
)


def metrics_csv(rows: Sequence[DailyMetrics]) -> str:
    """One CSV line per day, under a fixed header (the same columns whatever the range
    holds): a column per known status and per documented error code, plus ``status_other``
    and ``error_other`` for anything else, so a day's status columns sum to its messages."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow(
            [
                row.day.isoformat(),
                row.messages,
                "" if row.delivery_rate is None else f"{row.delivery_rate:.4f}",
                row.units,
                row.total_amount,
                "" if row.p50_seconds is None else f"{row.p50_seconds:.1f}",
                "" if row.p95_seconds is None else f"{row.p95_seconds:.1f}",
                *(row.statuses.get(status, 0) for status in CSV_STATUSES),
                _others(row.statuses, CSV_STATUSES),
                *(row.error_codes.get(code, 0) for code in CSV_ERROR_CODES),
                _others(row.error_codes, CSV_ERROR_CODES),
            ]
        )
    return out.getvalue()


def _others(counts: dict[str, int], listed: Sequence[str]) -> int:
    return sum(count for key, count in counts.items() if key not in listed)


@get(
    "/v1/metrics/daily",
    summary="Daily delivery metrics",
    description="Per day of each message's first event (LEDGER_TIMEZONE): messages, count per "
    "current status, delivery rate, units, amount, error codes and time-to-deliver "
    "percentiles. JSON by default; CSV with Accept: text/csv or format=csv.",
    guards=[require_token],
    tags=["metrics"],
    security=[{"bearer": []}],
    responses=problem_responses(400, 401, 503),
)
async def daily(
    request: Request[Any, Any, Any],
    start: FromQuery[date],
    end: FromQuery[date],
    output: Annotated[str | None, QueryParameter(name="format", pattern="^(json|csv)$")] = None,
) -> Response[list[DailyMetrics]] | Response[str]:
    """Metrics for every day from ``start`` to ``end`` inclusive that has messages."""
    svc = services_of(request)
    try:
        check_range(start, end, svc.settings.metrics_max_days)
    except RangeError as error:
        raise Problem(400, str(error), field="start") from None
    async with svc.pool.connection() as conn:
        rows = await daily_metrics(conn, start, end)
    wants_csv = output == "csv" or (
        output is None and request.accept.best_match(["application/json", CSV]) == CSV
    )
    if wants_csv:
        return Response(metrics_csv(rows), media_type=CSV)  # Litestar adds the charset
    return Response(rows)
