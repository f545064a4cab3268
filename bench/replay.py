"""Replay: ``ledger replay`` rebuilding the views from N generated events, against bare SQL.

The ledger is filled with set-based SQL (bench/history.py), first to N/4 events, then to N.
At each size: the SQL floor (one ``CREATE TABLE … AS SELECT DISTINCT ON (message_uuid) …``
over the events, the least work any status rebuild must do), ``ledger replay`` for all
views, and ``ledger replay --projection NAME`` for each, every one a subprocess measured by
GNU time. The peak RSS at N/4 and at N shows whether replay streams or holds the ledger in
memory; the server log's slow statements show where a replay's time goes.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import TypeVar

from bench import size as size_benchmark
from bench.harness import (
    BenchError,
    Database,
    Measured,
    database,
    ledger_command,
    log_path,
    migrate,
    run_measured,
)
from bench.history import History
from bench.options import Options
from bench.report import Figure, Section, Target

#: The floor: the smallest honest "current status per message" rebuild. It reads the same
#: columns the status fold reads (payload included) and writes one row per message.
FLOOR_SQL = (
    "CREATE TABLE bench_replay_floor AS"
    " SELECT DISTINCT ON (message_uuid) message_uuid, position, event_type, status,"
    " occurred_at, recorded_at, payload FROM events ORDER BY message_uuid, position DESC"
)


def floor_seconds(db: Database) -> float:
    """Time the floor statement once (its table is dropped afterwards)."""
    with db.connect() as conn:
        conn.execute("DROP TABLE IF EXISTS bench_replay_floor")
        started = time.perf_counter()
        conn.execute(FLOOR_SQL)
        seconds = time.perf_counter() - started
        conn.execute("DROP TABLE bench_replay_floor")
    return seconds


@contextlib.contextmanager
def slow_statements(db: Database, threshold_ms: int = 250) -> Iterator[list[tuple[float, str]]]:
    """Collect (milliseconds, statement) of every statement of ``db`` that took at least
    ``threshold_ms`` inside the block, from the server's log (empty when it is not readable:
    a server this process did not start). Shows which statements a replay spends its time in.
    """
    found: list[tuple[float, str]] = []
    log = db.server_log
    if log is None or not log.exists():
        yield found
        return
    name = db.scalar("SELECT current_database()")
    with db.connect() as conn:
        conn.execute(f'ALTER DATABASE "{name}" SET log_min_duration_statement = {threshold_ms}')
    offset = log.stat().st_size
    try:
        yield found
    finally:
        with db.connect() as conn:
            conn.execute(f'ALTER DATABASE "{name}" RESET log_min_duration_statement')
        with log.open("rb") as file:
            file.seek(offset)
            text = file.read().decode(errors="replace")
        for match in _DURATION.finditer(text):
            found.append((float(match.group(1)), " ".join(match.group(2).split())[:160]))


_DURATION = re.compile(r"duration: ([0-9.]+) ms\s+(?:statement|execute [^:]*): ([^\n]*)")


def projection_names() -> list[str]:
    """The views ``ledger replay --projection`` accepts, from the product's registry."""
    try:
        from projections.registry import PROJECTORS
    except ImportError:  # the registry moved or is being rewritten: the known names
        return ["message_status", "daily_delivery_metrics"]
    return [projector.name for projector in PROJECTORS]


