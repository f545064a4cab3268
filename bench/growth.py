"""Growth: does a bigger ledger slow down acknowledgements or audit lookups?

One database grows through the sizes (default 0, 1M, 10M events of generated history).
At each size ``ledger serve`` is started, left to settle (its projectors catch up with the
new history first), then:

* callbacks are offered at the fixed rate (open loop, as in ingest): ack latency;
* audit lookups, ``GET /v1/messages/{uuid}/events``, one at a time: for random messages of
  the generated history (spread over the whole table) and for messages just ingested;
* the same history lookups straight in SQL over psycopg (the floor under the HTTP figure).
"""

from __future__ import annotations

import itertools
import random
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import psutil  # type: ignore[import-untyped]  # no stubs installed

from api.simulate import SignedCallback
from bench import loadgen
from bench.harness import (
    API_TOKEN,
    Database,
    Latencies,
    Server,
    database,
    ledger_server,
    migrate,
    run_measured,
    wait_until_idle,
)
from bench.history import History
from bench.ingest import fixed_rate
from bench.options import Options
from bench.replay import replay_command
from bench.report import Figure, Section, Target
from bench.traffic import raw_get, signed_callbacks

AUDIT_PATH = "/v1/messages/{message_uuid}/events"
#: The longest wait for the server (its projectors) to go quiet before measuring.
SETTLE_TIMEOUT = 600.0
_AUDIT_SQL = "SELECT * FROM events WHERE message_uuid = %s ORDER BY position"


def audit_over_http(server: Server, uuids: Sequence[uuid.UUID]) -> tuple[Latencies, dict[int, int]]:
    """Audit lookups through the API, one at a time."""
    requests = [raw_get(AUDIT_PATH.format(message_uuid=u), server.port, API_TOKEN) for u in uuids]
    latencies, statuses = loadgen.run(loadgen.sequential("127.0.0.1", server.port, requests))
    return Latencies.of(latencies), dict(statuses)


def audit_in_sql(db: Database, uuids: Sequence[uuid.UUID]) -> Latencies:
    """The same lookups as prepared statements on one connection: the database's share."""
    latencies = []
    with db.connect() as conn:
        for message in uuids:
            started = time.perf_counter()
            conn.execute(_AUDIT_SQL, (message,), prepare=True).fetchall()
            latencies.append(time.perf_counter() - started)
    return Latencies.of(latencies)


def _rebuild_views(db: Database, section: Section, events: int) -> None:
    """Bring the views up to the bulk-loaded history with a set-based replay, as an operator
    would after an import: left to the runner's batch-by-batch catch-up, millions of events
    take far longer (see the report), and that is not what this benchmark measures."""
    command, how = replay_command(db)
    if command is None:
        section.note(f"views not rebuilt after the load ({how}): the runner catches up")
        return
    print(f"  rebuilding the views over {events:,} events...", flush=True)
    result = run_measured(command, db.env, f"growth-replay-{events}")
    section.note(
        f"{events:,} events: views rebuilt before starting the server with"
        f" `{' '.join(Path(part).name for part in command)}`"
        f" in {result.seconds:.0f}s (exit {result.returncode}, peak RSS"
        f" {result.max_rss_mib:,.0f} MiB)"
    )


