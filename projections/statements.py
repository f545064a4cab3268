"""The statements that fold events into views: one statement per batch, composed once.

Each wraps projectors' folds between a choice of events (the ``batch`` relation, and its
fold, :data:`projections.fold.FOLDED`) and what follows from it:

* :attr:`Statements.next` — the live path: the next settled events after the stored
  checkpoint, behind the transaction-id fence and in fence order, folded and the checkpoint
  moved, all in one statement (one round trip, its own transaction). The checkpoint row is
  locked first, so a concurrent applier or replay's swap waits its turn, and nothing
  happens unless the stored version is this projector's. It runs as
  :func:`live_statement`, its parameters written in, so that it is planned once per
  connection.
* :attr:`Statements.after` — the same after a checkpoint the caller holds (replay's
  catch-up of the tables it is building), moving nothing.
* :attr:`Statements.positions` — exactly the given events (isolating a failing event).
* :attr:`BuildStatements.chunk` — one chunk of a rebuild of one or more views, folded with
  their :meth:`~projections.base.Projector.build`: the events in a range of positions that
  lie at or before a fixed checkpoint. :attr:`BuildStatements.positions` is the same over
  given events, to isolate one that fails.

Each live statement returns one row: the events in ``batch``, and the last one's transaction
id and position in fence order; :attr:`Statements.next` adds the stored version and
checkpoint.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgspec
import psycopg
from psycopg import sql

from ledger.store import settled
from projections import fold
from projections.base import Projector

_COLUMNS: Final = sql.SQL(
    "e.position, e.transaction_id, e.message_uuid, e.event_type, e.status, e.occurred_at,"
    " e.recorded_at, e.payload"
)
#: The next settled events after the checkpoint ``cp``: the transaction-id fence, ordered by
#: the (transaction_id, position) index.
_FENCED_AFTER_CP: Final = sql.SQL(
    "SELECT {columns} FROM cp CROSS JOIN LATERAL ("
    " SELECT * FROM events"
    " WHERE (transaction_id, position) > (cp.transaction_id, cp.position)"
    f" AND {settled()}"
    " ORDER BY transaction_id, position LIMIT %(limit)s) AS e"
    " WHERE cp.version = %(version)s"
).format(columns=_COLUMNS)
_AT_POSITIONS: Final = sql.SQL(
    "SELECT {columns} FROM events AS e WHERE e.position = ANY(%(positions)s::bigint[])"
).format(columns=_COLUMNS)
_IN_CHUNK: Final = sql.SQL(
    "SELECT {columns} FROM events AS e WHERE e.position >= %(low)s AND e.position < %(high)s"
    " AND (e.transaction_id, e.position) <= (%(upto_xid)s::text::xid8, %(upto_position)s)"
).format(columns=_COLUMNS)

_LOCKED_CHECKPOINT: Final = sql.SQL(
    "cp AS (SELECT transaction_id, position, version FROM projection_checkpoints"
    " WHERE name = %(name)s FOR UPDATE)"
)
_GIVEN_CHECKPOINT: Final = sql.SQL(
    "cp AS (SELECT %(after_xid)s::text::xid8 AS transaction_id,"
    " %(after_position)s::bigint AS position, %(version)s::integer AS version)"
)
_ADVANCED: Final = sql.SQL(
    "advanced AS (UPDATE projection_checkpoints AS c SET transaction_id = last.transaction_id,"
    " position = last.position, updated_at = now() FROM last WHERE c.name = %(name)s)"
)
_LAST: Final = sql.SQL(
    "last AS (SELECT transaction_id, position FROM batch"
    " ORDER BY transaction_id DESC, position DESC LIMIT 1)"
)
_COUNTS: Final = sql.SQL(
    "SELECT (SELECT count(*) FROM batch), (SELECT transaction_id::text::bigint FROM last),"
    " (SELECT position FROM last)"
)
_FOLDED_EVENTS: Final = sql.SQL("SELECT (SELECT coalesce(sum({}), 0) FROM {})").format(
    sql.Identifier(fold.EVENT_COUNT.name), sql.Identifier(fold.FOLDED)
)
_STORED: Final = sql.SQL(
    ", (SELECT version FROM cp), (SELECT transaction_id::text::bigint FROM cp),"
    " (SELECT position FROM cp)"
)


class Statements(msgspec.Struct, frozen=True):
    """A projector's live statements, rendered once (see the module docstring)."""

    next: str
    after: str
    positions: str


