"""Lag: how long after a callback's 200 its status is visible, and its event sealed.

Callbacks are offered at a fixed rate (open loop) for a sustained period, each message's
callbacks in lifecycle order about a second apart, as Plivo sends them. For a sample of the
acknowledged callbacks (one in ``SAMPLE_EVERY``), ``GET /v1/messages/{uuid}`` is polled
until the message's status has reached the callback's status (by precedence); the lag is
from the 200 to the answer that shows it. For another sample, ``GET
/v1/messages/{uuid}/events`` is polled until the acknowledged event carries its inclusion
proof: the seal latency. Polls start at once and back off to 10% of the time waited so far
(at least every ``MIN_POLL`` seconds), so polling stays a small load next to the ingest
while the resolution stays within 10% (or ``MIN_POLL``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping, Sequence

import msgspec

from api.simulate import SignedCallback
from bench import loadgen
from bench.harness import (
    API_TOKEN,
    CpuMeter,
    Latencies,
    Server,
    cpu_per_callback,
    database,
    describe_cpu,
    http_get,
    ledger_server,
)
from bench.options import Options
from bench.report import Figure, Section, Target
from bench.traffic import CALLBACKS_PER_MESSAGE, raw_get, raw_post, signed_callbacks

SAMPLE_EVERY = 20
MIN_POLL = 0.005
GIVE_UP_AFTER = 30.0
POLL_CONNECTIONS = 16
STATUS_PATH = "/v1/messages/{message_uuid}"
EVENTS_PATH = "/v1/messages/{message_uuid}/events"


def _status_ranks() -> Mapping[str, int]:
    """Status precedence from the product's fold, or as DESIGN.md states it if it moved."""
    try:
        from projections.fold import STATUS_RANKS
    except ImportError:
        return {
            "submitted": 1, "queued": 2, "sent": 3, "expired": 4, "delivered": 5,
            "undelivered": 5, "failed": 5, "rejected": 5, "read": 6,
        }  # fmt: skip
    return STATUS_RANKS


STATUS_RANKS = _status_ranks()


def rank(status: object) -> int:
    """A status's precedence (unknown statuses rank above none and below everything else)."""
    if not isinstance(status, str) or not status:
        return -1
    return int(STATUS_RANKS.get(status.lower(), 0))


def lifecycle_order(callbacks: Sequence[SignedCallback], rate: float) -> list[SignedCallback]:
    """Interleave messages so that each one's callbacks go out in order, ~1 s apart."""
    messages_per_second = rate / CALLBACKS_PER_MESSAGE
    keyed = []
    step = 0
    for index, callback in enumerate(callbacks):
        same = index > 0 and callbacks[index - 1].message_uuid == callback.message_uuid
        step = step + 1 if same else 0
        message = index - step  # any number unique per message and increasing will do
        keyed.append((message / CALLBACKS_PER_MESSAGE + step * messages_per_second, index))
    return [callbacks[index] for _, index in sorted(keyed)]


def status_route_present(server: Server) -> bool:
    """Whether the app serves ``GET /v1/messages/{message_uuid}`` (from its OpenAPI document)."""
    status, body = http_get(server.base_url + "/schema/openapi.json")
    if status != 200:
        return False
    paths = json.loads(body).get("paths", {})
    return any(
        path.startswith("/v1/messages/{") and path.count("/") == 3 and "get" in item
        for path, item in paths.items()
    )


def _status_reached(callback: SignedCallback, _position: int, body: bytes) -> bool:
    return rank(msgspec.json.decode(body).get("status")) >= rank(callback.status)


def _event_sealed(_callback: SignedCallback, position: int, body: bytes) -> bool:
    events = msgspec.json.decode(body).get("events", [])
    return any(e.get("position") == position and e.get("seal") for e in events)


