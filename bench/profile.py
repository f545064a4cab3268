"""Profile: where a granian worker's time goes while wrk saturates ``ledger serve``.

py-spy samples the worker (one worker, so one process holds the whole ingest path) in
``--nonblocking`` mode, so the worker is never paused. The raw (collapsed-stack) output is
kept in bench/out/ingest-profile.txt (load it into speedscope.app or flamegraph.pl), and
the results get the top functions by self time and the time by package.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import NamedTuple

from bench.harness import (
    OUT,
    BenchError,
    CpuMeter,
    database,
    describe_cpu,
    ledger_server,
    log_path,
    require_tool,
)
from bench.ingest import throughput_pool
from bench.options import Options
from bench.report import Section
from bench.wrk import run_wrk

OUTPUT = OUT / "ingest-profile.txt"
TOP = 25

#: Top-level names of this project's packages (frames show paths relative to sys.path).
_PROJECT = ("api", "ledger", "projections")
#: Frames of the process's start-up that every worker stack begins with (granian forks its
#: workers from ``ledger serve``), never the place where request time goes.
_STARTUP = frozenset({"<module>", "main", "cmd_serve", "serve"})


_NATIVE = "native code, no Python frame (native)"


def _where(frame: str) -> tuple[str, str]:
    """(function, top-level package) of a py-spy frame like ``f (litestar/app.py)``."""
    function, _, path = frame.rpartition(" (")
    top = path.rstrip(")").split("/")[0].removesuffix(".py")
    return function, top


def _package(frame: str) -> str:
    _, top = _where(frame)
    if top in _PROJECT:
        return f"{top} (this project)"
    if top in sys.stdlib_module_names:
        return f"{top} (stdlib)"
    return top


def _project_function(frames: list[str]) -> str:
    """The innermost frame of this project's own code in a stack (its request stage), or
    the package the time went to when the project's code is not on the stack."""
    for frame in reversed(frames):
        function, top = _where(frame)
        if top in _PROJECT and function not in _STARTUP:
            return f"{function} ({top})"
    return f"outside the project's code: {_package(frames[-1])}"


#: Stages of the work a ``ledger serve`` worker does, recognised by a function on the
#: stack (first match wins, so specific stages come before the ones that contain them).
_STAGES = (
    ("verify_signature", "callback: signature check (ledger.signatures, plivo SDK)"),
    ("_params", "callback: body parsing (form decoding)"),
    ("to_event", "callback: normalise to an event"),
    ("GroupCommitter._flush", "group commit: the append transaction (ledger.store, psycopg)"),
    ("GroupCommitter.append", "callback: waiting on / handing over to group commit"),
    ("receive_status", "callback: the rest of the handler (metrics, response)"),
    ("CatchUpRunner", "projector runner (read behind the fence, fold, checkpoint)"),
    ("projections/", "projector runner (read behind the fence, fold, checkpoint)"),
    ("MessageController", "read API"),
    ("litestar/", "litestar outside the handler (routing, middleware, request, response)"),
)


def _stage(frames: list[str]) -> str:
    if frames == [_NATIVE]:
        return "granian native runtime (HTTP I/O and parsing in Rust, no Python frame)"
    stack = ";".join(frames)
    for marker, stage in _STAGES:
        if marker in stack:
            return stage
    return f"other: {_package(frames[-1])}"


class Profile(NamedTuple):
    """A collapsed-stack profile, summarised."""

    samples: int
    by_thread: Counter[str]
    by_stage: Counter[str]
    by_package: Counter[str]
    by_function: Counter[str]
    by_project_function: Counter[str]


