"""Closed-loop throughput with wrk: as many callbacks as ``connections`` clients can push."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.harness import BENCH, ROOT, BenchError, Server, log_path, require_tool

SCRIPT = BENCH / "callbacks.lua"


@dataclass(frozen=True)
class WrkResult:
    """wrk's summary plus the answers the Lua script counted by kind."""

    requests: int
    seconds: float
    appended: int
    duplicate: int
    other_ok: int
    failed: int
    wrapped: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    #: CPU seconds wrk itself used (its own rusage): the load generator's share of the cores.
    cpu_seconds: float

    @property
    def rate(self) -> float:
        """Completed requests per second."""
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def ok(self) -> int:
        """Requests answered 200."""
        return self.appended + self.duplicate + self.other_ok


def run_wrk(
    server: Server, requests_file: Path, *, connections: int, seconds: float, threads: int = 2
) -> WrkResult:
    """Run wrk against ``server`` with the pre-signed requests in ``requests_file``."""
    wrk = require_tool("wrk", "apt-get install wrk")
    command = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--timeout",
        "30s",
        "-s",
        str(SCRIPT),
        server.base_url,
        "--",
        str(requests_file),
        str(threads),
    ]
    log = log_path(f"wrk-{server.name}")
    with log.open("wb") as output:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text(errors="replace")
    line = next((x for x in text.splitlines() if x.startswith("BENCH_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({proc.returncode}):\n{text[-2000:]}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    return WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        appended=data["appended"],
        duplicate=data["duplicate"],
        other_ok=data["other_ok"],
        failed=data["failed"],
        wrapped=data["wrapped"],
        socket_errors=sum(
            data[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts")
        ),
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
    )
