"""Ways an operator could run the service wrongly by accident, each made loud: a second server
on a taken port, pools that could outgrow the database server's connections, and
``kill -TERM`` of ``python3 dev.py serve``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import httpx
import pytest

from ledger.database import connect, connections_accepted
from tests.reliability.conftest import (
    SERVER_READY_SECONDS,
    ServerFleet,
    _group_members,
    eventually,
    free_port,
    session_of,
)

pytestmark = pytest.mark.reliability

ROOT = Path(__file__).resolve().parents[2]


def serve_on(port: int, *, env: Mapping[str, str], cwd: Path) -> tuple[int, str]:
    """Run ``ledger serve --port PORT`` until it exits; its status and stderr. A server that
    starts instead of exiting fails the test."""
    command = [sys.executable, "-m", "api.cli", "serve", "--port", str(port)]
    with session_of(command, env=env, cwd=cwd) as process:
        try:
            _, stderr = process.communicate(timeout=SERVER_READY_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(f"a second server started on the taken port {port} instead of exiting")
        return process.returncode, stderr


def taken_port_message(port: int) -> list[str]:
    return [
        f"ledger: error: port {port} on 127.0.0.1 is already in use (by another 'ledger serve' "
        "or another program): stop it, or choose another port with --port or LEDGER_PORT"
    ]


def test_a_second_server_on_a_taken_port_refuses_to_start(
    servers: ServerFleet, database_url: str, empty_database_url: str, tmp_path: Path
) -> None:
    first = servers.create(database_url, name="first")
    # The second points at another database: had it started, it would take part of the
    # traffic into that database.
    env = {**first.environment(), "DATABASE_URL": empty_database_url}
    code, stderr = serve_on(first.port, env=env, cwd=tmp_path)
    assert (code, stderr.splitlines()) == (2, taken_port_message(first.port))
    assert httpx.get(f"{first.base_url}/ready", timeout=5).status_code == 200


def test_a_port_held_by_another_program_refuses_to_start(
    servers: ServerFleet, database_url: str, tmp_path: Path
) -> None:
    server = servers.create(database_url, name="unstarted", start=False)
    with socket.socket() as other_program:
        other_program.bind(("127.0.0.1", 0))
        other_program.listen()
        port = other_program.getsockname()[1]
        code, stderr = serve_on(port, env=server.environment(), cwd=tmp_path)
    assert (code, stderr.splitlines()) == (2, taken_port_message(port))


async def test_serve_warns_when_its_pools_could_outgrow_the_servers_connections(
    servers: ServerFleet, database_url: str
) -> None:
    async with connect(database_url) as conn:
        accepted = await connections_accepted(conn)
    # One worker whose read pool alone could take every connection the server accepts: it
    # still starts (pools only grow under load), and says so.
    server = servers.create(
        database_url, name="many-connections", env={"LEDGER_POOL_SIZE": str(accepted)}
    )
    warnings = [
        line
        for line in server.stderr_path.read_text().splitlines()
        if "database connections" in line
    ]
    assert len(warnings) == 1, warnings
    assert f"x {accepted + 5}, and " in warnings[0]
    assert f"but the server accepts {accepted} " in warnings[0]
    assert warnings[0].endswith(
        "lower LEDGER_WORKERS or LEDGER_POOL_SIZE, or raise max_connections"
    )


async def test_sigterm_to_dev_py_serve_stops_the_server_and_leaves_no_orphan(
    servers: ServerFleet, database_url: str, tmp_path: Path
) -> None:
    environment = servers.create(database_url, name="dev-py", start=False).environment()
    port = free_port()
    command = [sys.executable, str(ROOT / "dev.py"), "serve", "--port", str(port)]
    with session_of(command, env=environment, cwd=tmp_path) as dev_py:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=2) as client:

            async def ready() -> bool:
                with contextlib.suppress(httpx.TransportError):
                    return (await client.get("/ready")).status_code == 200
                return False

            await eventually(ready, within=SERVER_READY_SECONDS, message="never ready")
        os.kill(dev_py.pid, signal.SIGTERM)  # the one process an operator would signal
        assert await asyncio.to_thread(dev_py.wait, 30) == 0
        await eventually(
            lambda: not _group_members(dev_py.pid),
            within=30,
            message=lambda: (
                f"processes of 'dev.py serve' outlived it: {_group_members(dev_py.pid)}"
            ),
        )
