"""verify: sealing and ``ledger verify`` on a signed history, against reading it once.

At N/4 and N events (``--events``) of history generated with real V3 signatures and pinned
nonces (bench/signed_history.py):

* ``ledger seal now`` (the sealer's own code, in one process): events sealed per second;
* the floor: reading every event once, in fence order, through the server-side cursor that
  verify streams with (bench/read_floor.py), decoding included;
* ``ledger verify`` as an operator runs it (a subprocess, start-up included): every leaf,
  root and chain link recomputed, every signature, nonce pin and MAC re-checked. Target: a
  time close to reading the events once (ratio ≤ 2), and a flat peak RSS from N/4 to N.
"""

from __future__ import annotations

import sys

from bench.harness import BenchError, database, migrate, run_measured
from bench.options import Options
from bench.report import Figure, Section, Target
from bench.signed_history import SIGNED_URL, generate

TOKEN = "bench-plivo-auth-token"


def run(opts: Options) -> Section:
    """Seal and verify at N/4 and N events, each against the read floor."""
    section = Section(f"verify: sealing and ledger verify, {opts.events:,} signed events")
    ledger = [sys.executable, "-m", "api.cli"]
    service_env = {"PLIVO_AUTH_TOKEN": TOKEN, "LEDGER_PUBLIC_URL": SIGNED_URL.rsplit("/", 2)[0]}
    with database(opts.database_url, "verify") as db:
        migrate(db)
        section.note(f"database: {db.label}")
        small = max(1, opts.events // 4)
        have = 0
        rss: dict[int, float] = {}
        for events in (small, opts.events):
            seconds = generate(db, events - have, token=TOKEN, seed=events)
            have = events
            section.note(
                f"generated {events:,} V3-signed events in {seconds:.0f}s with the product's"
                " own signer and callback parser, written with COPY"
            )
            floor = run_measured(
                [sys.executable, "-m", "bench.read_floor", db.url], db.env, f"read-floor-{events}"
            )
            sealing = run_measured(
                [*ledger, "seal", "now"], {**db.env, **service_env}, f"seal-now-{events}"
            )
            if sealing.returncode != 0:
                raise BenchError(f"ledger seal now failed (see bench/out/seal-now-{events}.log)")
            verify = run_measured(
                [*ledger, "verify"], {**db.env, **service_env}, f"verify-{events}"
            )
            if verify.returncode != 0:
                raise BenchError(
                    f"ledger verify found problems or failed (exit {verify.returncode}; see"
                    f" bench/out/verify-{events}.log)"
                )
            rss[events] = verify.max_rss_mib
            main = events == opts.events
            sealed_now = events - (small if main else 0)
            section.add(
                Figure(
                    f"sealing, {sealed_now:,} new events",
                    sealed_now / sealing.seconds,
                    "events/s",
                    "reading them once",
                    events / floor.seconds,
                    note=f"ledger seal now, {sealing.seconds:.1f}s (start-up included), CPU"
                    f" {sealing.cpu_seconds:.1f}s; the service seals ~1,000 callbacks/s"
                    " within a second, this shows the headroom",
                )
            )
            section.add(
                Figure(
                    f"ledger verify, {events:,} events",
                    verify.seconds,
                    "s",
                    "one sequential read of every event",
                    floor.seconds,
                    Target("ratio", "<=", 2.0) if main else None,
                    note=f"{events / verify.seconds:,.0f} events/s, peak RSS"
                    f" {verify.max_rss_mib:,.0f} MiB, CPU {verify.cpu_seconds:.1f}s;"
                    f" read floor {events / floor.seconds:,.0f} events/s,"
                    f" CPU {floor.cpu_seconds:.1f}s",
                )
            )
        section.add(
            Figure(
                f"peak RSS of ledger verify, {opts.events:,} events",
                rss[opts.events],
                "MiB",
                f"peak RSS at {small:,} events",
                rss[small],
                Target("ratio", "<=", 1.25),
                note="verify streams: memory must not grow with the ledger",
            )
        )
    return section
