"""POST /v1/messages against the fake Plivo API: the callback URL, one lifecycle from send to
delivery, idempotency, Plivo's errors, tokens, and requests whose outcome is unknown."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import psycopg
from litestar import Litestar
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.simulate import sign
from ledger.events import SEND_FAILED, SEND_OUTCOME_UNKNOWN, SEND_REQUESTED
from ledger.send_events import SendRequest, send_requested_event
from ledger.sends import mark_unknown_outcomes
from ledger.settings import Settings
from ledger.store import Append, append, read_stream
from tests.conftest import API_TOKEN, CALLBACK_URL, PLIVO_TOKEN, SYSTEM_KEY, wait_for_views
from tests.fake_plivo import FakePlivo

Client = AsyncTestClient[Litestar]
Conn = psycopg.AsyncConnection[Any]
BODY = {"src": "14155550100", "dst": "919876543210", "text": "Your code is 1234"}


async def _send(
    client: Client,
    headers: dict[str, str],
    body: dict[str, Any] | None = None,
    key: str | None = None,
) -> httpx.Response:
    extra = {"Idempotency-Key": key} if key else {}
    return await client.post("/v1/messages", json=body or BODY, headers={**headers, **extra})


async def test_every_send_gives_plivo_the_ledgers_callback_url_and_post(
    send_client: Client, send_auth: dict[str, str], plivo: FakePlivo
) -> None:
    for body in (BODY, {**BODY, "dst": ["919876543210", "919876543211"]}):
        assert (await _send(send_client, send_auth, body)).status_code == 202
    assert [(s.body["url"], s.body["method"]) for s in plivo.sends] == [(CALLBACK_URL, "POST")] * 2
    assert plivo.sends[1].body["dst"] == "919876543210<919876543211"


async def test_send_submitted_and_signed_callbacks_fold_into_one_lifecycle(
    send_client: Client, send_auth: dict[str, str], auth: dict[str, str], database_url: str
) -> None:
    body = {**BODY, "tags": {"campaign": "spring"}}
    answer = await _send(send_client, send_auth, body)
    assert answer.status_code == 202, answer.text
    [message] = answer.json()["messages"]
    uuid = message["message_uuid"]
    at = datetime.now(UTC).replace(microsecond=0)
    for sequence, status in enumerate(("queued", "sent", "delivered"), start=1):
        params = [
            ("MessageUUID", uuid),
            ("Status", status),
            ("Sequence", str(sequence)),
            ("From", BODY["src"]),
            ("To", BODY["dst"]),
            ("MessageTime", (at + timedelta(seconds=sequence)).strftime("%Y-%m-%d %H:%M:%S")),
        ]
        signed = sign(params, url=CALLBACK_URL, auth_token=PLIVO_TOKEN)
        reply = await send_client.post("/plivo/status", content=signed.body, headers=signed.headers)
        assert reply.status_code == 200, reply.text
        position = reply.json()["position"]
    await wait_for_views(database_url, position)
    status = (await send_client.get(f"/v1/messages/{uuid}", headers=auth)).json()
    assert (status["status"], status["tags"], status["send_request_id"]) == (
        "delivered",
        {"campaign": "spring"},
        answer.json()["request_id"],
    )
    assert status["submitted_at"] is not None
    trail = (await send_client.get(f"/v1/messages/{uuid}/events", headers=auth)).json()
    assert [e["event_type"] for e in trail["events"]] == [
        "message.submitted",
        *["plivo.status_reported"] * 3,
    ]
    assert trail["events"][0]["position"] == message["position"]


async def test_numbers_plivo_refuses_are_recorded_as_rejected(
    send_client: Client, send_auth: dict[str, str], plivo: FakePlivo
) -> None:
    plivo.invalid_numbers = {"123"}
    answer = await _send(send_client, send_auth, {**BODY, "dst": ["919876543210", "123"]})
    assert answer.status_code == 202, answer.text
    assert len(answer.json()["messages"]) == 1
    assert [r["number"] for r in answer.json()["rejected"]] == ["123"]


async def test_concurrent_retries_with_one_idempotency_key_send_once_and_answer_alike(
    send_client: Client, send_auth: dict[str, str], plivo: FakePlivo
) -> None:
    plivo.delay = 0.5
    answers = await asyncio.gather(
        *(_send(send_client, send_auth, key="order-42") for _ in range(5))
    )
    assert [a.status_code for a in answers] == [202] * 5
    assert len({a.text for a in answers}) == 1
    assert len(plivo.sends) == 1
    later = await _send(send_client, send_auth, key="order-42")
    assert later.json() == answers[0].json()
    assert len(plivo.sends) == 1


async def test_one_idempotency_key_with_another_body_is_422(
    send_client: Client, send_auth: dict[str, str], plivo: FakePlivo
) -> None:
    assert (await _send(send_client, send_auth, key="k1")).status_code == 202
    other = await _send(send_client, send_auth, {**BODY, "text": "another"}, key="k1")
    assert other.status_code == 422
    assert other.json()["field"] == "Idempotency-Key"
    assert len(plivo.sends) == 1


async def test_a_plivo_server_error_is_recorded_and_answered_502(
    send_client: Client, send_auth: dict[str, str], plivo: FakePlivo, conn: Conn
) -> None:
    plivo.fail_next(500, "internal error")
    answer = await _send(send_client, send_auth, key="k2")
    assert answer.status_code == 502
    problem = answer.json()
    assert problem["detail"].startswith("Plivo answered 500: internal error. Nothing was sent")
    events = await read_stream(conn, UUID(problem["request_id"]))
    assert [e.event_type for e in events] == [SEND_REQUESTED, SEND_FAILED]
    assert (events[1].payload["HttpStatus"], events[1].payload["ErrorKind"]) == ("500", "server")
    # A retry answers the recorded failure and sends nothing more.
    again = await _send(send_client, send_auth, key="k2")
    assert (again.status_code, again.json()["detail"]) == (502, problem["detail"])
    assert len(plivo.sends) == 1


async def test_a_request_plivo_calls_wrong_is_answered_400(
    send_client: Client, send_auth: dict[str, str], plivo: FakePlivo
) -> None:
    plivo.fail_next(400, "invalid dst")
    answer = await _send(send_client, send_auth)
    assert (answer.status_code, answer.json()["plivo_status"]) == (400, 400)
    assert "Fix the request" in answer.json()["detail"]


async def test_a_plivo_that_does_not_answer_in_time_is_recorded_as_a_timeout(
    send_client: Client, send_auth: dict[str, str], plivo: FakePlivo
) -> None:
    plivo.delay = 3.0  # the send timeout is 2 s
    answer = await _send(send_client, send_auth)
    assert (answer.status_code, answer.json()["error_kind"]) == (502, "timeout")
    assert "may or may not have been sent" in answer.json()["detail"]


async def test_a_read_token_may_not_send_and_no_token_is_401(
    send_client: Client, plivo: FakePlivo
) -> None:
    read = await _send(send_client, {"Authorization": f"Bearer {API_TOKEN}"})
    assert read.status_code == 403
    assert (await _send(send_client, {})).status_code == 401
    assert plivo.sends == []


async def test_exactly_one_sender_is_required(
    send_client: Client, send_auth: dict[str, str]
) -> None:
    both = await _send(send_client, send_auth, {**BODY, "powerpack_uuid": "pp"})
    assert (both.status_code, both.json()["field"]) == (400, "src")


async def test_a_request_left_without_outcome_is_marked_unknown_and_shown(
    send_client: Client, conn: Conn, auth: dict[str, str]
) -> None:
    # What a process killed between the request event and Plivo's answer leaves behind.
    request = SendRequest(
        request_id=UUID(int=7),
        dst=["919876543210"],
        src="14155550100",
        text="hi",
        requested_by="token:test",
        body_hash="00",
    )
    requested_at = datetime.now(UTC)
    await append(
        conn,
        [Append(send_requested_event(request, now=requested_at, store_text=False, key=SYSTEM_KEY))],
    )
    # Not before the timeout: the process may still be waiting for Plivo.
    assert await mark_unknown_outcomes(conn, after=timedelta(minutes=2), key=SYSTEM_KEY) == 0
    later = requested_at + timedelta(minutes=3)
    assert (
        await mark_unknown_outcomes(conn, after=timedelta(minutes=2), key=SYSTEM_KEY, now=later)
        == 1
    )
    assert (
        await mark_unknown_outcomes(conn, after=timedelta(minutes=2), key=SYSTEM_KEY, now=later)
        == 0
    )
    ready = (await send_client.get("/ready")).json()
    assert ready["send_outcomes_unknown"] == 1
    metrics = (await send_client.get("/metrics")).text
    assert "ledger_send_outcomes_unknown 1.0" in metrics
    trail = (
        await send_client.get(f"/v1/messages/{request.request_id}/events", headers=auth)
    ).json()
    assert [e["event_type"] for e in trail["events"]] == [SEND_REQUESTED, SEND_OUTCOME_UNKNOWN]


async def test_plivo_refusing_the_credentials_is_502_for_the_operator(
    send_client: Client, send_auth: dict[str, str], plivo: FakePlivo
) -> None:
    plivo.fail_next(401, "authentication failed")
    answer = await _send(send_client, send_auth)
    assert (answer.status_code, answer.json()["error_kind"]) == (502, "authentication")
    assert "PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN" in answer.json()["detail"]


async def test_one_idempotency_key_sends_once_through_two_service_processes(
    send_settings: Settings, send_auth: dict[str, str], plivo: FakePlivo
) -> None:
    assert send_settings.database_url is not None
    plivo.delay = 0.5
    apps = [
        create_app(send_settings, send_settings.database_url, run_projectors=False)
        for _ in range(2)
    ]
    async with AsyncTestClient(apps[0]) as one, AsyncTestClient(apps[1]) as two:
        answers = await asyncio.gather(
            *(_send(client, send_auth, key="across") for client in (one, two, one, two))
        )
    assert [a.status_code for a in answers] == [202] * 4
    assert len({a.text for a in answers}) == 1
    assert len(plivo.sends) == 1
