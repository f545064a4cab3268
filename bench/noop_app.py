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
from litestar import Litestar, get, post

from api.serve import asgi_server


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
    """Serve with the ledger's own granian setup, so that the only difference is the handler."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    asgi_server("bench.noop_app:app", host=args.host, port=args.port, workers=args.workers).serve()


if __name__ == "__main__":
    main()
