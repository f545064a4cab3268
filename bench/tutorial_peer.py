"""The peer: what a user would build instead, run beside the ledger (bench/peer/server.js).

The usual tutorial design, done carefully: Fastify + node-postgres in one Node process, the
Plivo V3 signature checked, one idempotent upsert per callback into a one-row-per-message
table (the status with the higher precedence wins), and the 200 only after the write. Its
table lives in the benchmark's throwaway database. Its packages are installed with
``npm ci`` into bench/peer/node_modules on first use.

Before its figure counts, the benchmark checks that it really does that work: a forged
callback is refused with 403 and stores nothing, the genuine one is stored, and after wrk
its table holds at least as many messages as the 200s can account for.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator, Sequence

import msgspec
from psycopg.conninfo import conninfo_to_dict

from api.simulate import SignedCallback
from bench import loadgen
from bench.harness import (
    BENCH,
    PLIVO_AUTH_TOKEN,
    PUBLIC_URL,
    BenchError,
    Database,
    Server,
    clean_environ,
    free_port,
    log_path,
    managed_process,
    wait_until_ready,
)
from bench.traffic import raw_post

PEER = BENCH / "peer"
#: node-postgres pool size. 10 (pg's default), 32 and 64 gave the same throughput within
#: the noise here (8-9k/s, the 2 cores shared by node, PostgreSQL and wrk); 32 lets half
#: of wrk's 64 connections have a transaction in flight at once.
POOL_SIZE = 32
LABEL = "peer: Fastify + pg, 1 process (the usual tutorial design)"


def node_command() -> list[str]:
    """``node server.js``, after installing the peer's packages with ``npm ci`` when they are
    missing or older than package-lock.json."""
    node = shutil.which("node")
    if node is None:
        raise BenchError("node is not installed: apt-get install nodejs npm (Node 20 or newer)")
    installed = PEER / "node_modules" / ".package-lock.json"  # npm writes it on install
    lock = PEER / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        npm = shutil.which("npm")
        if npm is None:
            raise BenchError(
                "npm is not installed, and bench/peer needs it once to install its packages"
                " (npm ci): apt-get install npm"
            )
        print("  installing bench/peer's packages (npm ci)...", flush=True)
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=PEER,
            check=False,
            capture_output=True,
            text=True,
        )
        log_path("peer-npm-ci").write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            raise BenchError(
                f"npm ci in bench/peer failed: {result.stderr.strip()[-300:]} (full output in"
                " bench/out/peer-npm-ci.log)"
            )
    return [node, "server.js"]


def pg_environment(url: str) -> dict[str, str]:
    """The libpq-style ``PG*`` variables node-postgres reads, for the database at ``url``."""
    params = conninfo_to_dict(url)
    names = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "dbname": "PGDATABASE"}
    names |= {"password": "PGPASSWORD"}
    return {env: str(params[key]) for key, env in names.items() if params.get(key)}


@contextlib.contextmanager
def peer_server(db: Database, *, name: str) -> Iterator[Server]:
    """The peer on a free port, its table in ``db``, told the same public URL and auth token
    the benchmark's traffic is signed for."""
    command = node_command()
    port = free_port()
    env = clean_environ() | pg_environment(db.url)
    env |= {
        "PORT": str(port),
        "PUBLIC_URL": PUBLIC_URL,
        "PLIVO_AUTH_TOKEN": PLIVO_AUTH_TOKEN,
        "POOL_SIZE": str(POOL_SIZE),
    }
    with managed_process(command, env, name, cwd=PEER) as proc:
        wait_until_ready(proc, f"http://127.0.0.1:{port}/health", name)
        yield Server(name, port, proc, code=LABEL)


def _post(server: Server, callback: SignedCallback) -> int:
    _, statuses = loadgen.run(
        loadgen.sequential("127.0.0.1", server.port, [raw_post(callback, server.port)])
    )
    return next(iter(statuses))


def _stored_status(db: Database, message_uuid: str) -> str | None:
    status = db.scalar(
        "SELECT status FROM peer_messages WHERE message_uuid = %s::uuid", [message_uuid]
    )
    return None if status is None else str(status)


def verify(
    server: Server,
    db: Database,
    *,
    answered_ok: int,
    pool: Sequence[SignedCallback],
    probe: SignedCallback,
) -> str:
    """Check that the peer did the work its figure claims, after its wrk run; a note.

    ``answered_ok`` callbacks of ``pool`` were answered 200, so its table must hold at least
    that many divided by the most callbacks any message has in the pool. ``probe`` is a
    callback of a message not in ``pool``: sent with a body its signature does not cover it
    must be refused with 403 and leave no row; sent as signed, it must be stored.
    """
    rows = int(db.scalar("SELECT count(*) FROM peer_messages"))
    per_message = max(Counter(callback.message_uuid for callback in pool).values())
    fewest = math.ceil(answered_ok / per_message)
    if rows < fewest:
        raise BenchError(
            f"the peer lost writes: {rows:,} rows for {answered_ok:,} answers 200 (at least"
            f" {fewest:,} expected)"
        )
    forged = msgspec.structs.replace(probe, body=probe.body + b"&Forged=1")
    forged_status = _post(server, forged)
    if forged_status != 403 or _stored_status(db, probe.message_uuid) is not None:
        raise BenchError(
            f"the peer accepted a forged callback (answer {forged_status}): its figure would"
            " not be for the work the ledger does"
        )
    genuine_status = _post(server, probe)
    stored = _stored_status(db, probe.message_uuid)
    if genuine_status != 200 or stored != probe.status.lower():
        raise BenchError(
            f"the peer did not store a genuine callback (answer {genuine_status}, row {stored})"
        )
    return (
        f"peer verified: {rows:,} rows (messages) in its table after {answered_ok:,} answers 200"
        f" (at least {fewest:,} expected: at most {per_message} callbacks per message), bad"
        " signature (body changed after signing) → 403 and nothing stored, the genuine"
        " callback → 200 and stored"
    )
