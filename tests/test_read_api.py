"""The read API over the projections: status, search, daily metrics, readiness and lag."""

from __future__ import annotations

import csv
import io
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from api.simulate import lifecycle, sign
from projections.progress import DEAD_LETTERS_COUNTED
from tests.conftest import CALLBACK_URL, PLIVO_TOKEN, every_connection_taken, wait_for_views

Client = AsyncTestClient[Litestar]
DAY = datetime(2026, 11, 20, 9, tzinfo=UTC)


async def send(client: Client, params: list[tuple[str, str]]) -> int:
    """Post one signed callback; return the position it was acknowledged with."""
    signed = sign(params, url=CALLBACK_URL, auth_token=PLIVO_TOKEN)
    response = await client.post("/plivo/status", content=signed.body, headers=signed.headers)
    assert response.status_code == 200
    position: int = response.json()["position"]
    return position


async def deliver(client: Client, message: str, start: datetime = DAY, seed: int = 0) -> int:
    """Send a queued → sent → delivered lifecycle; return the last position."""
    rng = random.Random(seed)
    while True:
        steps = lifecycle(rng, start, message)
        if dict(steps[-1])["Status"] == "delivered":
            break
    return max([await send(client, step) for step in steps])


async def read_status(client: Client, auth: dict[str, str], message: str, position: int) -> Any:
    response = await client.get(
        f"/v1/messages/{message}", params={"wait_for_position": position}, headers=auth
    )
    assert response.status_code == 200
    assert "ledger-view-stale" not in response.headers
    return response.json()


MESSAGE = "5b1f3c7e-1a2b-4c3d-8e9f-0a1b2c3d4e5f"


async def test_a_client_reads_its_own_write_with_wait_for_position(
    client: Client, auth: dict[str, str]
) -> None:
    position = await deliver(client, MESSAGE)
    status = await read_status(client, auth, MESSAGE, position)
    assert status["status"] == "delivered"
    assert status["event_count"] == 3
    assert status["queued_at"] <= status["sent_at"] <= status["delivered_at"]


async def test_a_read_that_times_out_waiting_for_its_write_is_marked_stale(
    client: Client, auth: dict[str, str]
) -> None:
    position = await deliver(client, MESSAGE)
    await read_status(client, auth, MESSAGE, position)
    response = await client.get(
        f"/v1/messages/{MESSAGE}",
        params={"wait_for_position": position + 1000, "wait_seconds": 0.2},
        headers=auth,
    )
    assert response.status_code == 200
    assert response.headers["ledger-view-stale"] == "true"
    assert response.json()["status"] == "delivered"  # what the view has, however stale


async def test_an_error_code_comes_with_its_meaning(client: Client, auth: dict[str, str]) -> None:
    params = lifecycle(random.Random(1), DAY, MESSAGE)[0]
    failed = [(k, {"Status": "failed", "ErrorCode": "420"}.get(k, v)) for k, v in params]
    status = await read_status(client, auth, MESSAGE, await send(client, failed))
    assert (status["status"], status["error_code"]) == ("failed", "420")
    assert "expired" in status["error_description"].lower()


async def test_an_unknown_message_is_404(client: Client, auth: dict[str, str]) -> None:
    response = await client.get(f"/v1/messages/{MESSAGE}", headers=auth)
    assert response.status_code == 404


