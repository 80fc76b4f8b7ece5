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
a slow full refresh cannot undo what an executor's inspect saw a moment later. A removed
container stays removed: container ids are never reused, so an observation that returns after
the container was seen gone (a list or inspect that started before the removal) cannot bring it
back.

Events cost an inspect only when they are news. An event is *covered* when the container was
inspected after the event arrived, and *agrees* when the cached container already is what the
event says it became (``start`` → running, ``die`` → exited with that code, ``rename`` → that
name, ``create`` and ``kill`` → exists); ``destroy`` needs no call at all. While the executor acts
on a container (:meth:`ContainerCache.claimed`: by id, or by name for a create whose id is not
known yet), the events it causes are held rather than inspected: the executor's own inspect (or
its remove) comes right after and covers them. So one create+start costs one inspect, one removal
none, and a container changed behind reconciler's back is still inspected at once.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

from reconciler import docker_api, domain, errors

#: Container event actions that change nothing observed here (``exec_*`` neither).
_IGNORED_ACTIONS = frozenset(
    ["attach", "resize", "top", "archive-path", "extract-to-dir", "copy", "export", "commit"]
)


#: How many removed containers to remember, so late events about them cost no inspect.
_MAX_TOMBSTONES = 4096

#: Events kept per container between two looks; more than this and it is simply inspected.
_MAX_MARKS = 16

#: Container event action → the states the container is in right after it.
_STATE_AFTER = {
    "start": ("running",),
    "restart": ("running",),
    "unpause": ("running",),
    "pause": ("paused",),
    "die": ("exited", "dead"),
    "stop": ("exited", "dead"),
}


@dataclass(frozen=True)
class _Mark:
    """One event about a container, as much of it as is needed to tell whether it is news."""

    seq: int
    action: str
    #: The container's name according to the event (``Actor.Attributes.name``).
    name: str | None = None
    #: ``die`` only: the exit code the event reports.
    exit_code: str | None = None


def _agrees(container: domain.ObservedContainer, mark: _Mark) -> bool:
    """Is ``container`` already what the event says it became? (Then the event is no news.)"""
    match mark.action:
        case "create" | "kill":  # it exists / a signal; a kill that stops it is followed by die
            return True
        case "rename":
            return mark.name is not None and container.name == mark.name
        case "die":
            return container.state in _STATE_AFTER["die"] and (
                mark.exit_code is None or str(container.exit_code) == mark.exit_code
            )
        case action if action in _STATE_AFTER:
            return container.state in _STATE_AFTER[action]
        case _:  # health_status, update, oom, ...: only an inspect can tell
            return False


@dataclass(frozen=True)
class _Entry:
    container: domain.ObservedContainer
    #: ``(state, name, status facts)`` from the list, or None when an event refreshed it.
    key: tuple[str, ...] | None
    seq: int


def change_key(summary: docker_api.ContainerSummary) -> tuple[str, ...]:
    """What must differ between two list calls for a container to be inspected again."""
    return (*summary.change_key, summary.name)