def summarise(raw: Path) -> Profile:
    """Summarise py-spy's raw output (``f1;f2;f3 count`` lines): self time by package and
    by function, and time by the innermost project function on the stack."""
    profile = Profile(0, Counter(), Counter(), Counter(), Counter(), Counter())
    samples = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count, frames = int(count_text), stack.split(";")
        # With --threads the first frame names the thread: "thread (1234): MainThread".
        thread = frames.pop(0).partition(": ")[2] if frames[0].startswith("thread (") else ""
        thread = thread or "(unnamed: a granian runtime thread)"
        profile.by_thread[thread] += count
        # A sample with no Python frame at all: a thread in native code (granian's Rust
        # runtime, which drives the worker's I/O and calls into the app).
        frames = frames or [_NATIVE]
        samples += count
        profile.by_stage[_stage(frames)] += count
        profile.by_package[_package(frames[-1])] += count
        profile.by_function[frames[-1]] += count
        profile.by_project_function[_project_function(frames)] += count
    return profile._replace(samples=samples)


def run(opts: Options) -> Section:
    """Profile one worker under wrk load and summarise."""
    py_spy = require_tool("py-spy", f"{sys.executable} -m pip install py-spy")
    section = Section("profile: one granian worker of ledger serve under wrk load")
    _, requests_file = throughput_pool(opts)
    seconds = opts.profile_seconds
    with (
        database(opts.database_url, "profile") as db,
        ledger_server(db, workers=1, name="profile", env=opts.server_env) as server,
    ):
        workers = server.workers()
        if not workers:
            raise BenchError("no granian worker process found under ledger serve")
        worker = workers[0]
        command = [
            py_spy, "record", "--pid", str(worker.pid), "--duration", str(round(seconds)),
            "--rate", "200", "--format", "raw", "--nolineno", "--threads", "--nonblocking",
            "--output", str(OUTPUT),
        ]  # fmt: skip
        meter = CpuMeter({"worker": lambda: [worker], "postgres": db.processes})
        with log_path("py-spy").open("wb") as log:
            # wrk runs a little longer than the profile, so every sample is under load.
            recorder = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            try:
                meter.start()
                wrk = run_wrk(
                    server, requests_file, connections=opts.connections, seconds=seconds + 2
                )
                used = meter.stop() | {"wrk": wrk.cpu_seconds}
            finally:
                recorder.wait(60)
    if recorder.returncode != 0 or not OUTPUT.exists():
        raise BenchError(f"py-spy failed: {log_path('py-spy').read_text()[-1000:]}")
    profile = summarise(OUTPUT)
    total = profile.samples
    if not total:
        raise BenchError(f"py-spy recorded no samples: see {log_path('py-spy')}")
    section.note(
        f"{total:,} samples at 200 Hz over {seconds:g}s while wrk pushed {wrk.rate:,.0f} req/s"
        f" ({opts.connections} connections); {describe_cpu(used)}; raw stacks in"
        f" {OUTPUT.relative_to(OUT.parent.parent)}. py-spy counts a thread as busy while it"
        " waits for the GIL, so shares are of time spent wanting to run, not of CPU: compare"
        " them with the cores actually used"
    )

    def rows(counts: Counter[str], limit: int = TOP) -> list[list[str]]:
        """The biggest entries as table rows; the tail (and anything under 0.5%) as one."""
        shown = [(name, n) for name, n in counts.most_common(limit) if n >= total * 0.005]
        rest = total - sum(n for _, n in shown)
        listed = [[name, f"{100 * n / total:.1f}%"] for name, n in shown]
        return listed + ([["(everything else)", f"{100 * rest / total:.1f}%"]] if rest else [])

    section.table(
        "Samples by thread (the event loop runs in MainThread; threads without Python frames"
        " are granian's Rust runtime)",
        ["thread", "share of samples"],
        rows(profile.by_thread),
    )
    section.table(
        "Where the worker's time goes, by stage (a sample counts for the first stage found on"
        " its stack)",
        ["stage", "share of samples"],
        rows(profile.by_stage),
    )
    section.table(
        "Time by the innermost function of this project's code on the stack (library calls"
        " it makes count towards it)",
        ["project function", "share of samples"],
        rows(profile.by_project_function, 15),
    )
    section.table("Self time by package", ["package", "self time"], rows(profile.by_package, 12))
    section.table(
        f"Top {TOP} functions by self time", ["function", "self time"], rows(profile.by_function)
    )
    return section
