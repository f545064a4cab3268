"""Delivery-drop alerts: the last 60 minutes against the same 60 minutes of the previous 7
days, per country, carrier and sender; derived state, served, exported and posted."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from uuid import uuid4

import psycopg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from psycopg_pool import AsyncConnectionPool

from ledger.settings import DropThreshold, Settings
from ledger.webhooks import verify
from projections.alert_deliveries import DeliveryRun, deliver_due, enqueue
from projections.alerts import AlertRule, AlertWebhook, alert_events, evaluate
from projections.registry import build_projectors, projector_named
from projections.replay import replay
from projections.scheduler import ScheduledJobs
from tests.test_analytics_projection import analytics, reported
from tests.test_cli import ledger
from tests.test_status_projection import Conn, project

Client = AsyncTestClient[Litestar]
NOW = datetime(2026, 3, 8, 12, 0, tzinfo=UTC)
RULE = AlertRule(min_messages=10)
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SENDER = "14155550100"


async def traffic(
    conn: Conn, now: datetime, *, baseline: int = 4, current: int = 12, delivered: int = 6
) -> None:
    """India (AIRCEL): ``baseline`` messages, all delivered, in the window of each of the
    previous 7 days; ``current`` messages in the last hour, ``delivered`` of them delivered."""
    events = []
    for days in range(1, 8):
        for n in range(baseline):
            at = now - timedelta(days=days, minutes=30 - n)
            events.append(reported(uuid4(), "delivered", at=at, sequence=3, mcc="405", mnc="803"))
    for n in range(current):
        status = "delivered" if n < delivered else "undelivered"
        at = now - timedelta(minutes=30 - n)
        events.append(
            reported(uuid4(), status, at=at, sequence=3, mcc="405", mnc="803", error_code="30")
        )
    await project(conn, analytics, *events)


async def test_a_drop_fires_for_the_country_its_carrier_and_the_sender(conn: Conn) -> None:
    await traffic(conn, NOW)
    found = await evaluate(conn, RULE, NOW)
    groups = {(a.country, a.carrier, a.sender): a for a in found.firing}
    assert set(groups) == {("IN", None, None), ("IN", "AIRCEL", None), (None, None, SENDER)}
    india = groups[("IN", None, None)]
    assert (india.messages, india.delivery_rate, india.baseline_rate) == (12, 0.5, 1.0)
    assert india.drop == pytest.approx(50.0)
    assert (india.window_start, india.window_end, india.since) == (
        NOW - timedelta(hours=1),
        NOW,
        NOW,
    )
    assert found.started == found.firing


async def test_fewer_messages_than_the_minimum_fire_nothing(conn: Conn) -> None:
    await traffic(conn, NOW, current=8, delivered=0)
    assert (await evaluate(conn, RULE, NOW)).firing == []


async def test_a_drop_smaller_than_the_threshold_fires_nothing(conn: Conn) -> None:
    await traffic(conn, NOW, delivered=11)  # 91.7 % against 100 %: 8.3 points
    assert (await evaluate(conn, RULE, NOW)).firing == []


async def test_a_ratio_threshold_compares_with_a_share_of_the_baseline(conn: Conn) -> None:
    await traffic(conn, NOW)  # 50 % against 100 %
    strict = AlertRule(min_messages=10, drop=DropThreshold("ratio", 0.6))
    assert (await evaluate(conn, strict, NOW)).firing == []
    loose = AlertRule(min_messages=10, drop=DropThreshold("ratio", 0.4))
    assert len((await evaluate(conn, loose, NOW)).firing) == 3


async def test_a_firing_alert_keeps_its_since_and_resolves_when_its_window_passes(
    conn: Conn,
) -> None:
    await traffic(conn, NOW)
    await evaluate(conn, RULE, NOW)
    later = await evaluate(conn, RULE, NOW + timedelta(minutes=15))
    assert {a.since for a in later.firing} == {NOW}
    assert later.started == []
    gone = await evaluate(conn, RULE, NOW + timedelta(hours=2))
    assert gone.firing == []
    assert len(gone.resolved) == 3


async def test_alerts_are_served_and_exported_as_gauges(
    conn: Conn, client_without_projectors: Client, auth: dict[str, str]
) -> None:
    await traffic(conn, NOW)
    await evaluate(conn, RULE, NOW)
    response = await client_without_projectors.get("/v1/alerts", headers=auth)
    assert response.status_code == 200
    first = response.json()["alerts"][0]
    assert set(first) == {
        "country",
        "carrier",
        "sender",
        "window_start",
        "window_end",
        "messages",
        "delivery_rate",
        "baseline_rate",
        "drop",
        "since",
    }
    assert (await client_without_projectors.get("/v1/alerts")).status_code == 401
    scrape = (await client_without_projectors.get("/metrics")).text
    assert "ledger_delivery_alerts_firing 3.0" in scrape
    assert 'ledger_delivery_alert_drop_points{carrier="AIRCEL",country="IN",sender="*"} 50.0' in (
        scrape
    )
    assert SENDER not in scrape  # masked, as in logs


def test_ledger_alerts_lists_them(database_url: str, tmp_path: Path, conn_loop: None) -> None:
    result = ledger("alerts", "--json", database_url=database_url, data_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["alerts"]) == 3
    table = ledger("alerts", database_url=database_url, data_dir=tmp_path)
    assert "AIRCEL" in table.stdout


@pytest.fixture
async def conn_loop(conn: Conn) -> None:
    """Alerts firing in the test's database, for the CLI to read."""
    await traffic(conn, NOW)
    await evaluate(conn, RULE, NOW)


