"""Delivery breakdowns from the analytics cube: rows by any of its dimensions, with rates in
both forms, latency percentiles of both stages, charges and cost per delivered message."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

import msgspec
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from projections import fold
from projections.analytics import (
    COUNTS,
    DAYS,
    KEY,
    LATENCY_BOUNDS,
    MEASURES,
    STAGES,
    bucket_columns,
)
from projections.queries import histogram_quantile

Dimension = Literal["country", "carrier", "sender", "hour", "error_family", "tag"]
DIMENSIONS: Final[tuple[Dimension, ...]] = (
    "country",
    "carrier",
    "sender",
    "hour",
    "error_family",
    "tag",
)
#: Statuses that count as delivered (``read`` comes after ``delivered``, on WhatsApp).
DELIVERED: Final = ("delivered", "read")
#: Final outcomes, the delivery rate's denominator (as the daily view's, plus ``read``).
OUTCOMES: Final = (*DELIVERED, "undelivered", "failed", "rejected", "expired")
#: The most rows one breakdown answers.
MAX_ROWS: Final = 10_000
#: Memory for a breakdown's sorts and hash tables (PostgreSQL's work_mem), per worker.
_WORK_MEM: Final = "32MB"

#: Each bucket's upper bound in milliseconds; the last bucket has none.
BOUNDS_MS: Final = (*(round(bound * 1000) for bound in LATENCY_BOUNDS), None)


class BreakdownQuery(msgspec.Struct, frozen=True, kw_only=True):
    """A breakdown: cube cells whose hour lies in [``start``, ``end``) (hours begin at the
    hour ``start`` falls in), grouped by ``by``, filtered on any dimension (each filter a
    set of accepted values), the top ``limit`` rows by messages. ``sent_as_delivered``
    names the countries where ``sent`` also counts as delivered in the ``*_with_sent``
    figures (LEDGER_SENT_AS_DELIVERED). ``timezone`` is the view's (LEDGER_TIMEZONE): its
    hours and days are counted in that zone."""

    start: datetime
    end: datetime
    by: tuple[Dimension, ...] = ("country",)
    status: tuple[str, ...] = ()
    country: tuple[str, ...] = ()
    carrier: tuple[str, ...] = ()
    sender: tuple[str, ...] = ()
    tag: tuple[str, ...] = ()
    limit: int = 100
    sent_as_delivered: tuple[str, ...] = ("US", "CA")
    timezone: str = "UTC"


class BreakdownRow(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One group. Dimensions not asked for are left out; '' is an unknown value (no MCC
    and no placeable number, no error, no tag). Rates are None without any final outcome;
    percentiles None without any message that went through the stage; cost per delivered
    message is the amount over ``delivered_or_sent``, None when that is 0."""

    country: str | msgspec.UnsetType = msgspec.UNSET
    carrier: str | msgspec.UnsetType = msgspec.UNSET
    sender: str | msgspec.UnsetType = msgspec.UNSET
    hour: datetime | msgspec.UnsetType = msgspec.UNSET
    error_family: str | msgspec.UnsetType = msgspec.UNSET
    tag: str | msgspec.UnsetType = msgspec.UNSET
    messages: int
    delivered: int
    delivered_or_sent: int
    delivery_rate: float | None
    delivery_rate_with_sent: float | None
    queue_p50_ms: int | None
    queue_p95_ms: int | None
    carrier_p50_ms: int | None
    carrier_p95_ms: int | None
    units: int
    amount: Decimal
    cost_per_delivered: Decimal | None


class LatencyCount(msgspec.Struct, frozen=True):
    """Messages whose stage took less than ``le_ms`` (and at least the previous bucket's
    bound); the last bucket has no bound (None)."""

    le_ms: int | None
    count: int


class Latency(msgspec.Struct, frozen=True):
    """Both histograms over everything the breakdown's filters select: queued → sent
    (Plivo's queue) and sent → delivered (the carrier)."""

    queue: list[LatencyCount]
    carrier: list[LatencyCount]


class Breakdown(msgspec.Struct, frozen=True):
    """``GET /v1/metrics/breakdown``'s answer: rows by messages, most first."""

    start: datetime
    end: datetime
    by: list[str]
    rows: list[BreakdownRow]
    latency: Latency


def _in(column: str, parameter: str) -> sql.Composable:
    return sql.SQL("{} = ANY({})").format(sql.Identifier(column), sql.Placeholder(parameter))


def _first_hour(query: BreakdownQuery) -> datetime:
    """The hour (in the view's zone) that ``start`` falls in: the first cell in range."""
    return query.start.astimezone(ZoneInfo(query.timezone)).replace(
        minute=0, second=0, microsecond=0
    )


