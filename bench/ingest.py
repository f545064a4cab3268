"""Ingest: signed callbacks over loopback into ``ledger serve``, against floors and a peer.

For each worker count: the no-op Litestar app under the same granian settings (the HTTP
floor), the peer a user would pick instead (bench/tutorial_peer.py: Fastify + pg, one
upsert per callback), then ``ledger serve`` on a fresh database (and, with ``--against
REV``, the same for that revision's code), all driven by wrk with the same pre-signed
callbacks at the same concurrency. Once per run, pgbench doing one durable single-row
insert of the same row shape per transaction, at the same concurrency (the database
floor). Then latency at a fixed offered rate (open loop, from each request's due time),
and a check that every 200 is an event in the database.
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
from bench import loadgen, revision, tutorial_peer
from bench.harness import (
    OUT,
    THIS_TREE,
    BenchError,
    Code,
    CpuMeter,
    Database,
    Latencies,
    Server,
    cpu_per_callback,
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

#: The most callbacks/s a durable server (the ledger, the peer) is expected to reach here: the
#: pre-signed pool is sized for it, so a faster run would start sending duplicates (counted
#: and warned about). The no-op floor goes faster and cycles through the pool, at no cost.
MAX_EXPECTED_RATE = 15_000

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
    """Pre-signed callbacks for a wrk run (enough that none is sent twice) and their file."""
    callbacks = signed_callbacks(int(MAX_EXPECTED_RATE * opts.duration), seed=1)
    return callbacks, write_wrk_requests(callbacks, OUT / "wrk-requests.tsv")


def fixed_pool(opts: Options) -> list[SignedCallback]:
    """The callbacks of a fixed-rate run (distinct from the wrk pool's)."""
    count = int(opts.rate * opts.fixed_seconds)
    return signed_callbacks(count, seed=2)[:count]


@dataclass
class Run:
    """One server under wrk (and optionally at the fixed rate), with its CPU use."""

    wrk: WrkResult
    #: CPU seconds per group over the wrk window (see :class:`CpuMeter`), plus ``wrk``.
    cpu: dict[str, float]
    fixed: loadgen.OpenLoopResult | None = None
    notes: list[str] = field(default_factory=list)
    #: Acknowledged callbacks whose event is not in the ledger (wrk and fixed rate).
    lost: int = 0
    #: Events added by the fixed-rate run minus its 200s (exactly 0 when nothing is lost
    #: and nothing unacknowledged was stored).
    fixed_mismatch: int = 0

    def cpu_per_request(self, group: str) -> float:
        """Microseconds of CPU ``group`` spent per answered request under wrk."""
        return self.cpu.get(group, 0.0) / max(1, self.wrk.requests) * 1e6

    @property
    def not_ok(self) -> int:
        """Answers other than 200, and socket errors, under wrk and at the fixed rate."""
        fixed = self.fixed.sent - self.fixed.ok if self.fixed else 0
        return self.wrk.failed + self.wrk.socket_errors + fixed


def _saturate(opts: Options, server: Server, db: Database | None, requests_file: Path) -> Run:
    """wrk at full speed, with the CPU the server (and its database) used meanwhile.

    CPU per request barely moves with the machine's load, unlike requests per second: it is
    the figure to trust when other users compete for the cores.
    """
    groups = server.cpu_groups() | ({"postgres": db.processes} if db else {})
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
    code: Code = THIS_TREE,
) -> Run:
    """wrk, then (if ``fixed``) the fixed-rate run, against ``ledger serve`` running ``code``
    on a fresh database, with notes on what the database holds afterwards."""
    name = f"ingest-w{workers}{label}"
    with (
        database(opts.database_url, name) as db,
        ledger_server(
            db, workers=workers, name=name, env={**opts.server_env, **(env or {})}, code=code
        ) as server,
    ):
        run = _saturate(opts, server, db, requests_file)
        wrk = run.wrk
        events = count_events(db, settle=3.0)
        batch = mean_batch(server)
        if server.dropped_settings:
            run.notes.append(
                f"{workers} worker(s){label}: settings not passed (not read by both revisions):"
                f" {', '.join(server.dropped_settings)}"
            )
        run.notes.append(
            f"{workers} worker(s){label}: wrk {wrk.requests:,} answers in {wrk.seconds:.1f}s,"
            f" closed-loop p50 {wrk.p50_ms:.1f} ms p99 {wrk.p99_ms:.1f} ms; "
            + describe_cpu(run.cpu)
            + f"; CPU per callback: {cpu_per_callback(run.cpu, wrk.requests)}"
            + (f"; mean group-commit batch {batch:.1f} events" if batch else "")
        )
        run.lost = max(0, wrk.appended - events)
        run.notes.append(
            f"{workers} worker(s){label} nothing lost: {events:,} events in the database for"
            f" {wrk.ok:,} answers 200 ({wrk.appended:,} appended, {wrk.duplicate:,} duplicate),"
            f" {wrk.failed:,} non-200, {wrk.socket_errors:,} socket errors;"
            f" {events - wrk.appended:,} more events than 200s (requests still in flight when"
            f" wrk stopped, at most {opts.connections})"
            + (" — **LOST ACKNOWLEDGED EVENTS**" if run.lost else "")
        )
        if wrk.wrapped or wrk.duplicate:
            run.notes.append(
                f"warning: the pre-signed pool ran out ({wrk.duplicate:,} duplicates were sent):"
                " raise MAX_EXPECTED_RATE in bench/ingest.py"
            )
        if not fixed:
            return run
        meter = CpuMeter(server.cpu_groups() | {"postgres": db.processes})
        meter.start()
        run.fixed = result = fixed_rate(server, fixed, rate=opts.rate)
        used = meter.stop()
        after = count_events(db)
        run.fixed_mismatch = after - events - result.ok
        run.lost += max(0, -run.fixed_mismatch)
        verdict = "exact" if run.fixed_mismatch == 0 else "**MISMATCH**"
        run.notes.append(
            f"{workers} worker(s){label} at {opts.rate:,.0f}/s: {result.sent:,} sent, answers"
            f" {dict(result.statuses)}, events added {after - events:,} ({verdict});"
            f" {Latencies.of(result.latencies)}; {describe_cpu(used)}; CPU per callback:"
            f" {cpu_per_callback(used, result.sent)}; generator max send delay"
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


def _peer_run(
    opts: Options, workers: int, pool: Sequence[SignedCallback], requests_file: Path
) -> Run:
    """wrk against the peer on a fresh database, then the checks that it did the work."""
    name = f"peer-w{workers}"
    probe = signed_callbacks(1, seed=4)[0]
    with database(opts.database_url, name) as db, tutorial_peer.peer_server(db, name=name) as peer:
        run = _saturate(opts, peer, db, requests_file)
        wrk = run.wrk
        run.notes.append(
            f"{tutorial_peer.LABEL}, beside {workers} worker(s): wrk {wrk.requests:,} answers in"
            f" {wrk.seconds:.1f}s ({wrk.ok:,} 200, {wrk.failed:,} non-200,"
            f" {wrk.socket_errors:,} socket errors), closed-loop p50 {wrk.p50_ms:.1f} ms p99"
            f" {wrk.p99_ms:.1f} ms; {describe_cpu(run.cpu)}; CPU per callback:"
            f" {cpu_per_callback(run.cpu, wrk.requests)}"
        )
        run.notes.append(tutorial_peer.verify(peer, db, answered_ok=wrk.ok, pool=pool, probe=probe))
        if wrk.wrapped:
            run.notes.append(
                "warning: the peer went through the whole pre-signed pool and got repeats:"
                " raise MAX_EXPECTED_RATE in bench/ingest.py"
            )
    return run


def _try_peer(
    section: Section,
    opts: Options,
    workers: int,
    pool: Sequence[SignedCallback],
    requests_file: Path,
) -> Run | None:
    """The peer's run, or None (with the reason in the notes) when it cannot be measured."""
    try:
        return _peer_run(opts, workers, pool, requests_file)
    except BenchError as error:
        section.note(f"peer not measured beside {workers} worker(s): {error}")
        return None


def _figures(
    section: Section,
    opts: Options,
    workers: int,
    ledger: Run,
    floors: tuple[Run, Run | None, float],
    tag: str = "",
) -> None:
    """The ledger's figures against the same-run floors (no-op app, peer, pgbench tps)."""
    noop, peer, tps = floors
    throughput = f"throughput, {workers} worker(s){tag}"
    baselines: tuple[tuple[str, float | None, Target | None, str, str | None], ...] = (
        (
            tutorial_peer.LABEL,
            peer.wrk.rate if peer else None,
            Target("ratio", ">=", 1.5),
            "issue 8: ≥ 1.5 × the usual tutorial design, aim 2 ×",
            None,
        ),
        (
            f"no-op Litestar app, {workers} worker(s)",
            noop.wrk.rate,
            Target("ratio", ">=", 0.5),
            "issue 8: ≥ 0.5 × the HTTP floor, aim 0.7 ×",
            None,
        ),
        ("pgbench single-row durable inserts", tps, None, "", "tps"),
    )
    for name, baseline, target, note, unit in baselines:
        section.add(
            Figure(
                throughput,
                ledger.wrk.rate,
                "req/s",
                name,
                baseline,
                target,
                note=note,
                baseline_unit=unit,
            )
        )
    section.add(
        Figure(
            f"app CPU per callback, {workers} worker(s){tag}",
            ledger.cpu_per_request("app"),
            "µs",
            "no-op app CPU per request",
            noop.cpu_per_request("app"),
            Target("ratio", "<=", 2.0),
            note="every process of the server (HTTP workers, projector, main); the split is in"
            " the notes. CPU per request barely depends on the machine's load, unlike req/s",
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
                f"ack latency {quantile} at {opts.rate:,.0f}/s, {workers} worker(s){tag}",
                value,
                "ms",
                f"no-op app {quantile} at the same rate",
                floor,
                target,
            )
        )
    for name, value in (
        ("answers not 200 (wrk and fixed rate)", ledger.not_ok),
        ("acknowledged callbacks not in the ledger", ledger.lost),
        ("events added − 200s at the fixed rate", abs(ledger.fixed_mismatch)),
    ):
        section.add(Figure(f"{name}, {workers} worker(s){tag}", value, "", target=NONE))


#: A count that must be zero.
NONE = Target("value", "<=", 0)


def _versus(section: Section, workers: int, this: Run, earlier: Run, against: str) -> None:
    """This tree's figures with the earlier revision's as their baseline (same run)."""
    for name, unit, now, before in (
        ("throughput", "req/s", this.wrk.rate, earlier.wrk.rate),
        ("app CPU per callback", "µs", this.cpu_per_request("app"), earlier.cpu_per_request("app")),
    ):
        section.add(
            Figure(f"{name}, {workers} worker(s)", now, unit, f"{against}, same run", before)
        )
    assert this.fixed is not None
    assert earlier.fixed is not None
    section.add(
        Figure(
            f"ack latency p99, {workers} worker(s)",
            Latencies.of(this.fixed.latencies).p99,
            "ms",
            f"{against}, same run",
            Latencies.of(earlier.fixed.latencies).p99,
        )
    )


def run(opts: Options) -> Section:
    """The ingest benchmark (see the module docstring)."""
    section = Section(f"ingest: signed callbacks, {opts.connections} connections over loopback")
    callbacks, requests_file = throughput_pool(opts)
    fixed = fixed_pool(opts)
    with revision.codes(section, opts.against) as (this, earlier):
        print("  pgbench floor...", flush=True)
        tps, where = pgbench_floor(opts, callbacks[0])
        section.note(
            f"pgbench: {opts.connections} clients, one durable INSERT of an events-shaped row"
            f" per transaction, {opts.duration:g}s on {where}: {tps:,.0f} tps"
        )
        tag = f" [{opts.against}]"
        for index, workers in enumerate(opts.workers):
            print(f"  {workers} worker(s): no-op floor...", flush=True)
            noop = _noop_run(opts, workers, requests_file, fixed)
            print(f"  {workers} worker(s): the peer...", flush=True)
            peer = _try_peer(section, opts, workers, callbacks, requests_file)
            order = [("", this)] + ([(tag, earlier)] if earlier else [])
            # Which code goes first alternates, so a drift in the machine's load favours
            # neither side of the comparison.
            runs: dict[str, Run] = {}
            for label, code in order[:: -1 if index % 2 else 1]:
                print(f"  {workers} worker(s): ledger serve ({code.label})...", flush=True)
                runs[label] = _ledger_run(
                    opts, workers, requests_file, fixed, code=code, label=label
                )
            ledger, old = runs[""], runs.get(tag)
            _figures(section, opts, workers, ledger, (noop, peer, tps))
            if old is not None:
                _figures(section, opts, workers, old, (noop, peer, tps), tag)
                _versus(section, workers, ledger, old, opts.against or "")
            for note in [*(peer.notes if peer else []), *ledger.notes, *(old.notes if old else [])]:
                section.note(note)
    section.note(
        "wrk and the servers share the machine's cores (2 here): the load generator's own CPU"
        " is shown with each run, and it is the same for the ledger, the peer and the floors"
    )
    return section


def sweep(opts: Options) -> Section:
    """Group-commit and worker settings side by side: throughput and fixed-rate p99."""
    section = Section("sweep: ledger serve settings (LEDGER_* environment)")
    _, requests_file = throughput_pool(opts)
    fixed = fixed_pool(opts)
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
