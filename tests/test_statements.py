"""The fold statements: one read of each event for every view a statement folds."""

from __future__ import annotations

import pytest
from psycopg import sql

from projections import fold
from projections.registry import PROJECTORS
from projections.statements import build_statements_for, statements_for


def test_a_rebuild_of_every_view_reads_each_payload_field_once() -> None:
    chunk = build_statements_for(PROJECTORS).chunk

    for key in (*fold.PAYLOAD_FIELDS, "MCC", "MNC", "PowerpackUUID"):
        assert chunk.count(f"payload ->> '{key}'") == 1, key


def test_a_view_folds_only_the_columns_it_reads() -> None:
    daily = next(p for p in PROJECTORS if p.name == "daily_delivery_metrics")

    statement = statements_for(daily).next

    assert "'MCC'" not in statement
    assert '"parent_message_uuid"' not in statement


def test_views_defining_a_fold_column_differently_are_refused() -> None:
    units = fold.Reads((fold.UNITS,))
    other = fold.Reads((fold.UNITS._replace(value=sql.Identifier("total_amount")),))

    with pytest.raises(ValueError, match="'units' differently"):
        fold.folded_for(sql.Identifier("batch"), [units, other])
