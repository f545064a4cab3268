"""The reliability suite's harness: the real service in a subprocess, driven over HTTP.

Every server here is started the way an operator starts it, ``python -m api.cli serve --port N``
in a process group of its own (so that ``kill -9`` of the group takes the granian workers
down too), with a fresh database, a temporary data directory, known Plivo and read-API
tokens and ``LEDGER_LOG_LEVEL=DEBUG``. Its stdout and stderr go to files that the log test
reads at the end. Tests talk to it only over HTTP with httpx, as Plivo and analysts do, and
look into its database only to check what was stored.

Every server a fixture starts is stopped in teardown (SIGTERM, then kill -9 of the group if
it does not go), whatever the test did to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl

import httpx
import psycopg
import pytest

from api.simulate import SignedCallback, lifecycle, sign
from ledger.database import connect
from tests.conftest import (
    API_TOKEN,
    CALLBACK_URL,
    PLIVO_TOKEN,
    PUBLIC_URL,
    database_url_for,
    run_ledger,
)

Params = list[tuple[str, str]]
#: What makes a callback distinct for the ledger: (MessageUUID, Status, Sequence).
Identity = tuple[str, str, str]

SERVER_READY_SECONDS = 60.0
SERVER_STOP_SECONDS = 20.0
PROBLEM_JSON = "application/problem+json"
AUTHORIZED = {"Authorization": f"Bearer {API_TOKEN}"}


# --- What the session exposed to servers (for the log test) --------------------------------


@dataclass
class Exposure:
    """Everything this session showed the servers it started: the files their output went to,
    and the phone numbers in the traffic sent to them. The log test checks that no log holds
    a secret or one of these numbers."""

    log_files: list[Path] = field(default_factory=list)
    phone_numbers: set[str] = field(default_factory=set)


EXPOSURE = Exposure()


def remember_numbers(params: Sequence[tuple[str, str]]) -> None:
    """Note the From/To numbers of a callback about to be sent."""
    EXPOSURE.phone_numbers.update(value for key, value in params if key in {"From", "To"} and value)


# --- The service in a subprocess ------------------------------------------------------------


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        state, _ppid, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
        if int(pgrp) == pgid and state not in {"Z", "X"}:
            members.append(int(entry.name))
    return members


def _rss_bytes(pid: int) -> int:
    try:
        resident_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def session_of(
    command: list[str], *, env: Mapping[str, str], cwd: Path
) -> Iterator[subprocess.Popen[str]]:
    """``command`` in a session of its own; whatever of it is left is killed at the end."""
    process = subprocess.Popen(
        command,
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()


class LedgerServer:
    """``ledger serve`` in a subprocess with a process group of its own.

    :meth:`start` returns once ``GET /ready`` answers 200; :meth:`kill` is ``kill -9`` of the
    whole group (a crash: the granian workers die too); :meth:`stop` is SIGTERM to the group
    (a graceful stop). The same server can be started again on the same port and database.
    """

    def __init__(
        self,
        *,
        name: str,
        database_url: str,
        data_dir: Path,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.database_url = database_url
        self.data_dir = data_dir
        self.port = free_port()
        self.stdout_path = log_dir / f"{name}.stdout.log"
        self.stderr_path = log_dir / f"{name}.stderr.log"
        self.extra_env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        EXPOSURE.log_files += [self.stdout_path, self.stderr_path]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        assert self.process is not None, f"server {self.name} is not started"
        return self.process.pid

    def environment(self) -> dict[str, str]:
        """A clean environment: only what the service needs, nothing from the test runner."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.data_dir),
            "DATABASE_URL": self.database_url,
            "LEDGER_DATA_DIR": str(self.data_dir),
            "PLIVO_AUTH_TOKEN": PLIVO_TOKEN,
            "LEDGER_PUBLIC_URL": PUBLIC_URL,
            "LEDGER_API_TOKENS": API_TOKEN,
            "LEDGER_LOG_LEVEL": "DEBUG",
            **self.extra_env,
        }

    def start(self, timeout: float = SERVER_READY_SECONDS) -> None:
        """Start the server and wait until ``GET /ready`` answers 200."""
        if self.running:
            raise RuntimeError(f"server {self.name} is already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.stdout_path.open("ab") as stdout, self.stderr_path.open("ab") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "api.cli", "serve", "--port", str(self.port)],
                env=self.environment(),
                cwd=self.data_dir,  # away from any .env in the checkout
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,  # its own process group: pgid == pid
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.base_url, timeout=2.0) as client:
            while True:
                if (code := self.process.poll()) is not None:
                    self.process = None
                    raise RuntimeError(
                        f"server {self.name} exited with status {code} before it was ready:\n"
                        + self.stderr_tail()
                    )
                with contextlib.suppress(httpx.TransportError):
                    if client.get("/ready").status_code == 200:
                        return
                if time.monotonic() > deadline:
                    self.kill()
                    raise TimeoutError(
                        f"server {self.name} was not ready within {timeout:.0f} s:\n"
                        + self.stderr_tail()
                    )
                time.sleep(0.05)

    def kill(self) -> None:
        """``kill -9`` the whole process group and wait until every process of it is gone."""
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        self._wait_until_gone(process.pid, timeout=10.0)

    def stop(self, timeout: float = SERVER_STOP_SECONDS) -> int:
        """SIGTERM the process group (a graceful stop) and wait; kill -9 it past ``timeout``.

        Returns the exit status of the main process.
        """
        process = self.process
        if process is None:
            raise RuntimeError(f"server {self.name} is not running")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self.process = None
        self._wait_until_gone(process.pid, timeout=timeout)
        return code

    def close(self) -> None:
        """Teardown: stop gracefully if running, and make sure nothing of the group survives."""
        if self.process is None:
            return
        pgid = self.process.pid
        try:
            self.stop(timeout=10.0)
        except Exception:
            self.kill()
        finally:
            with contextlib.suppress(ProcessLookupError):
                if _group_members(pgid):
                    os.killpg(pgid, signal.SIGKILL)

    def rss_bytes(self) -> int:
        """Resident memory of every process of the server's group (main process and workers)."""
        return sum(_rss_bytes(pid) for pid in _group_members(self.pid))

    def stderr_tail(self, lines: int = 30) -> str:
        if not self.stderr_path.exists():
            return "(no stderr)"
        return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-lines:])

    @staticmethod
    def _wait_until_gone(pgid: int, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while _group_members(pgid):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                raise TimeoutError(f"process group {pgid} still has members after {timeout} s")
            time.sleep(0.02)


class ServerFleet:
    """Creates servers under one directory and stops every one of them on close."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.servers: list[LedgerServer] = []
        self._names = itertools.count()

    def create(
        self,
        database_url: str,
        *,
        name: str = "ledger",
        env: Mapping[str, str] | None = None,
        start: bool = True,
    ) -> LedgerServer:
        unique = f"{name}-{next(self._names)}"
        server = LedgerServer(
            name=unique,
            database_url=database_url,
            data_dir=self.root / unique,
            log_dir=self.root,
            env=env,
        )
        self.servers.append(server)
        if start:
            server.start()
        return server

    def close(self) -> None:
        for server in self.servers:
            server.close()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[ServerFleet]:
    """Start servers for one test; every one is stopped (or killed) at teardown."""
    fleet = ServerFleet(tmp_path)
    try:
        yield fleet
    finally:
        fleet.close()


@pytest.fixture(scope="module")
def module_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFleet]:
    """Start servers shared by a module's tests; every one is stopped at module teardown."""
    fleet = ServerFleet(tmp_path_factory.mktemp("servers"))
    try:
        yield fleet
    finally:
        fleet.close()


_database_names = itertools.count()


@pytest.fixture(scope="module")
def module_databases(server_url: str, template_database: str) -> Iterator[Callable[[], str]]:
    """Make fresh migrated databases (copies of the session's template) for a module's
    scenario; all are dropped at module teardown."""
    created: list[str] = []

    def create() -> str:
        name = f"ledger_reliability_{os.getpid()}_{next(_database_names)}"
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
        created.append(name)
        return database_url_for(server_url, name)

    yield create
    with psycopg.connect(server_url, autocommit=True) as admin:
        for name in created:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- Traffic ---------------------------------------------------------------------------------


#: Simulated messages start within this many seconds of each other, around a midnight.
TRAFFIC_SPREAD_SECONDS = 120


def traffic_start(spread: int = TRAFFIC_SPREAD_SECONDS) -> datetime:
    """When simulated traffic starts: ``spread / 2`` seconds before the last UTC midnight that
    is at least an hour ago.

    Straddling a day boundary makes a message's metrics day depend on its earliest event,
    which any order-dependence in the views then shows. The traffic is between 1 and 26 hours
    old: in the past, and far from the 48 h after which the scheduler expires messages.
    """
    midnight = (datetime.now(UTC) - timedelta(hours=1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    return midnight - timedelta(seconds=spread / 2)


def signed(params: Params) -> SignedCallback:
    """``params`` signed with V3 for the public callback URL, as Plivo would send them."""
    remember_numbers(params)
    return sign(params, url=CALLBACK_URL, auth_token=PLIVO_TOKEN)


def message_lifecycles(
    rng: random.Random,
    messages: int,
    *,
    start: datetime,
    spread: int = TRAFFIC_SPREAD_SECONDS,
) -> list[list[Params]]:
    """The callbacks Plivo would send for ``messages`` messages sent within ``spread`` seconds
    from ``start``, each message's list in Plivo's order."""
    return [
        lifecycle(rng, start + timedelta(milliseconds=rng.randrange(spread * 1000)))
        for _ in range(messages)
    ]


def fields_of(callback: SignedCallback) -> dict[str, str]:
    """The form fields of a signed callback's body."""
    return dict(parse_qsl(callback.body.decode(), keep_blank_values=True))


def identity_of(callback: SignedCallback) -> Identity:
    """(MessageUUID, Status, Sequence) of a callback, normalised as the ledger stores them."""
    fields = fields_of(callback)
    return fields["MessageUUID"].lower(), fields["Status"].lower(), fields.get("Sequence", "")


class CallbackSource:
    """An endless supply of distinct signed callbacks: whole lifecycles, in Plivo's order."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._start = traffic_start()
        self._pending: deque[Params] = deque()

    def __iter__(self) -> Iterator[SignedCallback]:
        return self

    def __next__(self) -> SignedCallback:
        if not self._pending:
            self._pending.extend(message_lifecycles(self._rng, 1, start=self._start)[0])
        return signed(self._pending.popleft())


@dataclass(frozen=True)
class Attempt:
    """One POST of a callback: when it was sent, when it ended and how (status or error)."""

    callback: SignedCallback
    sent_at: float
    answered_at: float
    status: int | None
    error: str | None = None
    retry_after: str | None = None

    @property
    def acknowledged(self) -> bool:
        return self.status == 200

    @property
    def seconds(self) -> float:
        return self.answered_at - self.sent_at


class SteadyLoad:
    """Distinct signed callbacks posted until stopped, closed-loop or open-loop.

    Closed loop (``rate=None``): ``clients`` concurrent clients, each sending its next callback
    once the previous one is answered. Open loop (``rate`` per second): like Plivo, which
    sends a callback whenever a message changes status whatever is still in flight, a new
    callback every ``1/rate`` s, with at most ``clients`` in flight.

    Each callback is tried once; one that got no 200 stays unacknowledged (the test may send
    it again later, as Plivo's retries would). After a failure to connect a closed-loop client
    pauses briefly, so that a restarting server is not starved of CPU.

    Requests are spread over many small httpx clients (see :func:`client_for`): one httpx
    pool with hundreds of connections in flight stalls the test's event loop for seconds,
    which would look like a slow server.
    """

    LANE_CONNECTIONS = 4

    def __init__(
        self,
        base_url: str,
        source: Iterator[SignedCallback],
        *,
        clients: int = 4,
        rate: float | None = None,
        failure_pause: float = 0.05,
    ) -> None:
        self._base_url = base_url
        self._source = source
        self._clients = clients
        self._rate = rate
        self._failure_pause = failure_pause
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._lanes: list[httpx.AsyncClient] = []
        self.attempts: list[Attempt] = []

    async def __aenter__(self) -> Self:
        if self._rate is None:
            self._lanes = [client_for(self._base_url) for _ in range(self._clients)]
            self._tasks = [asyncio.create_task(self._client(lane)) for lane in self._lanes]
        else:
            lanes = -(-self._clients // self.LANE_CONNECTIONS)
            self._lanes = [client_for(self._base_url, self.LANE_CONNECTIONS) for _ in range(lanes)]
            self._tasks = [asyncio.create_task(self._dispatch(self._rate))]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stopping.set()
        await asyncio.gather(*self._tasks)
        for lane in self._lanes:
            await lane.aclose()

    @property
    def acknowledged(self) -> list[SignedCallback]:
        return [attempt.callback for attempt in self.attempts if attempt.acknowledged]

    @property
    def unacknowledged(self) -> list[SignedCallback]:
        return [attempt.callback for attempt in self.attempts if not attempt.acknowledged]

    def count_acknowledged(self) -> int:
        return sum(attempt.acknowledged for attempt in self.attempts)

    async def wait_for_acknowledgements(self, count: int, *, within: float = 60.0) -> None:
        """Wait until at least ``count`` callbacks in all have been answered 200."""
        await eventually(
            lambda: self.count_acknowledged() >= count,
            within=within,
            message=lambda: f"only {self.count_acknowledged()} of {count} callbacks acknowledged",
        )

    async def _client(self, http: httpx.AsyncClient) -> None:
        while not self._stopping.is_set():
            if (await self._send(http, next(self._source))).status is None:
                await asyncio.sleep(self._failure_pause)

    async def _dispatch(self, rate: float) -> None:
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(self._clients)

        async def send(http: httpx.AsyncClient, callback: SignedCallback) -> None:
            try:
                await self._send(http, callback)
            finally:
                slots.release()

        lanes = itertools.cycle(self._lanes)
        async with asyncio.TaskGroup() as in_flight:
            due = loop.time()
            while not self._stopping.is_set():
                await slots.acquire()
                in_flight.create_task(send(next(lanes), next(self._source)))
                due += 1 / rate
                await asyncio.sleep(max(0.0, due - loop.time()))

    async def _send(self, http: httpx.AsyncClient, callback: SignedCallback) -> Attempt:
        sent_at = time.monotonic()
        try:
            response = await http.post(
                "/plivo/status", content=callback.body, headers=callback.headers
            )
        except httpx.TransportError as error:
            attempt = Attempt(callback, sent_at, time.monotonic(), None, type(error).__name__)
        else:
            attempt = Attempt(
                callback,
                sent_at,
                time.monotonic(),
                response.status_code,
                retry_after=response.headers.get("retry-after"),
            )
        self.attempts.append(attempt)
        return attempt


async def post_callback(client: httpx.AsyncClient, callback: SignedCallback) -> httpx.Response:
    return await client.post("/plivo/status", content=callback.body, headers=callback.headers)


async def deliver(
    client: httpx.AsyncClient, callback: SignedCallback, *, within: float = 30.0
) -> None:
    """Send ``callback`` until it is answered 200, as Plivo's retries would."""
    deadline = time.monotonic() + within
    while True:
        with contextlib.suppress(httpx.TransportError):
            if (await post_callback(client, callback)).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"callback {identity_of(callback)} not accepted in {within} s")
        await asyncio.sleep(0.1)


async def send_all(
    base_url: str, callbacks: Sequence[SignedCallback], *, concurrency: int
) -> Counter[int]:
    """POST every callback once with ``concurrency`` clients; how many got each status."""
    queue = deque(callbacks)
    answers: Counter[int] = Counter()

    async def worker() -> None:
        async with client_for(base_url) as client:
            while queue:
                answers[(await post_callback(client, queue.popleft())).status_code] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return answers


# --- Waiting and inspecting ------------------------------------------------------------------


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]],
    *,
    within: float,
    interval: float = 0.05,
    message: Callable[[], str] | str = "condition not met",
) -> None:
    """Poll ``condition`` until it holds; fail with ``message`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        outcome = condition()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"after {within:.0f} s: {text}")
        await asyncio.sleep(interval)


async def stored_identities(database_url: str) -> Counter[Identity]:
    """How many times each (MessageUUID, Status, Sequence) is in the ledger's events."""
    async with connect(database_url) as conn:
        cursor = await conn.execute(
            "SELECT message_uuid::text, status, payload->>'Sequence' FROM events"
            " WHERE event_type = 'plivo.status_reported'"
        )
        return Counter(
            (uuid, status or "", sequence or "")
            for uuid, status, sequence in await cursor.fetchall()
        )


