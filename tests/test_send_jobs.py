"""Reconciliation with Plivo's Message API, and opt-in resends, against the fake Plivo API."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec
import psycopg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from psycopg_pool import AsyncConnectionPool

from api.app import create_app
from api.background import send_settings
from api.simulate import sign
from ledger.events import MESSAGE_RECONCILED, MESSAGE_SUBMITTED, RESEND_SCHEDULED
from ledger.send_events import PLIVO_API_REASON
from ledger.sends import plivo_api_for
from ledger.settings import Settings, SettingsError, load_settings
from ledger.store import read_stream
from projections.expiry import expire_stale
from projections.queries import get_message_status
from projections.scheduler import ScheduledJobs
from projections.send_jobs import SendJobs
from tests.conftest import CALLBACK_URL, PLIVO_TOKEN, SYSTEM_KEY, wait_for_views
from tests.fake_plivo import FakePlivo

Client = AsyncTestClient[Litestar]
Conn = psycopg.AsyncConnection[Any]
BODY = {"src": "14155550100", "dst": "919876543210", "text": "Your code is 1234"}


@contextlib.asynccontextmanager
async def jobs_for(settings: Settings, pool: AsyncConnectionPool[Any]) -> AsyncIterator[SendJobs]:
    """The send jobs as a worker runs them, on ``settings``."""
    api = plivo_api_for(settings)
    assert api is not None
    try:
        yield SendJobs(pool, api, send_settings(settings), key=SYSTEM_KEY)
    finally:
        api.close()


async def _sent(
    client: Client, headers: dict[str, str], to: str = "919876543210"
) -> dict[str, Any]:
    answer = await client.post("/v1/messages", json={**BODY, "dst": to}, headers=headers)
    assert answer.status_code == 202, answer.text
    message: dict[str, Any] = answer.json()["messages"][0]
    return message


async def _report(client: Client, uuid: str, status: str, error_code: str = "") -> int:
    params = [
        ("MessageUUID", uuid),
        ("Status", status),
        ("ErrorCode", error_code),
        ("From", BODY["src"]),
        ("To", BODY["dst"]),
        ("Sequence", "2"),
    ]
    signed = sign(params, url=CALLBACK_URL, auth_token=PLIVO_TOKEN)
    reply = await client.post("/plivo/status", content=signed.body, headers=signed.headers)
    assert reply.status_code == 200, reply.text
    position: int = reply.json()["position"]
    return position


def _plivo_record(uuid: str, state: str) -> dict[str, str]:
    return {
        "message_uuid": uuid,
        "message_state": state,
        "error_code": "",
        "from_number": BODY["src"],
        "to_number": BODY["dst"],
        "message_type": "sms",
        "units": "1",
        "total_amount": "0.0025",
    }


async def _delivered_without_callbacks(
    client: Client, headers: dict[str, str], plivo: FakePlivo, database_url: str
) -> str:
    """A message sent and projected whose callbacks never came, though Plivo delivered it."""
    message = await _sent(client, headers)
    uuid: str = message["message_uuid"]
    plivo.messages[uuid] = _plivo_record(uuid, "delivered")
    await wait_for_views(database_url, message["position"])
    return uuid


LATER = timedelta(minutes=31)


async def test_reconciliation_recovers_a_message_whose_callbacks_never_came(
    send_client: Client,
    send_auth: dict[str, str],
    send_settings: Settings,
    pool: AsyncConnectionPool[Any],
    plivo: FakePlivo,
    conn: Conn,
    database_url: str,
) -> None:
    uuid = await _delivered_without_callbacks(send_client, send_auth, plivo, database_url)
    async with jobs_for(send_settings, pool) as jobs:
        # Not while its callbacks may still come.
        assert await jobs.reconcile() == 0
        assert await jobs.reconcile(now=datetime.now(UTC) + LATER) == 1
    events = await read_stream(conn, UUID(uuid))
    assert [e.event_type for e in events] == [MESSAGE_SUBMITTED, MESSAGE_RECONCILED]
    assert (events[1].status, events[1].meta.reason) == ("delivered", PLIVO_API_REASON)
    await wait_for_views(database_url, events[1].position)
    status = await get_message_status(conn, UUID(uuid))
    assert status is not None
    assert (status.status, str(status.total_amount)) == ("delivered", "0.0025")


async def test_reconciliation_asks_only_about_messages_without_a_final_status(
    send_client: Client,
    send_auth: dict[str, str],
    send_settings: Settings,
    pool: AsyncConnectionPool[Any],
    plivo: FakePlivo,
    database_url: str,
) -> None:
    settled = await _sent(send_client, send_auth, "919876543210")
    waiting = await _sent(send_client, send_auth, "919876543211")
    unknown_to_plivo = await _sent(send_client, send_auth, "919876543212")
    plivo.messages[waiting["message_uuid"]] = _plivo_record(waiting["message_uuid"], "sent")
    await wait_for_views(
        database_url, await _report(send_client, settled["message_uuid"], "delivered")
    )
    async with jobs_for(send_settings, pool) as jobs:
        assert await jobs.reconcile(now=datetime.now(UTC) + LATER) == 1
    looked_up = {lookup.path.rstrip("/").rsplit("/", 1)[-1] for lookup in plivo.lookups}
    assert looked_up == {waiting["message_uuid"], unknown_to_plivo["message_uuid"]}


async def test_reconciliation_keeps_to_the_rate_limit(
    send_client: Client,
    send_auth: dict[str, str],
    send_settings: Settings,
    pool: AsyncConnectionPool[Any],
    plivo: FakePlivo,
    database_url: str,
) -> None:
    last = 0
    for n in range(3):
        last = (await _sent(send_client, send_auth, f"91987654321{n}"))["position"]
    await wait_for_views(database_url, last)
    limited = msgspec.structs.replace(send_settings, reconcile_per_minute=120)  # one per 0.5 s
    async with jobs_for(limited, pool) as jobs:
        await jobs.reconcile(now=datetime.now(UTC) + LATER)
    times = [lookup.at for lookup in plivo.lookups]
    assert len(times) == 3
    assert all(b - a >= 0.45 for a, b in itertools.pairwise(times))
    # One a minute: a second lookup would come 60 s later; the run stops at the first.
    capped = msgspec.structs.replace(send_settings, reconcile_per_minute=1)
    plivo.requests.clear()
    async with jobs_for(capped, pool) as jobs:
        await jobs.reconcile(now=datetime.now(UTC) + LATER + LATER)
    assert len(plivo.lookups) == 1  # one run never asks more than a minute's worth


@pytest.fixture
def resend_settings(send_settings: Settings) -> Settings:
    return msgspec.structs.replace(
        send_settings,
        store_text=True,
        resend_error_codes=frozenset({"20", "80"}),
        resend_backoff=timedelta(minutes=5),
    )


@pytest.fixture
async def resend_client(resend_settings: Settings) -> AsyncIterator[Client]:
    assert resend_settings.database_url is not None
    async with AsyncTestClient(create_app(resend_settings, resend_settings.database_url)) as client:
        yield client


async def test_a_retryable_failure_is_resent_once_across_two_workers(
    resend_client: Client,
    send_auth: dict[str, str],
    resend_settings: Settings,
    pool: AsyncConnectionPool[Any],
    plivo: FakePlivo,
    conn: Conn,
    database_url: str,
) -> None:
    old = (await _sent(resend_client, send_auth))["message_uuid"]
    await wait_for_views(database_url, await _report(resend_client, old, "failed", "20"))
    later = datetime.now(UTC) + timedelta(minutes=6)
    async with jobs_for(resend_settings, pool) as one, jobs_for(resend_settings, pool) as two:
        assert await one.resend() == 0  # before the backoff
        resent = await asyncio.gather(one.resend(now=later), two.resend(now=later))
    assert sum(resent) == 1
    assert len(plivo.sends) == 2
    assert plivo.sends[1].body["text"] == BODY["text"]
    [scheduled] = [
        e for e in await read_stream(conn, UUID(old)) if e.event_type == RESEND_SCHEDULED
    ]
    new = scheduled.payload["ResentAs"]
    assert isinstance(new, str)
    await wait_for_views(database_url, scheduled.position)
    before, after = (
        await get_message_status(conn, UUID(old)),
        await get_message_status(conn, UUID(new)),
    )
    assert before is not None
    assert after is not None
    assert (before.resent_as, after.resent_from) == (new, old)
    async with jobs_for(resend_settings, pool) as again:
        assert await again.resend(now=later + timedelta(hours=1)) == 0
    assert len(plivo.sends) == 2


async def test_an_invalid_recipient_is_never_resent(
    resend_client: Client,
    send_auth: dict[str, str],
    resend_settings: Settings,
    pool: AsyncConnectionPool[Any],
    plivo: FakePlivo,
    database_url: str,
) -> None:
    old = (await _sent(resend_client, send_auth))["message_uuid"]
    await wait_for_views(database_url, await _report(resend_client, old, "failed", "50"))
    everything = msgspec.structs.replace(
        resend_settings, resend_error_codes=frozenset({"20", "50"})
    )
    async with jobs_for(everything, pool) as jobs:
        assert await jobs.resend(now=datetime.now(UTC) + timedelta(hours=1)) == 0
    assert len(plivo.sends) == 1


@pytest.mark.parametrize("codes", ["50", "number", "200"])
def test_resend_settings_refuse_invalid_or_blocked_recipients(codes: str) -> None:
    with pytest.raises(SettingsError, match="never resent"):
        load_settings({"LEDGER_RESEND_ERROR_CODES": codes}, env_file=None)


async def test_a_reconciled_message_is_not_expired_and_two_schedulers_reconcile_once(
    send_client: Client,
    send_auth: dict[str, str],
    send_settings: Settings,
    pool: AsyncConnectionPool[Any],
    plivo: FakePlivo,
    conn: Conn,
    database_url: str,
) -> None:
    uuid = await _delivered_without_callbacks(send_client, send_auth, plivo, database_url)
    # Backdate the view, so that the schedulers' own clock finds the message stale.
    await conn.execute(
        "UPDATE message_status SET last_event_at = last_event_at - interval '1 hour'"
    )
    async with jobs_for(send_settings, pool) as send_jobs:
        schedulers = [
            ScheduledJobs(
                pool,
                [],
                expire_after=timedelta(hours=48),
                system_key=SYSTEM_KEY,
                send_jobs=send_jobs,
            )
            for _ in range(2)
        ]
        ran = await asyncio.gather(*(s.reconcile() for s in schedulers))
    assert sorted(ran) == [False, True]
    assert len(plivo.lookups) == 1
    [reconciled] = [
        e for e in await read_stream(conn, UUID(uuid)) if e.event_type == MESSAGE_RECONCILED
    ]
    await wait_for_views(database_url, reconciled.position)
    far = datetime.now(UTC) + timedelta(days=3)
    assert (
        await expire_stale(conn, expire_after=timedelta(hours=48), system_key=SYSTEM_KEY, now=far)
        == 0
    )
