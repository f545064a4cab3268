"""A fake of Plivo's Message REST API: a real HTTP server on loopback that the real SDK talks
to through ``PLIVO_API_URL``. The only fake the suite allows.

It records every request, and answers ``POST …/Message/`` (send) and ``GET …/Message/<uuid>/``
(the Message API's status lookup) the way Plivo does: by default a 202 with one new message
UUID per destination, less the numbers listed in :attr:`FakePlivo.invalid_numbers`, which it
returns in ``invalid_number``. :meth:`FakePlivo.fail_next` makes the next sends answer an
error status, :attr:`FakePlivo.delay` makes every answer slow, and
:attr:`FakePlivo.messages` holds the records status lookups answer from (404 otherwise).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec

AUTH_ID = "MAFAKEPLIVOACCOUNT00"
AUTH_TOKEN = "fake-plivo-auth-token"


class Recorded(msgspec.Struct, frozen=True):
    """One request the fake received: when (monotonic seconds), method, path, JSON body."""

    at: float
    method: str
    path: str
    body: dict[str, Any]


class FakePlivo:
    """The fake's state; ``url`` is its base URL (for ``PLIVO_API_URL``)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.requests: list[Recorded] = []
        self.invalid_numbers: set[str] = set()
        self.messages: dict[str, dict[str, str]] = {}
        self.delay = 0.0
        self._failures: list[tuple[int, str]] = []
        self._lock = threading.Lock()

    def fail_next(self, status: int, error: str = "fake failure", times: int = 1) -> None:
        """Answer the next ``times`` sends with ``status`` and ``{"error": error}``."""
        with self._lock:
            self._failures.extend([(status, error)] * times)

    @property
    def sends(self) -> list[Recorded]:
        """The send requests received, in order."""
        return [r for r in self.requests if r.method == "POST"]

    @property
    def lookups(self) -> list[Recorded]:
        """The status lookups received, in order."""
        return [r for r in self.requests if r.method == "GET"]

    def answer(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """The status and JSON body of the answer to one request."""
        with self._lock:
            self.requests.append(Recorded(time.monotonic(), method, path, body))
            failure = self._failures.pop(0) if method == "POST" and self._failures else None
        if self.delay:
            time.sleep(self.delay)
        api_id = str(uuid.uuid4())
        if failure is not None:
            return failure[0], {"api_id": api_id, "error": failure[1]}
        if method == "POST":
            destinations = str(body.get("dst", "")).split("<")
            valid = [d for d in destinations if d not in self.invalid_numbers]
            invalid = [d for d in destinations if d in self.invalid_numbers]
            answer: dict[str, Any] = {
                "api_id": api_id,
                "message": "message(s) queued",
                "message_uuid": [str(uuid.uuid4()) for _ in valid],
            }
            if invalid:
                answer["invalid_number"] = invalid
            return 202, answer
        found = self.messages.get(path.rstrip("/").rsplit("/", 1)[-1])
        if found is None:
            return 404, {"api_id": api_id, "error": "not found"}
        return 200, {"api_id": api_id, **found}


def _handler(fake: FakePlivo) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out as two writes: without TCP_NODELAY, Nagle's algorithm and
        # the client's delayed ACK add 40 ms to every answer.
        disable_nagle_algorithm = True

        def _respond(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else {}
            status, answer = fake.answer(method, self.path, body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            self._respond("POST")

        def do_GET(self) -> None:
            self._respond("GET")

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    return Handler


@contextlib.contextmanager
def fake_plivo() -> Iterator[FakePlivo]:
    """A fake Plivo API serving on a free loopback port for the duration of the block."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(FakePlivo("")))
    fake = FakePlivo(f"http://127.0.0.1:{server.server_address[1]}")
    server.RequestHandlerClass = _handler(fake)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="fake-plivo", daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
