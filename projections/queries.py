"""Reads of the views for the API and the CLI."""

from __future__ import annotations

import base64
import binascii
import bisect
import itertools
from collections import defaultdict
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, Final
from uuid import UUID

import msgspec
import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ledger.error_codes import describe_error
from ledger.phone_numbers import normalise_number
from projections import fold
from projections.fold import LATENCY_BOUNDS, NOT_DELIVERED
from projections.metrics import COUNTS
from projections.parts import worst_status
from projections.status import TABLE
from projections.views import (
    NO_STATUS,
    DailyMetrics,
    LatencyBucket,
    MessagePage,
    MessagePart,
    MessageQuery,
    MessageStatus,
)

#: The outcomes a delivery rate is taken over: delivered against every final failure.
DELIVERY_OUTCOMES: Final = ("delivered", "undelivered", "failed", "rejected", "expired")
#: Current statuses of a message still on its way: no final outcome reported yet.
IN_FLIGHT: Final = ("submitted", "queued", "sent", NO_STATUS)

_STATUS_COLUMNS = sql.SQL(", ").join(
    sql.Identifier(name)
    for name in MessageStatus.__struct_fields__
    if name not in ("error_description", "parts")
)
_PARTS = sql.SQL(
    "SELECT parent_message_uuid, message_uuid, status, error_code FROM {}"
    " WHERE parent_message_uuid = ANY(%s::text[]) ORDER BY parent_message_uuid, message_uuid"
).format(sql.Identifier(TABLE))


class InvalidCursor(ValueError):
    """A search cursor that this service did not hand out (or that was altered)."""


async def _message_statuses(
    conn: psycopg.AsyncConnection[Any], rows: Sequence[dict[str, Any]]
) -> list[MessageStatus]:
    """The rows as reported: with their parts, if any, and a parent's status the worst of
    its parts' (:mod:`projections.parts`). One query finds the parts of every row."""
    cursor = await conn.execute(_PARTS, ([str(row["message_uuid"]) for row in rows],))
    parts: defaultdict[str, list[MessagePart]] = defaultdict(list)
    for parent, part, status, error_code in await cursor.fetchall():
        parts[parent].append(MessagePart(part, status, error_code))
    found = []
    for row in rows:
        own = parts[str(row["message_uuid"])]
        status = worst_status(row["status"], [part.status for part in own])
        error_code = row["error_code"]
        if status != row["status"]:
            error_code = next(p.error_code for p in own if p.status == status)
        found.append(
            MessageStatus(
                **{**row, "status": status, "error_code": error_code},
                error_description=describe_error(error_code),
                parts=own,
            )
        )
    return found


async def get_message_status(
    conn: psycopg.AsyncConnection[Any], message_uuid: UUID
) -> MessageStatus | None:
    """The current status of one message; None if the view has never seen it."""
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(
            sql.SQL("SELECT {} FROM {} WHERE message_uuid = %s").format(
                _STATUS_COLUMNS, sql.Identifier(TABLE)
            ),
            (message_uuid,),
        )
        row = await cursor.fetchone()
    return (await _message_statuses(conn, [row]))[0] if row is not None else None


def _encode_cursor(item: MessageStatus) -> str:
    raw = msgspec.json.encode((item.first_event_at, item.message_uuid))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return msgspec.json.decode(raw, type=tuple[datetime, UUID])
    except (binascii.Error, ValueError):  # msgspec's errors are ValueErrors too
        raise InvalidCursor(
            "the cursor is not one this service returned: pass next_cursor from the previous page"
        ) from None


