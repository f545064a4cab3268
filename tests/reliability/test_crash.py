"""Crash safety: a 200 is a promise that survives ``kill -9``.

Under a steady signed load from a few concurrent clients, the server's whole process group
(main process and granian workers) is killed with SIGKILL five times, at whatever moment the
load happens to be at, and restarted each time on the same database and port. Every callback
answered 200 must be in the ledger exactly once; the callbacks caught in a crash are then
retried, as Plivo retries, and must not be stored twice; and the views, once caught up, must
equal a replay of the ledger.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from api.simulate import SignedCallback
from tests.reliability.conftest import (
    CallbackSource,
    Identity,
    LedgerServer,
    ServerFleet,
    SteadyLoad,
    assert_same_rows,
    deliver,
    http,
    identity_of,
    stored_identities,
    table_snapshot,
    wait_for_projections,
)

pytestmark = pytest.mark.reliability

KILLS = 5
CLIENTS = 4
#: New acknowledgements to wait for between two crashes (and after the last restart).
ACKS_BETWEEN_KILLS = 120


@dataclass
class CrashRun:
    """What the crash scenario left behind for the tests to check."""

    server: LedgerServer
    acknowledged: list[SignedCallback]
    sent: list[SignedCallback]
    ledger_after_crashes: Counter[Identity]
    ledger_after_retries: Counter[Identity]


@pytest.fixture(scope="module")
async def crash_run(module_servers: ServerFleet, module_databases: Callable[[], str]) -> CrashRun:
    server = module_servers.create(module_databases(), name="crash")
    async with SteadyLoad(server.base_url, CallbackSource(seed=5), clients=CLIENTS) as load:
        for kill in range(1, KILLS + 1):
            await load.wait_for_acknowledgements(kill * ACKS_BETWEEN_KILLS)
            server.kill()
            await asyncio.to_thread(server.start)
        await load.wait_for_acknowledgements((KILLS + 1) * ACKS_BETWEEN_KILLS)
    ledger_after_crashes = await stored_identities(server.database_url)

    # Plivo retries whatever was not acknowledged (a refused connection, a reset, a 503).
    async with http(server.base_url) as client:
        for callback in load.unacknowledged:
            await deliver(client, callback)

    return CrashRun(
        server=server,
        acknowledged=load.acknowledged,
        sent=[attempt.callback for attempt in load.attempts],
        ledger_after_crashes=ledger_after_crashes,
        ledger_after_retries=await stored_identities(server.database_url),
    )


def test_the_server_was_really_killed_and_restarted_under_load(crash_run: CrashRun) -> None:
    assert crash_run.server.starts == KILLS + 1
    assert len(crash_run.acknowledged) >= (KILLS + 1) * ACKS_BETWEEN_KILLS
    # Some callbacks were caught by a crash: otherwise the kills proved nothing.
    assert len(crash_run.sent) > len(crash_run.acknowledged)


def test_every_acknowledged_callback_is_in_the_ledger_exactly_once(crash_run: CrashRun) -> None:
    acknowledged = {identity_of(callback) for callback in crash_run.acknowledged}
    stored = crash_run.ledger_after_crashes
    missing = acknowledged - set(stored)
    assert not missing, f"{len(missing)} acknowledged callbacks lost, e.g. {sorted(missing)[:3]}"
    repeated = {identity: n for identity, n in stored.items() if n != 1}
    assert not repeated, f"callbacks stored more than once: {repeated}"


def test_retried_callbacks_complete_the_ledger_without_duplicates(crash_run: CrashRun) -> None:
    sent = Counter(identity_of(callback) for callback in crash_run.sent)
    assert crash_run.ledger_after_retries == Counter(dict.fromkeys(sent, 1))


async def test_views_caught_up_after_the_crashes_equal_a_replay(crash_run: CrashRun) -> None:
    """The views the service kept current across the crashes are the views a replay builds."""
    from ledger.settings import Settings
    from projections.registry import build_projectors

    server = crash_run.server
    tables = [table for projector in build_projectors(Settings()) for table in projector.tables]
    await wait_for_projections(server.database_url)
    caught_up = {table: await table_snapshot(server.database_url, table) for table in tables}

    replay = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "api.cli", "replay"],
        env=server.environment(),
        cwd=server.data_dir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert replay.returncode == 0, replay.stderr
    await wait_for_projections(server.database_url)
    replayed = {table: await table_snapshot(server.database_url, table) for table in tables}

    assert caught_up["message_status"], "the status view is empty"
    for table in tables:
        assert_same_rows(caught_up[table], replayed[table], f"{table} caught up vs replayed")
