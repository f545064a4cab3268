"""The canonical bytes of an event: what a seal's leaf hashes and a system event's MAC signs.

An event is written as a JSON document and serialised with the JSON Canonicalization Scheme
(JCS, RFC 8785): no whitespace, object keys sorted by their UTF-16 code units, strings with
only the escapes JCS prescribes. Any language with a JCS library reproduces the bytes from
the event as the audit API returns it; the README's "Proof format" gives the document.

The documents hold only strings, integers, null, arrays and objects, for which msgspec's
sorted-key encoding *is* JCS whenever every key is ASCII (code point and UTF-16 orders agree
there); other keys take the slower path that sorts by UTF-16 explicitly. The tests check
both against an independent JCS implementation.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

import msgspec

#: Bumped if the document ever changes; part of every document, so old seals stay checkable.
DOCUMENT_VERSION: Final = 1

_sorted_encoder = msgspec.json.Encoder(order="sorted")
_plain_encoder = msgspec.json.Encoder()


def jcs(document: dict[str, Any]) -> bytes:
    """``document`` serialised with RFC 8785 (JCS). Values: str, int, None, list, dict."""
    encoded = _sorted_encoder.encode(document)
    # All-ASCII output means all-ASCII keys (the common case, settled in one C call);
    # otherwise the keys decide.
    if encoded.isascii() or _ascii_keys(document):
        return encoded
    return _plain_encoder.encode(_utf16_sorted(document))


def timestamp(moment: datetime | None) -> str | None:
    """A timestamp as the documents write it: UTC, microseconds, ``Z``
    (``2026-11-23T10:04:05.123456Z``)."""
    if moment is None:
        return None
    # isoformat, several times faster than strftime; years are four digits in this ledger.
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _ascii_keys(value: Any) -> bool:
    if isinstance(value, dict):
        return all(key.isascii() and _ascii_keys(item) for key, item in value.items())
    if isinstance(value, list):
        return all(_ascii_keys(item) for item in value)
    return True


def _utf16_key(key: str) -> bytes:
    # Big-endian UTF-16 bytes compare exactly as JCS orders keys: by UTF-16 code units.
    return key.encode("utf-16-be", "surrogatepass")


def _utf16_sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _utf16_sorted(value[key]) for key in sorted(value, key=_utf16_key)}
    if isinstance(value, list):
        return [_utf16_sorted(item) for item in value]
    return value
