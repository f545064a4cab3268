"""Secrets the service generates once and keeps in its data directory (owner-only files)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def generated_secret(path: Path) -> tuple[str, bool]:
    """The secret stored at ``path``, generating it on first use; and whether it was just made.

    Created with ``O_EXCL`` and mode 600, so that processes starting at once agree on one
    secret and nobody else on the machine can read it.
    """
    if path.is_file():
        return path.read_text("utf-8").strip(), False
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process generated it first: use theirs
        return path.read_text("utf-8").strip(), False
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(value + "\n")
    return value, True