def _whole_days(query: BreakdownQuery) -> tuple[datetime, datetime] | None:
    """The first and last midnight (in the view's zone) between which the range holds whole
    days, if it holds any: those days are read from the daily roll-up, a cell per day
    instead of 24."""
    zone = ZoneInfo(query.timezone)
    start = _first_hour(query)
    first = datetime.combine(start.date(), time(), tzinfo=zone)
    if first < start:
        first = datetime.combine(start.date() + timedelta(days=1), time(), tzinfo=zone)
    last = datetime.combine(query.end.astimezone(zone).date(), time(), tzinfo=zone)
    return (first, last) if first < last else None


def _cells(query: BreakdownQuery, params: dict[str, Any], *, hourly: bool) -> sql.Composable:
    """The cube cells in range: by hour when ``hourly``, else the whole days from the daily
    roll-up and only the range's partial first and last days by hour."""
    # The first hour is a parameter, not date_trunc(): a scan would call that for each row.
    hours = sql.SQL("hour >= %(first_hour)s AND hour < %(end)s")
    days = None if hourly else _whole_days(query)
    if days is None:
        return sql.SQL("SELECT * FROM {} WHERE {}").format(sql.Identifier(COUNTS), hours)
    params["first_day"], params["last_day"] = days
    columns = fold.identifiers((*KEY[1:], *MEASURES))
    return sql.SQL(
        "SELECT {columns} FROM {hourly} WHERE {hours} AND hour < %(first_day)s"
        " UNION ALL SELECT {columns} FROM {daily}"
        "  WHERE day >= %(first_day)s AND day < %(last_day)s"
        " UNION ALL SELECT {columns} FROM {hourly} WHERE {hours} AND hour >= %(last_day)s"
    ).format(
        columns=columns, hourly=sql.Identifier(COUNTS), daily=sql.Identifier(DAYS), hours=hours
    )


_BUCKETS: Final = tuple(name for stage in STAGES for name in bucket_columns(stage))
#: What each row (and the total) sums, in order.
_MEASURES: Final = ("messages", "delivered", "outcomes", "sent_counted", "units", "amount")


def _measures() -> sql.Composable:
    """The sums of a row's measures over its cells."""
    return sql.SQL(
        "sum(messages)::bigint AS messages,"
        " coalesce(sum(messages) FILTER (WHERE {delivered}), 0)::bigint AS delivered,"
        " coalesce(sum(messages) FILTER (WHERE {outcomes}), 0)::bigint AS outcomes,"
        " coalesce(sum(messages) FILTER (WHERE status = 'sent' AND {counted}), 0)::bigint"
        "  AS sent_counted,"
        " sum(units)::bigint AS units, trim_scale(sum(total_amount)) AS amount, {buckets}"
    ).format(
        delivered=_in("status", "delivered"),
        outcomes=_in("status", "outcomes"),
        counted=_in("country", "counted"),
        buckets=sql.SQL(", ").join(
            sql.SQL("sum({0})::bigint AS {0}").format(sql.Identifier(b)) for b in _BUCKETS
        ),
    )


