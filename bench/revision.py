"""Earlier revisions of the ledger, run in the same benchmark run as this tree (``--against``).

``python -m bench --only ingest --against main~5`` checks the revision out with
``git worktree add`` under bench/out/ and starts ``ledger serve`` from that checkout with
this same virtualenv: ``python -m api.cli`` with the checkout as working directory and as
``PYTHONPATH``, so the checkout's packages are imported, not the editable install of this
tree (verified before anything is measured). Only the settings both revisions read are
given to either server. The checkout is removed at the end, even when the run is
interrupted.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from bench.harness import OUT, ROOT, BenchError, Code, clean_environ
from bench.report import Section

#: Where the ledger's code reads its settings from (names in these packages' sources).
_PACKAGES = ("ledger", "api", "projections")
_SETTING = re.compile(r"\b(?:LEDGER_[A-Z0-9_]+|PLIVO_[A-Z0-9_]+|DATABASE_URL)\b")


def _git(*args: str) -> str:
    result = subprocess.run(
        ["git", *args], cwd=ROOT, check=False, capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        raise BenchError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def settings_read(root: Path) -> frozenset[str]:
    """The service settings (``LEDGER_*``, ``PLIVO_*``, ``DATABASE_URL``) that the code under
    ``root`` names, i.e. the ones it can read."""
    names: set[str] = set()
    for package in _PACKAGES:
        for source in (root / package).rglob("*.py"):
            names.update(_SETTING.findall(source.read_text(errors="replace")))
    return frozenset(names)


def this_tree() -> Code:
    """This tree, labelled with its commit (and whether it has uncommitted changes)."""
    head = _git("rev-parse", "--short=10", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return Code(label=f"this tree ({head}{', uncommitted changes' if dirty else ''})")


def _imported_from(code: Code) -> str:
    """Where ``api`` is imported from when run as ``code`` runs ``ledger``."""
    result = subprocess.run(
        [sys.executable, "-c", "import api, ledger; print(api.__file__); print(ledger.__file__)"],
        cwd=code.root,
        env=clean_environ() | dict(code.env),
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise BenchError(f"the checkout of {code.label} does not import: {result.stderr[-500:]}")
    return result.stdout


@contextlib.contextmanager
def checkout(revision: str) -> Iterator[Code]:
    """``revision`` checked out under bench/out/ (removed afterwards), as a :class:`Code`."""
    try:
        commit = _git("rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}")
    except BenchError:
        raise BenchError(
            f"--against {revision}: no such git revision here (give a commit, a branch or"
            " e.g. main~5)"
        ) from None
    subject = _git("log", "-1", "--format=%s", commit)
    path = OUT / f"against-{commit[:12]}"
    OUT.mkdir(parents=True, exist_ok=True)
    _remove(path)  # a checkout left by an earlier run that was killed
    _git("worktree", "add", "--detach", str(path), commit)
    try:
        code = Code(
            label=f"{revision} ({commit[:10]})",
            subject=subject,
            root=path,
            command=(sys.executable, "-m", "api.cli"),
            env={"PYTHONPATH": str(path)},
        )
        where = _imported_from(code)
        if not all(
            Path(line).resolve().is_relative_to(path.resolve()) for line in where.splitlines()
        ):
            raise BenchError(
                f"the checkout of {revision} imports this tree's code instead of its own"
                f" ({' '.join(where.split())}): check PYTHONPATH and the editable install"
            )
        shown = " and ".join(
            f"bench/out/{Path(line).resolve().relative_to(OUT.resolve())}"
            for line in where.splitlines()
        )
        yield replace(code, imported_from=f"imports {shown}")
    finally:
        _remove(path)


def _remove(path: Path) -> None:
    if path.exists():
        with contextlib.suppress(BenchError):
            _git("worktree", "remove", "--force", str(path))
        shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(BenchError):
        _git("worktree", "prune")


def comparable(this: Code, earlier: Code) -> tuple[Code, Code, str]:
    """Both codes restricted to the settings both read, and a note on what was left out."""
    this_reads, earlier_reads = settings_read(this.root), settings_read(earlier.root)
    common = this_reads & earlier_reads
    only_this, only_earlier = sorted(this_reads - common), sorted(earlier_reads - common)
    note = (
        f"settings: only those both {this.label} and {earlier.label} read are passed to"
        " either server"
        + (f"; read only by this tree: {', '.join(only_this)}" if only_this else "")
        + (f"; read only by {earlier.label}: {', '.join(only_earlier)}" if only_earlier else "")
    )
    return (
        replace(this, allowed_settings=common),
        replace(earlier, allowed_settings=common),
        note,
    )


def describe(code: Code) -> str:
    """Which code a row ran, and from where."""
    if code.command is None:
        return f"{code.label}: `ledger serve` of this virtualenv (editable install of this tree)"
    return (
        f"{code.label}, “{code.subject}”: checked out at bench/out/{code.root.name} (removed"
        " afterwards), run as"
        " `python -m api.cli serve` with PYTHONPATH and working directory there, same"
        f" virtualenv; verified in that setup: {code.imported_from}"
    )


@contextlib.contextmanager
def codes(section: Section, against: str | None) -> Iterator[tuple[Code, Code | None]]:
    """This tree and (with ``--against``) the earlier revision, each described in a note."""
    this = this_tree()
    if against is None:
        section.note(f"code: {describe(this)}")
        yield this, None
        return
    with checkout(against) as checked_out:
        this, earlier, settings = comparable(this, checked_out)
        section.note(f"rows without a tag ran {describe(this)}")
        section.note(f"rows tagged [{against}] ran {describe(earlier)}")
        section.note(settings)
        yield this, earlier
