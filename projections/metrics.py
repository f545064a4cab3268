"""The ``daily_delivery_metrics`` view: per day, every message counted once, at its current
status.

Two tables. ``daily_delivery_facts`` keeps the columns of the status fold
(:mod:`projections.fold`) this view needs, per message, plus the day the message is counted
under. ``daily_delivery_counts`` is a cube: messages, units and amount per (day, status,
error code, time-to-deliver bucket). Applying a batch merges its fold into the touched
messages' facts, takes each one out of its old cell and puts it in its new one (signed
deltas), and deletes cells left empty, so
a status change moves the message between counters and a late callback with an earlier event
time moves it to its true first day, however late it arrives. The per-day rollup is
:func:`projections.queries.daily_metrics`.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from psycopg import sql

from projections import fold
from projections.base import DDL

FACTS: Final = "daily_delivery_facts"
COUNTS: Final = "daily_delivery_counts"

#: The fold's columns a fact keeps.
COLUMNS: Final = (
    *fold.WINNER_COLUMNS,
    fold.FIRST_EVENT_AT,
    fold.milestone("delivered"),
    fold.UNITS,
    fold.TOTAL_AMOUNT,
)

# Bump when the fold or the cube changes shape. 2: folded in PostgreSQL from the ledger.
# 3: rejected and reconciled events fold; send requests' own streams do not.
_FOLD_VERSION = 3

_FACTS_TABLE: Final = sql.SQL(
    # day: the day the message is counted under, stored rather than recomputed, so that
    # taking the message out of its old cell stays exact even if the configured zone changes.
    "CREATE TABLE {facts} ({columns}, day date NOT NULL)"
).format(facts=sql.Identifier(FACTS), columns=fold.column_definitions(COLUMNS))
# Every message counted once, in the cell of its first day, current status, error code and
# time-to-deliver bucket; cells reaching 0 messages are deleted.
_COUNTS_TABLE: Final = sql.SQL(
    "CREATE TABLE {counts} ("
    " day date NOT NULL,"
    # '' when the message has no reported status / no error code
    ' status text COLLATE "C" NOT NULL,'
    ' error_code text COLLATE "C" NOT NULL,'
    # an index into the bucket bounds; -1 when not delivered
    " latency_bucket smallint NOT NULL,"
    " messages bigint NOT NULL, units bigint NOT NULL, total_amount numeric NOT NULL,"
    " PRIMARY KEY (day, status, error_code, latency_bucket))"
).format(counts=sql.Identifier(COUNTS))


def _cell(relation: str, sign: int) -> sql.Composable:
    """Each fact of ``relation`` as its contribution to its cube cell, with ``sign`` 1 to add
    it or -1 to take it out."""

    def column(name: str) -> sql.Identifier:
        return sql.Identifier(relation, name)

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
        relation=sql.Identifier(relation),
    )


_CUBE_KEY = ("day", "status", "error_code", "latency_bucket")
_CUBE_COLUMNS = (*_CUBE_KEY, "messages", "units", "total_amount")


# The batch's facts merged into the stored ones, by the day of the first event.
_FACTS_UPSERT: Final = fold.facts_upsert(
    FACTS, COLUMNS, "day", sql.SQL("(f.first_event_at AT TIME ZONE %(metrics_zone)s)::date")
)

# Sums keep the largest scale they have seen (0.0025 - 0.0025 = 0.0000), so cube amounts are
# trimmed: the cube must not depend on the history that led to it.
#
# Old and new cells of the touched messages, netted per cell, then written back in one go:
# a cell that ends at zero messages is deleted, a new cell inserted, any other updated. The
# three writes touch disjoint rows, so they can share one statement. Data-modifying CTEs all
# read the statement's snapshot, so metrics_old sees the facts before the upsert.
_APPLY: Final = sql.SQL(
    "metrics_old AS (SELECT * FROM {facts}"
    "  WHERE message_uuid IN (SELECT message_uuid FROM {folded})),"
    " metrics_saved AS ({facts_upsert} RETURNING *),"
    " metrics_delta AS (SELECT {key}, sum(messages) AS messages, sum(units) AS units,"
    "  sum(total_amount) AS total_amount FROM ({removed} UNION ALL {added}) AS changes"
    "  GROUP BY {key} HAVING sum(messages) <> 0 OR sum(units) <> 0 OR sum(total_amount) <> 0),"
    " metrics_cells AS (SELECT {key}, c.messages IS NOT NULL AS stored,"
    "  coalesce(c.messages, 0) + d.messages AS messages, coalesce(c.units, 0) + d.units AS units,"
    "  trim_scale(coalesce(c.total_amount, 0) + d.total_amount) AS total_amount"
    "  FROM metrics_delta AS d LEFT JOIN {counts} AS c USING ({key})),"
    " metrics_inserted AS (INSERT INTO {counts} ({columns})"
    "  SELECT {columns} FROM metrics_cells WHERE NOT stored),"
    " metrics_updated AS (UPDATE {counts} AS c SET messages = cells.messages,"
    "  units = cells.units, total_amount = cells.total_amount FROM metrics_cells AS cells"
    "  WHERE cells.stored AND cells.messages <> 0 AND ({c_key}) = ({cells_key})),"
    " metrics_deleted AS (DELETE FROM {counts} AS c USING metrics_cells AS cells"
    "  WHERE cells.stored AND cells.messages = 0 AND ({c_key}) = ({cells_key}))"
).format(
    facts=sql.Identifier(FACTS),
    folded=sql.Identifier(fold.FOLDED),
    facts_upsert=_FACTS_UPSERT,
    removed=_cell("metrics_old", -1),
    added=_cell("metrics_saved", 1),
    counts=sql.Identifier(COUNTS),
    key=fold.identifiers(_CUBE_KEY),
    columns=fold.identifiers(_CUBE_COLUMNS),
    c_key=fold.identifiers(_CUBE_KEY, "c"),
    cells_key=fold.identifiers(_CUBE_KEY, "cells"),
)
_BUILD: Final = sql.SQL("metrics_facts AS ({})").format(_FACTS_UPSERT)
# The cube from the facts, once: a GROUP BY over every message instead of a delta per chunk.
_CUBE: Final = sql.SQL(
    "INSERT INTO {counts} ({columns}) SELECT {key}, count(*), sum(units),"
    " trim_scale(sum(total_amount)) FROM ({cells}) AS cells GROUP BY {key}"
).format(
    counts=sql.Identifier(COUNTS),
    columns=fold.identifiers(_CUBE_COLUMNS),
    key=fold.identifiers(_CUBE_KEY),
    cells=_cell(FACTS, 1),
)


class DailyMetricsProjector:
    """Folds messages into daily delivery counts, by the day of each message's first event in
    ``timezone`` (an IANA name, ``LEDGER_TIMEZONE``).

    ``version`` folds in a checksum of the zone, so that changing the zone makes the stored
    view a different version, which is rebuilt rather than left mixing two zones' days.
    """

    name = "daily_delivery_metrics"
    tables: tuple[str, ...] = (FACTS, COUNTS)
    reads = fold.Reads(COLUMNS)
    #: Read by analysts, by day: a quarter of a second behind costs nobody anything, and
    #: batches twelve times the size cost the projector a fraction per event.
    busy_interval = 0.25

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

    def schema(self) -> Sequence[DDL]:
        """The facts and the cube."""
        return [_FACTS_TABLE, _COUNTS_TABLE]

    def indexes(self) -> Sequence[DDL]:
        """None besides the primary keys: the cube is read by day, its key's first column."""
        return ()

    def apply(self) -> sql.Composable:
        """The batch's facts upserted, and the touched messages moved between cells."""
        return _APPLY

    def build(self) -> sql.Composable:
        """The chunk's facts upserted; the cube is left to :meth:`finish_build`."""
        return _BUILD

    def finish_build(self) -> Sequence[DDL]:
        """The cube, from the facts."""
        return [_CUBE]

    def derived(self) -> Sequence[DDL]:
        """Nothing: the cube is folded from the events."""
        return ()

    def parameters(self) -> Mapping[str, Any]:
        """The zone whose days the messages are counted under."""
        return {"metrics_zone": self.timezone}
