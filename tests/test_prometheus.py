"""``GET /metrics``: what a Prometheus scraper reads, value by value.

The counters live in the test process's registry and so add up across tests: each test reads
them before and after what it does, and checks the difference.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from api.simulate import lifecycle, sign
from ledger.seals import seal_settled
from ledger.settings import Settings
from projections.registry import build_projectors
from projections.runner import CatchUpRunner
from tests.conftest import CALLBACK_URL, PLIVO_TOKEN, every_connection_taken
from tests.test_runner import drain

Client = AsyncTestClient[Litestar]
START = datetime(2026, 11, 23, 10, tzinfo=UTC)


async def scrape(client: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample ``/metrics`` exposes, by name and sorted labels."""
    response = await client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def outcomes(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> Counter[str]:
    """``ledger_callbacks_total`` by outcome."""
    return Counter(
        {
            dict(labels)["outcome"]: int(value)
            for (name, labels), value in samples.items()
            if name == "ledger_callbacks_total"
        }
    )


def acks(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> int:
    """How many callbacks the ack-time histogram has observed."""
    return int(samples.get(("ledger_callback_ack_seconds_count", ()), 0))


def by_projector(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], metric: str
) -> dict[str, int]:
    """A per-projector gauge's values."""
    return {
        dict(labels)["projector"]: int(value)
        for (name, labels), value in samples.items()
        if name == metric
    }


def first_callbacks(count: int, seed: int, token: str = PLIVO_TOKEN) -> list[Any]:
    """The first callback of ``count`` distinct messages, signed with ``token``."""
    rng = random.Random(seed)
    return [
        sign(lifecycle(rng, START)[0], url=CALLBACK_URL, auth_token=token) for _ in range(count)
    ]


async def send_traffic(client: Client, appended: int, duplicates: int, forged: int) -> None:
    """``appended`` new callbacks, ``duplicates`` retries of them, ``forged`` bad signatures."""
    callbacks = first_callbacks(appended, seed=11)
    for callback in callbacks + callbacks[:duplicates]:
        response = await client.post(
            "/plivo/status", content=callback.body, headers=callback.headers
        )
        assert response.status_code == 200
    for callback in first_callbacks(forged, seed=12, token="not-the-plivo-token"):
        response = await client.post(
            "/plivo/status", content=callback.body, headers=callback.headers
        )
        assert response.status_code == 403


async def test_metrics_answer_with_lag_while_the_read_and_ingest_pools_are_exhausted(
    client_with_small_pools: Client,
) -> None:
    await send_traffic(client_with_small_pools, appended=2, duplicates=0, forged=0)
    async with every_connection_taken(client_with_small_pools):
        started = time.monotonic()
        samples = await scrape(client_with_small_pools)
        elapsed = time.monotonic() - started

    assert by_projector(samples, "ledger_projector_events_behind")["message_status"] >= 1
    assert elapsed < 4.0  # a checkout from an exhausted pool would wait its 5 s timeout


async def test_metrics_name_their_charset_once(client: Client) -> None:
    response = await client.get("/metrics")
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    assert response.headers["content-type"].count("charset") == 1


async def test_each_callback_is_counted_under_its_own_outcome(client: Client) -> None:
    before = outcomes(await scrape(client))
    await send_traffic(client, appended=5, duplicates=3, forged=2)
    after = outcomes(await scrape(client))
    assert after - before == Counter(appended=5, duplicate=3, bad_signature=2)


async def test_every_answered_callback_is_timed(client: Client) -> None:
    before = acks(await scrape(client))
    await send_traffic(client, appended=4, duplicates=2, forged=1)
    assert acks(await scrape(client)) - before == 7


async def test_every_event_committed_is_counted_in_an_append_batch(client: Client) -> None:
    before = await scrape(client)
    await send_traffic(client, appended=4, duplicates=2, forged=1)
    after = await scrape(client)
    batched = ("ledger_append_batch_events_sum", ())
    assert after[batched] - before.get(batched, 0) == 6  # retries ride a batch too


async def test_an_oversized_callback_is_counted_as_too_large(client: Client) -> None:
    before = outcomes(await scrape(client))
    [callback] = first_callbacks(1, seed=13)
    response = await client.post(
        "/plivo/status", content=b"a=" + b"x" * (70 * 1024), headers=callback.headers
    )
    assert response.status_code == 413
    assert outcomes(await scrape(client)) - before == Counter(too_large=1)


async def test_projector_lag_counts_pending_events_until_the_views_catch_up(
    settings: Settings, client_without_projectors: Client
) -> None:
    client = client_without_projectors
    await send_traffic(client, appended=3, duplicates=0, forged=0)
    samples = await scrape(client)
    assert by_projector(samples, "ledger_projector_events_behind") == {
        "message_status": 3,
        "daily_delivery_metrics": 3,
        "delivery_analytics": 3,
    }
    assert by_projector(samples, "ledger_dead_letters") == {
        "message_status": 0,
        "daily_delivery_metrics": 0,
        "delivery_analytics": 0,
    }

    assert settings.database_url is not None
    projectors = build_projectors(settings)
    runner = CatchUpRunner(settings.database_url, projectors)
    for projector in projectors:
        await drain(runner, projector)
    assert by_projector(await scrape(client), "ledger_projector_events_behind") == {
        "message_status": 0,
        "daily_delivery_metrics": 0,
        "delivery_analytics": 0,
    }


async def test_seal_gauges_show_the_sealed_position_and_the_wait_of_unsealed_events(
    client_without_projectors: Client, conn: Any
) -> None:
    client = client_without_projectors
    await send_traffic(client, appended=2, duplicates=0, forged=0)
    samples = await scrape(client)
    assert samples[("ledger_sealed_position", ())] == 0
    assert samples[("ledger_seal_lag_seconds", ())] > 0

    [block] = await seal_settled(conn, block_events=10)
    samples = await scrape(client)
    assert samples[("ledger_sealed_position", ())] == block.last.position
    assert samples[("ledger_seal_lag_seconds", ())] == 0
