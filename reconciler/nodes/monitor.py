"""Every node's event stream, followed on one shared asyncio loop: hints that make refreshes
come sooner.

Where this sits: ``nodes.Node`` starts an :class:`EventMonitor` once its engine is reachable and
hands it callables; each event goes to ``on_event`` (the node marks the container or the images
dirty and wakes its refresh). Events are never the truth: the node inspects what they name, and
forced refreshes run anyway.

Stream design (issue 15): a monitor is one asyncio task on the process's :class:`StreamHub`, one
loop on one daemon thread that reads every engine's stream (``docker_api.streams``: plain
sockets, chunked JSON lines). A thousand idle streams cost a thousand open sockets and no
threads; the loop wakes only when bytes arrive or a timer fires. Callbacks that may block (the
probe, which pings; ``on_error``, which may write health to SQL) run on the hub's small thread
pool, never on the loop. SSH engines are read by the SDK on one thread each
(``streams.ThreadedEventStream``), behind the same loop.

The loop is kept boring (after nolar/kopf's ``infinite_watch``): subscribe, iterate, and on *any*
end of the stream log it, back off (capped), and subscribe again with ``since=`` so nothing is
lost. ``since`` is the later of the engine's clock when the previous stream was opened (its
``Date`` header; every event after it was delivered) and one second before the last event seen
(margin for events stamped slightly out of order); events replayed twice are dropped by key.

Inactivity watchdog: a healthy idle engine sends no events, so silence alone proves nothing. A
read waits at most ``idle_timeout``; when it expires the monitor *probes* the engine (a ping).
Answer → resubscribe at once, no failure counted (this also replaces a connection that died
silently, e.g. a half-open TCP connection). No answer → a failure, reported through ``probe``
itself, then backoff. The node's own heartbeat catches a hung engine sooner; the watchdog makes
sure the stream itself is never dead for longer than ``idle_timeout``.

:meth:`EventMonitor.stop` ends the task at once from any thread (it cancels it, which closes the
socket). ``max_events`` stops the monitor after that many new events (tests).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import enum
import functools
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from reconciler import docker_api, errors
from reconciler.docker_api import streams
from reconciler.domain import NodeName
from reconciler.nodes import health

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Events re-delivered after a resubscription are dropped if their key is among this many.
_REMEMBERED = 1024
#: Seconds before the last event seen that a resubscription starts (out-of-order margin).
_SINCE_MARGIN = 1.0
#: A stream that lived less than this and ended on its own counts as a failed attempt.
_SHORT_LIVED = 1.0
#: Threads of the hub's pool, for callbacks that may block (probes, health writes).
_POOL_THREADS = 16

#: What ``subscribe(since)`` may return: an awaitable of an async stream (``EngineClient.
#: open_events``), or a blocking ``docker_api.EventStream`` (read on a thread of its own).
Subscription = Awaitable[streams.AsyncEventStream] | docker_api.EventStream


class StreamHub:
    """One asyncio loop on one daemon thread, started on first use; shared by every monitor."""

    def __init__(self, *, pool_threads: int = _POOL_THREADS) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=pool_threads, thread_name_prefix="events-pool"
        )

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                loop.set_default_executor(self._pool)
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                threading.Thread(target=run, name="event-streams", daemon=True).start()
                ready.wait()
                self._loop = loop
            return self._loop

    def submit(self, coro: Awaitable[T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]

    def tasks(self) -> int:
        """Monitors running now (tests, bench)."""
        loop = self._loop
        if loop is None:
            return 0
        return self.submit(_count_tasks()).result(timeout=5)


async def _count_tasks() -> int:
    return len(asyncio.all_tasks()) - 1


#: The process's hub: every monitor runs on it unless given another.
HUB = StreamHub()


class End(enum.Enum):
    """Why one stream ended."""

    IDLE = "idle"  # silent for idle_timeout
    ENDED = "ended"  # the engine (or the network) ended it without an error
    FAILED = "failed"  # the subscription or a read failed
    STOPPED = "stopped"  # stop() was called
    LIMIT = "limit"  # max_events reached


class EventMonitor:
    """Follow one engine's events as a task on a :class:`StreamHub` until :meth:`stop`."""

    def __init__(
        self,
        *,
        node: NodeName,
        subscribe: Callable[[float | None], Subscription],
        on_event: Callable[[docker_api.EngineEvent], None],
        on_error: Callable[[errors.EngineError], None],
        probe: Callable[[], bool],
        on_resubscribed: Callable[[], None] = lambda: None,
        policy: health.HealthPolicy | None = None,
        max_events: int | None = None,
        hub: StreamHub | None = None,
    ) -> None:
        """``subscribe(since)`` opens a stream; ``on_event`` runs on the hub's loop and must
        not block; ``on_error`` hears every failure and ``probe`` pings (True = answered), both
        on the hub's pool; ``on_resubscribed`` (on the loop) runs after a resubscription that
        followed anything but an idle end (the node then does a full refresh, in case the
        engine's event buffer did not reach back far enough)."""
        self.node = node
        self._subscribe = subscribe
        self._on_event = on_event
        self._on_error = on_error
        self._probe = probe
        self._on_resubscribed = on_resubscribed
        self._policy = policy or health.HealthPolicy()
        self._max_events = max_events
        self._hub = hub or HUB
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stream: streams.AsyncEventStream | None = None
        self._done = threading.Event()
        self._started = False
        self._keys: collections.deque[tuple[int, str, str, str]] = collections.deque()
        self._key_set: set[tuple[int, str, str, str]] = set()
        self._last_event_nano: int | None = None
        self._stream_opened_at: float | None = None
        #: Set once the first subscription is open: events from then on are not missed.
        self.subscribed = threading.Event()
        #: New (non-duplicate) events delivered to ``on_event``.
        self.events_seen = 0
        #: Streams opened so far.
        self.subscriptions = 0

    # -- control ----------------------------------------------------------------------------

    def start(self) -> None:
        self._started = True
        future = self._hub.submit(self._spawn())
        future.result()

    async def _spawn(self) -> None:
        task = asyncio.get_running_loop().create_task(self._run(), name=f"events-{self.node}")
        with self._lock:
            self._task = task
        if self._stop.is_set():
            task.cancel()

    def stop(self) -> None:
        """End the monitor now; safe from any thread, including its own callbacks."""
        self._stop.set()
        with self._lock:
            task = self._task
        if task is not None:
            with _loop_closed_ok():
                self._hub.loop.call_soon_threadsafe(task.cancel)
        elif not self._started:
            self._done.set()

    def join(self, timeout: float | None = None) -> None:
        if not self._on_loop():
            self._done.wait(timeout)

    @property
    def alive(self) -> bool:
        return self._started and not self._done.is_set()

    @property
    def last_event_time(self) -> float | None:
        """Engine clock of the newest event seen, epoch seconds."""
        return None if self._last_event_nano is None else self._last_event_nano / 1e9

    def cut(self) -> None:
        """Close the current stream without stopping: the monitor resubscribes (tests, ops)."""

        def close() -> None:
            if self._stream is not None:
                self._stream.close()

        with _loop_closed_ok():
            self._hub.loop.call_soon_threadsafe(close)

    def _on_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._hub.loop
        except RuntimeError:
            return False

    # -- the loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._follow()
        except asyncio.CancelledError:
            pass
        finally:
            if self._stream is not None:
                self._stream.close()
                self._stream = None
            self._done.set()
            log.debug("event monitor of node %s stopped", self.node)

    async def _follow(self) -> None:
        failures = 0
        gap = False
        while not self._stop.is_set():
            opened = time.monotonic()
            try:
                stream = await self._open(self._since())
            except errors.EngineError as e:
                failures, gap = failures + 1, True
                await self._report(e)
                await self._pause(failures)
                continue
            self._adopt(stream)
            if gap:
                self._safely(self._on_resubscribed)
            end, error, delivered = await self._consume(stream)
            self._stream = None
            stream.close()
            if end in (End.STOPPED, End.LIMIT):
                break
            failures, gap = await self._after(
                end, error, failures=failures, delivered=delivered, lived=time.monotonic() - opened
            )
            await self._pause(failures)

    async def _open(self, since: float | None) -> streams.AsyncEventStream:
        subscription = self._subscribe(since)
        if inspect.isawaitable(subscription):
            return await subscription
        # A blocking stream (tests, or a caller without an async client): read on a thread.
        return streams.ThreadedEventStream(subscription, loop=asyncio.get_running_loop())

    async def _after(
        self,
        end: End,
        error: errors.EngineError | None,
        *,
        failures: int,
        delivered: int,
        lived: float,
    ) -> tuple[int, bool]:
        """(failures, gap) after a stream ended; the caller then pauses by the backoff.

        A stream that delivered events or lived a while resets the failure streak; one that
        ended at once without any continues it, so a flapping engine is not hammered.
        """
        streak = 0 if delivered or lived >= _SHORT_LIVED else failures
        if end is End.IDLE:
            if await self._blocking(self._probe):
                log.debug("event stream of node %s idle; engine answers, resubscribing", self.node)
                return 0, False  # a quiet engine: resubscribe at once, nothing was missed
            return streak + 1, True
        if end is End.FAILED and error is not None:
            log.warning("event stream of node %s failed: %s; resubscribing", self.node, error)
            await self._report(error)
        else:
            log.info("event stream of node %s ended; resubscribing", self.node)
        return streak + 1, True

    def _adopt(self, stream: streams.AsyncEventStream) -> None:
        self._stream = stream
        if stream.opened_at is not None:
            self._stream_opened_at = stream.opened_at
        self.subscriptions += 1
        self.subscribed.set()

    async def _consume(
        self, stream: streams.AsyncEventStream
    ) -> tuple[End, errors.EngineError | None, int]:
        delivered = 0
        try:
            while (event := await stream.next()) is not None:
                if not self._remember(event):
                    continue  # replayed after a resubscription: already handled
                delivered += 1
                self.events_seen += 1
                self._safely(functools.partial(self._on_event, event))
                if self._max_events is not None and self.events_seen >= self._max_events:
                    return End.LIMIT, None, delivered
        except errors.EventStreamIdle:
            return End.IDLE, None, delivered
        except errors.EngineError as e:
            if self._stop.is_set():
                return End.STOPPED, None, delivered
            return End.FAILED, e, delivered
        return (End.STOPPED if self._stop.is_set() else End.ENDED), None, delivered

    def _remember(self, event: docker_api.EngineEvent) -> bool:
        """Record ``event``; False if it was seen before."""
        key = (event.time_nano, event.type, event.action, event.id)
        if key in self._key_set:
            return False
        self._keys.append(key)
        self._key_set.add(key)
        if len(self._keys) > _REMEMBERED:
            self._key_set.discard(self._keys.popleft())
        if self._last_event_nano is None or event.time_nano > self._last_event_nano:
            self._last_event_nano = event.time_nano
        return True

    def _since(self) -> float | None:
        candidates = [self._stream_opened_at]
        if self._last_event_nano is not None:
            candidates.append(self._last_event_nano / 1e9 - _SINCE_MARGIN)
        known = [c for c in candidates if c is not None]
        return max(known) if known else None

    async def _pause(self, failures: int) -> None:
        delay = self._policy.retry_delay(failures)
        if delay > 0:
            await asyncio.sleep(delay)

    async def _report(self, error: errors.EngineError) -> None:
        if not self._stop.is_set():
            await self._blocking(lambda: self._on_error(error))

    async def _blocking(self, callback: Callable[[], T]) -> T | None:
        """Run a callback that may block on the hub's pool; a bug in it is logged."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(None, callback)
        except Exception:
            log.exception("event monitor of node %s: callback failed", self.node)
            return None

    def _safely(self, callback: Callable[[], object]) -> None:
        """Run a callback; a bug in it is logged and never ends the monitor."""
        try:
            callback()
        except Exception:
            log.exception("event monitor of node %s: callback failed", self.node)


class _loop_closed_ok:
    """Ignore a hub loop that is already closed (interpreter shutdown)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> bool:
        return exc[0] is RuntimeError
