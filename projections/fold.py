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

The fold is rendered as SQL over a *source*, a relation of events with the ledger's
columns: the ``batch`` that the statements of :mod:`projections.statements` select straight
from ``events`` (the next fenced batch, a chunk of a rebuild, chosen positions). They expose
it to every projector as :data:`FOLDED`, computed once per statement however many views read
it, so a view built from scratch and one kept current batch by batch are identical, and no
event ever travels to Python and back.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from types import MappingProxyType
from typing import Final, NamedTuple

from psycopg import sql

from ledger.events import (
    MESSAGE_EXPIRED,
    MESSAGE_RECONCILED,
    MESSAGE_REJECTED,
    MESSAGE_SUBMITTED,
    RESEND_SCHEDULED,
    SEND_REQUEST_EVENTS,
    SEND_REQUEST_KEY,
    STATUS_REPORTED,
    TAG_PREFIX,
)

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


class Kind(enum.Enum):
    """How a column folds a message's events (see the module docstring)."""

    WINNER = "winner"
    MIN = "min"
    MAX = "max"
    COUNT = "count"


class Column(NamedTuple):
    """A view column: its name, how it folds, its per-event value over the normalised events
    (columns: position, message_uuid, event_at, status, status_rank, sequence, error_code,
    from_number, to_number, message_type, units, total_amount, parent_message_uuid,
    send_request_id, resent_from, resent_as, tags), and its SQL type. ``aggregate`` names
    the aggregate function where the kind's own does not exist for the type (``max`` of
    jsonb: see migration 006)."""

    name: str
    kind: Kind
    value: sql.Composable
    type: sql.Composable
    aggregate: str | None = None


# Statuses, codes and numbers are compared (max(), filters, index order) but never sorted
# for people: "C" compares bytes, several times faster than a linguistic collation.
_CODE = 'text COLLATE "C"'


def _column(name: str, kind: Kind, type: str, value: str | None = None) -> Column:
    return Column(name, kind, sql.Identifier(value or name), sql.SQL(type))


#: The winning event's status, error code and sort key. Always used together: merging two
#: partial folds compares the sort keys.
WINNER_COLUMNS: Final = (
    _column("status", Kind.WINNER, _CODE),
    _column("error_code", Kind.WINNER, _CODE),
    _column("status_rank", Kind.WINNER, "smallint NOT NULL"),
    _column("status_sequence", Kind.WINNER, "bigint", "sequence"),
    _column("status_at", Kind.WINNER, "timestamptz NOT NULL", "event_at"),
    _column("status_position", Kind.WINNER, "bigint NOT NULL", "position"),
)
FIRST_EVENT_AT: Final = _column("first_event_at", Kind.MIN, "timestamptz NOT NULL", "event_at")
LAST_EVENT_AT: Final = _column("last_event_at", Kind.MAX, "timestamptz NOT NULL", "event_at")
FROM_NUMBER: Final = _column("from_number", Kind.MAX, _CODE)
TO_NUMBER: Final = _column("to_number", Kind.MAX, _CODE)
MESSAGE_TYPE: Final = _column("message_type", Kind.MAX, _CODE)
UNITS: Final = _column("units", Kind.MAX, "integer")
TOTAL_AMOUNT: Final = _column("total_amount", Kind.MAX, "numeric")
EVENT_COUNT: Final = Column(
    "event_count", Kind.COUNT, sql.SQL("*"), sql.SQL("integer NOT NULL")
)  # count(*)
LAST_POSITION: Final = _column("last_position", Kind.MAX, "bigint NOT NULL", "position")
#: On a part of a multi-part message: its parent (``ParentMessageUUID`` when it is not the
#: part's own UUID). The parent's reported status is the worst of its parts'
#: (:func:`projections.queries.worst_status`).
PARENT_MESSAGE_UUID: Final = _column("parent_message_uuid", Kind.MAX, _CODE)
#: From the ``submitted`` (or ``rejected``) event: the send request, and the message this one
#: is a resend of; from ``resend_scheduled``: the message this one was resent as.
SEND_REQUEST_ID: Final = _column("send_request_id", Kind.MAX, _CODE)
RESENT_FROM: Final = _column("resent_from", Kind.MAX, _CODE)
RESENT_AS: Final = _column("resent_as", Kind.MAX, _CODE)
#: The send request's tags, name → value (one tag set per message: its ``submitted`` event's).
TAGS: Final = Column("tags", Kind.MAX, sql.Identifier("tags"), sql.SQL("jsonb"), "ledger_max")


