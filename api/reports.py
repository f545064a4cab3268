"""Daily delivery metrics for analysts: ``GET /v1/metrics/daily`` as JSON or CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import date
from typing import Annotated, Any, Final

import msgspec
from litestar import Request, Response, get
from litestar.params import FromPath, FromQuery, QueryParameter

from api.auth import require_token
from api.problems import Problem, problem_responses
from api.services import Services, services_of
from api.tag_filters import parse_tag_filters
from ledger.error_codes import ERROR_CODES
from ledger.events import TAG_NAME
from projections.fold import STATUS_RANKS
from projections.queries import daily_metrics, daily_metrics_by_tag
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


_TAG_HELP = (
    "name=value, e.g. campaign=spring: only the messages sent with that tag (repeat for "
    "several; all must match)."
)


def _checked(start: date, end: date, tag: list[str] | None, svc: Services) -> dict[str, str]:
    """The tag filters, once the range and the filters are known to be servable."""
    try:
        check_range(start, end, svc.settings.metrics_max_days)
    except RangeError as error:
        raise Problem(400, str(error), field="start") from None
    try:
        return parse_tag_filters(tag or [])
    except ValueError as error:
        raise Problem(400, f"{error}.", field="tag") from None


class TagMetrics(msgspec.Struct, frozen=True):
    """The daily metrics of the messages sent with tag ``tag`` set to ``value``."""

    tag: str
    value: str
    days: list[DailyMetrics]


@get(
    "/v1/metrics/daily/by-tag/{name:str}",
    summary="Daily delivery metrics per value of a tag",
    description="The daily metrics of the messages sent with tag NAME, one series per value "
    "(e.g. per campaign), values in order. tag= filters narrow them as for /v1/metrics/daily.",
    guards=[require_token],
    tags=["metrics"],
    security=[{"bearer": []}],
    responses=problem_responses(400, 401, 503),
)
async def daily_by_tag(
    request: Request[Any, Any, Any],
    name: FromPath[str],
    start: FromQuery[date],
    end: FromQuery[date],
    tag: Annotated[list[str] | None, QueryParameter(description=_TAG_HELP)] = None,
) -> list[TagMetrics]:
    """One series of daily metrics per value of tag ``name``."""
    svc = services_of(request)
    tags = _checked(start, end, tag, svc)
    if not TAG_NAME.fullmatch(name):
        raise Problem(
            400,
            f"{name[:64]!r} is not a tag name: use letters, digits, '_', '.' or '-'.",
            field="name",
        )
    async with svc.pool.connection() as conn:
        series = await daily_metrics_by_tag(
            conn, start, end, name, tags=tags, timezone=svc.settings.timezone
        )
    return [TagMetrics(name, value, days) for value, days in series.items()]


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
    *,
    request: Request[Any, Any, Any],
    start: FromQuery[date],
    end: FromQuery[date],
    output: Annotated[str | None, QueryParameter(name="format", pattern="^(json|csv)$")] = None,
    tag: Annotated[list[str] | None, QueryParameter(description=_TAG_HELP)] = None,
) -> Response[list[DailyMetrics]] | Response[str]:
    """Metrics for every day from ``start`` to ``end`` inclusive that has messages."""
    svc = services_of(request)
    tags = _checked(start, end, tag, svc)
    async with svc.pool.connection() as conn:
        rows = await daily_metrics(conn, start, end, tags=tags, timezone=svc.settings.timezone)
    wants_csv = output == "csv" or (
        output is None and request.accept.best_match(["application/json", CSV]) == CSV
    )
    if wants_csv:
        return Response(metrics_csv(rows), media_type=CSV)  # Litestar adds the charset
    return Response(rows)
