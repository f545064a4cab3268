"""Graceful shutdown: SIGTERM under load drains in-flight appends, then the process exits."""

from __future__ import annotations

import asyncio

import pytest

from tests.reliability.conftest import (
    CallbackSource,
    ServerFleet,
    SteadyLoad,
    identity_of,
    stored_identities,
)

pytestmark = pytest.mark.reliability


async def test_sigterm_under_load_exits_cleanly_and_keeps_every_acknowledged_callback(
    servers: ServerFleet, database_url: str
) -> None:
    server = servers.create(database_url, name="shutdown")
    async with SteadyLoad(server.base_url, CallbackSource(seed=9), clients=8) as load:
        await load.wait_for_acknowledgements(200)
        exit_code = await asyncio.to_thread(server.stop)
    assert exit_code == 0
    stored = await stored_identities(database_url)
    acknowledged = [identity_of(callback) for callback in load.acknowledged]
    assert acknowledged, "the load never got an answer"
    assert all(stored[identity] == 1 for identity in acknowledged)
