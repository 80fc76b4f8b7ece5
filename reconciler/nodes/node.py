"""One engine: connect, read its specs, refresh its containers and images, track its health.

Where this sits: ``nodes.cluster`` keeps one :class:`Node` per row of ``nodes``; the planner reads
:meth:`Node.snapshot`; the executor acts through :attr:`Node.client` and then calls
:meth:`Node.refresh_containers` with the ids it touched.

Each node's loop (refresh, heartbeat, specs, recovery) is a job on the shared worker pool
(``nodes.workers``: threads on demand, at most ``max_threads``, each node's steps one at a time)
and, while reachable, its event stream is a task on the shared stream loop (``nodes.monitor``):
a thousand nodes do not need two thousand threads, and a hung engine holds one worker for at
most its call's timeout. A step, after classic Swarm's refresh loop:

* not connected (pending, or unhealthy after the threshold): when the backoff allows, *recover*:
  connect, read specs, start the event monitor (and wait until it is subscribed, so no event
  falls between it and the refresh), full refresh, then ``healthy``;
* suspect (healthy, but the last call failed): probe with a ping when the backoff allows;
* otherwise: a forced full refresh when due (``refresh_interval`` ± ``refresh_jitter``), else an
  inspect of just the containers whose events are news and a new image list if an image event
  came; specs every ``spec_interval``; a ping when nothing proved the engine alive for
  ``heartbeat_interval`` (an event or a successful call does; each wait is drawn 0-20 % short,
  so a fleet's pings do not fall in step).

A full refresh is one container list call plus inspects of only what is new or changed
(``nodes.containers``); it lists images too on a (re)connect, without events, and otherwise only
every ``image_refresh_interval``, since image changes come with events that list them at once.
Every call's outcome feeds ``nodes.health``; a step stops at its first failure, so three
failures take three backoff steps. Whatever changed is reported to a
:class:`NodeObserver` (the cluster writes it to SQL).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, TypeVar

from reconciler import docker_api, domain, errors
from reconciler.nodes import containers, health, monitor, workers
from reconciler.nodes.settings import NodeSettings

log = logging.getLogger(__name__)
T = TypeVar("T")


class NodeObserver(Protocol):
    """What a node reports; called from the node's threads, one call at a time per node."""

    def health_changed(
        self, node: domain.NodeName, state: health.HealthState, transition: health.Transition | None
    ) -> None: ...

    def specs_read(self, node: domain.NodeName, info: domain.EngineInfo) -> None: ...

    def picture_changed(self, node: domain.NodeName, *, full: bool, changed: bool) -> None:
        """The picture changed (``changed``) or was refreshed in full (``full``); read it with
        :meth:`Node.snapshot` when needed, not on every call."""


class _Failed(Exception):
    """A call failed and was recorded; the current step ends."""


