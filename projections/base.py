"""The projector interface: what a read view must provide to be kept current and rebuilt.

A projector is SQL, not Python: its tables' DDL, and the fold that brings a batch of events
into them, written as data-modifying common table expressions over two relations:

* ``batch``: one row per event, with the ledger's columns ``position``, ``transaction_id``,
  ``message_uuid``, ``event_type``, ``status``, ``occurred_at``, ``recorded_at``, ``payload``;
* ``folded`` (:data:`projections.fold.FOLDED`): the status fold of ``batch``, one row per
  message with the columns its views read (:attr:`Projector.reads`), computed once however
  many views use it.

:mod:`projections.statements` wraps the folds in the statements that choose the batch (the
next fenced range, a chunk of a rebuild, given positions) and move the checkpoint, so that a
batch is one statement and no event travels to Python and back.

Table names are unqualified: the caller puts the target schema first on the search path,
the live one (``public``) or replay's shadow (``ledger_shadow``), and ``events`` resolves to
the ledger in ``public`` either way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeAlias

from psycopg import sql

from projections.fold import Reads

#: A statement a projector hands over whole (DDL, a finishing statement).
DDL: TypeAlias = sql.SQL | sql.Composed


class Projector(Protocol):
    """A read view folded from the ledger.

    Adding a view means one module with a class like this, listed in
    ``projections.registry.build_projectors``. Its CTE names must not be ``cp``, ``batch``,
    ``folded``, ``last`` or ``advanced`` (the statements' own): prefix them with the view's
    name, as its parameters' names, since several views may share one statement.
    """

    def __hash__(self) -> int:
        """Projectors key the cache of their composed statements (identity will do)."""

    # Read-only properties, so that a class attribute, an instance attribute or a property
    # all satisfy the protocol (a plain annotation would demand a mutable attribute).
    @property
    def name(self) -> str:
        """Stable name, used for the checkpoint row, the lock and ``ledger replay --projection``."""

    @property
    def version(self) -> int:
        """Bump when the view's shape or fold changes: a stored view of another version is
        rebuilt."""

    @property
    def tables(self) -> tuple[str, ...]:
        """The tables this projector owns."""

    @property
    def busy_interval(self) -> float:
        """Seconds a busy view lets the next batch gather (how stale it may be while
        callbacks keep coming). A batch costs a view's statement a fixed few milliseconds
        whatever its size: a view read by analysts gathers longer than one read by support.
        An idle view applies a new event at once."""

    @property
    def reads(self) -> Reads:
        """The columns of ``folded`` its SQL reads, with the fields its own columns fold: a
        statement folds each event once, with what all of its views read."""

    def schema(self) -> Sequence[DDL]:
        """``CREATE TABLE`` statements for its tables, with the primary keys the build's
        upserts need and no other index, then any statements filling tables of fixed data
        the fold reads (lookups, whose version is part of the view's). A table that
        :meth:`finish_build` fills whole may get its key with :meth:`indexes`."""

    def indexes(self) -> Sequence[DDL]:
        """``CREATE INDEX`` (or ``ADD PRIMARY KEY``) statements, run once a rebuild has
        filled and finished the tables (building an index once is several times cheaper
        than maintaining it row by row)."""

    def apply(self) -> sql.Composable:
        """CTEs folding ``batch`` (or ``folded``) into the tables. The runner applies each
        event exactly once, in fence order, which is not position order: the fold must be
        order-independent."""

    def build(self) -> sql.Composable:
        """CTEs folding one chunk of a rebuild (``batch``) into the tables; may leave derived
        tables to :meth:`finish_build`."""

    def finish_build(self) -> Sequence[DDL]:
        """Statements run once, after every chunk of a rebuild and before its catch-up."""

    def derived(self) -> Sequence[DDL]:
        """Statements recomputing state derived from the view's finished tables (not folded
        from events), run by a rebuild in the transaction that swaps the view in, after its
        last catch-up: they see exactly the events the swapped-in view holds."""

    def parameters(self) -> Mapping[str, Any]:
        """Named parameters the projector's SQL uses (besides the statements' own)."""
