"""Times as people type them on the command line, and as the command line shows them."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from ledger.durations import NotADuration, parse_duration

#: The forms :func:`parse_when` accepts, for help texts and messages.
TIME_FORMS: Final = "2026-11-23, '2026-11-23 09:30', 24h, 7d, today or yesterday"
_DAYS_BACK: Final = {"today": 0, "yesterday": 1}


class NotATime(ValueError):
    """Text that :func:`parse_when` cannot read as a point in time."""


def parse_when(text: str, *, now: datetime, zone: ZoneInfo) -> datetime:
    """The point in time ``text`` names.

    * ``today``, ``yesterday``: that day's midnight in ``zone``; ``now``: ``now``;
    * a duration (``30s``, ``90m``, ``24h``, ``7d``): that long before ``now``;
    * an ISO 8601 date or date and time (``2026-11-23``, ``2026-11-23 09:30``,
      ``2026-11-23T09:30:00+05:30``): as written, in ``zone`` unless it carries an offset.
    """
    word = text.strip().lower()
    if word == "now":
        return now
    if word in _DAYS_BACK:
        day = now.astimezone(zone).date() - timedelta(days=_DAYS_BACK[word])
        return datetime.combine(day, time(), tzinfo=zone)
    try:
        return now - parse_duration(word)
    except NotADuration:
        pass
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise NotATime(f"{text!r} is not a time: write it like {TIME_FORMS}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=zone)


def day_in(at: datetime, zone: ZoneInfo) -> date:
    """The calendar day ``at`` falls on in ``zone``."""
    return at.astimezone(zone).date()


def show_time(at: datetime | None, zone: ZoneInfo) -> str:
    """``at`` in ``zone`` to the millisecond, without the zone (headers name it); ``-`` for
    None."""
    if at is None:
        return "-"
    return at.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
