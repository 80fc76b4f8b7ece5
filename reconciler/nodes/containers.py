"""One node's picture of its containers and images, refreshed incrementally.

Where this sits: ``nodes.node.Node`` owns one :class:`ContainerCache` and calls it from its
worker thread (full refresh, event-named containers) and from the executor's thread
(:meth:`ContainerCache.inspect` after an action); the snapshot the planner reads is built from
:meth:`ContainerCache.containers` and :meth:`ContainerCache.images`.

A full refresh is one list call. A listed container is inspected only when it is new, or when its
*change key* (``State``, name, and the facts inside ``Status``) differs from the one recorded at
its last inspect (classic Swarm's ``updateContainer``); a container inspected because an event
named it has no key yet, and adopts the listed one when the listed state and name agree with
what the inspect saw. Containers absent from the list are dropped.

Concurrent refreshes are ordered by a sequence number taken when each observation *starts*: an
entry is never overwritten or dropped by an observation that started before it was recorded, so
a slow full refresh cannot undo what an executor's inspect saw a moment later.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from reconciler import docker_api, errors, types

#: Container event actions that change nothing observed here (``exec_*`` neither).
_IGNORED_ACTIONS = frozenset(
    ["attach", "resize", "top", "archive-path", "extract-to-dir", "copy", "export", "commit"]
)


#: How many removed containers to remember, so late events about them cost no inspect.
_MAX_TOMBSTONES = 4096


@dataclass(frozen=True)
class _Entry:
    container: types.ObservedContainer
    #: ``(state, name, status facts)`` from the list, or None when an event refreshed it.
    key: tuple[str, ...] | None
    seq: int


def change_key(summary: docker_api.ContainerSummary) -> tuple[str, ...]:
    """What must differ between two list calls for a container to be inspected again."""
    return (*summary.change_key, summary.name)


class ContainerCache:
    """Thread-safe; the I/O happens outside its lock."""

    def __init__(self, *, node: types.NodeName) -> None:
        self.node = node
        self._lock = threading.Lock()
        self._entries: dict[types.ContainerId, _Entry] = {}
        self._images: dict[str, types.ObservedImage] = {}
        #: container → sequence number taken when its latest event arrived
        self._dirty: dict[types.ContainerId, int] = {}
        #: removed container → sequence number of the observation that saw it gone
        self._tombstones: dict[types.ContainerId, int] = {}
        self._forgotten = False
        self._images_dirty = False
        self._sequence = itertools.count(1)

    # -- reading -----------------------------------------------------------------------------

    def containers(self) -> tuple[types.ObservedContainer, ...]:
        with self._lock:
            found = [e.container for e in self._entries.values()]
        return tuple(sorted(found, key=lambda c: (c.name, c.id)))

    def images(self) -> tuple[types.ObservedImage, ...]:
        with self._lock:
            return tuple(sorted(self._images.values(), key=lambda i: i.id))

    # -- what events mark --------------------------------------------------------------------

    def note_event(self, event: docker_api.EngineEvent) -> bool:
        """Mark what ``event`` names as needing a refresh; False if it changes nothing here."""
        if event.type == "image":
            self.mark_images_dirty()
            return True
        if event.type != "container" or event.action.startswith("exec_"):
            return False
        if event.action in _IGNORED_ACTIONS:
            return False
        if event.action == "destroy":  # gone for good (ids are never reused): no inspect needed
            self.forget([types.ContainerId(event.id)])
            return True
        self.mark_dirty(types.ContainerId(event.id))
        return True

    def mark_dirty(self, container_id: types.ContainerId) -> None:
        """Note that an event about ``container_id`` arrived now."""
        with self._lock:
            self._dirty[container_id] = next(self._sequence)

    def forget(self, ids: Iterable[types.ContainerId]) -> None:
        """Drop containers known to be removed (a ``destroy`` event, a successful remove)."""
        doomed = set(ids)
        with self._lock:
            seq = next(self._sequence)
            if self._drop(lambda cid: cid in doomed, seq):
                self._forgotten = True
            for cid in doomed:
                self._tombstones[cid] = seq

    def take_forgotten(self) -> bool:
        """True once after :meth:`forget` changed the picture."""
        with self._lock:
            taken, self._forgotten = self._forgotten, False
        return taken

    def take_dirty(self) -> list[types.ContainerId]:
        """The containers to inspect because of events, oldest marks first.

        A container already observed by an inspect that *started after* its latest event
        arrived is left out: that inspect saw the event's effect (typically the executor's
        inspect after ``start``, which the ``create`` and ``start`` events precede).
        """
        with self._lock:
            dirty, self._dirty = self._dirty, {}
            return sorted(cid for cid, marked in dirty.items() if not self._seen_since(cid, marked))

    def mark_images_dirty(self) -> None:
        with self._lock:
            self._images_dirty = True

    def take_images_dirty(self) -> bool:
        with self._lock:
            taken, self._images_dirty = self._images_dirty, False
        return taken

    # -- refreshing ----------------------------------------------------------------------------

    def refresh(self, client: docker_api.EngineClient) -> bool:
        """One list call, inspects of new or changed containers; True if the picture changed."""
        seq = next(self._sequence)
        summaries = client.list_containers()
        with self._lock:
            todo = [s.id for s in summaries if self._stale(s)]
        found, gone = self._inspect_all(client, todo)
        listed = {s.id for s in summaries}
        with self._lock:
            changed = self._drop(lambda cid: cid not in listed or cid in gone, seq)
            for s in summaries:
                entry = self._entries.get(s.id)
                if s.id in found:
                    changed |= self._put(found[s.id], change_key(s), seq)
                elif entry is not None and entry.key is None and not self._stale(s):
                    self._entries[s.id] = replace(entry, key=change_key(s))
        return changed

    def inspect(self, client: docker_api.EngineClient, ids: Iterable[types.ContainerId]) -> bool:
        """Inspect just ``ids`` (gone ones are dropped); True if the picture changed.

        On failure the ids are marked dirty again, so they are retried.
        """
        wanted = list(ids)
        if not wanted:
            return False
        seq = next(self._sequence)
        try:
            found, gone = self._inspect_all(client, wanted)
        except errors.EngineError:
            with self._lock:
                for cid in wanted:
                    self._dirty.setdefault(cid, seq - 1)  # retry: no observation covers it yet
            raise
        with self._lock:
            changed = self._drop(lambda cid: cid in gone, seq)
            for container in found.values():
                changed |= self._put(container, None, seq)
        return changed

    def refresh_images(self, client: docker_api.EngineClient) -> bool:
        """One list call; True if any image appeared, went or changed tags."""
        images = {i.id: i for i in client.list_images()}
        with self._lock:
            changed = images != self._images
            self._images = images
        return changed

    # -- helpers (called with the lock held, except _inspect_all) -------------------------------

    def _seen_since(self, container_id: types.ContainerId, marked: int) -> bool:
        entry = self._entries.get(container_id)
        if entry is not None:
            return entry.seq > marked
        return self._tombstones.get(container_id, -1) > marked

    def _stale(self, summary: docker_api.ContainerSummary) -> bool:
        entry = self._entries.get(summary.id)
        if entry is None:
            return True
        if entry.key is None:  # refreshed by an event: trust it if the list agrees
            return (entry.container.state, entry.container.name) != (summary.state, summary.name)
        return entry.key != change_key(summary)

    @staticmethod
    def _inspect_all(
        client: docker_api.EngineClient, ids: list[types.ContainerId]
    ) -> tuple[dict[types.ContainerId, types.ObservedContainer], set[types.ContainerId]]:
        found: dict[types.ContainerId, types.ObservedContainer] = {}
        gone: set[types.ContainerId] = set()
        for container_id in ids:
            try:
                found[container_id] = client.inspect_container(container_id)
            except errors.NotFound:
                gone.add(container_id)  # removed between the list (or event) and the inspect
        return found, gone

    def _put(
        self, container: types.ObservedContainer, key: tuple[str, ...] | None, seq: int
    ) -> bool:
        entry = self._entries.get(container.id)
        if entry is not None and entry.seq > seq:
            return False  # a later observation already recorded it
        self._entries[container.id] = _Entry(container, key, seq)
        return entry is None or entry.container != container

    def _drop(self, gone: Callable[[types.ContainerId], bool], seq: int) -> bool:
        doomed = [cid for cid, e in self._entries.items() if gone(cid) and e.seq < seq]
        for cid in doomed:
            del self._entries[cid]
            self._tombstones[cid] = seq
        if len(self._tombstones) > _MAX_TOMBSTONES:  # only recent removals matter
            for cid in list(self._tombstones)[: len(self._tombstones) // 2]:
                del self._tombstones[cid]
        return bool(doomed)
