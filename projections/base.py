"""The projector interface: what a read view must provide to be kept current and rebuilt."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import psycopg

from ledger.events import RecordedEvent
from ledger.store import Checkpoint


class Projector(Protocol):
    """A read view folded from the ledger.

    Adding a view means a migration creating its tables and one module with a class like
    this, listed in ``projections.registry.PROJECTORS``. Replay creates empty copies named
    ``<table><suffix>`` (``CREATE TABLE … (LIKE <table> INCLUDING ALL)``), fills them with
    ``build`` and ``apply``, then swaps them in for the live tables.
    """

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
        """The tables this projector owns, live names."""

    async def build(
        self, conn: psycopg.AsyncConnection[Any], *, suffix: str, upto: Checkpoint
    ) -> None:
        """Fill the empty ``<table><suffix>`` copies from every event at or before ``upto``
        (in fence order) with set-based SQL."""

    async def apply(
        self,
        conn: psycopg.AsyncConnection[Any],
        events: Sequence[RecordedEvent],
        *,
        suffix: str = "",
    ) -> None:
        """Fold a batch of events into ``<table><suffix>`` with one statement per table.

        The runner applies each event exactly once (the checkpoint commits with the view), in
        fence order, which is not position order: the fold must be order-independent.
        """
