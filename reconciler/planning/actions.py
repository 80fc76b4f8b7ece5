"""The vocabulary of a plan: the actions a pass can take and the statuses it reports.

``planning.plan`` decides which of these a pass needs; ``executor`` carries out the actions
(dispatching with ``match`` and ``assert_never``); ``controller`` records ``Plan.statuses`` and
``Blocked`` reasons in ``container_status``. All frozen: a plan cannot change once made.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

from reconciler.domain import ContainerId, ContainerSpec, NodeName, Phase
from reconciler.planning.backoff import RowBackoff


class RemoveReason(enum.StrEnum):
    ORPHAN = "orphan"  #: its desired row is gone (or it carries no reconciler.name)
    DUPLICATE = "duplicate"  #: a surplus container for a name that already has its keeper
    REPLACED = "replaced"  #: the row is pinned to another node, where it is created instead


class RecreateReason(enum.StrEnum):
    SPEC_CHANGED = "spec-changed"  #: the reconciler.spec-hash label differs from the row's hash
    STALE_TASK = "stale-task"  #: the caller marked it ("task … already exists" on start)
    DEAD = "dead"  #: Docker reports it dead; it can be neither started nor stopped
    UNHEALTHY = "unhealthy"  #: its health check says unhealthy (replaced after a back-off)


@dataclass(frozen=True, slots=True)
class Create:
    """Create ``name`` on ``node`` with the managed labels; start it only if ``start``."""

    name: str
    node: NodeName
    spec: ContainerSpec
    spec_hash: str
    start: bool = True
    #: Why a row that had a place is placed again (``rescheduled from n3 (unhealthy for
    #: 30 s)``), for its status message and event; empty for a first placement.
    note: str = ""


@dataclass(frozen=True, slots=True)
class Start:
    name: str
    node: NodeName
    container_id: ContainerId


@dataclass(frozen=True, slots=True)
class Stop:
    name: str
    node: NodeName
    container_id: ContainerId
    #: Grace period in seconds before SIGKILL; None means the engine's default.
    timeout: int | None


@dataclass(frozen=True, slots=True)
class Remove:
    """Force-remove one managed container. ``name`` is its desired name, if it carries one."""

    node: NodeName
    container_id: ContainerId
    name: str | None
    reason: RemoveReason


@dataclass(frozen=True, slots=True)
class Recreate:
    """Remove ``container_id`` on ``node``, then create ``name`` there again from ``spec``."""

    name: str
    node: NodeName
    container_id: ContainerId
    spec: ContainerSpec
    spec_hash: str
    reason: RecreateReason
    start: bool = True


@dataclass(frozen=True, slots=True)
class Blocked:
    """Nothing can be done for ``name`` this pass; ``reason`` is for the person who wrote it.

    ``node``/``container_id`` point at the row's existing container, if it has one (it is left
    as it is). ``cause`` is a short label grouping blocked rows in ``Plan.summary``.
    """

    name: str
    phase: Phase
    reason: str
    cause: str = ""
    node: NodeName | None = None
    container_id: ContainerId | None = None


@dataclass(frozen=True, slots=True)
class Rename:
    """Give ``name``'s container the Docker name ``to``: a start-first update's new container,
    created under a temporary name, once the old container is gone."""

    name: str
    node: NodeName
    container_id: ContainerId
    to: str


Action = Create | Start | Stop | Remove | Recreate | Rename | Blocked


class RowStatus(NamedTuple):
    """The status of a row that needs no action, as ``container_status`` stores it."""

    phase: Phase
    node: NodeName | None
    container_id: ContainerId | None
    message: str = ""


_VERBS = ("create", "start", "stop", "recreate", "rename", "remove", "blocked")


def _tally(words: Iterable[str], limit: int = 3) -> str:
    """``"3 backing off, 1 n2 unhealthy"``, or just the word when there is only one."""
    counts = Counter(words).most_common()
    if len(counts) == 1:
        return counts[0][0]
    shown = [f"{n} {word}" for word, n in sorted(counts, key=lambda c: (-c[1], c[0]))[:limit]]
    return ", ".join(shown) + (", …" if len(counts) > limit else "")


@dataclass(frozen=True, slots=True)
class Plan:
    """What one pass will do: ``actions`` in a stable order, and the rows left as they are."""

    actions: tuple[Action, ...] = ()
    #: Desired name → status, for every row whose own container needs no action (read-only).
    statuses: Mapping[str, RowStatus] = field(default_factory=lambda: MappingProxyType({}))
    #: Desired name → the backoff this plan started or advanced: a crash-looping container
    #: that exited again (``Blocked`` with a ``back-off …`` reason). Read-only.
    backoffs: Mapping[str, RowBackoff] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def changes(self) -> tuple[Action, ...]:
        """The actions that touch Docker (everything but ``Blocked``)."""
        return tuple(a for a in self.actions if not isinstance(a, Blocked))

    def summary(self) -> str:
        """One line: ``create 2, recreate 1, remove 1, blocked 3 (n2 unhealthy)``."""
        counts = Counter(type(a).__name__.lower() for a in self.actions)
        parts = [f"{verb} {counts[verb]}" for verb in _VERBS if counts[verb]]
        blocked = [a.cause or a.phase.value for a in self.actions if isinstance(a, Blocked)]
        if blocked:
            parts[-1] += f" ({_tally(blocked)})"
        unknown = [s.node or "?" for s in self.statuses.values() if s.phase is Phase.UNKNOWN]
        if not parts:
            parts.append("nothing to do")
        if unknown:
            parts.append(f"unknown {len(unknown)} (on {_tally(unknown)})")
        return ", ".join(parts)
