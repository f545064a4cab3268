"""Clients that hold a connection without finishing a request are cut off.

Three cases, three places:

* stalled mid-headers, or idle between requests: granian's own ``header_read_timeout``
  (set from ``LEDGER_CLIENT_TIMEOUT`` in :mod:`api.serve`);
* stalled mid-body: :func:`body_deadline`, which gives the whole body that long to arrive
  and answers 408 (``Connection: close``) when it does not. It also closes the connection
  after any answer sent before the body was read (a refusal on the headers alone): granian
  otherwise sometimes keeps such a connection alive and sometimes closes it just after the
  answer, and a client that sends its next request on it then finds it closed;
* connected but silent from the first byte: granian starts its header timer only when a
  request begins, so :class:`SilentConnectionReaper` closes, in each worker, accepted
  connections on the service's port that have received nothing at all for that long. It
  reads Linux's TCP_INFO; elsewhere it does nothing (put a proxy with a header timeout in
  front instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable

from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send

log = logging.getLogger(__name__)

# struct tcp_info (linux/tcp.h): tcpi_state is byte 0, tcpi_last_data_recv a u32 at offset 52
# (milliseconds since data last arrived, or since the connection was set up if none has),
# tcpi_bytes_received a u64 at offset 128 (Linux 4.1+).
_TCP_INFO_SIZE = 232
_TCP_ESTABLISHED = 1
_LAST_DATA_RECV = struct.Struct("=I")
_BYTES_RECEIVED = struct.Struct("=Q")


class ClientTooSlow(HTTPException):
    """The request body did not arrive in time."""

    status_code = 408


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            return True
    return False


def body_deadline(timeout: float) -> Callable[[ASGIApp], ASGIApp]:
    """Middleware factory: the request body must arrive within ``timeout`` seconds of the
    request starting, or the request is answered 408 and its connection closed. An answer
    that starts before the body was read closes the connection too (RFC 9112 section 9.6)."""

    def middleware(app: ASGIApp) -> ASGIApp:
        async def bounded(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP:
                await app(scope, receive, send)
                return
            deadline = time.monotonic() + timeout
            body_received = False

            async def receive_in_time() -> ReceiveMessage:
                nonlocal body_received
                if body_received:
                    # Past the body, a receive waits for the client to go away (a stream's
                    # disconnect listener): no deadline on that.
                    return await receive()
                try:
                    async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                        message = await receive()
                    body_received = message["type"] != "http.request" or not message.get(
                        "more_body", False
                    )
                    return message
                except TimeoutError:
                    raise ClientTooSlow(
                        detail=f"The request body did not arrive within {timeout:g} s "
                        "(LEDGER_CLIENT_TIMEOUT): send it whole, then wait for the answer.",
                        headers={"Connection": "close"},
                    ) from None

            async def send_closing_if_unread(message: Message) -> None:
                if (
                    message["type"] == "http.response.start"
                    and not body_received
                    and _has_body(scope)
                ):
                    headers = list(message.get("headers", ()))
                    if not any(name.lower() == b"connection" for name, _ in headers):
                        message = {**message, "headers": [*headers, (b"connection", b"close")]}
                await send(message)

            await app(scope, receive_in_time, send_closing_if_unread)

        return bounded

    return middleware


class SilentConnectionReaper:
    """Closes this process's accepted connections on ``port`` that have received no byte
    within ``timeout`` seconds of being set up."""

    def __init__(self, port: int, timeout: float, *, interval: float | None = None) -> None:
        self._port = port
        self._timeout_ms = timeout * 1000
        self._interval = interval if interval is not None else max(0.5, timeout / 4)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def supported() -> bool:
        """Whether this platform reports TCP_INFO the way the reaper reads it."""
        return sys.platform.startswith("linux") and hasattr(socket, "TCP_INFO")

    def start(self) -> None:
        """Sweep in a daemon thread until :meth:`stop` (a no-op where unsupported)."""
        if not self.supported() or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="silent-reaper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sweeping."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None

    def sweep(self) -> int:
        """Close every silent connection past the timeout now; how many were closed."""
        closed = 0
        for name in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError, ValueError):
                if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                    closed += self._reap(int(name))
        return closed

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                if closed := self.sweep():
                    log.info(
                        "closed %d connection(s) silent for %.0f s", closed, self._timeout_ms / 1000
                    )
            except Exception:  # the sweeper must never take the worker down
                log.exception("silent-connection sweep failed")

    def _reap(self, fd: int) -> int:
        with socket.socket(fileno=os.dup(fd)) as sock:
            if sock.type != socket.SOCK_STREAM or sock.family not in {
                socket.AF_INET,
                socket.AF_INET6,
            }:
                return 0
            if sock.getsockname()[1] != self._port:
                return 0
            try:
                sock.getpeername()
            except OSError:
                return 0  # the listening socket
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
            if len(info) < _BYTES_RECEIVED.size + 128 or info[0] != _TCP_ESTABLISHED:
                return 0
            (received,) = _BYTES_RECEIVED.unpack_from(info, 128)
            (silent_ms,) = _LAST_DATA_RECV.unpack_from(info, 52)
            if received or silent_ms < self._timeout_ms:
                return 0
            sock.shutdown(socket.SHUT_RDWR)  # the server's own descriptor sees the end too
            return 1
