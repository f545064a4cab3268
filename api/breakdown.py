"""Delivery analytics for analysts: ``GET /v1/metrics/breakdown`` as JSON or CSV."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, time, timedelta
from typing import Annotated, Any, Final
from zoneinfo import ZoneInfo

from litestar import Request, Response, get
from litestar.params import FromQuery, QueryParameter

from api.auth import require_token
from api.problems import Problem, problem_responses
from api.reports import CSV
from api.services import services_of
from ledger.settings import Settings
from projections.breakdown import (
    DIMENSIONS,
    MAX_ROWS,
    Breakdown,
    BreakdownQuery,
    BreakdownRow,
    Dimension,
    breakdown,
)

#: The CSV's columns after the dimensions asked for.
CSV_MEASURES: Final = tuple(
    name for name in BreakdownRow.__struct_fields__ if name not in DIMENSIONS
)


class BadQuery(ValueError):
    """A breakdown parameter that cannot be served; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def moment(field: str, text: str, zone: ZoneInfo, *, end: bool) -> datetime:
    """An ISO date or date and time as a point in time: a date is its midnight in ``zone``
    (for an end, the next midnight, so that the end day is included); a time without an
    offset is in ``zone``."""
    try:
        if len(text.strip()) == 10:
            day = date.fromisoformat(text.strip())
            return datetime.combine(day + timedelta(days=1 if end else 0), time(), zone)
        at = datetime.fromisoformat(text.strip())
    except (ValueError, OverflowError):  # not a date, or one with no next day (9999-12-31)
        raise BadQuery(
            field,
            f"{field}={text!r} is not an ISO date or time: write e.g. 2026-11-23 or "
            "2026-11-23T09:00:00+00:00",
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=zone)


def _values(text: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (text or "").split(",") if part.strip())


_BY_NAME: Final[dict[str, Dimension]] = {name: name for name in DIMENSIONS}


def dimensions(text: str | None) -> tuple[Dimension, ...]:
    """``by``: a comma list of dimensions (default country)."""
    names = _values(text) or ("country",)
    unknown = [name for name in names if name not in DIMENSIONS]
    if unknown:
        raise BadQuery(
            "by", f"unknown dimension {unknown[0]!r}: choose from {', '.join(DIMENSIONS)}"
        )
    if len(set(names)) != len(names):
        raise BadQuery("by", "a dimension is named twice in by: name each once")
    return tuple(_BY_NAME[name] for name in names)


def breakdown_query(
    settings: Settings,
    *,
    start: str,
    end: str,
    by: str | None = None,
    status: str | None = None,
    country: str | None = None,
    carrier: str | None = None,
    sender: str | None = None,
    tag: str | None = None,
    limit: int = 100,
) -> BreakdownQuery:
    """The query the parameters ask for; raises :class:`BadQuery` naming a bad one."""
    zone = settings.zone
    since, until = moment("start", start, zone, end=False), moment("end", end, zone, end=True)
    if since >= until:
        raise BadQuery("start", f"start {start} is not before end {end}: give start < end")
    days = (until - since) / timedelta(days=1)
    if days > settings.metrics_max_days:
        raise BadQuery(
            "start",
            f"the range spans {days:.0f} days, more than the {settings.metrics_max_days} "
            "allowed: ask for a shorter range (LEDGER_METRICS_MAX_DAYS sets the limit)",
        )
    if not 1 <= limit <= MAX_ROWS:
        raise BadQuery("limit", f"limit={limit} is out of range: give 1 to {MAX_ROWS}")
    return BreakdownQuery(
        start=since,
        end=until,
        by=dimensions(by),
        status=tuple(value.lower() for value in _values(status)),
        country=tuple(value.upper() for value in _values(country)),
        carrier=_values(carrier),
        sender=_values(sender),
        tag=_values(tag),
        limit=limit,
        sent_as_delivered=settings.sent_as_delivered,
        timezone=settings.timezone,
    )


def breakdown_csv(result: Breakdown) -> str:
    """One CSV line per row: the dimensions asked for, then every measure."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*result.by, *CSV_MEASURES])
    for row in result.rows:
        values = [getattr(row, name) for name in (*result.by, *CSV_MEASURES)]
        writer.writerow(
            ["" if v is None else v.isoformat() if isinstance(v, datetime) else v for v in values]
        )
    return out.getvalue()


@get(
    "/v1/metrics/breakdown",
    summary="Delivery breakdown by country, carrier, sender, hour, error family or tag",
    description="Messages counted once, at their current status, by the hour of their first "
    "event (LEDGER_TIMEZONE) in [start, end): delivered, delivery rate (strict, and counting "
    "sent as delivered in LEDGER_SENT_AS_DELIVERED countries), p50/p95 of Plivo's queue "
    "(queued → sent) and the carrier (sent → delivered), units, amount and cost per "
    "delivered message; both latency histograms over the filtered range. JSON by default; "
    "CSV with Accept: text/csv or format=csv.",
    guards=[require_token],
    tags=["metrics"],
    security=[{"bearer": []}],
    responses=problem_responses(400, 401, 503),
)
async def metrics_breakdown(
    request: Request[Any, Any, Any],
    *,
    start: Annotated[
        str,
        QueryParameter(
            format="date",
            description="first day (ISO date, its midnight in LEDGER_TIMEZONE) or an ISO date"
            " and time",
        ),
    ],
    end: Annotated[
        str,
        QueryParameter(
            format="date",
            description="last day, included (ISO date), or an ISO date and time (excluded)",
        ),
    ],
    by: FromQuery[str | None] = None,
    status: FromQuery[str | None] = None,
    country: FromQuery[str | None] = None,
    carrier: FromQuery[str | None] = None,
    sender: FromQuery[str | None] = None,
    tag: FromQuery[str | None] = None,
    limit: FromQuery[int] = 100,
    output: Annotated[str | None, QueryParameter(name="format", pattern="^(json|csv)$")] = None,
) -> Response[Breakdown] | Response[str]:
    """The breakdown of the messages in range."""
    svc = services_of(request)
    try:
        query = breakdown_query(
            svc.settings,
            start=start,
            end=end,
            by=by,
            status=status,
            country=country,
            carrier=carrier,
            sender=sender,
            tag=tag,
            limit=limit,
        )
    except BadQuery as error:
        raise Problem(400, str(error), field=error.field) from None
    async with svc.pool.connection() as conn:
        result = await breakdown(conn, query)
    wants_csv = output == "csv" or (
        output is None and request.accept.best_match(["application/json", CSV]) == CSV
    )
    if wants_csv:
        return Response(breakdown_csv(result), media_type=CSV)
    return Response(result)
