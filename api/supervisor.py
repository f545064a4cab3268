"""Keep one child process running beside the server: restart it when it dies, stop it on
request.

``ledger serve`` runs its projector process (:mod:`api.projector_process`) under a
:class:`Supervisor`. The supervisor is a thread of the server's main process: it starts the
child, waits for it, and when the child exits without being asked to, logs one line with its
exit status and starts it again after a short backoff (doubling while the child keeps dying
young, back to the first delay once a child has lived long enough). :meth:`Supervisor.stop`
sends the child SIGTERM and no child is started after it; :meth:`Supervisor.join` waits for
the child to exit, and kills it past a timeout.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence

log = logging.getLogger(__name__)


def describe_exit(returncode: int) -> str:
    """A child's exit in words: ``exit status 1``, or ``killed by SIGKILL``."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


class Supervisor:
    """Runs ``command`` as a child process until stopped, restarting it whenever it exits.

    ``first_delay`` is the pause before the first restart; it doubles with each child that
    dies within ``stable_after`` seconds of its start, up to ``max_delay``.
    """

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        first_delay: float = 0.5,
        max_delay: float = 10.0,
        stable_after: float = 30.0,
    ) -> None:
        self.name = name
        self._command = list(command)
        self._env = dict(env) if env is not None else None
        self._first_delay = first_delay
        self._max_delay = max_delay
        self._stable_after = stable_after
        self._stopping = threading.Event()
        # Held while a child is started or signalled: no child starts after stop() looked.
        # Re-entrant: stop() runs in a signal handler, which may interrupt join() holding it.
        self._lock = threading.RLock()
        self._child: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self.starts = 0
        self.last_returncode: int | None = None

    @property
    def pid(self) -> int | None:
        """The running child's process id, if one runs."""
        child = self._child
        return child.pid if child is not None and child.poll() is None else None

    def start(self) -> None:
        """Start the child, and the thread that watches and restarts it."""
        if self._thread is not None:
            raise RuntimeError(f"{self.name} is already supervised")
        self._thread = threading.Thread(target=self._run, name=f"supervise-{self.name}")
        self._thread.start()

    def stop(self) -> None:
        """Ask the child to stop (SIGTERM) and start no other; returns at once.

        Only the first call signals: a second SIGTERM could reach the child after it has
        stopped handling signals, and kill it while it closes its connections."""
        with self._lock:
            if self._stopping.is_set():
                return
            self._stopping.set()
            if self._child is not None and self._child.poll() is None:
                self._child.send_signal(signal.SIGTERM)

    def join(self, timeout: float) -> int | None:
        """Wait for the child to exit after :meth:`stop` (calling it if need be), killing it
        past ``timeout`` seconds; the last child's return code (None if none ever ran)."""
        self.stop()
        if self._thread is None:
            return self.last_returncode
        self._thread.join(timeout)
        if self._thread.is_alive():
            with self._lock:
                if self._child is not None and self._child.poll() is None:
                    log.warning("%s: still running after %.0f s, killing it", self.name, timeout)
                    self._child.kill()
            self._thread.join()
        return self.last_returncode

    def _spawn(self) -> subprocess.Popen[bytes] | None:
        with self._lock:
            if self._stopping.is_set():
                return None
            self._child = subprocess.Popen(  # noqa: S603 - our own command, never user input
                self._command, env=self._env, stdin=subprocess.DEVNULL
            )
            self.starts += 1
            return self._child

    def _run(self) -> None:
        delay = self._first_delay
        while (child := self._spawn()) is not None:
            started = time.monotonic()
            log.info("%s: started (pid %d)", self.name, child.pid)
            self.last_returncode = returncode = child.wait()
            if self._stopping.is_set():
                log.info("%s: stopped (%s)", self.name, describe_exit(returncode))
                return
            if time.monotonic() - started >= self._stable_after:
                delay = self._first_delay
            log.warning(
                "%s: pid %d exited unexpectedly (%s); restarting in %.1f s",
                self.name,
                child.pid,
                describe_exit(returncode),
                delay,
            )
            if self._stopping.wait(delay):
                return
            delay = min(self._max_delay, delay * 2)
