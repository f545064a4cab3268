"""Logs are quiet at INFO: libraries that narrate routine work only speak up when it matters."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from api.logs import configure_logging


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    configure_logging("INFO")


def test_apscheduler_does_not_narrate_each_run_at_info() -> None:
    configure_logging("INFO")
    assert not logging.getLogger("apscheduler.executors.default").isEnabledFor(logging.INFO)
    assert logging.getLogger("apscheduler.scheduler").isEnabledFor(logging.WARNING)


def test_apscheduler_explains_itself_at_debug() -> None:
    configure_logging("DEBUG")
    assert logging.getLogger("apscheduler.scheduler").isEnabledFor(logging.DEBUG)
