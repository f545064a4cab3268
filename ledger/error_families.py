"""Plivo's error codes in families (PLIVO.md, "Families for analytics"), and which ones a
resend may follow.

Plivo classifies nothing as retryable beyond the "retry later" it attaches to 20 and 80, so
resending is opt-in (``LEDGER_RESEND_ERROR_CODES``), by code or by family. A message whose
recipient is invalid, unreachable for good, or has blocked the sender is never resent,
whatever the setting says: :data:`NEVER_RESEND`.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

#: The family of every code not listed in another (1000, and codes Plivo adds later).
UNKNOWN_FAMILY: Final = "unknown"

#: Family name → its error codes (PLIVO.md's spam/content is ``content``).
FAMILIES: Final = MappingProxyType(
    {
        "temporary": ("20", "80"),
        "content": ("10", "30", "110"),
        "number": ("40", "50", "70", "90"),
        "carrier": ("60", "100"),
        "compliance": ("200", "201", "450", "451"),
        "credit": ("900",),
        "expiry": ("420",),
        "unknown": ("1000",),
    }
)

#: Invalid or unreachable numbers, blocks and opt-outs: resending cannot help and may break
#: the recipient's wishes or the law.
NEVER_RESEND: Final = frozenset({*FAMILIES["number"], *FAMILIES["compliance"], "100"})


def resend_codes(names: tuple[str, ...]) -> frozenset[str]:
    """The error codes named by ``names`` (codes, or families from :data:`FAMILIES`).

    Raises ValueError for a name that is neither a number nor a family, and for a code in
    :data:`NEVER_RESEND`.
    """
    codes: set[str] = set()
    for name in names:
        if name in FAMILIES:
            codes.update(FAMILIES[name])
        elif name.isdigit():
            codes.add(name.lstrip("0") or "0")
        else:
            families = ", ".join(FAMILIES)
            raise ValueError(f"{name!r} is neither an error code nor a family ({families})")
    if refused := sorted(codes & NEVER_RESEND, key=int):
        raise ValueError(
            f"codes {', '.join(refused)} mean an invalid or blocked recipient and are never resent"
        )
    return frozenset(codes)
