"""Canonical documents: the bytes are RFC 8785 (JCS), checked against an independent library."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from ledger.canonical import jcs, timestamp

# Everything JSON can carry as text, astral characters and controls included (the ledger
# never holds lone surrogates: jsonb refuses them).
text = st.text(st.characters(codec="utf-8"), max_size=10)
scalars = st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | text
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=5),
    max_leaves=20,
)


@given(st.dictionaries(text, documents, max_size=6))
def test_any_document_serialises_exactly_as_rfc8785_prescribes(document: dict[str, Any]) -> None:
    assert jcs(document) == rfc8785.dumps(document)


@given(st.dictionaries(st.text(st.characters(codec="ascii"), max_size=10), documents, max_size=6))
def test_documents_with_ascii_keys_take_the_fast_path_and_agree(document: dict[str, Any]) -> None:
    assert jcs(document) == rfc8785.dumps(document)


def test_keys_are_ordered_by_utf16_code_units_not_code_points() -> None:
    # U+E000 sorts before U+1F600 by code point, after it in UTF-16 (0xD83D < 0xE000).
    document = {"\ue000": 1, "\U0001f600": 2}

    assert jcs(document) == '{"\U0001f600":2,"\ue000":1}'.encode()


def test_timestamps_are_utc_with_microseconds_and_z() -> None:
    moment = datetime(2026, 11, 23, 15, 34, 5, tzinfo=timezone(timedelta(hours=5, minutes=30)))

    assert timestamp(moment) == "2026-11-23T10:04:05.000000Z"
    assert timestamp(datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)) == "2026-01-02T03:04:05.000006Z"
    assert timestamp(None) is None
