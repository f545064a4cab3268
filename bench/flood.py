"""Flood: real callbacks while unauthenticated junk pours in (issue 7, "cheap checks first").

Anyone can POST to the callback URL. Bodies of ``JUNK_FIELDS`` empty fields (``a=&a=&…``,
about 63 KB, under the 64 KiB body limit) with a random ``X-Plivo-Signature-V3`` and nonce
cost the server whatever it does before it finds the signature wrong. While wrk sends them
closed-loop at ``--flood-connections`` (32) for ``--flood-seconds`` (10), real signed
callbacks are offered open loop at ``--flood-rate`` (100/s, latency from each one's due
time, as bench/loadgen.py measures). Their p50/p99/max and how many were refused are
compared with the same traffic offered to the same server just before, with no flood (the
same-run baseline). Target: p99 < 1 s with none refused. The junk's answers (by status
code) and the junk requests/s reached are reported too, and the events added are checked
against the real callbacks' 200s (no junk stored, nothing acknowledged lost).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from api.simulate import SignedCallback
from bench import loadgen, revision
from bench.harness import (
    BENCH,
    Code,
    CpuMeter,
    Latencies,
    Server,
    clean_environ,
    cpu_per_callback,
    database,
    describe_cpu,
    ledger_server,
    log_path,
    managed_process,
)
from bench.ingest import count_events
from bench.options import Options
from bench.report import Figure, Section, Target
from bench.traffic import raw_post, signed_callbacks
from bench.wrk import WrkSummary, wait_wrk, wrk_command

SCRIPT = BENCH / "junk.lua"
#: 21,000 empty fields: 62,999 bytes, just under the service's default 64 KiB body limit.
JUNK_FIELDS = 21_000
#: Keep-alive connections the real callbacks are offered over (plenty for 100/s).
REAL_CONNECTIONS = 16
#: The flood runs this long before the real callbacks start, and after they are all sent.
MARGIN = 1.0


@dataclass(frozen=True)
class Junk(WrkSummary):
    """How the junk flood went: wrk's summary and the answers by status code."""

    statuses: dict[int, int]


@contextlib.contextmanager
def junk_flood(server: Server, *, connections: int, seconds: float) -> Iterator[Callable[[], Junk]]:
    """wrk sending junk to ``server`` in the background; the block gets a function that waits
    for the flood to end and says how it went."""
    command = wrk_command(
        server, SCRIPT, [str(JUNK_FIELDS)], connections=connections, seconds=seconds
    )
    name = f"wrk-junk-{server.name}"
    with managed_process(command, clean_environ(), name) as proc:

        def finish() -> Junk:
            data, summary = wait_wrk(proc, log_path(name))
            statuses = {int(k): int(v) for k, v in data["statuses"].items()}
            return Junk(**summary, statuses=statuses)

        yield finish


def _offer(
    server: Server, callbacks: Sequence[SignedCallback], rate: float
) -> loadgen.OpenLoopResult:
    # No warm-up cut: the server is warmed up before the baseline, and the first seconds of
    # a flood are exactly what is being measured.
    requests = [raw_post(callback, server.port) for callback in callbacks]
    return loadgen.run(
        loadgen.constant_rate(
            "127.0.0.1",
            server.port,
            requests,
            rate=rate,
            connections=REAL_CONNECTIONS,
            warmup=0.0,
        )
    )


@dataclass
class FloodRun:
    """The real traffic without and with the flood, on one server."""

    calm: loadgen.OpenLoopResult
    flooded: loadgen.OpenLoopResult
    junk: Junk
    notes: list[str] = field(default_factory=list)


def _refused(result: loadgen.OpenLoopResult) -> int:
    return result.sent - result.ok


def _describe(result: loadgen.OpenLoopResult) -> str:
    return (
        f"{result.sent:,} sent, answers {dict(result.statuses)}, {Latencies.of(result.latencies)},"
        f" generator max send delay {result.max_send_delay * 1000:.1f} ms"
    )


