"""Metrics and search by tag: the figures of the messages sent with a tag, and per value."""

from __future__ import annotations

from datetime import timedelta
from uuid import uuid4

from litestar import Litestar
from litestar.testing import AsyncTestClient

from projections.queries import daily_metrics, daily_metrics_by_tag
from projections.registry import PROJECTORS
from tests.conftest import wait_for_views
from tests.test_send_fold import T0, _request, _submitted
from tests.test_status_projection import Conn, apply, callback, record

DAY = T0.date()


async def _campaign(conn: Conn, campaign: str, outcomes: list[str], *, project: bool = True) -> int:
    """Messages sent with tag campaign=``campaign``, one per outcome, appended and (with
    ``project``) applied to the views; the last position."""
    request = _request(tags={"campaign": campaign})
    events = []
    for offset, outcome in enumerate(outcomes):
        message = uuid4()
        at = T0 + timedelta(minutes=offset)
        events += [
            _submitted(request, message, at),
            callback(message, outcome, at=at + timedelta(seconds=3)),
        ]
    recorded = await record(conn, *events)
    for projector in PROJECTORS if project else ():
        await apply(conn, projector, recorded)
    return max(event.position for event in recorded)


async def test_metrics_of_every_tagged_message_equal_the_metrics_view(conn: Conn) -> None:
    await _campaign(conn, "spring", ["delivered", "delivered", "failed"])
    await _campaign(conn, "spring", ["undelivered", "sent"])
    everything = await daily_metrics(conn, DAY, DAY)
    assert await daily_metrics(conn, DAY, DAY, tags={"campaign": "spring"}) == everything


async def test_metrics_filter_by_tag_and_group_by_its_values(conn: Conn) -> None:
    await _campaign(conn, "spring", ["delivered", "delivered", "failed"])
    await _campaign(conn, "autumn", ["undelivered"])
    [spring] = await daily_metrics(conn, DAY, DAY, tags={"campaign": "spring"})
    assert (spring.messages, spring.statuses) == (3, {"delivered": 2, "failed": 1})
    series = await daily_metrics_by_tag(conn, DAY, DAY, "campaign")
    assert list(series) == ["autumn", "spring"]
    assert series["autumn"][0].statuses == {"undelivered": 1}
    assert series["spring"] == [spring]
    assert await daily_metrics(conn, DAY, DAY, tags={"campaign": "winter"}) == []


async def test_the_api_groups_daily_metrics_by_tag(
    conn: Conn, client: AsyncTestClient[Litestar], auth: dict[str, str], database_url: str
) -> None:
    await wait_for_views(
        database_url, await _campaign(conn, "spring", ["delivered"], project=False)
    )
    day = DAY.isoformat()
    answer = await client.get(
        f"/v1/metrics/daily/by-tag/campaign?start={day}&end={day}", headers=auth
    )
    assert answer.status_code == 200, answer.text
    assert [(s["value"], s["days"][0]["messages"]) for s in answer.json()] == [("spring", 1)]
    filtered = await client.get(
        f"/v1/metrics/daily?start={day}&end={day}&tag=campaign=autumn", headers=auth
    )
    assert filtered.json() == []
    bad = await client.get(f"/v1/metrics/daily?start={day}&end={day}&tag=campaign", headers=auth)
    assert (bad.status_code, bad.json()["field"]) == (400, "tag")


async def test_the_search_api_filters_by_tag(
    conn: Conn, client: AsyncTestClient[Litestar], auth: dict[str, str], database_url: str
) -> None:
    await _campaign(conn, "spring", ["delivered"], project=False)
    await wait_for_views(database_url, await _campaign(conn, "autumn", ["failed"], project=False))
    found = (await client.get("/v1/messages?tag=campaign=autumn", headers=auth)).json()
    assert [(m["status"], m["tags"]) for m in found["items"]] == [
        ("failed", {"campaign": "autumn"})
    ]
