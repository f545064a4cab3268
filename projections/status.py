"""The ``message_status`` view: one row per message, its current status and milestones."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import psycopg
from psycopg import sql

from ledger.events import RecordedEvent
from ledger.store import Checkpoint
from projections import fold

TABLE: Final = "message_status"

#: Every folded column of the view (see :mod:`projections.fold` for how each one folds).
COLUMNS: Final = (
    *fold.WINNER_COLUMNS,
    fold.FROM_NUMBER,
    fold.TO_NUMBER,
    fold.MESSAGE_TYPE,
    fold.UNITS,
    fold.TOTAL_AMOUNT,
    fold.FIRST_EVENT_AT,
    fold.LAST_EVENT_AT,
    *(fold.milestone(status) for status in fold.STATUS_RANKS),
    fold.EVENT_COUNT,
    fold.LAST_POSITION,
)


class MessageStatusProjector:
    """Folds each message's events into its current status, milestones and charges.

    The status and error code come from the winning event (precedence, then Sequence, event
    time, position); the sender, recipient, type, units and amount are the greatest values
    reported, so that the row is the same whatever order the events arrive in.
    """

    name = "message_status"
    version = 1
    tables: tuple[str, ...] = (TABLE,)

    async def build(
        self, conn: psycopg.AsyncConnection[Any], *, suffix: str, upto: Checkpoint
    ) -> None:
        """Fill the empty ``message_status<suffix>`` from every event at or before ``upto``."""
        source, params = fold.ledger_upto(upto)
        async with fold.bulk_load(conn, [TABLE + suffix]):
            await conn.execute(self._insert(suffix, source), params)

    async def apply(
        self,
        conn: psycopg.AsyncConnection[Any],
        events: Sequence[RecordedEvent],
        *,
        suffix: str = "",
    ) -> None:
        """Fold a batch into ``message_status<suffix>`` with one upsert."""
        if not events:
            return
        source, params = fold.batch(events)
        statement = self._insert(suffix, source) + sql.SQL(
            " ON CONFLICT (message_uuid) DO UPDATE SET {}"
        ).format(fold.merge(COLUMNS, "cur"))
        await conn.execute(statement, params)

    @staticmethod
    def _insert(suffix: str, source: sql.Composable) -> sql.Composed:
        return sql.SQL("INSERT INTO {} AS cur ({}) {}").format(
            sql.Identifier(TABLE + suffix), fold.column_list(COLUMNS), fold.fold(source, COLUMNS)
        )
