"""Ingest: signed callbacks over loopback into ``ledger serve``, against two floors.

For each worker count: the no-op Litestar app under the same granian settings (the HTTP
floor), then ``ledger serve`` on a fresh database, both driven by wrk with the same
pre-signed callbacks at the same concurrency. Once per run, pgbench doing one durable
single-row insert of the same row shape per transaction, at the same concurrency (the
database floor). Then latency at a fixed offered rate (open loop, from each request's due
time), and a check that every 200 is an event in the database.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl

import msgspec

from api.simulate import SignedCallback
from bench import loadgen
from bench.harness import (
    OUT,
    BenchError,
    CpuMeter,
    Database,
    Latencies,
    Server,
    database,
    describe_cpu,
    http_get,
    ledger_server,
    log_path,
    migrate,
    noop_server,
    require_tool,
)
from bench.options import Options
from bench.report import Figure, Section, Target
from bench.size import bytes_per_event
from bench.traffic import raw_post, signed_callbacks, write_wrk_requests
from bench.wrk import WrkResult, run_wrk

#: The most callbacks/s the pool of pre-signed requests is sized for (the no-op floor with
#: two workers is ~8k/s here); a run faster than this would start sending duplicates.
MAX_EXPECTED_RATE = 10_000

#: Tuning experiments for ``--only sweep``: (label, workers, environment).
SWEEP: tuple[tuple[str, int, dict[str, str]], ...] = (
    ("defaults", 1, {}),
    ("flushers 1", 1, {"LEDGER_APPEND_FLUSHERS": "1"}),
    ("flushers 4", 1, {"LEDGER_APPEND_FLUSHERS": "4"}),
    ("flushers 8, pool 24", 1, {"LEDGER_APPEND_FLUSHERS": "8", "LEDGER_POOL_SIZE": "24"}),
    ("batch max 64", 1, {"LEDGER_APPEND_BATCH_MAX": "64"}),
    ("batch max 1024", 1, {"LEDGER_APPEND_BATCH_MAX": "1024"}),
    ("pool 4", 1, {"LEDGER_POOL_SIZE": "4"}),
    ("defaults", 2, {}),
    ("flushers 1", 2, {"LEDGER_APPEND_FLUSHERS": "1"}),
    ("flushers 4", 2, {"LEDGER_APPEND_FLUSHERS": "4"}),
    ("pool 8", 2, {"LEDGER_POOL_SIZE": "8"}),
    ("workers 3", 3, {}),
)


# --- shared with lag and growth --------------------------------------------------------------


def fixed_rate(
    server: Server,
    callbacks: Sequence[SignedCallback],
    *,
    rate: float,
    on_answer: loadgen.OnAnswer | None = None,
) -> loadgen.OpenLoopResult:
    """Offer ``callbacks`` at ``rate``/s (open loop) and wait for every answer."""
    requests = [raw_post(callback, server.port) for callback in callbacks]
    return loadgen.run(
        loadgen.constant_rate("127.0.0.1", server.port, requests, rate=rate, on_answer=on_answer)
    )


def count_events(db: Database, *, settle: float = 0.0) -> int:
    """Events in the ledger; with ``settle``, once the count has stopped moving (appends of
    requests whose client gave up may still be committing)."""
    count = int(db.scalar("SELECT count(*) FROM events"))
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline:
        time.sleep(0.5)
        again = int(db.scalar("SELECT count(*) FROM events"))
        if again == count:
            break
        count = again
    return count


def mean_batch(server: Server) -> float | None:
    """Mean events per group-commit transaction so far, from the server's /metrics."""
    status, body = http_get(server.base_url + "/metrics")
    if status != 200:
        return None
    text = body.decode()
    total = re.search(r"^ledger_append_batch_events_sum(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.M)
    count = re.search(r"^ledger_append_batch_events_count(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.M)
    if not total or not count or float(count.group(1)) == 0:
        return None
    return float(total.group(1)) / float(count.group(1))


# --- the pgbench floor -----------------------------------------------------------------------


def _pgbench_script(sample: SignedCallback) -> str:
    """One durable single-row insert per transaction, of a real callback's row shape.

    The payload and meta travel hex-encoded because pgbench reads ``:name`` in a script as a
    variable, and Plivo's timestamps are full of colons.
    """
    payload = msgspec.json.encode(dict(parse_qsl(sample.body.decode(), keep_blank_values=True)))
    meta = msgspec.json.encode(
        {
            "source": "plivo",
            "signature": "v3",
            "nonce": sample.headers["x-plivo-signature-v3-nonce"],
            "request_id": "0" * 32,
            "remote_addr": "127.0.0.1",
        }
    )
    return (
        "INSERT INTO bench_events (message_uuid, event_type, status, occurred_at, dedup_key,"
        " payload, meta) VALUES (gen_random_uuid(), 'plivo.status_reported', 'delivered',"
        " now(), sha256(uuid_send(gen_random_uuid())),"
        f" convert_from(decode('{payload.hex()}', 'hex'), 'UTF8')::jsonb,"
        f" convert_from(decode('{meta.hex()}', 'hex'), 'UTF8')::jsonb);\n"
    )


def pgbench_floor(opts: Options, sample: SignedCallback) -> tuple[float, str]:
    """pgbench tps inserting events-shaped rows (same columns, defaults and indexes as the
    migrated ``events`` table: ``LIKE events INCLUDING ALL``) at the same concurrency."""
    pgbench = require_tool("pgbench", "apt-get install postgresql-client")
    with database(opts.database_url, "pgbench") as db:
        migrate(db)
        with db.connect() as conn:
            conn.execute("CREATE TABLE bench_events (LIKE events INCLUDING ALL)")
        script = OUT / "pgbench-insert.sql"
        script.write_text(_pgbench_script(sample))
        command = [pgbench, "-n", "-M", "prepared", "-c", str(opts.connections)]
        command += ["-j", "2", "-T", str(round(opts.duration)), "-f", str(script), db.url]
        result = subprocess.run(command, check=False, capture_output=True, text=True)
        log_path("pgbench").write_text(result.stdout + result.stderr)
        match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", result.stdout)
        if result.returncode != 0 or match is None:
            raise BenchError(f"pgbench failed: {result.stderr.strip()[-500:]}")
        return float(match.group(1)), db.label


# --- the benchmark ---------------------------------------------------------------------------


def throughput_pool(opts: Options) -> tuple[list[SignedCallback], Path]:
    callbacks = signed_callbacks(int(MAX_EXPECTED_RATE * opts.duration), seed=1)
    return callbacks, write_wrk_requests(callbacks, OUT / "wrk-requests.tsv")


@dataclass
class Run:
    """One server under wrk (and optionally at the fixed rate), with its CPU use."""

    wrk: WrkResult
    #: CPU seconds per group over the wrk window (see :class:`CpuMeter`), plus ``wrk``.
    cpu: dict[str, float]
    fixed: loadgen.OpenLoopResult | None = None
    notes: list[str] = field(default_factory=list)

    def cpu_per_request(self, group: str) -> float:
        """Microseconds of CPU ``group`` spent per answered request under wrk."""
        return self.cpu.get(group, 0.0) / max(1, self.wrk.requests) * 1e6


def _saturate(opts: Options, server: Server, db: Database | None, requests_file: Path) -> Run:
    """wrk at full speed, with the CPU the server (and its database) used meanwhile.

    CPU per request barely moves with the machine's load, unlike requests per second: it is
    the figure to trust when other users compete for the cores.
    """
    groups = {"app": server.processes} | ({"postgres": db.processes} if db else {})
    meter = CpuMeter(groups)
    meter.start()
    wrk = run_wrk(server, requests_file, connections=opts.connections, seconds=opts.duration)
    return Run(wrk, meter.stop() | {"wrk": wrk.cpu_seconds})


def _ledger_run(
    opts: Options,
    workers: int,
    requests_file: Path,
    fixed: Sequence[SignedCallback],
    *,
    env: dict[str, str] | None = None,
    label: str = "",
) -> Run:
    """wrk, then (if ``fixed``) the fixed-rate run, against ``ledger serve`` on a fresh
    database, with notes on what the database holds afterwards."""
    name = f"ingest-w{workers}{label}"
    with (
        database(opts.database_url, name) as db,
        ledger_server(
            db, workers=workers, name=name, env={**opts.server_env, **(env or {})}
        ) as server,
    ):
        run = _saturate(opts, server, db, requests_file)
        wrk = run.wrk
        events = count_events(db, settle=3.0)
        batch = mean_batch(server)
        run.notes.append(
            f"{workers} worker(s){label}: wrk {wrk.requests:,} answers in {wrk.seconds:.1f}s,"
            f" closed-loop p50 {wrk.p50_ms:.1f} ms p99 {wrk.p99_ms:.1f} ms; "
            + describe_cpu(run.cpu)
            + f"; CPU per callback: app {run.cpu_per_request('app'):,.0f} µs, postgres"
            f" {run.cpu_per_request('postgres'):,.0f} µs"
            + (f"; mean group-commit batch {batch:.1f} events" if batch else "")
        )
        lost = wrk.appended - events
        run.notes.append(
            f"{workers} worker(s){label} nothing lost: {events:,} events in the database for"
            f" {wrk.ok:,} answers 200 ({wrk.appended:,} appended, {wrk.duplicate:,} duplicate),"
            f" {wrk.failed:,} non-200, {wrk.socket_errors:,} socket errors;"
            f" {events - wrk.appended:,} more events than 200s (requests still in flight when"
            f" wrk stopped, at most {opts.connections})"
            + (" — **LOST ACKNOWLEDGED EVENTS**" if lost > 0 else "")
        )
        if wrk.wrapped or wrk.duplicate:
            run.notes.append(
                f"warning: the pre-signed pool ran out ({wrk.duplicate:,} duplicates were sent):"
                " raise MAX_EXPECTED_RATE in bench/ingest.py"
            )
        if not fixed:
            return run
        meter = CpuMeter({"app": server.processes, "postgres": db.processes})
        meter.start()
        run.fixed = result = fixed_rate(server, fixed, rate=opts.rate)
        used = meter.stop()
        after = count_events(db)
        verdict = "exact" if after - events == result.ok else "**MISMATCH**"
        per_callback = {k: v / max(1, result.sent) * 1e6 for k, v in used.items() if k != "wall"}
        run.notes.append(
            f"{workers} worker(s){label} at {opts.rate:,.0f}/s: {result.sent:,} sent, answers"
            f" {dict(result.statuses)}, events added {after - events:,} ({verdict});"
            f" {Latencies.of(result.latencies)}; {describe_cpu(used)}; CPU per callback: app"
            f" {per_callback['app']:,.0f} µs, postgres {per_callback['postgres']:,.0f} µs"
            " (projectors included); generator max send delay"
            f" {result.max_send_delay * 1000:.1f} ms; {bytes_per_event(db) or 0:,.0f} bytes on"
            " disk per event after this HTTP ingest (indexes grown by live inserts)"
        )
        return run


def _noop_run(
    opts: Options, workers: int, requests_file: Path, fixed: Sequence[SignedCallback]
) -> Run:
    with noop_server(workers=workers, name=f"noop-w{workers}") as server:
        run = _saturate(opts, server, None, requests_file)
        run.fixed = fixed_rate(server, fixed, rate=opts.rate)
        return run


def run(opts: Options) -> Section:
    """The ingest benchmark (see the module docstring)."""
    section = Section(f"ingest: signed callbacks, {opts.connections} connections over loopback")
    callbacks, requests_file = throughput_pool(opts)
    fixed = signed_callbacks(int(opts.rate * opts.fixed_seconds), seed=2)[
        : int(opts.rate * opts.fixed_seconds)
    ]
    print("  pgbench floor...", flush=True)
    tps, where = pgbench_floor(opts, callbacks[0])
    section.note(
        f"pgbench: {opts.connections} clients, one durable INSERT of an events-shaped row per"
        f" transaction, {opts.duration:g}s on {where}: {tps:,.0f} tps"
    )
    for workers in opts.workers:
        print(f"  {workers} worker(s): no-op floor...", flush=True)
        noop = _noop_run(opts, workers, requests_file, fixed)
        print(f"  {workers} worker(s): ledger serve...", flush=True)
        ledger = _ledger_run(opts, workers, requests_file, fixed)
        section.add(
            Figure(
                f"throughput, {workers} worker(s)",
                ledger.wrk.rate,
                "req/s",
                f"no-op Litestar app, {workers} worker(s)",
                noop.wrk.rate,
                Target("ratio", ">=", 0.7),
            )
        )
        section.add(
            Figure(
                f"throughput, {workers} worker(s)",
                ledger.wrk.rate,
                "req/s",
                "pgbench single-row durable inserts",
                tps,
                Target("ratio", ">=", 1.0),
                baseline_unit="tps",
            )
        )
        section.add(
            Figure(
                f"app CPU per callback, {workers} worker(s)",
                ledger.cpu_per_request("app"),
                "µs",
                "no-op app CPU per request",
                noop.cpu_per_request("app"),
                Target("ratio", "<=", round(1 / 0.7, 2)),
                note="CPU per request barely depends on the machine's load, unlike req/s: on idle"
                " cores the throughput ratio to the no-op app would be about 1 / this ratio, so"
                " ≤ 1.43 is the CPU form of the ≥ 0.7 throughput target",
            )
        )
        assert ledger.fixed is not None
        assert noop.fixed is not None
        lat, noop_lat = Latencies.of(ledger.fixed.latencies), Latencies.of(noop.fixed.latencies)
        for quantile, value, floor, target in (
            ("p50", lat.p50, noop_lat.p50, None),
            ("p99", lat.p99, noop_lat.p99, Target("value", "<=", 50.0, "ms")),
        ):
            section.add(
                Figure(
                    f"ack latency {quantile} at {opts.rate:,.0f}/s, {workers} worker(s)",
                    value,
                    "ms",
                    f"no-op app {quantile} at the same rate",
                    floor,
                    target,
                )
            )
        notes = ledger.notes
        for note in notes:
            section.note(note)
    section.note(
        "wrk and the servers share the machine's cores (2 here): the load generator's own CPU"
        " is shown with each run, and it is the same for the ledger and for the no-op floor"
    )
    return section


def sweep(opts: Options) -> Section:
    """Group-commit and worker settings side by side: throughput and fixed-rate p99."""
    section = Section("sweep: ledger serve settings (LEDGER_* environment)")
    _, requests_file = throughput_pool(opts)
    fixed = signed_callbacks(int(opts.rate * opts.fixed_seconds), seed=2)[
        : int(opts.rate * opts.fixed_seconds)
    ]
    baseline: float | None = None
    rows = []
    for label, workers, env in SWEEP:
        print(f"  {label}, {workers} worker(s)...", flush=True)
        try:
            run = _ledger_run(opts, workers, requests_file, fixed, env=env, label=f" [{label}]")
        except Exception as error:  # one setting failing must not end the sweep
            section.note(f"{label}, {workers} worker(s): failed: {error}")
            continue
        baseline = baseline if baseline is not None else run.wrk.rate
        lat = Latencies.of(run.fixed.latencies) if run.fixed else None
        section.add(
            Figure(
                f"{label}, {workers} worker(s)",
                run.wrk.rate,
                "req/s",
                "defaults, 1 worker (same run)",
                baseline,
            )
        )
        rows.append(
            [
                label,
                str(workers),
                " ".join(f"{k}={v}" for k, v in env.items()) or "—",
                f"{run.wrk.rate:,.0f}",
                f"{run.cpu_per_request('app'):,.0f}",
                f"{run.cpu_per_request('postgres'):,.0f}",
                f"{run.wrk.p99_ms:.1f}",
                f"{lat.p99:.1f}" if lat else "—",
            ]
        )
        for note in run.notes:
            section.note(note)
    section.table(
        "Settings tried",
        [
            "setting",
            "workers",
            "environment",
            "req/s (wrk)",
            "app CPU µs/callback",
            "postgres CPU µs/callback",
            "closed-loop p99 ms",
            f"p99 ms at {opts.rate:,.0f}/s",
        ],
        rows,
    )
    return section