async def event_count(database_url: str) -> int:
    async with connect(database_url) as conn:
        row = await (await conn.execute("SELECT count(*) FROM events")).fetchone()
    assert row is not None
    return int(row[0])


async def wait_for_projections(database_url: str, *, within: float = 30.0) -> None:
    """Wait until every projector's checkpoint has reached the newest event of the ledger.

    Needs a catch-up runner working on ``database_url`` (the service's, or one the test runs).
    """
    from ledger.settings import Settings
    from ledger.store import Checkpoint
    from projections.registry import build_projectors
    from tests.conftest import ledger_head

    names = [projector.name for projector in build_projectors(Settings())]
    behind: dict[str, Any] = {}

    async def caught_up() -> bool:
        async with connect(database_url) as conn:
            newest = await ledger_head(conn)
            cursor = await conn.execute(
                "SELECT name, transaction_id::text::bigint, position FROM projection_checkpoints"
            )
            stored = {name: Checkpoint(xid, pos) for name, xid, pos in await cursor.fetchall()}
        behind.clear()
        behind.update(
            {name: stored.get(name) for name in names if stored.get(name, Checkpoint()) < newest}
        )
        behind["ledger head"] = newest
        return len(behind) == 1

    await eventually(
        caught_up,
        within=within,
        interval=0.2,
        message=lambda: f"projections did not catch up with the ledger: {behind}",
    )


