"""kill -9 between a send's request event and Plivo's answer: the outcome is shown as unknown,
never left as a silent gap.

A real ``ledger serve`` sends through the fake Plivo API, which holds its answer; once Plivo
has the request, the server's whole process group is killed. The request event is in the
ledger with no outcome. A server started again on the same database runs the outcome job,
which marks the request ``message.send_outcome_unknown``; /ready, /metrics and the audit
trail show it.
"""

from __future__ import annotations

import asyncio
import time
from uuid import UUID

import httpx
import pytest

from ledger.events import SEND_OUTCOME_UNKNOWN, SEND_REQUESTED
from ledger.send_events import request_id_for
from tests.conftest import API_TOKEN, PLIVO_TOKEN, SEND_TOKEN
from tests.fake_plivo import AUTH_ID, fake_plivo
from tests.reliability.conftest import ServerFleet

pytestmark = pytest.mark.reliability


def _wait_for(condition: object, within: float) -> None:
    deadline = time.monotonic() + within
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s")
        time.sleep(0.05)


async def test_a_send_killed_before_plivo_answers_is_marked_outcome_unknown(
    servers: ServerFleet, database_url: str
) -> None:
    with fake_plivo() as plivo:
        plivo.delay = 30.0
        env = {
            "PLIVO_AUTH_ID": AUTH_ID,
            "PLIVO_AUTH_TOKEN": PLIVO_TOKEN,
            "PLIVO_API_URL": plivo.url,
            "LEDGER_SEND_TOKENS": SEND_TOKEN,
            "LEDGER_SYSTEM_KEY": "test-system-key",
            "LEDGER_SEND_TIMEOUT": "1s",
            "LEDGER_SEND_OUTCOME_AFTER": "3s",
        }
        server = servers.create(database_url, name="send-crash", env=env)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
            sending = asyncio.create_task(
                client.post(
                    "/v1/messages",
                    json={"src": "14155550100", "dst": "919876543210", "text": "hi"},
                    headers={"Authorization": f"Bearer {SEND_TOKEN}", "Idempotency-Key": "crash"},
                )
            )
            await asyncio.to_thread(_wait_for, lambda: plivo.sends, 20)
            server.kill()
            with pytest.raises(httpx.TransportError):
                await sending
        request = request_id_for("crash")
        await asyncio.to_thread(server.start)
        auth = {"Authorization": f"Bearer {API_TOKEN}"}
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            deadline = time.monotonic() + 120
            while True:  # the job runs once a minute, a few seconds past the timeout
                trail = (await client.get(f"/v1/messages/{request}/events", headers=auth)).json()
                types = [event["event_type"] for event in trail["events"]]
                if SEND_OUTCOME_UNKNOWN in types or time.monotonic() > deadline:
                    break
                await asyncio.sleep(1)
            assert types == [SEND_REQUESTED, SEND_OUTCOME_UNKNOWN]
            assert (await client.get("/ready")).json()["send_outcomes_unknown"] == 1
            assert "ledger_send_outcomes_unknown 1.0" in (await client.get("/metrics")).text
            # A retry with the same key says the outcome is unknown instead of sending again.
            retry = await client.post(
                "/v1/messages",
                json={"src": "14155550100", "dst": "919876543210", "text": "hi"},
                headers={"Authorization": f"Bearer {SEND_TOKEN}", "Idempotency-Key": "crash"},
            )
        assert (retry.status_code, retry.json()["error_kind"]) == (502, "outcome_unknown")
        assert retry.json()["request_id"] == str(UUID(str(request)))
        assert len(plivo.sends) == 1
