"""The HTTP floor: a no-op Litestar POST handler served exactly as ``ledger serve`` serves.

It takes the same request (the raw form body is read, as the real handler does) and answers
with the same shape of JSON, but does no parsing, signature check or database work. Its
throughput is the most the ingest path could reach with this framework and server.

    python -m bench.noop_app --port 8001 --workers 2
"""

from __future__ import annotations

import argparse
from typing import Literal

import msgspec
from granian.constants import Interfaces
from granian.server import Server
from litestar import Litestar, get, post


class Accepted(msgspec.Struct, frozen=True):
    """The same answer shape as the real callback endpoint."""

    result: Literal["appended"]
    position: int


@post("/plivo/status", status_code=200)
async def receive(body: bytes) -> Accepted:
    """Read the body and answer at once."""
    return Accepted("appended", len(body))


@get("/health")
async def health() -> dict[str, str]:
    """Readiness for the harness."""
    return {"status": "ok"}


def app() -> Litestar:
    """The app factory each granian worker calls."""
    return Litestar(route_handlers=[receive, health])


def main() -> None:
    """Serve with the same granian options as api/serve.py (ASGI, factory, no access log,
    backlog 2048), so that the only difference from the ledger is the handler."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    Server(
        "bench.noop_app:app",
        address=args.host,
        port=args.port,
        interface=Interfaces.ASGI,
        workers=args.workers,
        factory=True,
        log_access=False,
        backlog=2048,
    ).serve()


if __name__ == "__main__":
    main()