async def search_messages(conn: psycopg.AsyncConnection[Any], query: MessageQuery) -> MessagePage:
    """A page of messages matching ``query``, newest first by first event time.

    Numbers match however they were typed (``+1 (415) 555-0100`` finds Plivo's
    ``14155550100``): both go through :func:`~ledger.phone_numbers.normalise_number`.
    Keyset pagination on (first_event_at, message_uuid), which is unique, so pages neither
    repeat nor skip rows while the view holds still. A message whose first event time moves
    (a late callback from earlier) moves in the order, as it should. Raises
    :class:`InvalidCursor` for a cursor this function did not return, and ValueError for a
    limit below 1 (callers cap it above).
    """
    if query.limit < 1:
        raise ValueError(f"limit must be at least 1, got {query.limit}")
    conditions: list[sql.Composable] = []
    params: list[Any] = []
    for column, value in (
        ("status", query.status.strip().lower() if query.status else None),
        ("from_number", normalise_number(query.from_number) if query.from_number else None),
        ("to_number", normalise_number(query.to_number) if query.to_number else None),
        ("error_code", query.error_code.strip() if query.error_code else None),
    ):
        if value is not None:
            conditions.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            params.append(value)
    if query.tags:
        conditions.append(sql.SQL("tags @> %s::jsonb"))
        params.append(Jsonb(query.tags))
    if query.since is not None:
        conditions.append(sql.SQL("first_event_at >= %s"))
        params.append(query.since)
    if query.until is not None:
        conditions.append(sql.SQL("first_event_at < %s"))
        params.append(query.until)
    if query.cursor is not None:
        conditions.append(sql.SQL("(first_event_at, message_uuid) < (%s, %s)"))
        params.extend(_decode_cursor(query.cursor))
    where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("")
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(
            sql.SQL(
                "SELECT {} FROM {}{} ORDER BY first_event_at DESC, message_uuid DESC LIMIT %s"
            ).format(_STATUS_COLUMNS, sql.Identifier(TABLE), where),
            # One extra row tells whether another page follows without an empty last page.
            [*params, query.limit + 1],
        )
        rows = await cursor.fetchall()
    items = await _message_statuses(conn, rows[: query.limit])
    more = len(rows) > query.limit
    return MessagePage(items=items, next_cursor=_encode_cursor(items[-1]) if more else None)


# The cube rolled up four ways at once; GROUPING() tells which rollup a row belongs to (a bit
# is set for each column aggregated away).
_DAILY = sql.SQL(
    "SELECT day, status, error_code, latency_bucket,"
    " GROUPING(status, error_code, latency_bucket) AS rollup,"
    " sum(messages)::bigint AS messages, sum(units)::bigint AS units,"
    " trim_scale(sum(total_amount)) AS total_amount"
    " FROM {} WHERE day BETWEEN %s AND %s"
    " GROUP BY GROUPING SETS ((day), (day, status), (day, error_code), (day, latency_bucket))"
)
_PER_DAY, _PER_STATUS, _PER_ERROR_CODE, _PER_BUCKET = 0b111, 0b011, 0b101, 0b110


async def daily_metrics(
    conn: psycopg.AsyncConnection[Any],
    start: date,
    end: date,
    *,
    tags: dict[str, str] | None = None,
    timezone: str = "UTC",
) -> list[DailyMetrics]:
    """Daily delivery metrics from ``start`` to ``end`` inclusive, one entry per day that has
    messages, oldest first.

    Without ``tags``, from the metrics view's cube. With them, the same figures for the
    messages carrying every one of ``tags`` (name → value), folded from the status view on
    the fly (its tag index finds them), with days in ``timezone`` as the metrics view's.
    """
    if not tags:
        async with conn.cursor(row_factory=dict_row) as cursor:
            await cursor.execute(_DAILY.format(sql.Identifier(COUNTS)), (start, end))
            return _rollup(await cursor.fetchall())
    by_value = await _tagged_metrics(conn, start, end, tags=tags, timezone=timezone)
    return by_value.get("", [])


async def daily_metrics_by_tag(
    conn: psycopg.AsyncConnection[Any],
    start: date,
    end: date,
    name: str,
    *,
    tags: dict[str, str] | None = None,
    timezone: str = "UTC",
) -> dict[str, list[DailyMetrics]]:
    """Daily delivery metrics of the messages carrying tag ``name``, per value of the tag
    (and also carrying every one of ``tags``), the values in order."""
    return await _tagged_metrics(conn, start, end, tags=tags or {}, group=name, timezone=timezone)


# The cube's rollup, over the status view's rows of tagged messages: each message counted
# once, in the cell of its first day, current status, error code and time-to-deliver bucket.
_TAGGED = sql.SQL(
    "WITH tagged AS (SELECT {group} AS tag_value,"
    " (first_event_at AT TIME ZONE %(zone)s)::date AS day,"
    " coalesce(status, '') AS status, coalesce(error_code, '') AS error_code,"
    " {bucket} AS latency_bucket, coalesce(units, 0) AS units,"
    " coalesce(total_amount, 0) AS total_amount"
    " FROM {table} WHERE tags IS NOT NULL AND tags @> %(tags)s::jsonb {has_group}"
    # A day in any zone lies within a day either side of the same UTC date.
    " AND first_event_at >= %(start)s::date - 1 AND first_event_at < %(end)s::date + 2)"
    " SELECT tag_value, day, status, error_code, latency_bucket,"
    " GROUPING(status, error_code, latency_bucket) AS rollup,"
    " count(*)::bigint AS messages, sum(units)::bigint AS units,"
    " trim_scale(sum(total_amount)) AS total_amount"
    " FROM tagged WHERE day BETWEEN %(start)s AND %(end)s"
    " GROUP BY GROUPING SETS ((tag_value, day), (tag_value, day, status),"
    " (tag_value, day, error_code), (tag_value, day, latency_bucket))"
)


