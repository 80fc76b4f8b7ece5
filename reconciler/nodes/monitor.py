"""One event-stream thread per node: a hint channel that makes refreshes come sooner.

Where this sits: ``nodes.Node`` starts an :class:`EventMonitor` once its engine is reachable and
hands it callables; each event goes to ``on_event`` (the node marks the container or the images
dirty and wakes its refresh). Events are never the truth: the node inspects what they name, and
forced refreshes run anyway.

The loop is kept boring (after nolar/kopf's ``infinite_watch``): subscribe, iterate, and on *any*
end of the stream log it, back off (capped), and subscribe again with ``since=`` so nothing is
lost. ``since`` is the later of the engine's clock when the previous stream was opened (its
``Date`` header; every event after it was delivered) and one second before the last event seen
(margin for events stamped slightly out of order); events replayed twice are dropped by key.

Inactivity watchdog: a healthy idle engine sends no events, so silence alone proves nothing. The
stream's socket has a read timeout (``idle_timeout``); when it expires the monitor *probes* the
engine (a ping). Answer → resubscribe at once, no failure counted (this also replaces a
connection that died silently, e.g. a half-open TCP connection). No answer → a failure, reported
through ``probe`` itself, then backoff. The node's own heartbeat catches a hung engine sooner; the
watchdog makes sure the stream itself is never dead for longer than ``idle_timeout``.

:meth:`EventMonitor.stop` ends the thread at once from any thread: it closes the socket, which
wakes the blocked read. ``max_events`` stops the monitor after that many new events (tests).
"""

from __future__ import annotations

import collections
import enum
import functools
import logging
import threading
import time
from collections.abc import Callable

from reconciler import docker_api, errors
from reconciler.domain import NodeName
from reconciler.nodes import health

log = logging.getLogger(__name__)

#: Events re-delivered after a resubscription are dropped if their key is among this many.
_REMEMBERED = 1024
#: Seconds before the last event seen that a resubscription starts (out-of-order margin).
_SINCE_MARGIN = 1.0
#: A stream that lived less than this and ended on its own counts as a failed attempt.
_SHORT_LIVED = 1.0


class End(enum.Enum):
    """Why one stream ended."""

    IDLE = "idle"  # silent for idle_timeout
    ENDED = "ended"  # the engine (or the network) ended it without an error
    FAILED = "failed"  # the subscription or a read failed
    STOPPED = "stopped"  # stop() was called
    LIMIT = "limit"  # max_events reached


class EventMonitor:
    """Follow one engine's events on a daemon thread until :meth:`stop`."""

    def __init__(
        self,
        *,
        node: NodeName,
        subscribe: Callable[[float | None], docker_api.EventStream],
        on_event: Callable[[docker_api.EngineEvent], None],
        on_error: Callable[[errors.EngineError], None],
        probe: Callable[[], bool],
        on_resubscribed: Callable[[], None] = lambda: None,
        policy: health.HealthPolicy | None = None,
        max_events: int | None = None,
    ) -> None:
        """``subscribe(since)`` opens a stream; ``on_error`` hears every failure; ``probe`` pings
        (True = answered); ``on_resubscribed`` runs after a resubscription that followed
        anything but an idle end (the node then does a full refresh, in case the engine's event
        buffer did not reach back far enough)."""
        self.node = node
        self._subscribe = subscribe
        self._on_event = on_event
        self._on_error = on_error
        self._probe = probe
        self._on_resubscribed = on_resubscribed
        self._policy = policy or health.HealthPolicy()
        self._max_events = max_events
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._stream: docker_api.EventStream | None = None
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
        self._thread = threading.Thread(target=self._run, name=f"events-{node}", daemon=True)

    # -- control ----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """End the monitor now; safe from any thread, including its own callbacks."""
        self._stop.set()
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()

    def join(self, timeout: float | None = None) -> None:
        if threading.current_thread() is not self._thread and self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def last_event_time(self) -> float | None:
        """Engine clock of the newest event seen, epoch seconds."""
        return None if self._last_event_nano is None else self._last_event_nano / 1e9

    def cut(self) -> None:
        """Close the current stream without stopping: the monitor resubscribes (tests, ops)."""
        with self._lock:
            stream = self._stream
        if stream is not None:
            stream.close()

    # -- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        gap = False
        while not self._stop.is_set():
            opened = time.monotonic()
            try:
                stream = self._subscribe(self._since())
            except errors.EngineError as e:
                failures, gap = failures + 1, True
                self._report(e)
                self._pause(failures)
                continue
            if not self._adopt(stream):
                break
            if gap:
                self._safely(self._on_resubscribed)
            end, error, delivered = self._consume(stream)
            with self._lock:
                if self._stream is stream:
                    self._stream = None
            stream.close()
            if end in (End.STOPPED, End.LIMIT):
                break
            failures, gap = self._after(
                end, error, failures=failures, delivered=delivered, lived=time.monotonic() - opened
            )
            self._pause(failures)
        log.debug("event monitor of node %s stopped", self.node)

    def _after(
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
            if self._probe():
                log.debug("event stream of node %s idle; engine answers, resubscribing", self.node)
                return 0, False  # a quiet engine: resubscribe at once, nothing was missed
            return streak + 1, True
        if end is End.FAILED and error is not None:
            log.warning("event stream of node %s failed: %s; resubscribing", self.node, error)
            self._report(error)
        else:
            log.info("event stream of node %s ended; resubscribing", self.node)
        return streak + 1, True

    def _adopt(self, stream: docker_api.EventStream) -> bool:
        """Make ``stream`` current unless the monitor was stopped meanwhile."""
        with self._lock:
            if self._stop.is_set():
                stream.close()
                return False
            self._stream = stream
        if stream.opened_at is not None:
            self._stream_opened_at = stream.opened_at
        self.subscriptions += 1
        self.subscribed.set()
        return True

    def _consume(
        self, stream: docker_api.EventStream
    ) -> tuple[End, errors.EngineError | None, int]:
        delivered = 0
        try:
            for event in stream:
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

    def _pause(self, failures: int) -> None:
        delay = self._policy.retry_delay(failures)
        if delay > 0:
            self._stop.wait(delay)

    def _report(self, error: errors.EngineError) -> None:
        if not self._stop.is_set():
            self._safely(lambda: self._on_error(error))

    def _safely(self, callback: Callable[[], object]) -> None:
        """Run a callback; a bug in it is logged and never ends the monitor."""
        try:
            callback()
        except Exception:
            log.exception("event monitor of node %s: callback failed", self.node)
