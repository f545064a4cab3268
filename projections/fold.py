"""The status fold, defined once for both views: how a message's events give its current row.

Every per-message column is one of a few commutative, associative aggregates over the
message's events, so any permutation of the events, split into batches in any way, folds to
the same row:

* ``WINNER`` columns come from the winning event, the maximum by (status rank, Sequence with
  a missing one lowest, event time, position). Position is unique, so there is one winner.
* ``MIN`` / ``MAX`` columns are the least / greatest non-null value (milestones, first and
  last event time, the sender, recipient and type, units and amount: the charged amount only
  grows from the queued callback's 0.00000, and the others are constant per message).
* ``COUNT`` counts the events.

Event time is ``coalesce(occurred_at, recorded_at)``. Amounts are normalised with
``trim_scale`` so that ``0.0025`` and ``0.00250`` cannot make the row depend on which
arrived first.

A fold is rendered as SQL over a *source*: either the ledger up to a checkpoint (``build``)
or a batch passed as arrays (``apply``). Both go through the same normalisation, so a view
built from scratch and one kept current batch by batch are identical.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import AsyncIterator, Sequence
from types import MappingProxyType
from typing import Any, Final, NamedTuple

import msgspec
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from ledger.events import MESSAGE_EXPIRED, MESSAGE_SUBMITTED, STATUS_REPORTED, RecordedEvent
from ledger.store import Checkpoint

#: Status precedence: a status only gives way to one ranked higher. Terminal outcomes share
#: a rank, so among them the later report (by Sequence, then time) wins.
STATUS_RANKS: Final = MappingProxyType(
    {
        "submitted": 1,
        "queued": 2,
        "sent": 3,
        "expired": 4,
        "delivered": 5,
        "undelivered": 5,
        "failed": 5,
        "rejected": 5,
        "read": 6,
    }
)
#: A status we do not know is still a fact: it beats having no status, and nothing else.
UNKNOWN_STATUS_RANK: Final = 0
NO_STATUS_RANK: Final = -1

#: Upper bounds (seconds, exclusive) of the time-to-deliver buckets; a last bucket holds the
#: rest. Bucket ``i`` holds latencies in ``[LATENCY_BOUNDS[i-1], LATENCY_BOUNDS[i])``.
LATENCY_BOUNDS: Final = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
#: The bucket of a message that has not been delivered.
NOT_DELIVERED: Final = -1
#: Sort memory for a build, per statement (a million events sort in about 170 MB).
BUILD_WORK_MEM: Final = "256MB"


class Kind(enum.Enum):
    """How a column folds a message's events (see the module docstring)."""

    WINNER = "winner"
    MIN = "min"
    MAX = "max"
    COUNT = "count"


class Column(NamedTuple):
    """A view column: its name, how it folds, and its per-event value over the normalised
    events (columns: position, message_uuid, event_at, status, status_rank, sequence,
    error_code, from_number, to_number, message_type, units, total_amount)."""

    name: str
    kind: Kind
    value: sql.Composable


def _column(name: str, kind: Kind, value: str | None = None) -> Column:
    return Column(name, kind, sql.Identifier(value or name))


#: The winning event's status, error code and sort key. Always used together: merging two
#: partial folds compares the sort keys.
WINNER_COLUMNS: Final = (
    _column("status", Kind.WINNER),
    _column("error_code", Kind.WINNER),
    _column("status_rank", Kind.WINNER),
    _column("status_sequence", Kind.WINNER, "sequence"),
    _column("status_at", Kind.WINNER, "event_at"),
    _column("status_position", Kind.WINNER, "position"),
)
FIRST_EVENT_AT: Final = _column("first_event_at", Kind.MIN, "event_at")
LAST_EVENT_AT: Final = _column("last_event_at", Kind.MAX, "event_at")
FROM_NUMBER: Final = _column("from_number", Kind.MAX)
TO_NUMBER: Final = _column("to_number", Kind.MAX)
MESSAGE_TYPE: Final = _column("message_type", Kind.MAX)
UNITS: Final = _column("units", Kind.MAX)
TOTAL_AMOUNT: Final = _column("total_amount", Kind.MAX)
EVENT_COUNT: Final = Column("event_count", Kind.COUNT, sql.SQL("*"))  # count(*)
LAST_POSITION: Final = _column("last_position", Kind.MAX, "position")


def milestone(status: str) -> Column:
    """``<status>_at``: the earliest event time reported with ``status``."""
    return Column(
        f"{status}_at",
        Kind.MIN,
        sql.SQL("CASE WHEN status = {} THEN event_at END").format(sql.Literal(status)),
    )


# Payload fields the fold reads. ``apply`` ships only these to the server.
_SEQUENCE = "Sequence"
_ERROR_CODE = "ErrorCode"
_FROM = "From"
_TO = "To"
_TYPE = "Type"
_UNITS = "Units"
_TOTAL_AMOUNT = "TotalAmount"
PAYLOAD_FIELDS: Final = (_SEQUENCE, _ERROR_CODE, _FROM, _TO, _TYPE, _UNITS, _TOTAL_AMOUNT)


