"""Durations as people write them in settings and on the command line: ``90s``, ``90m``,
``48h``, ``2d`` (a whole number and one unit, in any case)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Final

_DURATION: Final = re.compile(r"^\s*(\d+)\s*([smhd])\s*$", re.IGNORECASE)
_UNITS: Final = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
#: How the accepted forms are described in messages and help.
DURATION_FORMS: Final = "like 30s, 90m, 48h or 2d"


class NotADuration(ValueError):
    """Text that is not a duration. The message says why, in words that follow the text
    ("'0m' must be longer than zero"); callers add how to write one (:data:`DURATION_FORMS`)."""


def parse_duration(text: str) -> timedelta:
    """``text`` as a positive duration: a whole number of seconds (``s``), minutes (``m``),
    hours (``h``) or days (``d``). Raises :class:`NotADuration` otherwise, and for zero."""
    match = _DURATION.match(text)
    if match is None:
        raise NotADuration("is not a duration")
    amount, unit = int(match.group(1)), match.group(2).lower()
    if amount == 0:
        raise NotADuration("must be longer than zero")
    return timedelta(**{_UNITS[unit]: amount})


def describe_duration(span: timedelta) -> str:
    """A short rounded duration for people: ``45 s``, ``12 min``, ``3 h``, ``2 d``."""
    seconds = max(0, int(span.total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 2 * 3600:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def format_duration(duration: timedelta) -> str:
    """``48h``, ``90m`` or ``45s``: the largest whole unit, as ``LEDGER_EXPIRE_AFTER`` is set."""
    seconds = int(duration.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"
