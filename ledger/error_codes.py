"""Plivo's message error codes and what they mean (see PLIVO.md, "Error codes")."""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

#: Plivo ``ErrorCode`` → meaning. Plivo classifies nothing as retryable beyond the "retry
#: later" it attaches to 20 and 80, so neither does this table.
ERROR_CODES: Final = MappingProxyType(
    {
        "10": "invalid message",
        "20": "network error (temporary: retry later)",
        "30": "spam detected",
        "40": "invalid source number",
        "50": "invalid destination number",
        "60": "loop detected",
        "70": "destination permanently unavailable",
        "80": "destination temporarily unavailable (retry later)",
        "90": "no route available",
        "100": "prohibited by carrier",
        "110": "message too long",
        "200": "source number blocked by STOP from destination (opt-out)",
        "201": "US toll-free to Canada blocked",
        "420": "message expired while queued",
        "450": "destination country barred (geo permissions)",
        "900": "insufficient credit",
        "1000": "unknown error",
    }
)

#: Values Plivo sends on a message without an error ("success may be blank or 000").
NO_ERROR: Final = frozenset({"", "0", "000"})


def describe_error(code: str | None) -> str | None:
    """The meaning of a Plivo error code; None when there is no error.

    A code Plivo has not documented still names an error, so it is described as such rather
    than dropped.
    """
    if code is None or code.strip() in NO_ERROR:
        return None
    code = code.strip()
    return ERROR_CODES.get(code, f"undocumented error code {code}")