class ContainerCache:
    """Thread-safe; the I/O happens outside its lock."""

    def __init__(self, *, node: domain.NodeName, installation: str | None = None) -> None:
        self.node = node
        #: This reconciler database's id: containers of another one are recorded as foreign.
        self.installation = installation
        self._lock = threading.Lock()
        self._entries: dict[domain.ContainerId, _Entry] = {}
        self._images: dict[str, domain.ObservedImage] = {}
        #: container → the events about it not looked at yet
        self._dirty: dict[domain.ContainerId, list[_Mark]] = {}
        #: ids and names the executor is acting on (counted: actions may overlap)
        self._claimed_ids: collections.Counter[str] = collections.Counter()
        self._claimed_names: collections.Counter[str] = collections.Counter()
        #: removed container → sequence number of the observation that saw it gone
        self._tombstones: dict[domain.ContainerId, int] = {}
        self._forgotten = False
        self._images_dirty = False
        self._sequence = itertools.count(1)

    # -- reading -----------------------------------------------------------------------------

    def containers(self) -> tuple[domain.ObservedContainer, ...]:
        with self._lock:
            found = [e.container for e in self._entries.values()]
        return tuple(sorted(found, key=lambda c: (c.name, c.id)))

    def images(self) -> tuple[domain.ObservedImage, ...]:
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
            self.forget([domain.ContainerId(event.id)])
            return True
        self.mark_dirty(
            domain.ContainerId(event.id),
            action=event.action,
            name=event.attributes.get("name"),
            exit_code=event.attributes.get("exitCode"),
        )
        return True

    def mark_dirty(
        self,
        container_id: domain.ContainerId,
        *,
        action: str = "",
        name: str | None = None,
        exit_code: str | None = None,
    ) -> None:
        """Note that an event about ``container_id`` arrived now (no ``action``: always news)."""
        with self._lock:
            marks = self._dirty.setdefault(container_id, [])
            if len(marks) < _MAX_MARKS:
                marks.append(_Mark(next(self._sequence), action, name, exit_code))
            else:
                marks[-1] = _Mark(next(self._sequence), "")  # too many to reason about: inspect

    @contextlib.contextmanager
    def claimed(self, *, ids: Iterable[str] = (), names: Iterable[str] = ()) -> Iterator[None]:
        """While the caller acts on these containers, hold the events about them.

        The caller must observe the result itself (inspect, or forget a removed container)
        before leaving the block; events it did not cover are looked at afterwards.
        """
        ids, names = collections.Counter(ids), collections.Counter(names)
        with self._lock:
            self._claimed_ids += ids
            self._claimed_names += names
        try:
            yield
        finally:
            with self._lock:
                self._claimed_ids -= ids  # a Counter drops what reaches zero
                self._claimed_names -= names

    def has_dirty(self) -> bool:
        with self._lock:
            return bool(self._dirty)

    def forget(self, ids: Iterable[domain.ContainerId]) -> None:
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

    def take_dirty(self) -> list[domain.ContainerId]:
        """The containers whose events are news, to inspect now.

        Left out: removed containers; containers inspected after their latest event arrived
        (typically by the executor after ``start``: the ``create`` and ``start`` events precede
        its inspect); containers the cache already shows as the events say. Containers being
        acted on stay marked until the action is over.
        """
        todo: list[domain.ContainerId] = []
        with self._lock:
            dirty, self._dirty = self._dirty, {}
            for cid, marks in dirty.items():
                if cid in self._tombstones:
                    continue  # removed: ids are never reused
                if self._is_claimed(cid, marks):
                    self._dirty[cid] = marks
                    continue
                entry = self._entries.get(cid)
                if entry is None:
                    todo.append(cid)
                    continue
                news = [m for m in marks if m.seq > entry.seq]
                if not all(_agrees(entry.container, m) for m in news):
                    todo.append(cid)
        return sorted(todo)

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
            # a container the executor is acting on is inspected by the executor itself
            todo = [s.id for s in summaries if self._stale(s) and not self._acting_on(s)]
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

    def inspect(self, client: docker_api.EngineClient, ids: Iterable[domain.ContainerId]) -> bool:
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
                for cid in wanted:  # retry: no observation covers these yet
                    self._dirty.setdefault(cid, []).append(_Mark(seq, ""))
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

    def _is_claimed(self, container_id: domain.ContainerId, marks: list[_Mark]) -> bool:
        if container_id in self._claimed_ids:
            return True
        return any(m.name in self._claimed_names for m in marks if m.name is not None)

    def _acting_on(self, summary: docker_api.ContainerSummary) -> bool:
        return summary.id in self._claimed_ids or summary.name in self._claimed_names

    def _stale(self, summary: docker_api.ContainerSummary) -> bool:
        entry = self._entries.get(summary.id)
        if entry is None:
            return True
        if entry.key is None:  # refreshed by an event: trust it if the list agrees
            return (entry.container.state, entry.container.name) != (summary.state, summary.name)
        return entry.key != change_key(summary)

    @staticmethod
    def _inspect_all(
        client: docker_api.EngineClient, ids: list[domain.ContainerId]
    ) -> tuple[dict[domain.ContainerId, domain.ObservedContainer], set[domain.ContainerId]]:
        found: dict[domain.ContainerId, domain.ObservedContainer] = {}
        gone: set[domain.ContainerId] = set()
        for container_id in ids:
            try:
                found[container_id] = client.inspect_container(container_id)
            except errors.NotFound:
                gone.add(container_id)  # removed between the list (or event) and the inspect
        return found, gone

    def _put(
        self, container: domain.ObservedContainer, key: tuple[str, ...] | None, seq: int
    ) -> bool:
        if container.id in self._tombstones:
            return False  # seen removed meanwhile: an older observation cannot bring it back
        container = container.seen_by(self.installation)
        entry = self._entries.get(container.id)
        if entry is not None and entry.seq > seq:
            return False  # a later observation already recorded it
        self._entries[container.id] = _Entry(container, key, seq)
        return entry is None or entry.container != container

    def _drop(self, gone: Callable[[domain.ContainerId], bool], seq: int) -> bool:
        doomed = [cid for cid, e in self._entries.items() if gone(cid) and e.seq < seq]
        for cid in doomed:
            del self._entries[cid]
            self._tombstones[cid] = seq
        if len(self._tombstones) > _MAX_TOMBSTONES:  # only recent removals matter
            for cid in list(self._tombstones)[: len(self._tombstones) // 2]:
                del self._tombstones[cid]
        return bool(doomed)