def milestone(status: str) -> Column:
    """``<status>_at``: the earliest event time reported with ``status``."""
    return Column(
        f"{status}_at",
        Kind.MIN,
        sql.SQL("CASE WHEN status = {} THEN event_at END").format(sql.Literal(status)),
        sql.SQL("timestamptz"),
    )


#: Every common column of a message's fold: the status view stores them all, the other views
#: read a few (:class:`Reads`).
COLUMNS: Final = (
    *WINNER_COLUMNS,
    FROM_NUMBER,
    TO_NUMBER,
    MESSAGE_TYPE,
    UNITS,
    TOTAL_AMOUNT,
    FIRST_EVENT_AT,
    LAST_EVENT_AT,
    *(milestone(status) for status in STATUS_RANKS),
    EVENT_COUNT,
    LAST_POSITION,
    PARENT_MESSAGE_UUID,
    SEND_REQUEST_ID,
    RESENT_FROM,
    RESENT_AS,
    TAGS,
)

#: The name of the relation holding the batch's fold: one row per message of ``batch``, with
#: ``message_uuid`` and the columns its views read (:func:`folded_for`). The statements of
#: :mod:`projections.statements` define it beside ``batch``; a statement that folds several
#: views computes it once.
FOLDED: Final = "folded"


# Payload fields the fold reads.
_SEQUENCE = "Sequence"
_ERROR_CODE = "ErrorCode"
_FROM = "From"
_TO = "To"
_TYPE = "Type"
_UNITS = "Units"
_TOTAL_AMOUNT = "TotalAmount"
_PARENT = "ParentMessageUUID"
RESENT_FROM_KEY: Final = "ResentFrom"
RESENT_AS_KEY: Final = "ResentAs"
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
       from_number, to_number, message_type{extra_outer},
       CASE WHEN length(units) <= 9 AND ltrim(units, '0123456789') = ''
            THEN units::integer END AS units,
       CASE WHEN ltrim(total_amount, '0123456789.') = '' AND total_amount <> '.'
                 AND total_amount NOT LIKE '%%.%%.%%'
            THEN trim_scale(total_amount::numeric) END AS total_amount,
       CASE WHEN length(parent_message_uuid) = 36 THEN parent_message_uuid END
           AS parent_message_uuid,
       send_request_id, resent_from, resent_as, tags
