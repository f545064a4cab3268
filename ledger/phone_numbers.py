"""Phone numbers as Plivo stores them, whatever way a person typed them."""

from __future__ import annotations

import re
from typing import Final

# Digits with the punctuation people put in numbers: +1 (415) 555-0100, 1.415.555.0100.
_DIALLED: Final = re.compile(r"^\+?[\d\s().-]*\d[\d\s().-]*$")


def normalise_number(text: str) -> str:
    """``text`` in the form Plivo sends in ``From`` and ``To``: E.164 digits without ``+``.

    ``+14155550100``, ``14155550100``, ``+1 415 555 0100`` and ``+1 (415) 555-0100`` all give
    ``14155550100``. Anything else (an alphanumeric sender id such as ``MYBRAND``) is returned
    trimmed and otherwise unchanged.
    """
    stripped = text.strip()
    if _DIALLED.match(stripped):
        return re.sub(r"\D", "", stripped)
    return stripped
