"""Stream: how soon after its commit a callback's event reaches ``GET /v1/stream`` clients.

``CLIENTS`` clients hold the stream open (from now) while callbacks are offered at a fixed
rate (open loop) for a sustained period, as in the lag benchmark. For a sample of events (one
position in ``SAMPLE_EVERY``), each client's receive time is compared with two clocks that
bracket the commit:

* the callback's 200, which the server sends only after the commit: receive - 200 is a
  **lower** bound of the delivery latency (the 200 travels back meanwhile);
* the event's ``recorded_at``, the append transaction's start, before its commit:
  receive - recorded_at is an **upper** bound (it includes the commit itself).

The target (≤ 500 ms p99 at 1,000/s with 50 clients) is checked against the upper bound.
Every client must also receive every event appended while it was connected, once.
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import datetime

import msgspec
import psutil  # type: ignore[import-untyped]  # no stubs installed

from bench import loadgen
from bench.harness import (
    API_TOKEN,
    CpuMeter,
    Latencies,
    Server,
    cpu_per_callback,
    database,
    describe_cpu,
    ledger_server,
)
from bench.lag import lifecycle_order
from bench.options import Options
from bench.report import Figure, Section, Target
from bench.traffic import raw_get, raw_post, signed_callbacks

CLIENTS = 50
#: Clients that parse what they receive; the others count events and drop the bytes, so
#: that the load generator, in the same process, is not starved by 50 parsers.
MEASURING = 5
SAMPLE_EVERY = 10
_EVENT = re.compile(
    rb'id: \d+-(\d+)\r\nevent: ledger_event\r\ndata: \{[^\r]*?"recorded_at":"([^"]+)"'
)


class _Client:
    """One stream client: reads raw SSE bytes and notes when sampled positions arrive."""

    def __init__(self, server: Server, *, measuring: bool) -> None:
        self.server = server
        self.measuring = measuring
        self.events = 0
        self.received: dict[int, float] = {}
        self.recorded: dict[int, float] = {}
        self.positions: list[int] = []
        self.joined = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None

    async def run(self, stop: asyncio.Event) -> None:
        reader, self._writer = await asyncio.open_connection("127.0.0.1", self.server.port)
        self._writer.write(raw_get("/v1/stream", self.server.port, API_TOKEN))
        pending = b""
        while not stop.is_set():
            try:
                chunk = await asyncio.wait_for(reader.read(1 << 16), 0.5)
            except TimeoutError:
                continue
            if not chunk:
                return
            now_perf, now_wall = time.perf_counter(), time.time()
            if not self.measuring:
                # Events never straddle this count's boundary: the marker is 19 bytes.
                pending = pending[-32:] + chunk
                self.events += chunk.count(b"event: ledger_event")
                if not self.joined.is_set() and b"ledger live feed" in pending:
                    self.joined.set()
                continue
            pending += chunk
            if not self.joined.is_set() and b"ledger live feed" in pending:
                self.joined.set()
            end = 0
            for match in _EVENT.finditer(pending):
                end = match.end()
                position = int(match[1])
                self.positions.append(position)
                if position % SAMPLE_EVERY == 0:
                    self.received[position] = now_perf
                    recorded = datetime.fromisoformat(match[2].decode()).timestamp()
                    self.recorded[position] = now_wall - recorded
            pending = pending[end:] if end else pending[-4096:]

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


async def _run(
    server: Server, requests: list[bytes], rate: float, *, clients_count: int = CLIENTS
) -> tuple[loadgen.OpenLoopResult, list[_Client], dict[int, float]]:
    clients = [_Client(server, measuring=n < MEASURING) for n in range(clients_count)]
    stop = asyncio.Event()
    readers = [asyncio.create_task(client.run(stop)) for client in clients]
    await asyncio.wait_for(asyncio.gather(*(c.joined.wait() for c in clients)), 30)
    acked: dict[int, float] = {}

    def on_answer(_index: int, status: int, body: bytes, answered: float) -> None:
        if status == 200:
            answer = msgspec.json.decode(body)
            if answer["result"] == "appended":
                acked[int(answer["position"])] = answered

    result = await loadgen.constant_rate(
        "127.0.0.1", server.port, requests, rate=rate, on_answer=on_answer
    )
    await asyncio.sleep(2.0)  # the last events' delivery
    stop.set()
    await asyncio.gather(*readers, return_exceptions=True)
    for client in clients:
        await client.close()
    return result, clients, acked


def run(opts: Options) -> Section:
    """Stream delivery latency with ``CLIENTS`` clients at a fixed callback rate."""
    section = Section(
        f"stream: commit → {CLIENTS} GET /v1/stream clients, {opts.rate:,.0f} callbacks/s for"
        f" {opts.fixed_seconds:g}s"
    )
    count = int(opts.rate * opts.fixed_seconds)
    # Two runs on one server, each with callbacks of its own: without stream clients (the
    # baseline: what the machine gives the ingest right now), then with them.
    callbacks = lifecycle_order(signed_callbacks(2 * count, seed=5, shuffle=False), opts.rate)[
        : 2 * count
    ]
    with (
        database(opts.database_url, "stream") as db,
        ledger_server(db, workers=opts.lag_workers, name="stream", env=opts.server_env) as server,
    ):
        requests = [raw_post(callback, server.port) for callback in callbacks]
        groups = server.cpu_groups() | {
            "postgres": db.processes,
            "bench client": lambda: [psutil.Process()],
        }
        meter = CpuMeter(groups)
        meter.start()
        baseline, _, _ = loadgen.run(_run(server, requests[:count], opts.rate, clients_count=0))
        alone = meter.stop()
        meter = CpuMeter(groups)
        meter.start()
        result, clients, acked = loadgen.run(_run(server, requests[count:], opts.rate))
        used = meter.stop()
    lower = [
        client.received[p] - acked[p] for client in clients for p in client.received if p in acked
    ]
    upper = [seconds for client in clients for seconds in client.recorded.values()]
    low, high = Latencies.of(lower), Latencies.of(upper)
    section.add(Figure("delivery p50 (upper bound, from recorded_at)", high.p50, "ms"))
    section.add(
        Figure(
            "delivery p99 (upper bound, from recorded_at)",
            high.p99 if upper else None,
            "ms",
            target=Target("value", "<=", 500.0, "ms"),
        )
    )
    section.add(
        Figure("delivery p99 (lower bound, from the 200)", low.p99 if lower else None, "ms")
    )
    appended = set(acked)
    measuring = [client for client in clients if client.measuring]
    complete = sum(
        1
        for client in measuring
        if appended <= set(client.positions) and len(client.positions) == len(set(client.positions))
    )
    counts = sorted(client.events for client in clients if not client.measuring) or [0]
    section.note(
        f"{complete} of {MEASURING} measuring clients received every one of the"
        f" {len(appended):,} appended events exactly once; the other {CLIENTS - MEASURING}"
        f" counted {counts[0]:,} to {counts[-1]:,} events each; latency from recorded_at"
        f" {high}; from the 200 {low}"
    )
    section.note(
        f"baseline, the same rate without stream clients: ack {Latencies.of(baseline.latencies)};"
        f" {describe_cpu(alone)}; CPU per callback: {cpu_per_callback(alone, baseline.sent)}"
    )
    section.note(
        f"ingest meanwhile: {result.sent:,} sent, answers {dict(result.statuses)}, ack"
        f" {Latencies.of(result.latencies)}; {opts.lag_workers} worker(s); {describe_cpu(used)};"
        f" CPU per callback: {cpu_per_callback(used, result.sent)}"
    )
    return section