class BuildStatements(msgspec.Struct, frozen=True):
    """The statements rebuilding a group of views in one pass over the ledger."""

    chunk: str
    positions: str


@functools.cache
def statements_for(projector: Projector) -> Statements:
    """The live statements of ``projector`` (composed and rendered once per projector)."""
    apply = [projector.apply()]
    reads = [projector.reads]
    return Statements(
        next=_statement(
            _FENCED_AFTER_CP,
            reads,
            apply,
            head=[_LOCKED_CHECKPOINT],
            tail=[_LAST, _ADVANCED],
            result=_COUNTS + _STORED,
        ),
        after=_statement(_FENCED_AFTER_CP, reads, apply, head=[_GIVEN_CHECKPOINT], tail=[_LAST]),
        positions=_statement(_AT_POSITIONS, reads, apply, tail=[_LAST]),
    )


@functools.cache
def build_statements_for(projectors: tuple[Projector, ...]) -> BuildStatements:
    """The statements building every view of ``projectors`` from one read of each event.

    The views share one fold of each event, with the columns and fields any of them reads.
    They return the events folded, summed from the fold's per-message counts: ``batch`` is
    read once, by the fold, instead of being kept for a count of its own.
    """
    builds = [projector.build() for projector in projectors]
    reads = [projector.reads for projector in projectors]
    return BuildStatements(
        chunk=_statement(_IN_CHUNK, reads, builds, result=_FOLDED_EVENTS),
        positions=_statement(_AT_POSITIONS, reads, builds, result=_FOLDED_EVENTS),
    )


def live_statement(
    conn: psycopg.AsyncConnection[Any], projector: Projector, batch_size: int
) -> str:
    """:attr:`Statements.next` with its parameters written in as literals (by psycopg's
    client-side binding, for ``conn``), so that it has none left and each connection plans
    it once, when psycopg prepares it. With parameters, PostgreSQL plans every execution
    anew (a generic plan, blind to the batch size and the version, runs several times
    slower), which cost a live view up to 6 ms a batch, more than folding a small batch
    does."""
    values = parameters(
        [projector], name=projector.name, version=projector.version, limit=batch_size
    )
    return psycopg.AsyncClientCursor(conn).mogrify(statements_for(projector).next, values)


def parameters(projectors: Sequence[Projector], **own: Any) -> Mapping[str, Any]:
    """The parameters of a statement of ``projectors``: theirs, and the statement's ``own``."""
    merged: dict[str, Any] = {}
    for projector in projectors:
        merged.update(projector.parameters())
    merged.update(own)
    return merged


def _statement(
    batch: sql.Composable,
    reads: Sequence[fold.Reads],
    folds: Sequence[sql.Composable],
    *,
    head: Sequence[sql.Composable] = (),
    tail: Sequence[sql.Composable] = (),
    result: sql.Composable = _COUNTS,
) -> str:
    ctes = [
        *head,
        sql.SQL("batch AS ({})").format(batch),
        sql.SQL("{} AS ({})").format(
            sql.Identifier(fold.FOLDED), fold.folded_for(sql.Identifier("batch"), reads)
        ),
        *folds,
        *tail,
    ]
    statement = sql.SQL("WITH {} {}").format(sql.SQL(", ").join(ctes), result)
    # Quoted without a connection: the text is the same for every connection, and psycopg
    # prepares it once a connection has run it a few times.
    return statement.as_string(None)