async def table_snapshot(
    database_url: str, table: str, *, exclude: Sequence[str] = ()
) -> list[tuple[Any, ...]]:
    """Every row of ``table`` (without the ``exclude`` columns), in a stable order."""
    async with connect(database_url) as conn:
        cursor = await conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
            (table,),
        )
        columns = [name for (name,) in await cursor.fetchall() if name not in exclude]
        assert columns, f"table {table} has no columns (does it exist?)"
        listed = ", ".join(f'"{name}"' for name in columns)
        cursor = await conn.execute(f'SELECT {listed} FROM "{table}" ORDER BY {listed}')
        return list(await cursor.fetchall())


def assert_problem(response: httpx.Response, status: int) -> None:
    """The response is ``status`` with an RFC 9457 problem-details body that says so."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers.get("content-type", "").startswith(PROBLEM_JSON), response.headers
    body = response.json()
    assert body["status"] == status, body
    assert isinstance(body["title"], str), body
    assert body["title"], body
    assert isinstance(body["detail"], str), body
    assert body["detail"], body


def http(base_url: str, **kwargs: Any) -> httpx.AsyncClient:
    """An HTTP client for a server (use it with ``async with``)."""
    return httpx.AsyncClient(base_url=base_url, **{"timeout": 30.0, **kwargs})


def client_for(base_url: str, connections: int = 1) -> httpx.AsyncClient:
    """A client for one concurrent sender.

    Concurrent senders each get their own client with a connection or few: httpx scans
    (and polls) every connection of its pool for every request, so one client shared by
    dozens of senders spends ~10 ms of CPU per request and becomes the bottleneck.
    """
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return http(base_url, limits=limits, timeout=60.0)


def assert_same_rows(
    actual: Sequence[Any], expected: Sequence[Any], what: str, *, show: int = 3
) -> None:
    """``actual`` and ``expected`` hold the same rows (as multisets); on failure the message
    shows a few rows found only on each side instead of a long list diff."""
    only_actual = Counter(actual) - Counter(expected)
    only_expected = Counter(expected) - Counter(actual)
    difference = (
        f"{what}: {sum(only_actual.values())} rows only in the first, "
        f"{sum(only_expected.values())} only in the second.\n"
        f"first only: {list(only_actual)[:show]}\nsecond only: {list(only_expected)[:show]}"
    )
    assert not only_actual, difference
    assert not only_expected, difference


def simulate(
    url: str, arguments: str = "", *, cwd: Path, public_url: str = PUBLIC_URL
) -> subprocess.CompletedProcess[str]:
    """``ledger simulate --url URL ARGUMENTS``, signing as the servers here expect."""
    return run_ledger(
        "simulate",
        "--url",
        url,
        *shlex.split(arguments),
        cwd=cwd,
        env={
            "PLIVO_AUTH_TOKEN": PLIVO_TOKEN,
            "LEDGER_PUBLIC_URL": public_url,
            "LEDGER_DATA_DIR": str(cwd),
        },
        timeout=120,
    )
