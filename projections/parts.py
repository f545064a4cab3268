"""Multi-part messages: a parent reports the worst status of its parts.

A part is a message whose callbacks name another message in ``ParentMessageUUID``; the status
view keeps that parent on the part's row (``parent_message_uuid``). The parent's own row
folds its own events as any row does; what the read side reports for it is the worst of its
parts' current statuses, so a part delivered later never hides one that failed, and the
parent is delivered only once every part is. The parent's own status counts as one of its
parts once Plivo reported on it (Plivo's first part carries the parent's UUID); its own
``submitted`` alone does not, or a parent would stay ``submitted`` while its parts arrive.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import MappingProxyType
from typing import Final

#: Worst first. Final failures are the worst news; then our own expiry verdict; then a part
#: still on its way, the least advanced first; then the successes.
_BADNESS: Final = MappingProxyType(
    {
        "failed": 0,
        "undelivered": 0,
        "rejected": 0,
        "expired": 1,
        "submitted": 3,
        "queued": 4,
        "sent": 5,
        "delivered": 6,
        "read": 7,
    }
)
#: A status we do not know (or none at all) is neither success nor failure: as a part on its
#: way, before any known progress.
_UNKNOWN_BADNESS: Final = 2


def worst_status(own: str | None, parts: Iterable[str | None]) -> str | None:
    """The status a message reports: ``own`` when it has no parts, else the worst of its
    parts' statuses and (once Plivo reported on it) its own."""
    statuses = list(parts)
    if not statuses:
        return own
    if own is not None and own != "submitted":
        statuses.append(own)
    return min(statuses, key=lambda s: (_BADNESS.get(s or "", _UNKNOWN_BADNESS), s or ""))
