"""Write the nodes' pictures to ``observed_containers`` / ``observed_images``, off their threads.

Where this sits: the cluster is every node's observer; when a node's picture changes it tells the
:class:`PicturePublisher`, which writes that node's rows on its own thread a moment later. The
reconcile loop never reads these tables (it plans from the nodes' in-memory snapshots): they are
for people and ``reconciler get``, so a write may lag a change by ``min_gap`` (250 ms) but must
never slow down the threads that talk to Docker.

During a convergence a node's picture changes once per action (the executor observes each result)
and once per event burst; written as they came, that was one SQLite transaction per change on the
executor's and the node's threads. Here changes only mark the node, and one write per node per
``min_gap`` takes the newest snapshot, so a burst of 200 changes costs a handful of writes. Each
write is a diff against what was last written (``store.ObservedMirror``). Dropping a node's rows
goes through the same queue, so a late write can never bring back the rows of a removed node.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from reconciler import domain
from reconciler.db import store as store_mod

log = logging.getLogger(__name__)

#: Seconds between two writes of the pending pictures (the first change of a quiet period is
#: written at once).
DEFAULT_MIN_GAP = 0.25


@dataclass
class _Pending:
    drop: bool = False  #: delete the node's rows first (it was removed or replaced)
    write: bool = False  #: write its newest snapshot
    full: bool = False  #: a forced full refresh happened: touch ``nodes.last_seen_at``


class PicturePublisher:
    """Coalesces picture changes per node and writes them on one thread."""

    def __init__(
        self,
        *,
        store: store_mod.Store,
        snapshot_of: Callable[[domain.NodeName], domain.NodeSnapshot | None],
        min_gap: float = DEFAULT_MIN_GAP,
        may_write: Callable[[], bool] = lambda: True,
    ) -> None:
        self._store = store
        self._may_write = may_write
        self._snapshot_of = snapshot_of
        self._min_gap = min_gap
        self._lock = threading.Lock()
        self._pending: dict[domain.NodeName, _Pending] = {}
        self._mirror = store_mod.ObservedMirror()  # touched by the writing thread only
        self._write_lock = threading.Lock()  # the thread, and flush() from another
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="observed-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, then write what is still pending."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self.flush()

    def changed(self, node: domain.NodeName, *, full: bool) -> None:
        """``node``'s picture changed (or was refreshed in full): write it soon."""
        with self._lock:
            pending = self._pending.setdefault(node, _Pending())
            pending.write = True
            pending.full |= full
        self._wake.set()

    def dropped(self, node: domain.NodeName) -> None:
        """``node`` is no longer followed: delete its rows, and forget anything pending."""
        with self._lock:
            self._pending[node] = _Pending(drop=True)
        self._wake.set()

    def forget_written(self) -> None:
        """Compare the next writes with the tables (another controller may have written them)."""
        with self._write_lock:
            self._mirror = store_mod.ObservedMirror()

    def flush(self) -> None:
        """Write everything pending now, on the caller's thread (a standby keeps it pending)."""
        if not self._may_write():
            return
        with self._lock:
            pending, self._pending = self._pending, {}
        with self._write_lock:
            for node, what in pending.items():
                self._publish(node, what)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._stopping.is_set():
                return
            self.flush()
            self._stopping.wait(self._min_gap)  # let the next burst gather

    def _publish(self, node: domain.NodeName, what: _Pending) -> None:
        now = datetime.now(UTC)
        if what.drop:
            self._mirror.forget(node)
            self._transaction(lambda: self._store.drop_observed(node=node))
        snapshot = self._snapshot_of(node) if what.write else None
        if snapshot is None:
            return  # not followed any more
        previous = self._mirror.previous(node)
        images_changed = self._mirror.images_changed(node, snapshot.images)

        def write() -> None:
            self._store.publish_observed(
                node=node,
                containers=snapshot.containers,
                images=snapshot.images if images_changed else None,
                previous=previous,
                now=now,
                seen=what.full,
            )

        if self._transaction(write):
            self._mirror.remember(node, snapshot.containers, snapshot.images)
        else:
            self._mirror.forget(node)  # compare with the table next time

    def _transaction(self, work: Callable[[], object]) -> bool:
        """Run one store write; log (not raise) a failure."""
        try:
            work()
        except store_mod.DatabaseError:
            log.debug("cannot write observed rows", exc_info=True)  # the store said so
            return False
        except store_mod.NotLeader:
            return False  # the lease was lost a moment ago: the new leader writes them
        except Exception:
            log.exception("cannot write the observed containers to the database")
            return False
        return True