async def test_search_pages_through_every_match_once(client: Client, auth: dict[str, str]) -> None:
    messages = [f"00000000-0000-4000-8000-{n:012d}" for n in range(7)]
    last = 0
    for n, message in enumerate(messages):
        last = max(last, await deliver(client, message, DAY + timedelta(minutes=n), seed=n))
    await read_status(client, auth, messages[0], last)

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"status": "delivered", "limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/messages", params=params, headers=auth)).json()
        seen += [item["message_uuid"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(messages))


@pytest.mark.parametrize("typed", ["+14155550100", "14155550100", "+1 (415) 555-0100"])
async def test_search_finds_a_recipient_written_as_people_dial_it(
    client: Client, auth: dict[str, str], typed: str
) -> None:
    mine = lifecycle(random.Random(4), DAY, MESSAGE, outcome="undelivered", to_number="14155550100")
    other = lifecycle(random.Random(5), DAY, to_number="14155550101")
    last = max([await send(client, step) for step in [*mine, *other]])
    await read_status(client, auth, MESSAGE, last)
    response = await client.get("/v1/messages", params={"to": typed}, headers=auth)
    assert [item["message_uuid"] for item in response.json()["items"]] == [MESSAGE]


async def test_search_filters_by_error_code(client: Client, auth: dict[str, str]) -> None:
    failed = lifecycle(random.Random(4), DAY, MESSAGE, outcome="undelivered")
    last = max([await send(client, step) for step in failed])
    await deliver(client, "00000000-0000-4000-8000-000000000001")
    status = await read_status(client, auth, MESSAGE, last)
    code = status["error_code"]
    response = await client.get("/v1/messages", params={"error_code": code}, headers=auth)
    assert [item["message_uuid"] for item in response.json()["items"]] == [MESSAGE]
    none = await client.get("/v1/messages", params={"error_code": "1"}, headers=auth)
    assert none.json()["items"] == []


async def test_search_refuses_a_forged_cursor(client: Client, auth: dict[str, str]) -> None:
    response = await client.get("/v1/messages", params={"cursor": "bogus"}, headers=auth)
    assert response.status_code == 400
    assert response.json()["field"] == "cursor"


async def test_search_caps_the_page_size(client: Client, auth: dict[str, str]) -> None:
    response = await client.get("/v1/messages", params={"limit": 100_000}, headers=auth)
    assert response.status_code == 400


async def test_daily_metrics_count_each_message_at_its_current_status(
    client: Client, auth: dict[str, str], database_url: str
) -> None:
    position = await deliver(client, MESSAGE)
    await wait_for_views(database_url, position)  # the daily view, not only the status view
    response = await client.get(
        "/v1/metrics/daily", params={"start": "2026-11-20", "end": "2026-11-20"}, headers=auth
    )
    assert response.status_code == 200
    [day] = response.json()
    assert day["day"] == "2026-11-20"
    assert day["messages"] == 1
    assert day["statuses"] == {"delivered": 1}
    assert day["delivery_rate"] == 1.0


@pytest.mark.parametrize("how", ["accept", "format"])
async def test_daily_metrics_come_as_csv_on_request(
    client: Client, auth: dict[str, str], database_url: str, how: str
) -> None:
    position = await deliver(client, MESSAGE)
    await wait_for_views(database_url, position)  # the daily view, not only the status view
    params = {"start": "2026-11-19", "end": "2026-11-21"}
    headers = dict(auth)
    if how == "accept":
        headers["Accept"] = "text/csv"
    else:
        params["format"] = "csv"
    response = await client.get("/v1/metrics/daily", params=params, headers=headers)
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(r["day"], r["messages"], r["status_delivered"]) for r in rows] == [
        ("2026-11-20", "1", "1")
    ]


@pytest.mark.parametrize(
    ("start", "end"), [("2026-11-21", "2026-11-20"), ("2020-01-01", "2026-01-01"), ("x", "y")]
)
async def test_daily_metrics_refuse_a_bad_range(
    client: Client, auth: dict[str, str], start: str, end: str
) -> None:
    response = await client.get(
        "/v1/metrics/daily", params={"start": start, "end": end}, headers=auth
    )
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    "path",
    [
        f"/v1/messages/{MESSAGE}",
        "/v1/messages",
        "/v1/metrics/daily?start=2026-11-20&end=2026-11-20",
    ],
)
async def test_every_read_route_needs_a_token(client: Client, path: str) -> None:
    assert (await client.get(path)).status_code == 401


async def test_ready_answers_at_once_while_the_read_and_ingest_pools_are_exhausted(
    client_with_small_pools: Client,
) -> None:
    async with every_connection_taken(client_with_small_pools):
        started = time.monotonic()
        response = await client_with_small_pools.get("/ready")
        elapsed = time.monotonic() - started

    assert response.status_code == 200, response.text
    assert response.json()["ready"] is True
    assert elapsed < 1.0  # a checkout from an exhausted pool would wait its 5 s timeout


async def test_ready_counts_at_most_a_thousand_dead_letters(
    client_without_projectors: Client, conn: psycopg.AsyncConnection[Any]
) -> None:
    await conn.execute(
        "INSERT INTO dead_letters (projector, position, error)"
        " SELECT 'message_status', n, 'poison' FROM generate_series(1, %s) AS n",
        (DEAD_LETTERS_COUNTED + 5,),
    )
    response = await client_without_projectors.get("/ready")
    lags = {lag["projector"]: lag for lag in response.json()["projectors"]}
    assert lags["message_status"]["dead_letters"] == DEAD_LETTERS_COUNTED
    assert lags["daily_delivery_metrics"]["dead_letters"] == 0


async def test_ready_reports_each_projectors_lag(client: Client, auth: dict[str, str]) -> None:
    position = await deliver(client, MESSAGE)
    await read_status(client, auth, MESSAGE, position)
    response = await client.get("/ready")
    assert response.status_code == 200
    lags = {lag["projector"]: lag for lag in response.json()["projectors"]}
    assert set(lags) == {"message_status", "daily_delivery_metrics", "delivery_analytics"}
    assert lags["message_status"]["dead_letters"] == 0
