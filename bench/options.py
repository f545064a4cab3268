"""The benchmark run's settings, shared by every benchmark module."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Options:
    """What to run and how big (``python -m bench --help`` documents each)."""

    quick: bool = False
    database_url: str | None = None
    #: Seconds of each closed-loop (wrk) throughput run.
    duration: float = 15.0
    connections: int = 64
    workers: tuple[int, ...] = (1, 2)
    #: Offered rate (callbacks/s) of the fixed-rate latency runs, and their length.
    rate: float = 1000.0
    fixed_seconds: float = 20.0
    #: Replay dataset size; peak RSS is also measured at a quarter of it.
    events: int = 1_000_000
    lag_seconds: float = 60.0
    #: Worker processes of the server in the lag benchmark: the rate plus the status polling
    #: must fit in the server's capacity, or the lag measured is that of an overload.
    lag_workers: int = 2
    growth_sizes: tuple[int, ...] = (0, 1_000_000, 10_000_000)
    #: Audit lookups per growth step.
    lookups: int = 2000
    profile_seconds: float = 15.0
    #: Times each replay timing (and its SQL floor), and each growth fixed-rate run, is
    #: repeated; the best is kept.
    repeat: int = 1
    #: Extra environment for every ``ledger serve`` started (tuning experiments).
    server_env: dict[str, str] = field(default_factory=dict)
    #: A git revision whose code ingest and flood also run, in the same run (``--against``).
    against: str | None = None
    #: The junk flood: seconds, concurrency, and the rate of real callbacks sent meanwhile.
    flood_seconds: float = 10.0
    flood_connections: int = 32
    flood_rate: float = 100.0
    flood_workers: int = 2
