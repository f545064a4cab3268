"""The processes of ``ledger serve``: HTTP workers that only answer requests, and one projector
process beside them, each replaced when it dies, all stopped cleanly by SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path

import httpx
import pytest

from ledger.database import connect
from projections.checkpoints import stored_checkpoint
from projections.status import MessageStatusProjector
from tests.reliability.conftest import (
    CallbackSource,
    LedgerServer,
    ServerFleet,
    SteadyLoad,
    _group_members,
    deliver,
    eventually,
    fields_of,
    http,
)

pytestmark = pytest.mark.reliability

PROJECTOR_COMMAND = "api.projector_process"
HTTP_WORKER = "spawn_main"
#: The view whose live batches the metrics test watches.
STATUS_VIEW = MessageStatusProjector()


def children_of(pid: int) -> dict[int, str]:
    """The live child processes of ``pid`` and their command lines, read from /proc."""
    children = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        if int(ppid) == pid and state not in {"Z", "X"}:
            children[int(entry.name)] = command
    return children


def projector_pids(server: LedgerServer) -> list[int]:
    return [pid for pid, command in children_of(server.pid).items() if PROJECTOR_COMMAND in command]


def http_worker_pids(server: LedgerServer) -> list[int]:
    """Granian's workers: started by multiprocessing's spawn (beside its resource tracker)."""
    return [pid for pid, command in children_of(server.pid).items() if HTTP_WORKER in command]


def the_projector(server: LedgerServer) -> int:
    pids = projector_pids(server)
    assert len(pids) == 1, f"expected one projector process, found {pids}"
    return pids[0]


async def wait_for_projector(server: LedgerServer, *, other_than: int | None = None) -> int:
    """The pid of the server's one projector process, once there is one (not ``other_than``)."""
    await eventually(
        lambda: [pid for pid in projector_pids(server) if pid != other_than] != [],
        within=20,
        message=lambda: f"no new projector process: children {children_of(server.pid)}",
    )
    return the_projector(server)


async def status_view_built(database_url: str) -> bool:
    """Whether the status view's first build is done (its checkpoint is of this version)."""
    async with connect(database_url) as conn:
        stored = await stored_checkpoint(conn, STATUS_VIEW.name)
    return stored is not None and stored.version == STATUS_VIEW.version


async def in_status_view(database_url: str, message_uuid: str) -> bool:
    async with connect(database_url) as conn:
        cursor = await conn.execute(
            "SELECT 1 FROM message_status WHERE message_uuid = %s", (message_uuid,)
        )
        return await cursor.fetchone() is not None


async def deliver_new_message(server: LedgerServer, seed: int) -> str:
    """Deliver the first callback of a new message (retried until answered 200); its uuid."""
    callback = next(CallbackSource(seed=seed))
    async with http(server.base_url) as client:
        await deliver(client, callback, within=30)
    return fields_of(callback)["MessageUUID"].lower()


async def test_serve_runs_one_projector_process_beside_its_http_workers(
    servers: ServerFleet, database_url: str
) -> None:
    server = servers.create(database_url, name="layout", env={"LEDGER_WORKERS": "2"})
    await wait_for_projector(server)
    assert len(projector_pids(server)) == 1
    assert len(http_worker_pids(server)) == 2


async def test_a_killed_projector_process_is_restarted_and_the_views_advance_again(
    servers: ServerFleet, database_url: str
) -> None:
    server = servers.create(database_url, name="projector-killed")
    killed = await wait_for_projector(server)
    os.kill(killed, signal.SIGKILL)
    await wait_for_projector(server, other_than=killed)
    message_uuid = await deliver_new_message(server, seed=11)
    await eventually(
        lambda: in_status_view(database_url, message_uuid),
        within=10,
        message="the new callback never reached the status view",
    )
    assert re.search(
        rf"projector: pid {killed} exited unexpectedly \(killed by SIGKILL\)",
        server.stderr_path.read_text(),
    )


