"""The supervisor of ``ledger serve``'s projector process, with real child processes."""

from __future__ import annotations

import logging
import re
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from api.supervisor import Supervisor, describe_exit

#: A child that exits at once with status 3.
EXITS_3 = [sys.executable, "-c", "import sys; sys.exit(3)"]


def waits_for_sigterm(ready: Path) -> list[str]:
    """A child that, once it handles SIGTERM (``ready`` then exists), exits 0 on it."""
    code = (
        "import pathlib, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        "time.sleep(60)\n"
    )
    return [sys.executable, "-c", code]


def ignores_sigterm(ready: Path) -> list[str]:
    """A child that ignores SIGTERM (``ready`` exists once it does)."""
    code = (
        "import pathlib, signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        "time.sleep(60)\n"
    )
    return [sys.executable, "-c", code]


def wait_until(condition: Callable[[], bool], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"not within {within} s"
        time.sleep(0.02)


def supervise_until(supervisor: Supervisor, condition: Callable[[], bool]) -> None:
    """Run ``supervisor`` until ``condition`` holds, then stop it and wait for its child."""
    supervisor.start()
    try:
        wait_until(condition)
    finally:
        supervisor.join(timeout=10)


def restart_delays(caplog: pytest.LogCaptureFixture) -> list[float]:
    """The delays the supervisor announced before each restart, in order."""
    found = (re.search(r"restarting in ([\d.]+) s", r.getMessage()) for r in caplog.records)
    return [float(match.group(1)) for match in found if match]


def test_a_child_that_exits_is_started_again_and_its_exit_status_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="api.supervisor")
    supervisor = Supervisor("child", EXITS_3, first_delay=0.01, max_delay=0.01)
    supervise_until(supervisor, lambda: supervisor.starts >= 3)
    assert any("exited unexpectedly (exit status 3)" in r.getMessage() for r in caplog.records)


def test_restarts_back_off_doubling_up_to_the_limit_while_the_child_keeps_dying(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="api.supervisor")
    supervisor = Supervisor("child", EXITS_3, first_delay=0.1, max_delay=0.4)
    supervise_until(supervisor, lambda: len(restart_delays(caplog)) >= 5)
    assert restart_delays(caplog)[:5] == [0.1, 0.2, 0.4, 0.4, 0.4]


def test_the_backoff_starts_over_after_a_child_that_lived_long_enough(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="api.supervisor")
    supervisor = Supervisor("child", EXITS_3, first_delay=0.1, max_delay=0.4, stable_after=0)
    supervise_until(supervisor, lambda: len(restart_delays(caplog)) >= 3)
    assert restart_delays(caplog)[:3] == [0.1, 0.1, 0.1]


def test_stop_sends_sigterm_waits_for_the_child_and_starts_no_other(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    supervisor = Supervisor("child", waits_for_sigterm(ready), first_delay=0.01)
    supervisor.start()
    wait_until(ready.exists)
    started = time.monotonic()
    assert supervisor.join(timeout=20) == 0
    assert time.monotonic() - started < 10  # it answered SIGTERM, not the timeout
    assert supervisor.starts == 1
    assert supervisor.pid is None


def test_a_child_that_ignores_sigterm_is_killed_after_the_timeout(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    supervisor = Supervisor("child", ignores_sigterm(ready))
    supervisor.start()
    wait_until(ready.exists)
    assert supervisor.join(timeout=0.5) == -signal.SIGKILL
    assert supervisor.starts == 1


def test_stop_during_the_backoff_returns_at_once_and_starts_no_other_child() -> None:
    supervisor = Supervisor("child", EXITS_3, first_delay=60)
    supervisor.start()
    wait_until(lambda: supervisor.last_returncode == 3)
    started = time.monotonic()
    assert supervisor.join(timeout=20) == 3
    assert time.monotonic() - started < 5
    assert supervisor.starts == 1


@pytest.mark.parametrize(
    ("returncode", "words"),
    [
        (0, "exit status 0"),
        (1, "exit status 1"),
        (-9, "killed by SIGKILL"),
        (-15, "killed by SIGTERM"),
    ],
)
def test_an_exit_is_described_in_words(returncode: int, words: str) -> None:
    assert describe_exit(returncode) == words
