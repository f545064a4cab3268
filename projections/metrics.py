"""The ``daily_delivery_metrics`` view: per day, every message counted once, at its current
status.

Two tables. ``daily_delivery_facts`` is this projector's own per-message fold (the status
fold of :mod:`projections.fold`, fewer columns) plus the day the message is counted under.
``daily_delivery_counts`` is a cube: messages, units and amount per (day, status, error code,
time-to-deliver bucket). Applying a batch re-folds the touched messages, takes each one out
of its old cell and puts it in its new one (signed deltas), and deletes cells left empty, so
a status change moves the message between counters and a late callback with an earlier event
time moves it to its true first day, however late it arrives. The per-day rollup is
:func:`projections.queries.daily_metrics`.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
from psycopg import sql

from ledger.events import RecordedEvent
from ledger.store import Checkpoint
from projections import fold

FACTS: Final = "daily_delivery_facts"
COUNTS: Final = "daily_delivery_counts"

COLUMNS: Final = (
    *fold.WINNER_COLUMNS,
    fold.FIRST_EVENT_AT,
    fold.milestone("delivered"),
    fold.UNITS,
    fold.TOTAL_AMOUNT,
)

# Bump when the fold or the cube changes shape.
_FOLD_VERSION = 1


def _day(first_event_at: sql.Composable) -> sql.Composable:
    return sql.SQL("({} AT TIME ZONE %(zone)s)::date").format(first_event_at)


def _cell(alias: str, sign: int) -> sql.Composable:
    """Each fact of the relation ``alias`` as its contribution to its cube cell, with ``sign``
    1 to add it or -1 to take it out."""

    def column(name: str) -> sql.Identifier:
        return sql.Identifier(alias, name)

    return sql.SQL(
        "SELECT {day} AS day, coalesce({status}, '') AS status,"
        " coalesce({error_code}, '') AS error_code, {bucket} AS latency_bucket,"
        " {sign} AS messages, {sign} * coalesce({units}, 0) AS units,"
        " {sign} * coalesce({amount}, 0) AS total_amount FROM {relation}"
    ).format(
        day=column("day"),
        status=column("status"),
        error_code=column("error_code"),
        bucket=fold.latency_bucket(column("first_event_at"), column("delivered_at")),
        sign=sql.Literal(sign),
        units=column("units"),
        amount=column("total_amount"),
        relation=sql.Identifier(alias),
    )


_CUBE_KEY = ("day", "status", "error_code", "latency_bucket")
_CUBE_COLUMNS = (*_CUBE_KEY, "messages", "units", "total_amount")


def _names(names: Sequence[str], alias: str | None = None) -> sql.Composable:
    return sql.SQL(", ").join(
        sql.Identifier(alias, name) if alias else sql.Identifier(name) for name in names
    )


# Sums keep the largest scale they have seen (0.0025 - 0.0025 = 0.0000), so cube amounts are
# trimmed: the cube must not depend on the history that led to it.
#
# Old and new cells of the touched messages, netted per cell, then written back in one go:
# a cell that ends at zero messages is deleted, a new cell inserted, any other updated. The
# three writes touch disjoint rows, so they can share one statement. {facts_upsert} must
# leave the pre-statement facts of the batch's messages in "old" and the new ones in "saved"
# (data-modifying CTEs all read the statement's snapshot, so "old" sees the facts before
# the upsert).
_APPLY = sql.SQL(
    "WITH batch AS ({fold}),"
    " old AS (SELECT * FROM {facts} WHERE message_uuid IN (SELECT message_uuid FROM batch)),"
    " saved AS ({facts_upsert} RETURNING *),"
    " delta AS (SELECT {key}, sum(messages) AS messages, sum(units) AS units,"
    "  sum(total_amount) AS total_amount FROM ({removed} UNION ALL {added}) AS changes"
    "  GROUP BY {key} HAVING sum(messages) <> 0 OR sum(units) <> 0 OR sum(total_amount) <> 0),"
    " cells AS (SELECT {key}, c.messages IS NOT NULL AS stored,"
    "  coalesce(c.messages, 0) + d.messages AS messages, coalesce(c.units, 0) + d.units AS units,"
    "  trim_scale(coalesce(c.total_amount, 0) + d.total_amount) AS total_amount"
    "  FROM delta AS d LEFT JOIN {counts} AS c USING ({key})),"
    " inserted AS (INSERT INTO {counts} ({columns}) SELECT {columns} FROM cells WHERE NOT stored),"
    " updated AS (UPDATE {counts} AS c SET messages = cells.messages, units = cells.units,"
    "  total_amount = cells.total_amount FROM cells"
    "  WHERE cells.stored AND cells.messages <> 0 AND ({c_key}) = ({cells_key}))"
    " DELETE FROM {counts} AS c USING cells"
    " WHERE cells.stored AND cells.messages = 0 AND ({c_key}) = ({cells_key})"
)


class DailyMetricsProjector:
    """Folds messages into daily delivery counts, by the day of each message's first event in
    ``timezone`` (an IANA name, ``LEDGER_TIMEZONE``).

    ``version`` folds in a checksum of the zone, so that changing the zone makes the stored
    view a different version, which is rebuilt rather than left mixing two zones' days.
    """

    name = "daily_delivery_metrics"
    tables: tuple[str, ...] = (FACTS, COUNTS)

    def __init__(self, timezone: str = "UTC") -> None:
        # Fail at start, not on the first batch.
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {timezone!r}: use an IANA name such as UTC or Asia/Kolkata"
            ) from None
        self.timezone = timezone
        self.version = _FOLD_VERSION * 1_000_000 + zlib.crc32(timezone.encode()) % 1_000_000

    async def build(
        self, conn: psycopg.AsyncConnection[Any], *, suffix: str, upto: Checkpoint
    ) -> None:
        """Fill the empty copies: the facts from every event at or before ``upto``, then the
        cube from the facts."""
        source, params = fold.ledger_upto(upto)
        facts_insert = sql.SQL("INSERT INTO {} ({}, day) SELECT f.*, {} FROM ({}) AS f").format(
            sql.Identifier(FACTS + suffix),
            fold.column_list(COLUMNS),
            _day(sql.Identifier("f", "first_event_at")),
            fold.fold(source, COLUMNS),
        )
        cube_insert = sql.SQL(
            "INSERT INTO {counts} ({columns}) SELECT {key}, count(*), sum(units),"
            " trim_scale(sum(total_amount)) FROM ({cells}) AS cells GROUP BY {key}"
        ).format(
            counts=sql.Identifier(COUNTS + suffix),
            columns=_names(_CUBE_COLUMNS),
            key=_names(_CUBE_KEY),
            cells=_cell(FACTS + suffix, 1),
        )
        async with fold.bulk_load(conn, [FACTS + suffix, COUNTS + suffix]):
            await conn.execute(facts_insert, {**params, "zone": self.timezone})
            await conn.execute(cube_insert)

    async def apply(
        self,
        conn: psycopg.AsyncConnection[Any],
        events: Sequence[RecordedEvent],
        *,
        suffix: str = "",
    ) -> None:
        """Fold a batch into the facts and the cube, in one statement."""
        if not events:
            return
        source, params = fold.batch(events)
        facts = sql.Identifier(FACTS + suffix)
        # The day follows the first event time: it changes only when the batch brings an
        # earlier first event.
        upsert = sql.SQL(
            "INSERT INTO {facts} AS cur ({columns}, day) SELECT b.*, {day} FROM batch AS b"
            " ON CONFLICT (message_uuid) DO UPDATE SET {merge}, day = CASE WHEN"
            " excluded.first_event_at < cur.first_event_at THEN excluded.day ELSE cur.day END"
        ).format(
            facts=facts,
            columns=fold.column_list(COLUMNS),
            day=_day(sql.Identifier("b", "first_event_at")),
            merge=fold.merge(COLUMNS, "cur"),
        )
        await conn.execute(
            _APPLY.format(
                fold=fold.fold(source, COLUMNS),
                facts=facts,
                facts_upsert=upsert,
                removed=_cell("old", -1),
                added=_cell("saved", 1),
                counts=sql.Identifier(COUNTS + suffix),
                key=_names(_CUBE_KEY),
                columns=_names(_CUBE_COLUMNS),
                c_key=_names(_CUBE_KEY, "c"),
                cells_key=_names(_CUBE_KEY, "cells"),
            ),
            {**params, "zone": self.timezone},
        )
