"""Child processes of ``ledger serve`` stop when the server is gone, even one killed with
SIGKILL, which cannot tell its children.

Each child (an HTTP worker, the projector process) watches its parent process id in a daemon
thread; once the parent is gone (the child was re-parented), it sends itself SIGTERM and so
stops as it would on ``ledger serve``'s own SIGTERM: the HTTP worker drains, the projector
finishes its batch.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Final

log = logging.getLogger(__name__)

#: How often a child checks that its parent is still there.
CHECK_SECONDS: Final = 1.0


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(CHECK_SECONDS)
    log.warning("parent process %d is gone: stopping process %d", parent, os.getpid())
    os.kill(os.getpid(), signal.SIGTERM)


def stop_with_parent(parent: int) -> None:
    """SIGTERM this process once process ``parent``, the server that started it, is no
    longer its parent (at once if it is not any more: it died while this one started)."""
    threading.Thread(target=_watch, args=(parent,), name="parent-watch", daemon=True).start()