async def test_http_workers_do_not_project(servers: ServerFleet, database_url: str) -> None:
    """With the projector process dead and its supervisor frozen (SIGSTOP of the main
    process), callbacks are still answered 200 but the view stays where it was; once the
    supervisor runs again it restarts the projector and the view catches up."""
    server = servers.create(database_url, name="no-projection", env={"LEDGER_WORKERS": "2"})
    projector = await wait_for_projector(server)
    os.kill(server.pid, signal.SIGSTOP)
    try:
        os.kill(projector, signal.SIGKILL)
        await eventually(
            lambda: projector not in children_of(server.pid), within=10, message="still alive"
        )
        uuids = [await deliver_new_message(server, seed=seed) for seed in range(20, 26)]
        await asyncio.sleep(3)  # far longer than a projector takes to apply them
        assert [await in_status_view(database_url, uuid) for uuid in uuids] == [False] * 6
    finally:
        os.kill(server.pid, signal.SIGCONT)
    await eventually(
        lambda: in_status_view(database_url, uuids[-1]),
        within=15,
        message="the restarted projector did not apply the callbacks",
    )


async def test_sigterm_to_serve_stops_the_projector_after_its_batch_and_leaves_no_process(
    servers: ServerFleet, database_url: str
) -> None:
    """SIGTERM to the main process alone, as ``kill PID`` does: the projector finishes its
    batch and exits 0, the checkpoint matches the view, nothing of the group remains."""
    server = servers.create(database_url, name="projector-sigterm", env={"LEDGER_WORKERS": "2"})
    await wait_for_projector(server)
    process = server.process
    assert process is not None
    async with SteadyLoad(server.base_url, CallbackSource(seed=13), clients=4) as load:
        await load.wait_for_acknowledgements(150)
        os.kill(server.pid, signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0
    await eventually(
        lambda: not _group_members(process.pid),
        within=30,
        message=lambda: f"processes of 'ledger serve' outlived it: {_group_members(process.pid)}",
    )
    server.process = None
    assert "projector: stopped (exit status 0)" in server.stderr_path.read_text()
    async with connect(database_url) as conn:
        cursor = await conn.execute(
            "SELECT (SELECT count(DISTINCT e.message_uuid) FROM events AS e"
            "   WHERE (e.transaction_id, e.position) <= (c.transaction_id, c.position)),"
            "  (SELECT count(*) FROM message_status)"
            " FROM projection_checkpoints AS c WHERE c.name = 'message_status'"
        )
        row = await cursor.fetchone()
    assert row is not None
    events_up_to_checkpoint, view_rows = row
    assert view_rows > 0
    assert view_rows == events_up_to_checkpoint


async def test_a_killed_http_worker_is_respawned(servers: ServerFleet, database_url: str) -> None:
    server = servers.create(database_url, name="worker-killed")  # one HTTP worker: no other
    (worker,) = http_worker_pids(server)
    os.kill(worker, signal.SIGKILL)
    await eventually(
        lambda: [pid for pid in http_worker_pids(server) if pid != worker] != [],
        within=20,
        message="the HTTP worker was not respawned",
    )
    async with http(server.base_url) as client:
        for seed in range(30, 35):
            await deliver(client, next(CallbackSource(seed=seed)), within=15)
    assert len(http_worker_pids(server)) == 1


async def test_the_projector_process_metrics_show_at_the_http_workers_metrics(
    servers: ServerFleet, database_url: str
) -> None:
    server = servers.create(database_url, name="metrics", env={"LEDGER_WORKERS": "2"})
    await wait_for_projector(server)
    # An event appended before the view's first build is folded by the build, which the
    # counter of live batches does not count.
    await eventually(lambda: status_view_built(database_url), within=20)
    await deliver_new_message(server, seed=41)
    projected = re.compile(r'^ledger_projected_events_total\{projector="message_status"\} (\S+)$')

    async def projected_shown() -> bool:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=5) as client:
            text = (await client.get("/metrics")).text
        values = [float(m.group(1)) for line in text.splitlines() if (m := projected.match(line))]
        return (
            values != [] and values[0] >= 1 and "ledger_projector_process_starts_total 1.0" in text
        )

    await eventually(projected_shown, within=15, message="the projector's metrics never showed")


async def test_every_process_of_serve_stops_when_its_main_process_is_killed_alone(
    servers: ServerFleet, database_url: str
) -> None:
    """kill -9 of the main process only (it cannot tell its children): the HTTP workers and
    the projector notice that their parent is gone and stop; nothing keeps the port."""
    server = servers.create(database_url, name="orphans", env={"LEDGER_WORKERS": "2"})
    await wait_for_projector(server)
    process = server.process
    assert process is not None
    os.kill(process.pid, signal.SIGKILL)
    await asyncio.to_thread(process.wait, 10)
    await eventually(
        lambda: not _group_members(process.pid),
        within=20,
        message=lambda: f"processes outlived their server: {_group_members(process.pid)}",
    )