async def _tagged_metrics(
    conn: psycopg.AsyncConnection[Any],
    start: date,
    end: date,
    *,
    tags: dict[str, str],
    timezone: str,
    group: str | None = None,
) -> dict[str, list[DailyMetrics]]:
    statement = _TAGGED.format(
        group=sql.SQL("tags ->> %(group)s") if group else sql.Literal(""),
        has_group=sql.SQL("AND tags ? %(group)s") if group else sql.SQL(""),
        bucket=fold.latency_bucket(
            sql.Identifier("first_event_at"), sql.Identifier("delivered_at")
        ),
        table=sql.Identifier(TABLE),
    )
    params = {"zone": timezone, "tags": Jsonb(tags), "start": start, "end": end, "group": group}
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(statement, params)
        rows = await cursor.fetchall()
    by_value: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_value[row["tag_value"]].append(row)
    return {value: _rollup(by_value[value]) for value in sorted(by_value)}


def _rollup(rows: Sequence[dict[str, Any]]) -> list[DailyMetrics]:
    """Rows of the four-way rollup (per day; per day and status, error code, bucket) as
    one :class:`DailyMetrics` per day, oldest first."""
    totals: dict[date, dict[str, Any]] = {}
    statuses: defaultdict[date, dict[str, int]] = defaultdict(dict)
    error_codes: defaultdict[date, dict[str, int]] = defaultdict(dict)
    buckets: defaultdict[date, list[int]] = defaultdict(lambda: [0] * (len(LATENCY_BOUNDS) + 1))
    for row in rows:
        day, rollup, messages = row["day"], row["rollup"], row["messages"]
        if rollup == _PER_DAY:
            totals[day] = row
        elif rollup == _PER_STATUS:
            statuses[day][row["status"] or NO_STATUS] = messages
        elif rollup == _PER_ERROR_CODE and row["error_code"]:
            error_codes[day][row["error_code"]] = messages
        elif rollup == _PER_BUCKET and row["latency_bucket"] != NOT_DELIVERED:
            buckets[day][row["latency_bucket"]] = messages
    return [
        _day_metrics(day, totals[day], statuses[day], error_codes[day], buckets[day])
        for day in sorted(totals)
    ]


def _day_metrics(
    day: date,
    totals: dict[str, Any],
    statuses: dict[str, int],
    error_codes: dict[str, int],
    histogram: list[int],
) -> DailyMetrics:
    outcomes = sum(statuses.get(status, 0) for status in DELIVERY_OUTCOMES)
    return DailyMetrics(
        day=day,
        messages=totals["messages"],
        statuses=dict(sorted(statuses.items())),
        delivery_rate=statuses.get("delivered", 0) / outcomes if outcomes else None,
        units=totals["units"],
        total_amount=totals["total_amount"],
        error_codes=dict(sorted(error_codes.items(), key=lambda item: (len(item[0]), item[0]))),
        latency_histogram=[
            LatencyBucket(upper_bound_seconds=bound, count=count)
            for bound, count in zip([*LATENCY_BOUNDS, None], histogram, strict=True)
        ],
        p50_seconds=histogram_quantile(0.5, histogram),
        p95_seconds=histogram_quantile(0.95, histogram),
    )


def histogram_quantile(
    quantile: float, counts: Sequence[int], bounds: Sequence[float] = LATENCY_BOUNDS
) -> float | None:
    """The ``quantile`` (0 < q ≤ 1) of a latency histogram (one count per bucket of
    ``bounds``, by default :data:`~projections.fold.LATENCY_BOUNDS`, then the unbounded
    one), interpolated linearly within the bucket where the cumulative count reaches it;
    None for an empty histogram."""
    if not 0 < quantile <= 1:
        raise ValueError(f"a quantile is above 0 and at most 1, got {quantile}")
    cumulative = list(itertools.accumulate(counts))
    if not cumulative or cumulative[-1] == 0:
        return None
    rank = quantile * cumulative[-1]
    index = bisect.bisect_left(cumulative, rank)
    if index == len(bounds):
        return float(bounds[-1])
    lower = bounds[index - 1] if index else 0
    below = cumulative[index] - counts[index]
    return lower + (bounds[index] - lower) * (rank - below) / counts[index]
