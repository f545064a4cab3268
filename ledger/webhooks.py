"""Outbound webhooks signed the Standard Webhooks way (standardwebhooks.com).

Headers ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and ``webhook-signature``:
``v1,`` + base64 of HMAC-SHA256 over ``{id}.{timestamp}.{body}``, keyed with the secret's
bytes (the base64 after ``whsec_``). A receiver recomputes it with the same secret and
refuses stale timestamps, which makes a captured request useless later.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Final

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - the prefix, not a secret


def secret_key(secret: str) -> bytes:
    """The signing key of a ``whsec_…`` secret; ValueError (not naming it) when malformed."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except ValueError:
        raise ValueError("a webhook secret is whsec_ followed by base64") from None


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,<base64 HMAC-SHA256 of id.timestamp.body>``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.digest(secret_key(secret), signed, hashlib.sha256)
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Every header of a signed delivery of ``body`` (JSON)."""
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, message_id, timestamp, body),
    }


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Whether one of the space-separated signatures in ``webhook-signature`` signs
    ``body`` under ``secret`` (for receivers and tests; the timestamp's age is theirs to
    check)."""
    try:
        expected = signature(secret, headers["webhook-id"], int(headers["webhook-timestamp"]), body)
    except (KeyError, ValueError):
        return False
    return any(
        hmac.compare_digest(expected, candidate)
        for candidate in headers.get("webhook-signature", "").split()
    )