FROM (
    SELECT e.position, e.message_uuid, coalesce(e.occurred_at, e.recorded_at) AS event_at,
           NULLIF(CASE e.event_type WHEN {reported} THEN e.status
                                    WHEN {submitted} THEN 'submitted'
                                    WHEN {rejected} THEN 'rejected'
                                    WHEN {reconciled} THEN e.status
                                    WHEN {expired} THEN 'expired' END, '') COLLATE "C" AS status,
           {sequence} AS sequence, {error_code} COLLATE "C" AS error_code,
           {from_number} COLLATE "C" AS from_number, {to_number} COLLATE "C" AS to_number,
           {message_type} COLLATE "C" AS message_type{extra_inner}, {units} AS units,
           {total_amount} AS total_amount,
           CASE WHEN e.event_type = {reported}
                THEN NULLIF(lower({parent}), e.message_uuid::text) END COLLATE "C"
               AS parent_message_uuid,
           CASE WHEN e.event_type IN ({submitted}, {rejected}) THEN {send_request} END
               COLLATE "C" AS send_request_id,
           CASE WHEN e.event_type = {submitted} THEN {resent_from} END COLLATE "C" AS resent_from,
           CASE WHEN e.event_type = {resend_scheduled} THEN {resent_as} END COLLATE "C"
               AS resent_as,
           CASE WHEN e.event_type IN ({submitted}, {rejected})
                THEN (SELECT jsonb_object_agg(substr(t.key, {tag_start}), t.value)
                      FROM jsonb_each(e.payload) AS t
                      WHERE starts_with(t.key, {tag_prefix}) AND jsonb_typeof(t.value) = 'string')
           END AS tags
    FROM {source} AS e
    -- A send request's own stream is no message: its events fold into no row.
    WHERE NOT (e.event_type = ANY({request_events}))
    OFFSET 0
) AS e
"""
)

# Winner first. Sequences are never negative, so the -1 that stands for a missing one in
# _winner_key ranks it lowest, as NULLS LAST does in this descending sort.
_WINNER_ORDER = sql.SQL("status_rank DESC, sequence DESC NULLS LAST, event_at DESC, position DESC")
_WINNER_KEY = ("status_rank", "status_sequence", "status_at", "status_position")


class Field(NamedTuple):
    """A per-event value a view's columns fold besides the common ones: its name, and its
    SQL over the event ``e`` (the ledger's columns, ``payload`` included)."""

    name: str
    value: sql.Composable


def payload_field(name: str, key: sql.Composable) -> Field:
    """A payload field (``key`` is its SQL, a literal or a parameter) as text, blank as null,
    collated "C"."""
    return Field(name, sql.SQL("NULLIF(e.payload ->> {}, '') COLLATE \"C\"").format(key))


def field_column(field: Field) -> Column:
    """A view column folding ``field`` as the greatest non-null value (for values that are
    the same on every event that has them, as a message's MCC)."""
    return Column(field.name, Kind.MAX, sql.Identifier(field.name), sql.SQL(_CODE))


def _normalised(source: sql.Composable, fields: Sequence[Field] = ()) -> sql.Composable:
    return _NORMALISED.format(
        extra_outer=sql.SQL("").join(
            sql.SQL(", {}").format(sql.Identifier(f.name)) for f in fields
        ),
        extra_inner=sql.SQL("").join(
            sql.SQL(", {} AS {}").format(f.value, sql.Identifier(f.name)) for f in fields
        ),
        no_rank=sql.Literal(NO_STATUS_RANK),
        unknown_rank=sql.Literal(UNKNOWN_STATUS_RANK),
        ranks=sql.SQL(" ").join(
            sql.SQL("WHEN {} THEN {}").format(sql.Literal(status), sql.Literal(rank))
            for status, rank in STATUS_RANKS.items()
        ),
        reported=sql.Literal(STATUS_REPORTED),
        submitted=sql.Literal(MESSAGE_SUBMITTED),
        rejected=sql.Literal(MESSAGE_REJECTED),
        reconciled=sql.Literal(MESSAGE_RECONCILED),
        resend_scheduled=sql.Literal(RESEND_SCHEDULED),
        expired=sql.Literal(MESSAGE_EXPIRED),
        request_events=sql.SQL("ARRAY[{}]").format(
            sql.SQL(", ").join(sql.Literal(t) for t in SEND_REQUEST_EVENTS)
        ),
        parent=_field(_PARENT),
        send_request=_field(SEND_REQUEST_KEY),
        resent_from=_field(RESENT_FROM_KEY),
        resent_as=_field(RESENT_AS_KEY),
        tag_prefix=sql.Literal(TAG_PREFIX),
        tag_start=sql.Literal(len(TAG_PREFIX) + 1),
        sequence=_field(_SEQUENCE),
        error_code=_field(_ERROR_CODE),
        from_number=_field(_FROM),
        to_number=_field(_TO),
        message_type=_field(_TYPE),
        units=_field(_UNITS),
        total_amount=_field(_TOTAL_AMOUNT),
        source=source,
    )


def folded(
    source: sql.Composable, columns: Sequence[Column] = COLUMNS, fields: Sequence[Field] = ()
) -> sql.Composable:
    """``SELECT message_uuid, <columns>``: one row per message of ``source``, folded.

    One sort serves both the winner (the first row of each message in winner order) and the
    aggregates (window aggregates over the whole message, on the same sort): ``columns``
    (which must include the winner's when any winner column is wanted) over the normalised
    events and ``fields``, read from each event in the same pass as the common ones.
    """
    items = [
        sql.SQL("{} AS {}").format(
            column.value
            if column.kind is Kind.WINNER
            else sql.SQL("{}({}) OVER message").format(
                sql.SQL(column.aggregate or column.kind.value), column.value
            ),
            sql.Identifier(column.name),
        )
        for column in columns
    ]
    return sql.SQL(
        "SELECT DISTINCT ON (message_uuid) message_uuid, {items} FROM ({events}) AS ev"
        " WINDOW message AS (PARTITION BY message_uuid ORDER BY {order}"
        " ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)"
        " ORDER BY message_uuid, {order}"
    ).format(
        items=sql.SQL(", ").join(items), events=_normalised(source, fields), order=_WINNER_ORDER
    )


class Reads(NamedTuple):
    """What a view's SQL reads of :data:`FOLDED`: fold columns, and the fields (besides the
    common ones) that its own columns fold (:func:`field_column`)."""

    columns: tuple[Column, ...]
    fields: tuple[Field, ...] = ()


def folded_for(source: sql.Composable, reads: Sequence[Reads]) -> sql.Composable:
    """:func:`folded` with every column and field that any of ``reads`` needs, read from each
    event once for all of them, and :data:`EVENT_COUNT` (the events a statement folded)."""
    columns: dict[str, Column] = {EVENT_COUNT.name: EVENT_COUNT}
    fields: dict[str, Field] = {}
    for view in reads:
        for column in view.columns:
            if columns.setdefault(column.name, column) != column:
                raise ValueError(f"two views define the fold column {column.name!r} differently")
        for field in view.fields:
            if fields.setdefault(field.name, field) != field:
                raise ValueError(f"two views define the field {field.name!r} differently")
    return folded(source, tuple(columns.values()), tuple(fields.values()))


def column_definitions(columns: Sequence[Column]) -> sql.Composable:
    """``message_uuid uuid PRIMARY KEY, <column> <type>, …``, for a per-message table."""
    return sql.SQL(", ").join(
        [
            sql.SQL("message_uuid uuid PRIMARY KEY"),
            *(sql.SQL("{} {}").format(sql.Identifier(c.name), c.type) for c in columns),
        ]
    )


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
    return identifiers(("message_uuid", *(c.name for c in columns)))


def identifiers(names: Sequence[str], alias: str | None = None) -> sql.Composable:
    """``a, b, …`` (``alias.a, alias.b, …`` with ``alias``): columns named in a statement."""
    return sql.SQL(", ").join(
        sql.Identifier(alias, name) if alias else sql.Identifier(name) for name in names
    )


def facts_upsert(
    table: str, columns: Sequence[Column], period: str, period_value: sql.Composable
) -> sql.Composed:
    """The batch's fold merged into the per-message ``table`` of ``columns``, with the
    ``period`` a message is counted under (its day or hour), ``period_value`` computed from
    the fold's row ``f``. The period follows the first event time: it changes only when the
    batch brings an earlier first event."""
    return sql.SQL(
        "INSERT INTO {table} AS cur ({columns}, {period})"
        " SELECT {columns}, {value} FROM {folded} AS f"
        " ON CONFLICT (message_uuid) DO UPDATE SET {merge}, {period} = CASE WHEN"
        " excluded.first_event_at < cur.first_event_at THEN excluded.{period}"
        " ELSE cur.{period} END"
    ).format(
        table=sql.Identifier(table),
        columns=column_list(columns),
        period=sql.Identifier(period),
        value=period_value,
        folded=sql.Identifier(FOLDED),
        merge=merge(columns, "cur"),
    )


def latency_bucket(
    first_event_at: sql.Composable,
    delivered_at: sql.Composable,
    bounds: Sequence[float] = LATENCY_BOUNDS,
) -> sql.Composable:
    """The time-to-deliver bucket: an index into ``bounds`` (seconds; the number of bounds
    at or below the latency), or :data:`NOT_DELIVERED` when ``delivered_at`` is null."""
    return sql.SQL(
        "coalesce(width_bucket(extract(epoch FROM {} - {})::float8, {}::float8[]), {})"
    ).format(delivered_at, first_event_at, sql.Literal(list(bounds)), sql.Literal(NOT_DELIVERED))