def _field(key: str) -> sql.Composable:
    """A payload field as text, blank as null. A key sent several times is stored as a JSON
    array and reads as the array's text, which fails the number checks below (null)."""
    return sql.SQL("NULLIF(payload ->> {}, '')").format(sql.Literal(key))


# The inner query reads each payload field once and maps event types to statuses; OFFSET 0
# keeps the planner from inlining it into the outer one, which would read the payload again
# for every reference below (measured: a third slower over a million events). The outer
# query ranks and parses. A check guards every cast, so a malformed value reads as null
# instead of failing the batch; the checks avoid regular expressions, which cost more than
# the rest of the fold. '%%' is psycopg's escape for '%' (and means the same to LIKE). Text
# that is only compared is collated "C": the values are codes and numbers, and "C" compares
# several times faster than a linguistic collation.
_NORMALISED = sql.SQL(
    """
SELECT position, message_uuid, event_at, status,
       CASE coalesce(status, '') WHEN '' THEN {no_rank} {ranks} ELSE {unknown_rank} END
           AS status_rank,
       CASE WHEN length(sequence) <= 18 AND ltrim(sequence, '0123456789') = ''
            THEN sequence::bigint END AS sequence,
       CASE WHEN error_code NOT IN ('0', '000') THEN error_code END AS error_code,
       from_number, to_number, message_type,
       CASE WHEN length(units) <= 9 AND ltrim(units, '0123456789') = ''
            THEN units::integer END AS units,
       CASE WHEN ltrim(total_amount, '0123456789.') = '' AND total_amount <> '.'
                 AND total_amount NOT LIKE '%%.%%.%%'
            THEN trim_scale(total_amount::numeric) END AS total_amount
FROM (
    SELECT e.position, e.message_uuid, coalesce(e.occurred_at, e.recorded_at) AS event_at,
           NULLIF(CASE e.event_type WHEN {reported} THEN e.status
                                    WHEN {submitted} THEN 'submitted'
                                    WHEN {expired} THEN 'expired' END, '') COLLATE "C" AS status,
           {sequence} AS sequence, {error_code} COLLATE "C" AS error_code,
           {from_number} COLLATE "C" AS from_number, {to_number} COLLATE "C" AS to_number,
           {message_type} COLLATE "C" AS message_type, {units} AS units,
           {total_amount} AS total_amount
    FROM {source} AS e
    OFFSET 0
) AS e
"""
)

# Winner first. Sequences are never negative, so the -1 that stands for a missing one in
# _winner_key ranks it lowest, as NULLS LAST does in this descending sort.
_WINNER_ORDER = sql.SQL("status_rank DESC, sequence DESC NULLS LAST, event_at DESC, position DESC")
_WINNER_KEY = ("status_rank", "status_sequence", "status_at", "status_position")


def _normalised(source: sql.Composable) -> sql.Composable:
    return _NORMALISED.format(
        no_rank=sql.Literal(NO_STATUS_RANK),
        unknown_rank=sql.Literal(UNKNOWN_STATUS_RANK),
        ranks=sql.SQL(" ").join(
            sql.SQL("WHEN {} THEN {}").format(sql.Literal(status), sql.Literal(rank))
            for status, rank in STATUS_RANKS.items()
        ),
        reported=sql.Literal(STATUS_REPORTED),
        submitted=sql.Literal(MESSAGE_SUBMITTED),
        expired=sql.Literal(MESSAGE_EXPIRED),
        sequence=_field(_SEQUENCE),
        error_code=_field(_ERROR_CODE),
        from_number=_field(_FROM),
        to_number=_field(_TO),
        message_type=_field(_TYPE),
        units=_field(_UNITS),
        total_amount=_field(_TOTAL_AMOUNT),
        source=source,
    )


def fold(source: sql.Composable, columns: Sequence[Column]) -> sql.Composable:
    """``SELECT message_uuid, <columns>``: one row per message of ``source``, folded.

    One sort serves both the winner (the first row of each message in winner order) and the
    aggregates (window aggregates over the whole message, on the same sort).
    """
    items = [
        sql.SQL("{} AS {}").format(
            column.value
            if column.kind is Kind.WINNER
            else sql.SQL("{}({}) OVER message").format(sql.SQL(column.kind.value), column.value),
            sql.Identifier(column.name),
        )
        for column in columns
    ]
    return sql.SQL(
        "SELECT DISTINCT ON (message_uuid) message_uuid, {items} FROM ({events}) AS ev"
        " WINDOW message AS (PARTITION BY message_uuid ORDER BY {order}"
        " ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)"
        " ORDER BY message_uuid, {order}"
    ).format(items=sql.SQL(", ").join(items), events=_normalised(source), order=_WINNER_ORDER)


def _winner_key(alias: str) -> sql.Composable:
    return sql.SQL("({}, coalesce({}, -1), {}, {})").format(
        *(sql.Identifier(alias, name) for name in _WINNER_KEY)
    )