async def test_a_rebuild_of_the_view_recomputes_the_alerts(conn: Conn) -> None:
    now = datetime.now(UTC)
    await traffic(conn, now)
    projector = projector_named(
        "delivery_analytics", build_projectors(Settings(alert_min_messages=10))
    )
    await replay(conn, projector)
    cursor = await conn.execute(
        "SELECT country, carrier, sender FROM delivery_alerts ORDER BY 1, 2, 3"
    )
    assert await cursor.fetchall() == [("*", "*", SENDER), ("IN", "*", "*"), ("IN", "AIRCEL", "*")]


async def test_a_rebuild_recomputes_the_alerts_from_the_events_it_caught_up_too(
    conn: Conn, database_url: str
) -> None:
    # A transaction open while the traffic is appended keeps it behind the fence when the
    # rebuild fixes its build's end; it ends as soon as the rebuild has, so the traffic
    # reaches the new view only through its catch-up.
    with psycopg.connect(database_url) as blocker:
        blocker.execute("SELECT pg_current_xact_id()")
        await traffic(conn, datetime.now(UTC))

        def release(done: int, total: int) -> None:
            blocker.commit()  # the first report comes once the build's end is fixed

        projector = projector_named(
            "delivery_analytics", build_projectors(Settings(alert_min_messages=10))
        )
        report = await replay(conn, projector, on_progress=release)
    assert report.events == 40
    cursor = await conn.execute("SELECT count(*) FROM delivery_alerts")
    assert await cursor.fetchone() == (3,)


async def test_the_scheduled_job_evaluates_once_per_period(
    conn: Conn, pool: AsyncConnectionPool[Any]
) -> None:
    await traffic(conn, datetime.now(UTC))
    jobs = ScheduledJobs(
        pool, [], expire_after=timedelta(hours=48), system_key=b"k" * 32, alert_rule=RULE
    )
    assert await jobs.alerts()
    assert not await jobs.alerts()  # the same period: another process's run counts too
    cursor = await conn.execute("SELECT count(*) FROM delivery_alerts")
    assert await cursor.fetchone() == (3,)


class _Receiver(BaseHTTPRequestHandler):
    """Answers 503 to the first delivery attempt, then 204; keeps what verified."""

    attempts: ClassVar[list[str]] = []
    verified: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        type(self).attempts.append(self.headers["webhook-id"])
        if len(type(self).attempts) == 1:
            self.send_response(503)
        elif verify(SECRET, {k.lower(): v for k, v in self.headers.items()}, body):
            type(self).verified.append(json.loads(body))
            self.send_response(204)
        else:
            self.send_response(401)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def receiver() -> Iterator[str]:
    """A webhook receiver on loopback that checks signatures; its URL."""
    _Receiver.attempts, _Receiver.verified = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks"
    server.shutdown()
    thread.join()


