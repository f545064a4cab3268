"""Closed-loop load with wrk: as many requests as ``connections`` clients can push."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import BENCH, ROOT, BenchError, Server, log_path, require_tool

SCRIPT = BENCH / "callbacks.lua"


@dataclass(frozen=True)
class WrkSummary:
    """What wrk itself measured over a run."""

    requests: int
    seconds: float
    #: Connect, read and write errors and timeouts.
    socket_errors: int
    p50_ms: float
    p99_ms: float
    #: CPU seconds wrk itself used (its own rusage): the load generator's share of the cores.
    cpu_seconds: float

    @property
    def rate(self) -> float:
        """Completed requests per second."""
        return self.requests / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class WrkResult(WrkSummary):
    """wrk's summary plus the answers bench/callbacks.lua counted by kind."""

    appended: int
    duplicate: int
    other_ok: int
    failed: int
    wrapped: int

    @property
    def ok(self) -> int:
        """Requests answered 200."""
        return self.appended + self.duplicate + self.other_ok


def wrk_command(
    server: Server,
    script: Path,
    script_args: list[str],
    *,
    connections: int,
    seconds: float,
    threads: int = 2,
) -> list[str]:
    """The wrk command line that runs ``script`` (with its own arguments) against ``server``."""
    wrk = require_tool("wrk", "apt-get install wrk")
    return [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--timeout",
        "30s",
        "-s",
        str(script),
        server.base_url,
        "--",
        *script_args,
    ]


def wait_wrk(proc: subprocess.Popen[bytes], log: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Wait for a wrk run to end: the ``BENCH_JSON`` line its script printed, and the
    :class:`WrkSummary` fields (as keyword arguments) from it and wrk's own rusage."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text(errors="replace")
    line = next((x for x in text.splitlines() if x.startswith("BENCH_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({proc.returncode}):\n{text[-2000:]}")
    data: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
    errors = ("connect_errors", "read_errors", "write_errors", "timeouts")
    summary = {
        "requests": int(data["requests"]),
        "seconds": data["duration_us"] / 1e6,
        "socket_errors": sum(int(data[k]) for k in errors),
        "p50_ms": data["p50_us"] / 1000,
        "p99_ms": data["p99_us"] / 1000,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
    }
    return data, summary


def run_wrk(
    server: Server, requests_file: Path, *, connections: int, seconds: float, threads: int = 2
) -> WrkResult:
    """Run wrk against ``server`` with the pre-signed requests in ``requests_file``."""
    command = wrk_command(
        server,
        SCRIPT,
        [str(requests_file), str(threads)],
        connections=connections,
        seconds=seconds,
        threads=threads,
    )
    log = log_path(f"wrk-{server.name}")
    with log.open("wb") as output:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
    data, summary = wait_wrk(proc, log)
    counts = ("appended", "duplicate", "other_ok", "failed", "wrapped")
    return WrkResult(**summary, **{name: int(data[name]) for name in counts})