def replay_command(db: Database) -> tuple[list[str] | None, str]:
    """``ledger replay`` (None if this tree has no such subcommand) and how it was timed."""
    result = subprocess.run(
        [*ledger_command(), "replay", "--help"],
        check=False,
        env=db.env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        why = (result.stderr or result.stdout).strip().splitlines()[-1]
        return None, f"nothing: `ledger replay` is not available ({why}), only the floor ran"
    return [*ledger_command(), "replay"], "`ledger replay` (subprocess)"


T = TypeVar("T")


def best_of(repeat: int, measure: Callable[[], T], key: Callable[[T], float]) -> T:
    """The fastest of ``repeat`` measurements (noise on a shared machine only adds time)."""
    return min((measure() for _ in range(max(1, repeat))), key=key)


def _measure_replay(db: Database, command: list[str], args: list[str], name: str) -> Measured:
    result = run_measured([*command, *args], db.env, name)
    if result.returncode != 0:
        raise BenchError(
            f"{' '.join([*command, *args])} exited {result.returncode}:"
            f" {log_path(name).read_text(errors='replace')[-1500:]}"
        )
    return result


def _replay_sizes(
    opts: Options, db: Database, history: History, section: Section, command: list[str] | None
) -> None:
    small = max(1, opts.events // 4)
    rss_at: dict[int, float] = {}
    for events in (small, opts.events):
        seconds = history.grow_to(events)
        count = int(db.scalar("SELECT count(*) FROM events"))
        if seconds:
            section.note(
                f"generated {count:,} events for {history.messages:,} messages with set-based"
                f" SQL in {seconds:.0f}s ({count / seconds:,.0f} events/s, indexes rebuilt)"
            )
        floor = best_of(opts.repeat, lambda: floor_seconds(db), key=float)
        section.add(
            Figure(f"SQL floor, {count:,} events", floor, "s", note="DISTINCT ON into a new table")
        )
        if command is None:
            continue
        names = projection_names()
        # Issue 8's target names the two views it had: the status and daily views together.
        both = [name for name in ("message_status", "daily_delivery_metrics") if name in names]
        runs: list[tuple[str, list[str]]] = [
            ("all views", []),
            (" + ".join(both), [arg for name in both for arg in ("--projection", name)]),
            *((name, ["--projection", name]) for name in names),
        ]
        for label, args in runs:
            print(f"  replay {' '.join(args)} at {count:,} events...", flush=True)
            main = events == opts.events
            name = f"replay-{label.replace(' ', '-')}-{count}"
            with slow_statements(db) as statements:
                result = best_of(
                    opts.repeat,
                    partial(_measure_replay, db, command, args, name),
                    key=lambda m: m.seconds,
                )
            if main and label == "all views" and statements:
                section.table(
                    f"Statements of the replay (all views, {count:,} events) that took"
                    " ≥ 250 ms, from the server log",
                    ["ms", "statement (start)"],
                    [[f"{ms:,.0f}", f"`{text}`"] for ms, text in statements],
                )
            section.add(
                Figure(
                    f"replay ({label}), {count:,} events",
                    result.seconds,
                    "s",
                    "SQL floor (DISTINCT ON into a new table)",
                    floor,
                    Target("ratio", "<=", 1.5) if main else None,
                    note=f"{count / result.seconds:,.0f} events/s, peak RSS"
                    f" {result.max_rss_mib:,.0f} MiB, CPU {result.cpu_seconds:.1f}s in the"
                    " replay process itself",
                )
            )
            if label == "all views":
                rss_at[events] = result.max_rss_mib
    if len(rss_at) == 2:
        section.add(
            Figure(
                f"peak RSS of ledger replay, {opts.events:,} events",
                rss_at[opts.events],
                "MiB",
                f"peak RSS at {small:,} events",
                rss_at[small],
                Target("ratio", "<=", 1.25),
                note="issue 8: peak RSS flat from N/4 to N (replay streams, set-based SQL or"
                " paging, instead of loading the ledger); ≤ 1.25 is how this benchmark reads"
                ' "flat"',
            )
        )


def run(opts: Options, *, replay: bool = True, size: bool = True) -> list[Section]:
    """Replay (and/or size) on one generated dataset."""
    sections = []
    with database(opts.database_url, "replay") as db:
        migrate(db)
        history = History(db, seed=1)
        if replay:
            section = Section(f"replay: rebuilding the views on {db.label}")
            command, how = replay_command(db)
            section.note(f"replay timed with {how}")
            _replay_sizes(opts, db, history, section, command)
            sections.append(section)
        else:
            history.grow_to(opts.events)
        if size:
            sections.append(size_benchmark.run(db))
    return sections
