"""Times as people type them on the command line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from api.cli.times import NotATime, parse_when, show_time

NOW = datetime(2026, 11, 24, 15, 30, tzinfo=UTC)
KOLKATA = ZoneInfo("Asia/Kolkata")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("24h", NOW - timedelta(hours=24)),
        ("7d", NOW - timedelta(days=7)),
        ("90M", NOW - timedelta(minutes=90)),
        ("today", datetime(2026, 11, 24, tzinfo=UTC)),
        ("Yesterday", datetime(2026, 11, 23, tzinfo=UTC)),
        ("2026-11-20", datetime(2026, 11, 20, tzinfo=UTC)),
        ("2026-11-20 09:30", datetime(2026, 11, 20, 9, 30, tzinfo=UTC)),
        ("2026-11-20T09:30:00+05:30", datetime(2026, 11, 20, 4, 0, tzinfo=UTC)),
        ("2026-11-20T04:00Z", datetime(2026, 11, 20, 4, 0, tzinfo=UTC)),
    ],
)
def test_times_are_read_as_people_write_them(text: str, expected: datetime) -> None:
    assert parse_when(text, now=NOW, zone=ZoneInfo("UTC")) == expected


def test_days_and_offsetless_times_are_in_the_configured_zone() -> None:
    # 15:30 UTC is 21:00 in Kolkata: still the 24th there.
    assert parse_when("yesterday", now=NOW, zone=KOLKATA) == datetime(2026, 11, 23, tzinfo=KOLKATA)
    assert parse_when("2026-11-20 09:30", now=NOW, zone=KOLKATA) == datetime(
        2026, 11, 20, 4, 0, tzinfo=UTC
    )


@pytest.mark.parametrize("text", ["last week", "0h", "2026-13-01", ""])
def test_anything_else_is_refused_with_the_forms_it_could_take(text: str) -> None:
    with pytest.raises(NotATime) as refused:
        parse_when(text, now=NOW, zone=ZoneInfo("UTC"))
    assert str(refused.value) == (
        f"{text!r} is not a time: write it like 2026-11-23, '2026-11-23 09:30', 24h, 7d, "
        "today or yesterday"
    )


def test_times_are_shown_in_the_zone_to_the_millisecond() -> None:
    at = datetime(2026, 11, 20, 4, 0, 1, 123999, tzinfo=UTC)
    assert show_time(at, KOLKATA) == "2026-11-20 09:30:01.123"
    assert show_time(None, KOLKATA) == "-"