def _flood_run(opts: Options, code: Code, tag: str) -> FloodRun:
    count = int(opts.flood_rate * opts.flood_seconds)
    warm = int(opts.flood_rate)
    pool = signed_callbacks(warm + 2 * count, seed=5)
    name = f"flood{tag}"
    with (
        database(opts.database_url, name) as db,
        ledger_server(
            db, workers=opts.flood_workers, name=name, env=opts.server_env, code=code
        ) as server,
    ):
        _offer(server, pool[:warm], opts.flood_rate)  # connections, prepared statements
        before = count_events(db)
        calm = _offer(server, pool[warm : warm + count], opts.flood_rate)
        after_calm = count_events(db)
        meter = CpuMeter(server.cpu_groups() | {"postgres": db.processes})
        meter.start()
        window = MARGIN + opts.flood_seconds + MARGIN
        with junk_flood(server, connections=opts.flood_connections, seconds=window) as finish:
            time.sleep(MARGIN)
            flooded = _offer(server, pool[warm + count : warm + 2 * count], opts.flood_rate)
            junk = finish()
        used = meter.stop() | {"junk wrk": junk.cpu_seconds}
        after = count_events(db, settle=2.0)
    run = FloodRun(calm, flooded, junk)
    stored = (after_calm - before, after - after_calm)
    exact = stored == (calm.ok, flooded.ok)
    run.notes.append(
        f"{opts.flood_workers} worker(s){tag}: without the flood: {_describe(calm)}; during it:"
        f" {_describe(flooded)}; events added {stored[0]:,} and {stored[1]:,} for"
        f" {calm.ok:,} and {flooded.ok:,} answers 200"
        + (" (exact: no junk stored, nothing acknowledged lost)" if exact else " **MISMATCH**")
    )
    statuses = ", ".join(f"{status}: {n:,}" for status, n in sorted(junk.statuses.items()))
    run.notes.append(
        f"{opts.flood_workers} worker(s){tag} junk: {junk.requests:,} requests in"
        f" {junk.seconds:.1f}s at concurrency {opts.flood_connections} ({junk.rate:,.1f}/s),"
        f" answered {{{statuses}}}, {junk.socket_errors:,} socket errors (wrk read/write/"
        f"timeout), junk latency p50 {junk.p50_ms:,.1f} ms p99 {junk.p99_ms:,.1f} ms;"
        f" {describe_cpu(used)}; CPU per junk request (the real callbacks' small share"
        f" included): {cpu_per_callback(used, junk.requests)}"
    )
    return run


def _figures(section: Section, opts: Options, run: FloodRun, tag: str) -> None:
    calm, flooded = Latencies.of(run.calm.latencies), Latencies.of(run.flooded.latencies)
    for quantile, value, floor, target in (
        ("p50", flooded.p50, calm.p50, None),
        ("p99", flooded.p99, calm.p99, Target("value", "<=", 1000.0, "ms")),
        ("max", flooded.max, calm.max, None),
    ):
        section.add(
            Figure(
                f"real callbacks {quantile} during the junk flood{tag}",
                value,
                "ms",
                f"same traffic, no flood ({opts.flood_rate:,.0f}/s)",
                floor,
                target,
            )
        )
    section.add(
        Figure(
            f"real callbacks refused (not 200) during the flood{tag}",
            _refused(run.flooded),
            "",
            "refused with no flood",
            _refused(run.calm),
            Target("value", "<=", 0),
        )
    )
    section.add(Figure(f"junk requests answered per second{tag}", run.junk.rate, "/s"))


def run(opts: Options) -> Section:
    """The junk-flood benchmark (see the module docstring)."""
    section = Section(
        f"flood: real callbacks at {opts.flood_rate:,.0f}/s during {opts.flood_seconds:g}s of"
        f" {JUNK_FIELDS:,}-field junk-signature bodies at concurrency {opts.flood_connections}"
    )
    with revision.codes(section, opts.against) as (this, earlier):
        print(f"  flood ({this.label})...", flush=True)
        current = _flood_run(opts, this, "")
        _figures(section, opts, current, "")
        previous = None
        if earlier is not None:
            print(f"  flood ({earlier.label})...", flush=True)
            previous = _flood_run(opts, earlier, f" [{opts.against}]")
            _figures(section, opts, previous, f" [{opts.against}]")
            section.add(
                Figure(
                    "real callbacks p99 during the junk flood",
                    Latencies.of(current.flooded.latencies).p99,
                    "ms",
                    f"{opts.against}, same run",
                    Latencies.of(previous.flooded.latencies).p99,
                )
            )
        for note in [*current.notes, *(previous.notes if previous else [])]:
            section.note(note)
    section.note(
        "the junk is sent by wrk (closed loop: as fast as the server answers it) and the real"
        " callbacks by bench/loadgen.py in this process, both on the same 2 cores as the server"
    )
    return section
