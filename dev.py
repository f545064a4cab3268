#!/usr/bin/env python3
"""Zero-setup entry point: creates (or reuses) ./.venv, installs the project, runs a command.

    python3 dev.py serve [ledger serve options]   start the service (embedded Postgres by default)
    python3 dev.py test [pytest options]          lint, format check, type check, then pytest
    python3 dev.py bench [bench options]          run the benchmarks (see bench/README.md)
    python3 dev.py ledger COMMAND ...             any ledger command (audit, messages, ...)
    python3 dev.py --help                         this text

serve and ledger run in the directory you call them from, and read the checkout's .env (if
there is one) wherever that is, so they see the same settings and data as the service the
checkout started. Only the standard library is used here, so it runs on a fresh Python 3.11+.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path
from typing import NoReturn

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"


def ensure_environment() -> None:
    """Create the virtualenv and (re)install the project when pyproject.toml changed."""
    if sys.version_info < (3, 11):
        sys.exit(f"dev.py: Python 3.11 or newer is needed, this is {sys.version.split()[0]}")
    if not PYTHON.exists():
        print(f"dev.py: creating virtualenv in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    stamp = VENV / f".installed-{digest}"
    if stamp.exists():
        return
    print("dev.py: installing the project and its dependencies", flush=True)
    pip = [str(PYTHON), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "install", "-e", f"{ROOT}[dev]"], check=True)
    for old in VENV.glob(".installed-*"):
        old.unlink()
    stamp.touch()


def run_in_place(program: Path, args: list[str]) -> NoReturn:
    """Become ``program``: signals (Ctrl-C, ``kill -TERM``) then reach it directly, and no
    parent is left behind to die and orphan it."""
    os.execv(program, [str(program), *args])  # noqa: S606 - replacing this process is the point


def main(argv: list[str]) -> int:
    """Run the requested command inside the virtualenv; return its exit status."""
    if argv and argv[0] in {"-h", "--help", "help"}:
        print(__doc__)
        return 0
    if not argv or argv[0] not in {"serve", "test", "bench", "ledger"}:
        print(__doc__, file=sys.stderr)
        return 2
    ensure_environment()
    command, rest = argv[0], argv[1:]
    env_file = ROOT / ".env"
    if env_file.is_file():
        os.environ.setdefault("LEDGER_ENV_FILE", str(env_file))
    if command == "serve":
        run_in_place(BIN / "ledger", ["serve", *rest])
    if command == "ledger":
        run_in_place(BIN / "ledger", rest)
    if command == "bench":
        os.chdir(ROOT)  # the benchmarks are a package of the checkout, not an installed one
        run_in_place(PYTHON, ["-m", "bench", *rest])
    return run_tests(rest)


#: The quality gates, in order, each over the whole tree; any failure stops the run.
GATES = (
    ("ruff check", ["-m", "ruff", "check", "."]),
    ("ruff format --check", ["-m", "ruff", "format", "--check", "."]),
    ("mypy", ["-m", "mypy"]),
)


def run_tests(pytest_args: list[str]) -> int:
    """Run the quality gates, then pytest; the first failure's status is returned."""
    for name, args in GATES:
        print(f"dev.py: {name}", flush=True)
        if (status := subprocess.call([str(PYTHON), *args], cwd=ROOT)) != 0:
            print(f"dev.py: {name} failed: fix what it reports, then run again", file=sys.stderr)
            return status
    print("dev.py: pytest", flush=True)
    status = subprocess.call([str(PYTHON), "-m", "pytest", *pytest_args], cwd=ROOT)
    if status == 5:
        print("dev.py: pytest collected no tests: that is a failure, not a pass", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
