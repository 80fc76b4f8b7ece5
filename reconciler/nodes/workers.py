"""The nodes' workers: every node's refresh loop on one bounded pool of threads.

Where this sits: each ``nodes.node.Node`` is a *job* with one method, ``step() -> deadline``: do
what is due now (recover, probe, refresh, heartbeat) and say when to be called again (monotonic
seconds). A :class:`WorkerPool` calls each job's ``step`` when its deadline comes or when it is
poked (:meth:`WorkerPool.wake`, e.g. an event named a container), never two steps of one job at
once. Threads are started on demand, up to ``max_threads``; so a thousand nodes need not a
thousand threads (issue 15), start-up connects run at most ``max_threads`` at a time, and a hung
engine holds one thread for at most its call's timeout.

A poke that arrives while the job's step runs is kept: the job runs again right after.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from typing import Protocol

log = logging.getLogger(__name__)

#: Default upper bound of worker threads (a hung engine holds one for at most a call timeout).
DEFAULT_THREADS = 48
#: An idle worker thread exits after this many seconds without work.
_IDLE_EXIT = 30.0


class Job(Protocol):
    """One node's loop: do what is due, return the next deadline (``time.monotonic()``)."""

    @property
    def name(self) -> str: ...

    def step(self) -> float: ...


class _Entry:
    __slots__ = ("again", "due", "job", "running", "stopped")

    def __init__(self, job: Job) -> None:
        self.job = job
        self.due: float | None = None
        self.running = False
        self.again = False
        self.stopped = False


class WorkerPool:
    """Run jobs' steps at their deadlines on at most ``max_threads`` threads."""

    def __init__(self, *, max_threads: int = DEFAULT_THREADS, name: str = "nodes") -> None:
        self.max_threads = max_threads
        self._name = name
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # idle followers
        self._timer = threading.Condition(self._lock)  # the one thread watching the clock
        self._timer_waiting = False
        self._heap: list[tuple[float, int, _Entry]] = []
        self._entries: dict[int, _Entry] = {}
        self._seq = itertools.count()
        self._threads = 0
        self._idle = 0
        #: Peak of worker threads alive at once (bench, tests).
        self.peak_threads = 0

    # -- jobs ----------------------------------------------------------------------------------

    def add(self, job: Job) -> None:
        """Start calling ``job.step``, at once."""
        with self._cond:
            entry = self._entries.setdefault(id(job), _Entry(job))
            entry.stopped = False
            self._push(entry, time.monotonic())

    def remove(self, job: Job) -> None:
        """Call ``job.step`` no more (a step under way finishes)."""
        with self._cond:
            entry = self._entries.pop(id(job), None)
            if entry is not None:
                entry.stopped = True

    def wake(self, job: Job) -> None:
        """Run ``job.step`` as soon as a thread is free (again after a step under way)."""
        with self._cond:
            entry = self._entries.get(id(job))
            if entry is None:
                return
            if entry.running:
                entry.again = True
            else:
                self._push(entry, time.monotonic())

    @property
    def threads(self) -> int:
        with self._cond:
            return self._threads

    # -- internals -----------------------------------------------------------------------------

    def _push(self, entry: _Entry, due: float) -> None:
        """Schedule ``entry`` at ``due`` unless it is already due sooner (lock held)."""
        if entry.stopped or (entry.due is not None and entry.due <= due):
            return
        entry.due = due
        heapq.heappush(self._heap, (due, next(self._seq), entry))
        if self._timer_waiting:
            self._timer.notify()  # it recomputes its deadline, or takes the entry
        elif self._idle:
            self._cond.notify()  # a follower becomes the timer, or takes the entry
        elif self._threads < self.max_threads and due <= time.monotonic():
            self._spawn()

    def _spawn(self) -> None:
        self._threads += 1
        self.peak_threads = max(self.peak_threads, self._threads)
        threading.Thread(
            target=self._work, name=f"{self._name}-{self._threads}", daemon=True
        ).start()

    def _next(self) -> _Entry | None:
        """The next due entry, marked running; None when this thread should exit (lock held).

        One idle thread (the timer) waits for the earliest deadline; the others wait to be
        notified, so a deadline wakes one thread, not all of them.
        """
        idle_since = time.monotonic()
        while True:
            now = time.monotonic()
            while self._heap and (
                self._heap[0][2].stopped or self._heap[0][2].due != self._heap[0][0]
            ):
                heapq.heappop(self._heap)  # stale: rescheduled sooner, or removed
            if self._heap and self._heap[0][0] <= now:
                _, _, entry = heapq.heappop(self._heap)
                entry.due = None
                entry.running = True
                if self._heap and not self._timer_waiting:
                    if self._idle:
                        self._cond.notify()  # someone else watches the next deadline
                    elif self._heap[0][0] <= now and self._threads < self.max_threads:
                        self._spawn()  # more is due: another thread takes it
                return entry
            if now - idle_since >= _IDLE_EXIT and self._threads > 1:
                return None
            self._idle += 1
            if self._heap and not self._timer_waiting:
                self._timer_waiting = True
                self._timer.wait(min(self._heap[0][0] - now, _IDLE_EXIT))
                self._timer_waiting = False
            else:
                self._cond.wait(_IDLE_EXIT)
            self._idle -= 1

    def _work(self) -> None:
        while True:
            with self._cond:
                entry = self._next()
                if entry is None:
                    self._threads -= 1
                    return
            try:
                due = entry.job.step()
            except Exception:
                log.exception("%s: unexpected error in its loop", entry.job.name)
                due = time.monotonic() + 1.0
            with self._cond:
                entry.running = False
                if entry.again:
                    entry.again = False
                    due = time.monotonic()
                self._push(entry, due)


#: The process's pool: every node runs on it unless given another.
POOL = WorkerPool()
