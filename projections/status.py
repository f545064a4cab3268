"""The ``message_status`` view: one row per message, its current status and milestones."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from psycopg import sql

from projections import fold
from projections.base import DDL

TABLE: Final = "message_status"

#: Index name → its columns (and method, predicate). Keyset search, newest first, with and
#: without the two selective filters. from_number has no index of its own: senders are few,
#: so the time index with a filter serves it, and every index is paid for on each status
#: change.
_INDEXES: Final = {
    "message_status_recent": "(first_event_at, message_uuid)",
    "message_status_by_status": "(status, first_event_at, message_uuid)",
    "message_status_by_recipient": "(to_number, first_event_at, message_uuid)",
    # Few rows have either: the indexes hold only those.
    "message_status_by_parent": "(parent_message_uuid) WHERE parent_message_uuid IS NOT NULL",
    "message_status_by_tags": "USING gin (tags jsonb_path_ops) WHERE tags IS NOT NULL",
}

# Every column of the fold, merged into the stored row: the status and error code from the
# winning event, milestones and event times as the earliest / latest, the sender, recipient,
# type, units and amount as the greatest reported (see projections.fold).
_UPSERT: Final = sql.SQL(
    "status_saved AS (INSERT INTO {table} AS cur ({columns}) SELECT {columns} FROM {folded}"
    " ON CONFLICT (message_uuid) DO UPDATE SET {merge})"
).format(
    table=sql.Identifier(TABLE),
    columns=fold.column_list(fold.COLUMNS),
    folded=sql.Identifier(fold.FOLDED),
    merge=fold.merge(fold.COLUMNS, "cur"),
)


class MessageStatusProjector:
    """Folds each message's events into its current status, milestones and charges.

    The status and error code come from the winning event (precedence, then Sequence, event
    time, position); the sender, recipient, type, units and amount are the greatest values
    reported, so that the row is the same whatever order the events arrive in.
    """

    name = "message_status"
    # 2: folded in PostgreSQL from the ledger itself; the view is built from the fold's DDL.
    # 3: sends: tags, send request, resend links, multi-part parents; rejected, reconciled.
    version = 3
    tables: tuple[str, ...] = (TABLE,)
    #: Every column of the fold.
    reads = fold.Reads(fold.COLUMNS)
    #: Support and the lag target read it: current within a few tens of milliseconds.
    busy_interval = 0.02

    def schema(self) -> Sequence[DDL]:
        """The table: the message's UUID and every column of the fold."""
        return [
            sql.SQL("CREATE TABLE {} ({})").format(
                sql.Identifier(TABLE), fold.column_definitions(fold.COLUMNS)
            )
        ]

    def indexes(self) -> Sequence[DDL]:
        """The search indexes (see ``_INDEXES``)."""
        return [
            sql.SQL("CREATE INDEX {} ON {} {}").format(
                sql.Identifier(name),
                sql.Identifier(TABLE),
                sql.SQL(columns),
            )
            for name, columns in _INDEXES.items()
        ]

    def apply(self) -> sql.Composable:
        """One upsert of the batch's fold, merged into the stored rows."""
        return _UPSERT

    def build(self) -> sql.Composable:
        """The same upsert: a message's events may straddle two chunks of a rebuild."""
        return _UPSERT

    def finish_build(self) -> Sequence[DDL]:
        """Nothing: the chunks built the whole table."""
        return ()

    def derived(self) -> Sequence[DDL]:
        """Nothing: every column is folded from the events."""
        return ()

    def parameters(self) -> Mapping[str, Any]:
        """None."""
        return {}
