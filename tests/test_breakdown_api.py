"""GET /v1/metrics/breakdown: the analytics cube by any dimension, as JSON or CSV."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from typing import Any
from uuid import uuid4

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.test_analytics_projection import T0, analytics, reported
from tests.test_status_projection import Conn, project

Client = AsyncTestClient[Litestar]
RANGE = {"start": "2026-03-01", "end": "2026-03-01"}


async def deliver(conn: Conn, *, mcc: str, mnc: str, outcome: str, error: str = "") -> None:
    """One message queued, sent after 200 ms, and reported ``outcome`` 5 s later."""
    message = uuid4()
    await project(
        conn,
        analytics,
        reported(message, "queued", at=T0, sequence=1),
        reported(
            message, "sent", at=T0 + timedelta(milliseconds=200), sequence=2, mcc=mcc, mnc=mnc
        ),
        *(
            [
                reported(
                    message,
                    outcome,
                    at=T0 + timedelta(seconds=5.2),
                    sequence=3,
                    mcc=mcc,
                    mnc=mnc,
                    error_code=error,
                    amount="0.0050",
                )
            ]
            if outcome != "sent"
            else []
        ),
    )


@pytest.fixture
async def traffic(conn: Conn) -> None:
    """India: 3 delivered and 1 undelivered on AIRCEL, 1 delivered on BSNL; the US: 2 sent
    (no delivery reports there), 1 failed."""
    for _ in range(3):
        await deliver(conn, mcc="405", mnc="803", outcome="delivered")
    await deliver(conn, mcc="405", mnc="803", outcome="undelivered", error="30")
    await deliver(conn, mcc="404", mnc="80", outcome="delivered")
    for _ in range(2):
        await deliver(conn, mcc="310", mnc="260", outcome="sent")
    await deliver(conn, mcc="310", mnc="260", outcome="failed", error="900")


async def get(client: Client, auth: dict[str, str], **params: Any) -> Any:
    response = await client.get("/v1/metrics/breakdown", params={**RANGE, **params}, headers=auth)
    assert response.status_code == 200, response.text
    return response.json()


async def test_rows_by_country_count_each_message_once_most_first(
    client_without_projectors: Client, auth: dict[str, str], traffic: None
) -> None:
    body = await get(client_without_projectors, auth)
    assert body["by"] == ["country"]
    india, us = body["rows"]
    assert (india["country"], india["messages"], india["delivered"]) == ("IN", 5, 4)
    assert (us["country"], us["messages"]) == ("US", 3)
    assert india["delivery_rate"] == pytest.approx(4 / 5)
    assert india["delivery_rate_with_sent"] == pytest.approx(4 / 5)
    assert "carrier" not in india


async def test_sent_counts_as_delivered_where_configured(
    client_without_projectors: Client, auth: dict[str, str], traffic: None
) -> None:
    [us] = (await get(client_without_projectors, auth, country="us"))["rows"]
    assert (us["delivered"], us["delivered_or_sent"]) == (0, 2)
    assert us["delivery_rate"] == 0.0
    assert us["delivery_rate_with_sent"] == pytest.approx(2 / 3)


async def test_rows_by_country_and_carrier_with_latency_and_cost(
    client_without_projectors: Client, auth: dict[str, str], traffic: None
) -> None:
    body = await get(client_without_projectors, auth, by="country,carrier", country="IN")
    rows = {(r["country"], r["carrier"]): r for r in body["rows"]}
    aircel = rows[("IN", "AIRCEL")]
    assert (aircel["messages"], aircel["delivered"]) == (4, 3)
    assert 100 <= aircel["queue_p50_ms"] <= 250
    assert 5000 <= aircel["carrier_p95_ms"] <= 10000
    assert aircel["amount"] == "0.02"
    assert aircel["cost_per_delivered"] == "0.00667"
    assert rows[("IN", "BSNL Mobile")]["messages"] == 1
    queue = {b["le_ms"]: b["count"] for b in body["latency"]["queue"]}
    assert queue[250] == 5
    assert sum(queue.values()) == 5
    assert body["latency"]["queue"][-1]["le_ms"] is None


async def test_rows_by_error_family_and_status_filter(
    client_without_projectors: Client, auth: dict[str, str], traffic: None
) -> None:
    body = await get(
        client_without_projectors, auth, by="error_family", status="undelivered,failed"
    )
    assert {r["error_family"]: r["messages"] for r in body["rows"]} == {"content": 1, "credit": 1}


async def test_rows_by_hour_are_in_the_configured_zone(
    client_without_projectors: Client, auth: dict[str, str], traffic: None
) -> None:
    [hour] = (await get(client_without_projectors, auth, by="hour"))["rows"]
    assert hour["hour"] == "2026-03-01T10:00:00Z"
    assert hour["messages"] == 8


async def test_limit_keeps_the_biggest_rows(
    client_without_projectors: Client, auth: dict[str, str], traffic: None
) -> None:
    [top] = (await get(client_without_projectors, auth, by="carrier", limit=1))["rows"]
    assert (top["carrier"], top["messages"]) == ("AIRCEL", 4)


async def test_the_breakdown_comes_as_csv_on_request(
    client_without_projectors: Client, auth: dict[str, str], traffic: None
) -> None:
    response = await client_without_projectors.get(
        "/v1/metrics/breakdown",
        params={**RANGE, "by": "country,carrier"},
        headers={**auth, "Accept": "text/csv"},
    )
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert rows[0]["country"] == "IN"
    assert rows[0]["carrier"] == "AIRCEL"
    assert rows[0]["messages"] == "4"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"start": "2026-03-02", "end": "2026-03-01"}, "start"),
        ({"start": "2020-01-01", "end": "2026-01-01"}, "start"),
        ({"start": "yesterday", "end": "2026-03-01"}, "start"),
        ({"by": "planet"}, "by"),
        ({"by": "country,country"}, "by"),
        ({"limit": "0"}, "limit"),
    ],
)
async def test_a_bad_query_is_a_clear_400(
    client_without_projectors: Client, auth: dict[str, str], params: dict[str, str], field: str
) -> None:
    response = await client_without_projectors.get(
        "/v1/metrics/breakdown", params={**RANGE, **params}, headers=auth
    )
    assert response.status_code == 400
    assert response.json()["field"] == field


async def test_the_breakdown_needs_a_token(client_without_projectors: Client) -> None:
    response = await client_without_projectors.get("/v1/metrics/breakdown", params=RANGE)
    assert response.status_code == 401


async def test_start_and_end_may_be_times(
    client_without_projectors: Client, auth: dict[str, str], traffic: None
) -> None:
    inside = await get(
        client_without_projectors,
        auth,
        start="2026-03-01T10:30:00+00:00",
        end="2026-03-01T11:00:00Z",
    )
    assert sum(row["messages"] for row in inside["rows"]) == 8  # hour cells: from 10:00
    after = await get(
        client_without_projectors, auth, start="2026-03-01T11:00:00", end="2026-03-02"
    )
    assert after["rows"] == []