def _statement(query: BreakdownQuery) -> tuple[sql.Composed, dict[str, Any]]:
    """The breakdown's statement and its parameters.

    By hour, groups are many (720 a month, times the other dimensions): they are ranked by
    messages alone first, the measures summed for the top ``limit`` only, and the total
    (the latency histograms) read from the days. Otherwise the groups come from the days,
    and the total is their sum (a handful of rows), so that each cell is aggregated once.
    """
    dims = fold.identifiers(query.by)
    params: dict[str, Any] = {
        "first_hour": _first_hour(query),
        "end": query.end,
        "delivered": list(DELIVERED),
        "outcomes": list(OUTCOMES),
        "counted": list(query.sent_as_delivered),
        "limit": query.limit,
    }
    conditions: list[sql.Composable] = []
    for column in ("status", "country", "carrier", "sender", "tag"):
        if values := getattr(query, column):
            conditions.append(_in(column, f"filter_{column}"))
            params[f"filter_{column}"] = list(values)
    names = (*_MEASURES, *_BUCKETS)
    parts = {
        "dims": dims,
        "measures": _measures(),
        "days": _cells(query, params, hourly=False),
        "where": sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("true"),
        "nulls": sql.SQL(", ").join(
            sql.SQL("NULL::{} AS {}").format(
                sql.SQL("timestamptz" if d == "hour" else "text"), sql.Identifier(d)
            )
            for d in query.by
        ),
        "names": fold.identifiers(names),
    }
    if "hour" in query.by:
        statement = sql.SQL(
            "WITH breakdown_ranked AS (SELECT {dims} FROM ({hours}) AS cells WHERE {where}"
            # Summed as integer (an hour's cell holds far fewer than 2^31 messages): its
            # running sum is a plain bigint, where a bigint's is allocated per group, and
            # the groups are tens of thousands (136 ms instead of 170 by all four).
            "  GROUP BY {dims} ORDER BY sum(messages::integer) DESC, {dims} LIMIT %(limit)s),"
            " breakdown_groups AS (SELECT {dims}, {measures} FROM ({hours}) AS cells"
            # The hours first, so that the ranked groups' cells are read by the key's index.
            "  WHERE {where} AND hour = ANY(ARRAY(SELECT DISTINCT hour FROM breakdown_ranked))"
            "  {groups} GROUP BY {dims})"
            " SELECT true AS total, {nulls}, {measures} FROM ({days}) AS cells WHERE {where}"
            " UNION ALL (SELECT false, {dims}, {names} FROM breakdown_groups"
            "  ORDER BY messages DESC, {dims})"
        ).format(
            **parts,
            hours=_cells(query, params, hourly=True),
            # By the hour alone, the hours are the groups: a semi-join on them again would
            # only cost a join and a sort of every cell read (0.3 s instead of 0.24 s).
            groups=sql.SQL("AND ({dims}) IN (SELECT {dims} FROM breakdown_ranked)").format(
                dims=dims
            )
            if len(query.by) > 1
            else sql.SQL(""),
        )
    else:
        statement = sql.SQL(
            "WITH breakdown_groups AS (SELECT {dims}, {measures} FROM ({days}) AS cells"
            "  WHERE {where} GROUP BY {dims})"
            " SELECT true AS total, {nulls}, {totals} FROM breakdown_groups"
            " UNION ALL (SELECT false, {dims}, {names} FROM breakdown_groups"
            "  ORDER BY messages DESC, {dims} LIMIT %(limit)s)"
        ).format(
            **parts,
            totals=sql.SQL(", ").join(
                sql.SQL("sum({0})::bigint AS {0}").format(sql.Identifier(m))
                if m != "amount"
                else sql.SQL("sum(amount) AS amount")
                for m in names
            ),
        )
    return statement, params


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _row(row: dict[str, Any], by: Sequence[Dimension], zone: ZoneInfo) -> BreakdownRow:
    histograms = {stage: [row[name] or 0 for name in bucket_columns(stage)] for stage in STAGES}
    delivered_or_sent = row["delivered"] + row["sent_counted"]
    dims: dict[str, Any] = {d: row[d] for d in by}
    if "hour" in dims:
        dims["hour"] = dims["hour"].astimezone(zone)
    amount = row["amount"] or Decimal(0)
    return BreakdownRow(
        **dims,
        messages=row["messages"],
        delivered=row["delivered"],
        delivered_or_sent=delivered_or_sent,
        delivery_rate=_ratio(row["delivered"], row["outcomes"]),
        delivery_rate_with_sent=_ratio(delivered_or_sent, row["outcomes"] + row["sent_counted"]),
        queue_p50_ms=_ms(histogram_quantile(0.5, histograms["queue"], LATENCY_BOUNDS)),
        queue_p95_ms=_ms(histogram_quantile(0.95, histograms["queue"], LATENCY_BOUNDS)),
        carrier_p50_ms=_ms(histogram_quantile(0.5, histograms["carrier"], LATENCY_BOUNDS)),
        carrier_p95_ms=_ms(histogram_quantile(0.95, histograms["carrier"], LATENCY_BOUNDS)),
        units=row["units"],
        amount=amount,
        cost_per_delivered=(amount / delivered_or_sent).quantize(Decimal("0.00001"))
        if delivered_or_sent
        else None,
    )


def _latency(total: dict[str, Any] | None) -> Latency:
    def counts(stage: str) -> list[LatencyCount]:
        return [
            LatencyCount(bound, int(total[name] or 0) if total else 0)
            for bound, name in zip(BOUNDS_MS, bucket_columns(stage), strict=True)
        ]

    return Latency(queue=counts("queue"), carrier=counts("carrier"))


async def breakdown(conn: psycopg.AsyncConnection[Any], query: BreakdownQuery) -> Breakdown:
    """The breakdown ``query`` asks for, in one statement (the groups, and the total, which
    gives the latency histograms; see :func:`_statement`)."""
    if not query.by or len(set(query.by)) != len(query.by):
        raise ValueError("by must name one or more distinct dimensions")
    if not 1 <= query.limit <= MAX_ROWS:
        raise ValueError(f"limit must be between 1 and {MAX_ROWS}, got {query.limit}")
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cursor:
        # Grouping hours by several dimensions makes tens of thousands of groups: with the
        # default work_mem their hash table spills to disk, and the query takes 1.4 x longer.
        await cursor.execute("SELECT set_config('work_mem', %s, true)", (_WORK_MEM,))
        await cursor.execute(*_statement(query))
        rows = await cursor.fetchall()
    total = next((row for row in rows if row["total"]), None)
    zone = ZoneInfo(query.timezone)
    return Breakdown(
        start=query.start,
        end=query.end,
        by=list(query.by),
        rows=[_row(row, query.by, zone) for row in rows if not row["total"]],
        latency=_latency(total),
    )
