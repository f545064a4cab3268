"""On the embedded PostgreSQL, ``ledger serve`` sets least privilege up by itself: it migrates
as the server's superuser and serves as the ledger_app login, a member of ledger_service."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from ledger.database import embedded_server
from ledger.roles import EMBEDDED_SERVICE_LOGIN
from tests.conftest import API_TOKEN, PLIVO_TOKEN, PUBLIC_URL
from tests.reliability.conftest import SERVER_READY_SECONDS, free_port, session_of

pytestmark = pytest.mark.reliability


def test_the_embedded_default_serves_as_a_login_that_cannot_change_history(
    tmp_path: Path,
) -> None:
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "LEDGER_DATA_DIR": str(tmp_path / "data"),
        "PLIVO_AUTH_TOKEN": PLIVO_TOKEN,
        "LEDGER_PUBLIC_URL": PUBLIC_URL,
        "LEDGER_API_TOKENS": API_TOKEN,
    }
    command = [sys.executable, "-m", "api.cli", "serve", "--port", str(port)]
    with session_of(command, env=env, cwd=tmp_path) as process:
        deadline = time.monotonic() + SERVER_READY_SECONDS
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=2.0) as client:
            while True:
                assert process.poll() is None, process.communicate()[1]
                try:
                    if client.get("/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the server was not ready in time"
                time.sleep(0.1)
        # Join the same embedded server as its superuser, and look at who is connected.
        with (
            embedded_server(tmp_path / "data" / "postgres") as superuser,
            psycopg.connect(superuser, autocommit=True) as conn,
        ):
            users = conn.execute(
                "SELECT DISTINCT usename FROM pg_stat_activity"
                " WHERE application_name LIKE 'ledger-%%'"
            ).fetchall()
            can_update = conn.execute(
                "SELECT has_table_privilege(%s, 'events', 'UPDATE'), rolsuper"
                " FROM pg_roles WHERE rolname = %s",
                (EMBEDDED_SERVICE_LOGIN, EMBEDDED_SERVICE_LOGIN),
            ).fetchone()
            # A clean stop, so that this handle is the server's last and stops it on leaving.
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
    assert users == [(EMBEDDED_SERVICE_LOGIN,)]
    assert can_update == (False, False)