class _Sampler:
    """Polls the read API for sampled callbacks until ``shown(callback, position, body)``
    says the answer shows the callback, and records how long after its 200 that was."""

    def __init__(
        self,
        server: Server,
        callbacks: Sequence[SignedCallback],
        *,
        path: str,
        shown: Callable[[SignedCallback, int, bytes], bool],
        offset: int,
    ) -> None:
        self.server = server
        self.callbacks = callbacks
        self.path = path
        self.shown = shown
        self.offset = offset
        self.lags: list[float] = []
        self.reads: list[float] = []
        self.not_visible = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.pool: asyncio.Queue[loadgen.Connection] = asyncio.Queue()
        for _ in range(POLL_CONNECTIONS):
            self.pool.put_nowait(loadgen.Connection("127.0.0.1", server.port))

    def on_answer(self, index: int, status: int, body: bytes, answered: float) -> None:
        if status == 200 and index % SAMPLE_EVERY == self.offset:
            position = int(msgspec.json.decode(body)["position"])
            task = asyncio.get_running_loop().create_task(self._poll(index, position, answered))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _poll(self, index: int, position: int, acked: float) -> None:
        callback = self.callbacks[index]
        path = self.path.format(message_uuid=callback.message_uuid)
        request = raw_get(path, self.server.port, API_TOKEN)
        while True:
            conn = await self.pool.get()
            sent = time.perf_counter()
            try:
                status, body = await conn.request(request)
            finally:
                self.pool.put_nowait(conn)
            now = time.perf_counter()
            self.reads.append(now - sent)
            if status == 200 and self.shown(callback, position, body):
                self.lags.append(now - acked)
                return
            if now - acked > GIVE_UP_AFTER:
                self.not_visible += 1
                return
            await asyncio.sleep(max(MIN_POLL, 0.1 * (now - acked)))

    async def drain(self) -> None:
        while self.tasks:
            await asyncio.gather(*list(self.tasks))
        while not self.pool.empty():
            await self.pool.get_nowait().close()


async def _run(
    server: Server, callbacks: Sequence[SignedCallback], rate: float
) -> tuple[loadgen.OpenLoopResult, _Sampler, _Sampler]:
    status = _Sampler(server, callbacks, path=STATUS_PATH, shown=_status_reached, offset=0)
    sealed = _Sampler(
        server, callbacks, path=EVENTS_PATH, shown=_event_sealed, offset=SAMPLE_EVERY // 2
    )

    def on_answer(index: int, code: int, body: bytes, answered: float) -> None:
        status.on_answer(index, code, body, answered)
        sealed.on_answer(index, code, body, answered)

    requests = [raw_post(callback, server.port) for callback in callbacks]
    result = await loadgen.constant_rate(
        "127.0.0.1", server.port, requests, rate=rate, on_answer=on_answer
    )
    await status.drain()
    await sealed.drain()
    return result, status, sealed


def run(opts: Options) -> Section:
    """Projection lag under a sustained fixed rate."""
    section = Section(
        f"lag: 200 → status visible via GET {STATUS_PATH}, {opts.rate:,.0f} callbacks/s for"
        f" {opts.lag_seconds:g}s"
    )
    count = int(opts.rate * opts.lag_seconds)
    callbacks = lifecycle_order(signed_callbacks(count, seed=3, shuffle=False), opts.rate)[:count]
    with (
        database(opts.database_url, "lag") as db,
        ledger_server(db, workers=opts.lag_workers, name="lag", env=opts.server_env) as server,
    ):
        if not status_route_present(server):
            section.note(
                f"GET {STATUS_PATH} is not served by this tree yet (not in /schema/openapi.json):"
                " lag was not measured"
            )
            return section
        meter = CpuMeter(server.cpu_groups() | {"postgres": db.processes})
        meter.start()
        result, sampler, sealed = loadgen.run(_run(server, callbacks, opts.rate))
        used = meter.stop()
    lags, reads = Latencies.of(sampler.lags), Latencies.of(sampler.reads)
    seals = Latencies.of(sealed.lags)
    for name, quantile, value, target in (
        ("lag", "p50", lags.p50, None),
        ("lag", "p99", lags.p99, Target("value", "<=", 500.0, "ms")),
        ("seal latency", "p50", seals.p50, None),
        ("seal latency", "p99", seals.p99, None),
    ):
        section.add(
            Figure(
                f"{name} {quantile}",
                value if (sampler.lags if name == "lag" else sealed.lags) else None,
                "ms",
                "one status read (GET p50, the measurement floor)",
                reads.p50,
                target,
            )
        )
    section.note(
        f"{lags.count:,} sampled callbacks became visible, {sampler.not_visible:,} not within"
        f" {GIVE_UP_AFTER:g}s; lag {lags}; reads {reads}"
    )
    section.note(
        f"{seals.count:,} sampled events were sealed, {sealed.not_visible:,} not within"
        f" {GIVE_UP_AFTER:g}s; seal latency {seals} (LEDGER_SEAL_BLOCK_SECONDS bounds it)"
    )
    section.note(
        f"ingest meanwhile: {result.sent:,} sent, answers {dict(result.statuses)}, ack"
        f" {Latencies.of(result.latencies)}; {opts.lag_workers} worker(s); {describe_cpu(used)};"
        f" CPU per callback: {cpu_per_callback(used, result.sent)}"
    )
    return section