class Node:
    """One engine, followed on its own threads from :meth:`start` to :meth:`stop`."""

    def __init__(
        self,
        *,
        row: domain.NodeRow,
        settings: NodeSettings | None = None,
        observer: NodeObserver | None = None,
        rng: random.Random | None = None,
        installation: str | None = None,
        pool: workers.WorkerPool | None = None,
    ) -> None:
        self.name = row.name
        self.installation = installation
        """This reconciler database's id: the label of the containers created here, and the
        test of which labelled containers are ours."""
        self.settings = settings or NodeSettings()
        self._row = row
        self._observer = observer
        self._rng = rng or random.Random()
        self._policy = self.settings.policy
        self._lock = threading.RLock()
        self._notify_lock = threading.Lock()
        self._pool = pool or workers.POOL
        self._stopping = threading.Event()
        self._step_lock = threading.Lock()
        self._step_thread: threading.Thread | None = None
        self._heartbeat_due = self.settings.heartbeat_interval
        self._health = health.HealthState()
        self._client: docker_api.EngineClient | None = None
        self._monitor: monitor.EventMonitor | None = None
        self._info: domain.EngineInfo | None = None
        self._unhealthy_since: float | None = None
        self._cache = containers.ContainerCache(node=row.name, installation=installation)
        self._refreshed = False
        self._last_alive = 0.0
        self._next_full = 0.0
        self._next_images = 0.0
        self._next_specs = 0.0
        self._snapshot: domain.NodeSnapshot | None = None
        #: Full refreshes done, and when the last one finished (monotonic); for tests and bench.
        self.full_refreshes = 0
        self.last_full_refresh_at: float | None = None

    # -- public ------------------------------------------------------------------------------

    def start(self) -> None:
        self._pool.add(self)

    def stop(self, *, timeout: float = 5.0) -> None:
        """Stop the loop, close the stream and the connection; waits up to ``timeout`` for a
        step under way. A step stuck in a hung call finishes in the background but reports
        nothing after this."""
        self._stopping.set()
        self._pool.remove(self)
        self._teardown()
        with self._notify_lock:
            pass  # a report already under way finishes first; later ones see _stopping
        waits = timeout > 0 and threading.current_thread() is not self._step_thread
        if waits and self._step_lock.acquire(timeout=timeout):
            self._step_lock.release()

    @property
    def row(self) -> domain.NodeRow:
        return self._row

    def update_row(self, row: domain.NodeRow) -> None:
        """Take new labels or ``schedulable`` (a new URL or TLS needs a new ``Node``)."""
        with self._lock:
            self._row = row
        self._changed()

    @property
    def health_state(self) -> health.HealthState:
        return self._health

    @property
    def info(self) -> domain.EngineInfo | None:
        return self._info

    @property
    def event_monitor(self) -> monitor.EventMonitor | None:
        """The running event monitor, if any (tests cut its stream)."""
        return self._monitor

    @property
    def client(self) -> docker_api.EngineClient:
        """The live client; raises :class:`errors.EngineUnreachable` while not connected.

        Report the outcome of calls made with it through :meth:`record_failure` (any call) and
        :meth:`refresh_containers` (after changing containers).
        """
        client = self._client
        if client is None:
            reason = self._health.last_error or "not reached yet"
            raise errors.EngineUnreachable(
                f"node {self.name} is not connected: {reason}", node=self.name
            )
        return client

    @property
    def suspect(self) -> bool:
        """The engine may have stopped answering, before health says so: the last call failed,
        or a call has waited longer than ``probe_timeout`` for an answer (beyond a stop's grace
        period). The planner places no new row here; the executor does not wait for it."""
        client = self._client
        stalled = client is not None and client.stalled(after=self.settings.probe_timeout)
        return stalled or self._health.suspect

    def snapshot(self) -> domain.NodeSnapshot:
        """The node as the planner sees it: immutable, rebuilt only after a change (including
        a change of :attr:`suspect`)."""
        suspect = self.suspect
        with self._lock:
            if self._snapshot is None or self._snapshot.suspect != suspect:
                self._snapshot = domain.NodeSnapshot(
                    name=self.name,
                    health=self._health.health,
                    schedulable=self._row.schedulable,
                    containers=self._cache.containers(),
                    images=self._cache.images(),
                    labels=dict(self._row.labels),
                    refreshed=self._refreshed,
                    suspect=suspect,
                    cpus=self._info.cpus if self._info else None,
                    memory_bytes=self._info.memory_bytes if self._info else None,
                    engine_labels=dict(self._info.labels) if self._info else {},
                    drain=self._row.drain,
                    unhealthy_since=self._unhealthy_clock(),
                )
            return self._snapshot

    def _unhealthy_clock(self) -> float | None:
        """Epoch seconds since when the node has been unhealthy (the first snapshot after the
        transition, which wakes a pass at once); None while it is not. Under ``_lock``."""
        if self._health.health is not domain.Health.UNHEALTHY:
            self._unhealthy_since = None
        elif self._unhealthy_since is None:
            self._unhealthy_since = time.time()
        return self._unhealthy_since

    def refresh_containers(self, ids: Iterable[str]) -> None:
        """Inspect ``ids`` now, on the caller's thread (gone ones are dropped); raises the
        :class:`errors.EngineError` of a failed inspect after recording it."""
        client = self.client
        try:
            changed = self._cache.inspect(client, [domain.ContainerId(i) for i in ids])
        except errors.EngineError as e:
            self.record_failure(e)
            raise
        self._alive()
        if changed:
            self._changed()

    @contextlib.contextmanager
    def acting_on(self, *, ids: Iterable[str] = (), names: Iterable[str] = ()) -> Iterator[None]:
        """Around an action on these containers (by id, or by name for a create): the events it
        causes are not inspected meanwhile; the caller reports the result with
        :meth:`refresh_containers` or :meth:`forget_containers` before leaving."""
        try:
            with self._cache.claimed(ids=ids, names=names):
                yield
        finally:
            if self._cache.has_dirty():
                self._poke()  # events held meanwhile that the result did not cover

    def forget_containers(self, ids: Iterable[str]) -> None:
        """Drop containers the caller has just removed; no call to the engine."""
        self._cache.forget([domain.ContainerId(i) for i in ids])
        self._changed()

    def request_refresh(self) -> None:
        """Ask for a full refresh as soon as the worker is free."""
        self._next_full = 0.0
        self._poke()

    def record_failure(self, error: errors.EngineError) -> None:
        """Count a failed call made with :attr:`client` against health if the engine itself
        failed (``error.engine_fault``); what a request's content caused counts against its row
        only (the executor's outcome)."""
        if not error.engine_fault:
            return
        with self._lock:
            now, policy = time.monotonic(), self._policy
            state, transition = health.failed(
                self._health, node=self.name, error=str(error), now=now, policy=policy
            )
            self._health = state
            self._snapshot = None
            if transition is not None:
                self._refreshed = False
                if state.health is domain.Health.UNHEALTHY:
                    self._unhealthy_since = time.time()
        if transition is not None:
            log.warning("%s", transition.message)
            self._teardown()
        else:
            log.info("node %s: call failed (%d in a row): %s", self.name, state.failures, error)
        self._notify_health(transition)
        self._poke()

    # -- the worker ------------------------------------------------------------------------------

    def step(self) -> float:
        """One turn of the loop (called by the worker pool): do what is due; the next deadline."""
        with self._step_lock:
            self._step_thread = threading.current_thread()
            try:
                if not self._stopping.is_set():
                    self._step(time.monotonic())
            except _Failed:
                pass  # recorded; the backoff decides when the next attempt runs
            except Exception:
                log.exception("node %s: unexpected error in the refresh loop", self.name)
                return time.monotonic() + 1.0
            finally:
                self._step_thread = None
        now = time.monotonic()
        return now + self._sleep_time(now)

    def _poke(self) -> None:
        """Bring the next step forward to now."""
        if not self._stopping.is_set():
            self._pool.wake(self)

    def _step(self, now: float) -> None:
        state = self._health
        if self._client is None or state.health is domain.Health.UNHEALTHY:
            if state.attempt_due(now):
                self._recover()
            return
        client = self._client
        if state.suspect:
            if state.attempt_due(now):
                self._call(lambda: self._ping(client))
                self._cleared()
            return
        if now >= self._next_full:
            self._full_refresh(client)
        else:
            if dirty := self._cache.take_dirty():
                self._apply(lambda: self._cache.inspect(client, dirty))
            if self._cache.take_forgotten():
                self._changed()
            if self._cache.take_images_dirty():
                self._apply(lambda: self._cache.refresh_images(client))
        if now >= self._next_specs:
            self._read_specs(client)
        if time.monotonic() >= self._heartbeat_at():
            self._call(lambda: self._ping(client))

    def _sleep_time(self, now: float) -> float:
        state = self._health
        if self._client is None or state.suspect or state.health is domain.Health.UNHEALTHY:
            deadlines = [state.next_attempt_at or now]
        else:
            deadlines = [
                self._next_full,
                self._next_specs,
                self._heartbeat_at(),
            ]
        return max(0.0, min(deadlines) - now)

    def _ping(self, client: docker_api.EngineClient) -> None:
        """A heartbeat or probe: ``/_ping`` on the stream loop, over a kept-alive connection
        (``EngineClient.aping``; cheaper than the SDK's request machinery at fleet scale)."""
        timeout = self.settings.probe_timeout
        future = monitor.HUB.submit(client.aping(timeout=timeout))
        try:
            future.result(timeout + 1.0)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise errors.EngineTimeout(
                f"ping on {client.url}: no answer in time; the engine is hung, overloaded or "
                "unreachable",
                node=self.name,
            ) from None

    def _heartbeat_at(self) -> float:
        """When to ping: ``heartbeat_interval`` after the last sign of life, minus this round's
        jitter (0-20 %, drawn once per sign of life), so pings do not march in step."""
        return self._last_alive + self._heartbeat_due

    def _call(self, fn: Callable[[], T]) -> T:
        """Run one call; record a failure and end the step with :class:`_Failed`."""
        try:
            result = fn()
        except errors.EngineError as e:
            self.record_failure(e)
            raise _Failed from e
        self._alive()
        return result

    def _apply(self, fn: Callable[[], bool]) -> None:
        """Run a cache refresh; report the picture if it changed."""
        if self._call(fn):
            self._changed()

    def _full_refresh(self, client: docker_api.EngineClient) -> None:
        changed = self._call(lambda: self._cache.refresh(client))
        images_due = time.monotonic() >= self._next_images or not self.settings.events
        if self._cache.take_images_dirty() or images_due:
            changed |= self._call(lambda: self._cache.refresh_images(client))
            self._next_images = time.monotonic() + self.settings.image_refresh_interval
        interval = self.settings.refresh_interval
        jitter = self.settings.refresh_jitter * self._rng.uniform(-1.0, 1.0)
        self._next_full = time.monotonic() + interval * (1.0 + jitter)
        self.full_refreshes += 1
        self.last_full_refresh_at = time.monotonic()
        with self._lock:
            changed |= not self._refreshed
            self._refreshed = True
        self._changed(full=True, changed=changed)

    def _read_specs(self, client: docker_api.EngineClient) -> None:
        info = self._call(client.info)
        self._next_specs = time.monotonic() + self.settings.spec_interval
        if info != self._info:
            self._info = info
            if self._observer is not None and not self._stopping.is_set():
                with self._notify_lock:
                    self._observer.specs_read(self.name, info)

    # -- recovery ----------------------------------------------------------------------------

    def _recover(self) -> None:
        """Connect, specs, monitor, full refresh, ``healthy``; any failure ends the attempt."""
        self._teardown()
        self._next_images = 0.0  # image events may have been missed while away
        client = self._call(
            lambda: docker_api.connect(
                self._row,
                timeout=self.settings.call_timeout,
                connect_timeout=self.settings.probe_timeout,
            )
        )
        try:
            self._read_specs(client)
            if self.settings.events:
                self._start_monitor(client)
            self._full_refresh(client)
        except _Failed:
            self._teardown(client)
            raise
        with self._lock:
            abandoned = self._stopping.is_set()
            if not abandoned:
                self._health, transition = health.succeeded(self._health, node=self.name)
                self._client = client
                self._snapshot = None
        if abandoned:  # stop() ran meanwhile: it could not see this client to close it
            self._teardown(client)
            return
        if transition is not None:
            version = self._info.version if self._info else "?"
            log.info("%s (engine %s, API %s)", transition.message, version, client.api_version)
        self._notify_health(transition)
        self._changed()

    def _start_monitor(self, client: docker_api.EngineClient) -> None:
        """Start following events and wait (up to the call timeout) until subscribed, so no
        event falls between the subscription and the full refresh that follows."""
        watcher = self._new_monitor(client)
        with self._lock:
            if self._stopping.is_set():
                return
            self._monitor = watcher
        watcher.start()
        watcher.subscribed.wait(self.settings.call_timeout)

    def _new_monitor(self, client: docker_api.EngineClient) -> monitor.EventMonitor:
        def probe() -> bool:
            try:
                self._call(lambda: self._ping(client))
            except _Failed:
                return False
            return True

        return monitor.EventMonitor(
            node=self.name,
            subscribe=lambda since: client.open_events(
                since=since, idle_timeout=self.settings.stream_idle_timeout
            ),
            on_event=self._on_event,
            on_error=self.record_failure,
            probe=probe,
            on_resubscribed=self.request_refresh,
            policy=self._policy,
        )

    def _teardown(self, client: docker_api.EngineClient | None = None) -> None:
        """Stop the monitor and close the client (or ``client``, a half-recovered one)."""
        with self._lock:
            watcher, self._monitor = self._monitor, None
            current, self._client = self._client, None
        if watcher is not None:
            watcher.stop()
        for c in {id(c): c for c in (current, client) if c is not None}.values():
            c.close()

    # -- events and bookkeeping -----------------------------------------------------------------

    def _on_event(self, event: docker_api.EngineEvent) -> None:
        self._alive()  # an event proves the engine alive as well as a ping would
        if self._cache.note_event(event):
            self._poke()

    def _alive(self) -> None:
        self._last_alive = time.monotonic()
        self._heartbeat_due = self.settings.heartbeat_interval * (1.0 - 0.2 * self._rng.random())

    def _cleared(self) -> None:
        """A probe answered while suspect: the failures are forgiven, no transition."""
        with self._lock:
            failures = self._health.failures
            self._health, _ = health.succeeded(self._health, node=self.name)
        log.info("node %s answers again after %d failed calls", self.name, failures)
        self._notify_health(None)

    def _changed(self, *, full: bool = False, changed: bool = True) -> None:
        """The picture changed (or, with ``full``, was refreshed in full, maybe unchanged)."""
        if changed:
            with self._lock:
                self._snapshot = None
        self._notify_picture(full=full, changed=changed)

    def _notify_picture(self, *, full: bool, changed: bool) -> None:
        if self._observer is None or self._stopping.is_set():
            return
        with self._notify_lock:
            self._observer.picture_changed(self.name, full=full, changed=changed)

    def _notify_health(self, transition: health.Transition | None) -> None:
        if self._observer is None or self._stopping.is_set():
            return
        with self._notify_lock:
            self._observer.health_changed(self.name, self._health, transition)