def merge(columns: Sequence[Column], current: str) -> sql.Composable:
    """``ON CONFLICT … DO UPDATE SET`` assignments merging ``excluded`` (a batch's fold) into
    the stored row aliased ``current``."""
    newer = sql.SQL("{} > {}").format(_winner_key("excluded"), _winner_key(current))
    assignments = []
    for column in columns:
        mine, theirs = sql.Identifier(current, column.name), sql.Identifier("excluded", column.name)
        if column.kind is Kind.WINNER:
            value = sql.SQL("CASE WHEN {} THEN {} ELSE {} END").format(newer, theirs, mine)
        elif column.kind is Kind.COUNT:
            value = sql.SQL("{} + {}").format(mine, theirs)
        else:
            function = "least" if column.kind is Kind.MIN else "greatest"
            value = sql.SQL("{}({}, {})").format(sql.SQL(function), mine, theirs)
        assignments.append(sql.SQL("{} = {}").format(sql.Identifier(column.name), value))
    return sql.SQL(", ").join(assignments)


def column_list(columns: Sequence[Column]) -> sql.Composable:
    """``message_uuid, <columns>``, the insert list matching :func:`fold`."""
    return sql.SQL(", ").join(
        [sql.Identifier("message_uuid"), *(sql.Identifier(c.name) for c in columns)]
    )


@contextlib.asynccontextmanager
async def bulk_load(
    conn: psycopg.AsyncConnection[Any], tables: Sequence[str]
) -> AsyncIterator[None]:
    """A transaction tuned for filling empty ``tables`` with a few big statements.

    Inside it: no JIT (compiling the fold costs more than it saves, ~0.8 s), enough memory to
    sort the ledger in RAM, and the tables' secondary indexes dropped, then recreated as they
    were when the block ends: building an index once is several times cheaper than updating
    it row by row (for message_status over 250k messages, about 1 s against 3.5 s).
    """
    async with conn.transaction():
        await conn.execute(
            "SELECT set_config('jit', 'off', true), set_config('work_mem', %s, true)",
            (BUILD_WORK_MEM,),
        )
        cursor = await conn.execute(
            "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i"
            " WHERE i.indrelid = ANY(%s::regclass[]) AND NOT i.indisunique",
            ([sql.Identifier(table).as_string(conn) for table in tables],),
        )
        indexes = await cursor.fetchall()
        for name, _ in indexes:
            # Both come from the catalogue: name is a quoted regclass, definition is DDL.
            await conn.execute(sql.SQL("DROP INDEX {}").format(sql.SQL(name)))
        yield
        for _, definition in indexes:
            await conn.execute(sql.SQL(definition))


def ledger_upto(upto: Checkpoint) -> tuple[sql.Composable, dict[str, Any]]:
    """Source: every event at or before ``upto`` in fence order, and its parameters."""
    return (
        sql.SQL(
            "(SELECT position, message_uuid, event_type, status, occurred_at, recorded_at,"
            " payload FROM events"
            " WHERE (transaction_id, position) <= (%(upto_xid)s::text::xid8, %(upto_position)s))"
        ),
        {"upto_xid": str(upto.transaction_id), "upto_position": upto.position},
    )


def _dumps(obj: Any) -> str:
    return msgspec.json.encode(obj).decode()


def batch(events: Sequence[RecordedEvent]) -> tuple[sql.Composable, dict[str, Any]]:
    """Source: a batch of events passed as arrays (one row each), and its parameters.

    Arrays go in binary (``%b``): several times faster to send and to read than text. Only
    the payload fields the fold reads are sent.
    """
    return (
        sql.SQL(
            "(SELECT position, message_uuid, event_type, status, occurred_at, recorded_at,"
            " payload FROM unnest(%(positions)b::bigint[],"
            " %(message_uuids)b::uuid[], %(event_types)b::text[], %(statuses)b::text[],"
            " %(occurred)b::timestamptz[], %(recorded)b::timestamptz[], %(payloads)b::jsonb[])"
            " AS e(position, message_uuid, event_type, status, occurred_at, recorded_at, payload))"
        ),
        {
            "positions": [e.position for e in events],
            "message_uuids": [e.message_uuid for e in events],
            "event_types": [e.event_type for e in events],
            "statuses": [e.status for e in events],
            "occurred": [e.occurred_at for e in events],
            "recorded": [e.recorded_at for e in events],
            "payloads": [
                Jsonb({k: e.payload[k] for k in PAYLOAD_FIELDS if k in e.payload}, dumps=_dumps)
                for e in events
            ],
        },
    )


def latency_bucket(first_event_at: sql.Composable, delivered_at: sql.Composable) -> sql.Composable:
    """The time-to-deliver bucket: an index into :data:`LATENCY_BOUNDS`, or
    :data:`NOT_DELIVERED` when ``delivered_at`` is null."""
    return sql.SQL(
        "coalesce(width_bucket(extract(epoch FROM {} - {})::float8, {}::float8[]), {})"
    ).format(
        delivered_at, first_event_at, sql.Literal(list(LATENCY_BOUNDS)), sql.Literal(NOT_DELIVERED)
    )
