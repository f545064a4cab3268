"""A one-line progress bar for long CLI commands, drawn only on a terminal."""

from __future__ import annotations

import sys
import time


class ProgressBar:
    """Redraws ``name [#####     ] 42% 12,345/29,000`` on stderr, at most ten times a second."""

    WIDTH = 30

    def __init__(self, name: str, *, enabled: bool) -> None:
        self._name = name
        self._enabled = enabled
        self._drawn_at = 0.0

    def update(self, done: int, total: int) -> None:
        """Show ``done`` of ``total``."""
        now = time.monotonic()
        if not self._enabled or (now - self._drawn_at < 0.1 and done < total):
            return
        self._drawn_at = now
        share = done / total if total else 1.0
        filled = int(share * self.WIDTH)
        bar = "#" * filled + " " * (self.WIDTH - filled)
        sys.stderr.write(f"\r{self._name} [{bar}] {share:4.0%} {done:,}/{total:,}")
        sys.stderr.flush()

    def finish(self) -> None:
        """End the bar's line."""
        if self._enabled and self._drawn_at:
            sys.stderr.write("\n")
            sys.stderr.flush()