def closed_port_url() -> str:
    """A URL on loopback where nothing listens: a receiver that is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hooks"


async def outbox(conn: Conn) -> list[tuple[str, int]]:
    """The pending deliveries: (webhook id, failed runs), oldest first."""
    cursor = await conn.execute(
        "SELECT webhook_id, attempts FROM alert_deliveries ORDER BY created_at, webhook_id"
    )
    return await cursor.fetchall()


async def enqueued(conn: Conn) -> None:
    """The three firing alerts of :func:`traffic`, in the outbox."""
    await traffic(conn, NOW)
    await enqueue(conn, alert_events(await evaluate(conn, RULE, NOW)))


async def test_the_webhook_is_signed_and_retried_until_taken(
    conn: Conn, pool: AsyncConnectionPool[Any], receiver: str
) -> None:
    await enqueued(conn)
    run = await deliver_due(pool, AlertWebhook(receiver, SECRET, first_wait=0.01))
    assert run == DeliveryRun(delivered=3)
    assert len(_Receiver.verified) == 3
    assert {body["type"] for body in _Receiver.verified} == {"delivery_alert.firing"}
    assert _Receiver.attempts[0] == _Receiver.attempts[1]  # a retry keeps its webhook-id
    assert _Receiver.verified[0]["data"]["country"] in {"IN", None}
    assert await outbox(conn) == []


async def test_a_wrong_secret_is_refused_by_the_receiver_and_the_delivery_kept(
    conn: Conn, pool: AsyncConnectionPool[Any], receiver: str
) -> None:
    await enqueued(conn)
    webhook = AlertWebhook(receiver, "whsec_" + "A" * 32, attempts=2, first_wait=0.01)
    assert await deliver_due(pool, webhook) == DeliveryRun(failed=3)
    assert _Receiver.verified == []
    assert [attempts for _, attempts in await outbox(conn)] == [1, 1, 1]


async def test_a_delivery_the_receiver_missed_is_posted_later_with_the_same_id(
    conn: Conn, pool: AsyncConnectionPool[Any], receiver: str
) -> None:
    await enqueued(conn)
    down = AlertWebhook(closed_port_url(), SECRET, attempts=1)
    assert await deliver_due(pool, down) == DeliveryRun(failed=3)
    kept = [webhook_id for webhook_id, _ in await outbox(conn)]
    up = AlertWebhook(receiver, SECRET, first_wait=0.01)
    assert await deliver_due(pool, up) == DeliveryRun()  # not due yet: it waits a minute
    await conn.execute("UPDATE alert_deliveries SET next_attempt_at = now()")
    assert await deliver_due(pool, up) == DeliveryRun(delivered=3)
    assert sorted(set(_Receiver.attempts)) == sorted(kept)


async def test_a_delivery_claimed_by_a_process_that_died_waits_for_its_lease(
    conn: Conn, pool: AsyncConnectionPool[Any], receiver: str
) -> None:
    await enqueued(conn)
    await conn.execute("UPDATE alert_deliveries SET next_attempt_at = now() + interval '2 min'")
    webhook = AlertWebhook(receiver, SECRET, first_wait=0.01)
    assert await deliver_due(pool, webhook) == DeliveryRun()  # another process holds them
    await conn.execute("UPDATE alert_deliveries SET next_attempt_at = now()")  # lease over
    assert await deliver_due(pool, webhook) == DeliveryRun(delivered=3)


async def test_a_delivery_not_taken_within_a_day_is_given_up(
    conn: Conn, pool: AsyncConnectionPool[Any], receiver: str
) -> None:
    await enqueued(conn)
    await conn.execute("UPDATE alert_deliveries SET created_at = now() - interval '25 hours'")
    run = await deliver_due(pool, AlertWebhook(receiver, SECRET, first_wait=0.01))
    assert run == DeliveryRun(given_up=3)
    assert _Receiver.attempts == []
    assert await outbox(conn) == []


async def test_the_alert_run_keeps_its_deliveries_while_the_receiver_is_down(
    conn: Conn, pool: AsyncConnectionPool[Any]
) -> None:
    await traffic(conn, datetime.now(UTC))
    jobs = ScheduledJobs(
        pool,
        [],
        expire_after=timedelta(hours=48),
        system_key=b"k" * 32,
        alert_rule=RULE,
        alert_webhook=AlertWebhook(closed_port_url(), SECRET, attempts=1),
    )
    assert await jobs.alerts()
    assert [attempts for _, attempts in await outbox(conn)] == [1, 1, 1]


async def test_pending_deliveries_are_exported_as_a_gauge(
    conn: Conn, client_without_projectors: Client
) -> None:
    await enqueued(conn)
    scrape = (await client_without_projectors.get("/metrics")).text
    assert "ledger_alert_webhook_pending 3.0" in scrape
