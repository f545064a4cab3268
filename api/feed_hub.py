"""One reader of the ledger per process, fanning the live feed out to its clients.

However many clients ``GET /v1/stream`` has, a process reads the ledger once: a
:class:`FeedHub` listens for the ledger's debounced notification (sent after appends commit,
never inside them) on one connection, reads the newly settled events behind the
transaction-id fence, and hands each to every subscriber whose filter it passes. While events
keep coming it reads again after :data:`BUSY_INTERVAL` (a commit may settle without a
notification of its own: they are debounced), and for :data:`EXPECT_FOR` after a
notification even while it finds nothing (the commit may wait behind the fence for an
older transaction to end); otherwise each empty read doubles the interval up to
:data:`IDLE_INTERVAL`. With no subscribers it reads nothing.

Each event is rendered once (the stream's wire form), however many subscribers get it.
Each subscriber's buffer is bounded: one that falls :attr:`FeedHub.buffer` events behind is
dropped (:attr:`Subscriber.dropped`), never buffered without bound; the stream then tells
its client to reconnect with ``Last-Event-ID``, which resumes from the ledger itself. When
the server stops, :meth:`FeedHub.end_streams` ends every stream the same way, so that the
HTTP worker can drain (a stream never ends by itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from typing import Any, Final

import msgspec
import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from ledger.database import EVENTS_CHANNEL, connect, first_line
from ledger.feed import FeedEvent, FeedFilter, feed_head, read_feed
from ledger.store import Checkpoint

log = logging.getLogger(__name__)

#: How soon the hub reads again after a read that found events.
BUSY_INTERVAL: Final = 0.02
#: The longest the hub goes without looking while it has subscribers.
IDLE_INTERVAL: Final = 1.0
#: How long after a notification the hub keeps the busy pace while it finds nothing: the
#: notified commit may sit behind the fence until an older transaction ends.
EXPECT_FOR: Final = 2.0
#: Events per read of the ledger.
PAGE: Final = 1000
#: How long a dropped subscriber's stream has to tell its client and end before it is
#: cancelled (a client that reads nothing at all never lets the farewell through).
DROP_GRACE: Final = 5.0
_RECONNECT_DELAY: Final = 1.0
#: What ``ledger serve`` sends its HTTP workers as it begins to stop: each ends its streams
#: (:meth:`FeedHub.end_streams`) so that it drains at once.
END_STREAMS_SIGNAL: Final = signal.SIGUSR2


class Rendered(msgspec.Struct, frozen=True):
    """An event with its wire form, rendered once per process for every subscriber."""

    event: FeedEvent
    wire: bytes


class Subscriber:
    """One stream client's place in the hub: its filter and its bounded buffer.

    Create it in the task that serves the client: if the client stops reading altogether,
    that task is cancelled :data:`DROP_GRACE` seconds after the drop, closing the connection.
    """

    def __init__(self, only: FeedFilter, buffer: int) -> None:
        self.only = only
        self.buffer = buffer
        self._task = asyncio.current_task()
        self._pending: list[Rendered] = []
        #: Set once the hub has dropped this subscriber for falling behind.
        self.dropped = False
        #: Set once the server is stopping: the stream sends what it holds, then ends.
        self.ended = False
        self._cutoff: asyncio.TimerHandle | None = None
        self._changed = asyncio.Event()
        self.joined: asyncio.Future[Checkpoint] = asyncio.get_running_loop().create_future()

    def offer(self, batch: list[Rendered]) -> bool:
        """Buffer the events of ``batch`` that pass the filter; False if they do not fit."""
        chosen = batch if self.only.everything else [r for r in batch if self.only.matches(r.event)]
        if not chosen:
            return True
        if len(self._pending) + len(chosen) > self.buffer:
            return False
        self._pending.extend(chosen)
        self._changed.set()
        return True

    def drop(self) -> None:
        """Mark as dropped and release the buffer: nothing more is kept for this client."""
        self.dropped = True
        self._pending = []
        self._changed.set()
        if self._task is not None:
            self._cutoff = asyncio.get_running_loop().call_later(DROP_GRACE, self._task.cancel)

    def end(self) -> None:
        """The server is stopping: :meth:`take` returns what is buffered, then nothing."""
        self.ended = True
        self._changed.set()

    def close(self) -> None:
        """The stream ended by itself: no cut-off needed."""
        if self._cutoff is not None:
            self._cutoff.cancel()

    async def take(self, within: float) -> list[Rendered]:
        """Every buffered event, waiting up to ``within`` seconds for one; empty if none
        came or the subscriber was dropped or ended (see :attr:`dropped`, :attr:`ended`)."""
        while not self.dropped:
            if self._pending:
                taken, self._pending = self._pending, []
                return taken
            if self.ended:
                return []
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), within)
            except TimeoutError:
                return []
        return []


class FeedHub:
    """The process's single reader of the live feed (see the module docstring)."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        database_url: str,
        *,
        buffer: int,
        render: Callable[[FeedEvent], bytes],
    ) -> None:
        self.pool = pool
        self.buffer = buffer
        self._render = render
        self._url = database_url
        self._subscribers: set[Subscriber] = set()
        self._joining: list[Subscriber] = []
        self._head = Checkpoint()
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: asyncio.Task[None] | None = None
        self._ending = False

    @property
    def subscribers(self) -> int:
        """Clients currently fed."""
        return len(self._subscribers)

    async def start(self) -> None:
        """Start the listener and the reader (inside the event loop)."""
        self._listener = asyncio.create_task(self._listen(), name="feed-listener")
        self._tasks = [self._listener, asyncio.create_task(self._read(), name="feed-reader")]

    async def stop(self) -> None:
        """Stop both tasks; subscribers still connected are dropped."""
        self._stopping.set()
        self._wakeup.set()
        if self._listener is not None:
            # It only waits for notifications (no query, no transaction): it is cancelled,
            # not asked to stop.
            self._listener.cancel()
            self._listener = None
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for subscriber in [*self._subscribers, *self._joining]:
            subscriber.drop()

    @property
    def ending(self) -> bool:
        """Whether the server is stopping (:meth:`end_streams` was called)."""
        return self._ending

    def end_streams(self) -> None:
        """The server is stopping: every stream ends now, and one that joins later ends as
        soon as it has caught up; its client resumes elsewhere with ``Last-Event-ID``."""
        self._ending = True
        for subscriber in [*self._subscribers, *self._joining]:
            subscriber.end()

    async def join(self, subscriber: Subscriber) -> Checkpoint:
        """Start feeding ``subscriber``; the hub's place at that moment.

        Every settled event after the returned checkpoint that passes the filter reaches the
        subscriber's buffer (until it is dropped). The place is itself settled, so a reader
        that reads the ledger up to the fence after this returns misses nothing in between.
        """
        if self._ending:
            subscriber.end()
        self._joining.append(subscriber)
        self._wakeup.set()
        return await subscriber.joined

    def leave(self, subscriber: Subscriber) -> None:
        """Stop feeding ``subscriber`` (its stream ended)."""
        subscriber.close()
        self._subscribers.discard(subscriber)
        with contextlib.suppress(ValueError):
            self._joining.remove(subscriber)

    async def _admit(self) -> None:
        """Take in the subscribers waiting to join, between two reads."""
        if not self._joining:
            return
        if not self._subscribers:
            # Nothing was read while nobody listened: start from the ledger's head now.
            async with self.pool.connection() as conn:
                self._head = await feed_head(conn)
        joining, self._joining = self._joining, []
        for subscriber in joining:
            if not subscriber.joined.done():
                self._subscribers.add(subscriber)
                subscriber.joined.set_result(self._head)

    async def _read(self) -> None:
        interval = BUSY_INTERVAL
        # Until when a notified commit may still be hidden behind the fence (a transaction
        # that began before it has not ended yet): look at the busy pace until then.
        expecting_until = 0.0
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            try:
                await self._admit()
                found = 0
                if self._subscribers:
                    async with self.pool.connection() as conn:
                        events = await read_feed(conn, self._head, PAGE)
                    self._fan_out(events)
                    found = len(events)
                if found == PAGE:
                    continue
                if found:
                    expecting_until = 0.0
                if found or loop.time() < expecting_until:
                    interval = BUSY_INTERVAL
                else:
                    interval = min(interval * 2, IDLE_INTERVAL)
            except (psycopg.Error, OSError) as error:
                log.warning("live feed: %s; retrying in %.1f s", first_line(error), IDLE_INTERVAL)
                interval = IDLE_INTERVAL
            except Exception:
                log.exception("live feed reader failed; retrying in %.1f s", IDLE_INTERVAL)
                interval = IDLE_INTERVAL
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), interval)
            if self._wakeup.is_set():
                self._wakeup.clear()
                interval = BUSY_INTERVAL
                expecting_until = loop.time() + EXPECT_FOR

    def _fan_out(self, events: list[FeedEvent]) -> None:
        if not events:
            return
        batch = [Rendered(event, self._render(event)) for event in events]
        for subscriber in list(self._subscribers):
            if not subscriber.offer(batch):
                log.info("live feed: dropped a client %d events behind", self.buffer)
                self._subscribers.discard(subscriber)
                subscriber.drop()
        self._head = events[-1].checkpoint

    async def _listen(self) -> None:
        while not self._stopping.is_set():
            try:
                async with connect(self._url, application_name="ledger-feed") as conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(EVENTS_CHANNEL)))
                    self._wakeup.set()  # whatever was notified while away: look now
                    # Until the connection fails, or stop() cancels this task.
                    async for _ in conn.notifies():
                        if self._subscribers:
                            self._wakeup.set()
            except (psycopg.Error, OSError) as error:
                log.warning("live feed listener: %s; reconnecting", first_line(error))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), _RECONNECT_DELAY)
