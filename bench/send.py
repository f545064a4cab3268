"""send: throughput of the send flow (POST /v1/messages' own code) against the fake Plivo API.

The Plivo SDK is synchronous (``requests``), so :class:`ledger.plivo_api.PlivoApi` runs each
call in a thread of a bounded pool (``LEDGER_SEND_CONCURRENCY``). For each concurrency, with
the fake answering at once and after a simulated 50 ms of Plivo latency, three figures, each
of N sends from as many concurrent tasks as threads:

* baseline: a raw HTTP POST of the same JSON to the fake, from the same number of threads,
  each with its own keep-alive ``requests`` session (the floor for any Python client);
* the SDK alone, through ``PlivoApi`` (thread pool, SDK validation and parsing);
* the whole flow, ``ledger.sends.send``: the durable ``message.send_requested`` append, the
  SDK call, and the durable ``message.submitted`` append.

The fake runs in this process (a threaded HTTP server on loopback), so every figure includes
its share of the GIL; the ratios are what to compare.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from typing import Any
from uuid import uuid4

import requests

from bench.harness import database, migrate
from bench.options import Options
from bench.report import Figure, Section
from ledger.database import create_pool
from ledger.plivo_api import PlivoApi
from ledger.send_events import SendRequest
from ledger.sends import plivo_params, send
from tests.fake_plivo import AUTH_ID, AUTH_TOKEN, FakePlivo, fake_plivo

CALLBACK = "https://ledger.bench.invalid/plivo/status"
KEY = b"bench-system-key"
CONCURRENCY = (1, 8, 32)
LATENCIES = (0.0, 0.05)


def _request() -> SendRequest:
    return SendRequest(
        request_id=uuid4(),
        src="14155550100",
        dst=["919876543210"],
        text="Your code is 1234",
        requested_by="bench",
        body_hash="00",
    )


def _raw_posts(fake: FakePlivo, sends: int, threads: int) -> float:
    """Seconds for ``sends`` raw POSTs from ``threads`` threads (keep-alive sessions)."""
    url = f"{fake.url}/v1/Account/{AUTH_ID}/Message/"
    body = plivo_params(_request(), CALLBACK)
    local = threading.local()

    def post(_: int) -> None:
        if not hasattr(local, "session"):
            local.session = requests.Session()
            local.session.auth = (AUTH_ID, AUTH_TOKEN)
        local.session.post(url, json=body, timeout=10).raise_for_status()

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(post, range(sends)))
    return time.perf_counter() - started


async def _in_tasks(sends: int, tasks: int, one: Any) -> float:
    """Seconds for ``sends`` calls of ``one()`` from ``tasks`` concurrent tasks."""
    left = iter(range(sends))

    async def worker() -> None:
        for _ in left:
            await one()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return time.perf_counter() - started


async def _measure(url: str, fake: FakePlivo, sends: int, threads: int) -> tuple[float, float]:
    """Seconds for ``sends`` through the SDK alone, and through the whole flow."""
    api = PlivoApi(AUTH_ID, AUTH_TOKEN, api_url=fake.url, timeout=10, concurrency=threads)
    pool = create_pool(url, size=min(threads, 16), name="bench-send")
    await pool.open(wait=True)
    try:
        params = plivo_params(_request(), CALLBACK)
        sdk = await _in_tasks(sends, threads, lambda: api.create(**params))

        async def flow() -> None:
            outcome = await send(
                pool, api, _request(), callback_url=CALLBACK, store_text=False, key=KEY
            )
            assert outcome.state == "submitted", outcome

        whole = await _in_tasks(sends, threads, flow)
    finally:
        await pool.close()
        api.close()
    return sdk, whole


def run(opts: Options) -> Section:
    """Send throughput per concurrency and Plivo latency, against raw POSTs."""
    sends = 100 if opts.quick else 400
    section = Section(
        f"send: POST /v1/messages' flow against the fake Plivo API, {sends} sends each"
    )
    with database(opts.database_url, "send") as db, fake_plivo() as fake:
        migrate(db)
        section.note(f"database: {db.label}")
        for latency in LATENCIES:
            fake.delay = latency
            for threads in CONCURRENCY:
                raw = _raw_posts(fake, sends, threads)
                sdk, whole = asyncio.run(_measure(db.url, fake, sends, threads))
                label = (
                    f"{threads} thread{'s' * (threads > 1)}, Plivo latency {latency * 1000:.0f} ms"
                )
                section.add(
                    Figure(
                        f"SDK alone, {label}",
                        sends / sdk,
                        "sends/s",
                        "raw POSTs, same threads",
                        sends / raw,
                    )
                )
                section.add(
                    Figure(
                        f"whole send flow, {label}",
                        sends / whole,
                        "sends/s",
                        "raw POSTs, same threads",
                        sends / raw,
                        note="two durable appends (request, submitted) around the SDK call",
                    )
                )
    section.note(
        "what limits it: with Plivo answering at once, CPU (2 cores shared with the fake and "
        "PostgreSQL): the SDK's per-call work in Python threads under the GIL, and two commits "
        "per send; with real latency, the thread count: each thread waits out one call at a "
        "time, so throughput is about threads / latency until the CPU limit"
    )
    return section
