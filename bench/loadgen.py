"""An open-loop, constant-rate HTTP/1.1 load generator (wrk2-style), and a keep-alive client.

wrk2 is not packaged for Debian, so latency at a fixed offered rate is measured here: request
``i`` is *due* at ``start + i / rate`` whatever happened to earlier ones, and its latency is
counted from that due time, not from when a connection was free to send it. A stalled server
therefore shows up as the queueing delay it causes (no coordinated omission). Requests are
pre-built bytes written to raw keep-alive sockets, so the client's cost per request is a few
tens of microseconds: at 1,000 requests/s it uses a few percent of a core.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on uvloop (a dependency of uvicorn[standard]) when it is installed,
    else on asyncio's default loop: the generator's own overhead should stay small."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - the project installs it
        return asyncio.run(main)
    return uvloop.run(main)


class Connection:
    """One HTTP/1.1 keep-alive connection that sends pre-built requests and reads answers."""

    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        return self._reader, self._writer

    async def open(self) -> None:
        """Connect now (so that connecting is not part of the first request's latency)."""
        await self._open()

    async def close(self) -> None:
        """Close the socket."""
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """Send one request and read its answer: status and body. Status 0 = transport error
        (the connection is then reopened for the next request)."""
        try:
            reader, writer = await self._open()
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length, chunked, close = 0, False, False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
                elif name == b"connection" and b"close" in value.lower():
                    close = True
            body = await (self._chunked(reader) if chunked else reader.readexactly(length))
            if close:
                await self.close()
            return status, body
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            await self.close()
            return 0, b""

    @staticmethod
    async def _chunked(reader: asyncio.StreamReader) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                return b"".join(parts)
            parts.append(data[:-2])


@dataclass
class OpenLoopResult:
    """What a constant-rate run measured."""

    rate: float
    sent: int
    seconds: float
    #: Latency of every answered request, from its due time to its answer (seconds).
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    #: How late the generator itself was in sending (its own lag; should stay ~0).
    max_send_delay: float = 0.0

    @property
    def ok(self) -> int:
        """Requests answered 200."""
        return self.statuses.get(200, 0)


OnAnswer = Callable[[int, int, bytes, float], None]


async def constant_rate(
    host: str,
    port: int,
    requests: Sequence[bytes],
    *,
    rate: float,
    connections: int = 64,
    warmup: float = 1.0,
    on_answer: OnAnswer | None = None,
) -> OpenLoopResult:
    """Send ``requests`` at ``rate`` per second over ``connections`` keep-alive connections.

    Every request is awaited to its answer before returning, so the caller can compare what
    was acknowledged with what the database holds. Latencies of the first ``warmup`` seconds
    (connection setup, statement preparation) are left out of the result. ``on_answer(index,
    status, body, answered_at)`` is called for every answer (``answered_at`` on
    ``time.perf_counter``'s clock).
    """
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    pool = [Connection(host, port) for _ in range(connections)]
    await asyncio.gather(*(conn.open() for conn in pool))
    result = OpenLoopResult(rate=rate, sent=len(requests), seconds=0.0)
    start = time.perf_counter() + 0.05
    measured_from = start + warmup

    async def schedule() -> None:
        for index in range(len(requests)):
            due = start + index / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                result.max_send_delay = max(result.max_send_delay, -delay)
            queue.put_nowait((index, due))
        for _ in pool:
            queue.put_nowait(None)

    async def send(conn: Connection) -> None:
        while (item := await queue.get()) is not None:
            index, due = item
            status, body = await conn.request(requests[index])
            answered = time.perf_counter()
            result.statuses[status] += 1
            if due >= measured_from:
                result.latencies.append(answered - due)
            if on_answer is not None:
                on_answer(index, status, body, answered)

    try:
        await asyncio.gather(schedule(), *(send(conn) for conn in pool))
    finally:
        await asyncio.gather(*(conn.close() for conn in pool))
    result.seconds = time.perf_counter() - start
    return result


async def sequential(
    host: str, port: int, requests: Sequence[bytes]
) -> tuple[list[float], Counter[int]]:
    """Send ``requests`` one after another on one connection: latency without queueing."""
    conn = Connection(host, port)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    try:
        await conn.open()
        for raw in requests:
            started = time.perf_counter()
            status, _ = await conn.request(raw)
            latencies.append(time.perf_counter() - started)
            statuses[status] += 1
    finally:
        await conn.close()
    return latencies, statuses
