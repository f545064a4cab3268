"""Read and discard an oversized request body before the 413 is sent.

Litestar refuses a body over the limit from its Content-Length without reading it, and the
server then closes the connection. A client still uploading (most HTTP clients write the
whole body before reading) gets a TCP reset that throws the 413 away (RFC 9112 §9.6). So the
body is drained first, up to a bound, and the app then answers 413 as usual.

Without this middleware a real server on loopback resets httpx's 10 MB upload instead of
answering it: ``tests/reliability/test_bad_input.py``, the test of a client that sends it
all first, fails (``httpx.ReadError``). The in-process test client has no TCP, so only that
test can show it.
"""

from __future__ import annotations

from collections.abc import Callable

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send

#: Past this much, a client is not worth waiting for: the connection is closed on it.
DRAIN_LIMIT = 32 * 1024 * 1024


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def drain_oversized_bodies(limit: int) -> Callable[[ASGIApp], ASGIApp]:
    """Middleware factory: drain bodies whose Content-Length exceeds ``limit`` bytes."""

    def middleware(app: ASGIApp) -> ASGIApp:
        async def drained(scope: Scope, receive: Receive, send: Send) -> None:
            length = _declared_length(scope) if scope["type"] == ScopeType.HTTP else None
            if length is None or length <= limit or length > DRAIN_LIMIT:
                await app(scope, receive, send)
                return
            while True:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body"):
                    break

            async def nothing_left() -> ReceiveMessage:
                return {"type": "http.request", "body": b"", "more_body": False}

            await app(scope, nothing_left, send)

        return drained

    return middleware