def run(opts: Options) -> Section:
    """Ack and audit latency as the ledger grows."""
    sizes = sorted(set(opts.growth_sizes))
    section = Section(
        f"growth: ack latency at {opts.rate / 4:,.0f}/s and {opts.rate:,.0f}/s, and audit"
        f" lookups, with {', '.join(f'{s:,}' for s in sizes)} events already stored"
    )
    rng = random.Random(5)
    # The brief's rate, and a quarter of it: when the machine is too busy for one worker to
    # keep up with the full rate, queueing swamps any effect of the table's size, while the
    # light rate still shows it.
    rates = (opts.rate / 4, opts.rate)
    ack_at: dict[float, float] = {}
    largest = sizes[-1]
    with database(opts.database_url, "growth") as db:
        migrate(db)
        history = History(db, seed=5)
        for step, size in enumerate(sizes):
            before = int(db.scalar("SELECT count(*) FROM events"))
            seconds = history.grow_to(size)
            stored = int(db.scalar("SELECT count(*) FROM events"))
            if seconds:
                section.note(
                    f"grew the ledger to {stored:,} events with set-based SQL in {seconds:.0f}s"
                    f" ({(stored - before) / seconds:,.0f} events/s, indexes rebuilt)"
                )
                _rebuild_views(db, section, stored)
            with ledger_server(db, workers=1, name=f"growth-{size}", env=opts.server_env) as server:

                def everything(server: Server = server) -> list[psutil.Process]:
                    return server.processes() + db.processes()

                settled = wait_until_idle(everything, timeout=SETTLE_TIMEOUT)
                if settled >= SETTLE_TIMEOUT:
                    section.note(
                        f"{stored:,} events: the server was still busy after {settled:.0f}s"
                        " (projectors catching up?): measured anyway"
                    )
                acks: dict[float, tuple[Latencies, dict[int, int]]] = {}
                fixed: list[SignedCallback] = []
                for rate, attempt in itertools.product(rates, range(max(1, opts.repeat))):
                    # Light rate first, each run from a quiet server: an overloaded run leaves
                    # a backlog (projectors behind) that would spill into the next one. With
                    # --repeat, the best p99 of the attempts is kept (noise only adds).
                    wait_until_idle(everything, timeout=120.0)
                    count = int(rate * opts.fixed_seconds)
                    seed = 1000 + 100 * step + 10 * rates.index(rate) + attempt
                    callbacks = signed_callbacks(count, seed=seed)[:count]
                    result = fixed_rate(server, callbacks, rate=rate)
                    measured = Latencies.of(result.latencies), dict(result.statuses)
                    if rate not in acks or measured[0].p99 < acks[rate][0].p99:
                        acks[rate] = measured
                    fixed += callbacks
                for rate, (ack, _) in acks.items():
                    ack_at.setdefault(rate, ack.p99)
                ingested = [uuid.UUID(c.message_uuid) for c in rng.sample(fixed, opts.lookups // 4)]
                new_http, new_statuses = audit_over_http(server, ingested)
                picked = (
                    [
                        history.message_uuid(m)
                        for m in rng.sample(range(history.messages), opts.lookups)
                    ]
                    if history.messages
                    else ingested
                )
                old_http, old_statuses = audit_over_http(server, picked)
                old_sql = audit_in_sql(db, picked)
            last = size == largest
            what = "history messages" if history.messages else "just-ingested messages"
            for rate, (ack, _) in acks.items():
                main = rate == opts.rate
                section.add(
                    Figure(
                        f"ack p99 at {rate:,.0f}/s, {stored:,} events",
                        ack.p99,
                        "ms",
                        f"ack p99 at {rate:,.0f}/s with {sizes[0]:,} events (same run)",
                        ack_at[rate],
                        Target("ratio", "<=", 1.2) if last and step and main else None,
                    )
                )
            section.add(
                Figure(
                    f"audit p99 ({what}) at {stored:,} events",
                    old_http.p99,
                    "ms",
                    "same lookups in SQL (psycopg, prepared) p99",
                    old_sql.p99,
                    Target("value", "<=", 5.0, "ms") if last else None,
                )
            )
            acked = "; ".join(
                f"ack at {rate:,.0f}/s {ack} (answers {answers})"
                for rate, (ack, answers) in acks.items()
            )
            section.note(
                f"{stored:,} events: settled in {settled:.0f}s; {acked}; audit of {what} {old_http}"
                " (answers"
                f" {old_statuses}); SQL {old_sql}"
                + (
                    f"; audit of just-ingested messages {new_http} (answers {new_statuses})"
                    if history.messages
                    else ""
                )
            )
    if largest < 10_000_000:
        section.note(
            f"the largest size run was {largest:,} events (the 10M target size needs"
            " --growth-sizes 0,1e6,1e7)"
        )
    return section
