"""The cluster: one ``nodes.node_mod.Node`` per row of ``nodes``, and their picture in SQL.

Where this sits: the daemon starts one :class:`Cluster`; the controller reads
:meth:`Cluster.snapshots` (for the planner) and :meth:`Cluster.handles` (for the executor). The
cluster follows the table, so rows inserted, changed or deleted with plain SQL take effect within
``poll_interval`` (1 s) plus a connect, without a restart:

* a new row gets a ``Node`` (its health written ``pending``), connected once on its own threads;
* a changed URL, TLS setting or ``allow_insecure_tcp`` replaces the node (old one stopped, its
  observed rows dropped); changed labels or ``schedulable`` are taken in place;
* a deleted row's node is stopped (monitor and connection closed) and its observed rows dropped.

It is also every node's :class:`node.NodeObserver`: health changes go to ``db.node_state`` (and a
transition to ``events``), pictures to ``db.observed`` as diffs written by a
``publish.PicturePublisher`` on its own thread, and anything that may change the plan calls
``on_change`` (the daemon's ``wake``) at once. Two nodes reporting one engine ID are reported
(log line and a Warning event), never a crash. A failed SQL write is logged and retried by the
next change (the diff is computed against what the table holds).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from reconciler import domain
from reconciler import settings as settings_mod
from reconciler.db import store as store_mod
from reconciler.nodes import health, publish
from reconciler.nodes import node as node_mod
from reconciler.nodes.settings import NodeSettings

log = logging.getLogger(__name__)

#: Seconds between two reads of the ``nodes`` table.
DEFAULT_POLL_INTERVAL = 1.0


def _connection_fields(row: domain.NodeRow) -> tuple[object, ...]:
    """What a ``Node`` cannot change in place: a change means a new connection."""
    return (
        row.url,
        row.tls_ca_cert,
        row.tls_client_cert,
        row.tls_client_key,
        row.allow_insecure_tcp,
    )


class Cluster:
    """Follows the ``nodes`` table from :meth:`start` to :meth:`stop`."""

    def __init__(
        self,
        *,
        store: store_mod.Store,
        settings: settings_mod.Settings | NodeSettings | None = None,
        on_change: Callable[[], None] | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        rng: random.Random | None = None,
        writing: bool = True,
    ) -> None:
        self._store = store
        self._writing = writing
        #: Seconds after a node turns unhealthy when its rows may be rescheduled: a pass is
        #: woken then (the planner decides; nothing else may change meanwhile).
        self.node_grace = (
            settings.node_grace
            if isinstance(settings, settings_mod.Settings)
            else settings_mod.DEFAULTS.node_grace
        )
        if isinstance(settings, settings_mod.Settings):
            settings = NodeSettings.from_config(settings)
        self.settings = settings or NodeSettings()
        self._on_change = on_change or (lambda: None)
        self.poll_interval = poll_interval
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._nodes: dict[domain.NodeName, node_mod.Node] = {}
        self._engine_ids: dict[domain.NodeName, str] = {}
        self._publisher = publish.PicturePublisher(
            store=store, snapshot_of=self._snapshot_of, may_write=lambda: self._writing
        )
        self._duplicates_reported: set[frozenset[domain.NodeName]] = set()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._installation: str | None = None  # read from the store at start
        self._duplicates_cache: (
            tuple[tuple[tuple[str, int], ...], dict[domain.NodeName, domain.NodeSnapshot]] | None
        ) = None
        #: node set aside → the earlier node it duplicates (as last reported)
        self._set_aside: dict[domain.NodeName, domain.NodeName] = {}

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Read the table once (starting a node per row), then follow it on a thread."""
        self._installation = self._store.installation_id()
        self._publisher.start()
        self.sync()
        self._thread = threading.Thread(target=self._follow, name="cluster-nodes", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop following the table and stop every node (monitors and connections closed)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            followed = list(self._nodes.values())
        self._stop_nodes(followed)
        self._publisher.stop()  # writes the last pictures of the stopped nodes
        with self._lock:
            self._nodes = {}

    def set_writing(self, writing: bool) -> None:
        """Write the nodes' health, facts and pictures to SQL (the leader) or not (a standby,
        ``reconciler plan``). Turned on, it writes every node's current state at once, on a
        short-lived thread: another controller wrote the tables meanwhile."""
        was, self._writing = self._writing, writing
        if writing and not was:
            threading.Thread(target=self._republish, name="cluster-republish", daemon=True).start()

    def _republish(self) -> None:
        with self._lock:
            followed = list(self._nodes.values())
        self._publisher.forget_written()  # compare with the tables, not with our last write
        for n in followed:
            state = n.health_state
            self._write(
                functools.partial(
                    self._store.write_health,
                    node=n.name,
                    health=state.health,
                    failures=state.failures,
                    last_error=state.last_error,
                )
            )
            info = n.info
            if info is not None:
                self._write(
                    functools.partial(self._store.write_engine_info, node=n.name, info=info)
                )
            self._publisher.changed(n.name, full=False)

    def wait_ready(self, *, timeout: float) -> bool:
        """Wait until every node is healthy and refreshed, or unhealthy; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # Refreshed alone is not enough: recovery marks the picture refreshed a moment
            # before the node turns healthy, and the planner acts on healthy nodes only.
            if all(_ready(s) for s in self.snapshots().values()):
                return True
            time.sleep(0.05)
        return False

    # -- reading --------------------------------------------------------------------------------

    def snapshots(self) -> dict[domain.NodeName, domain.NodeSnapshot]:
        """Every followed node's picture; a node that reaches the same engine as an earlier
        row comes back with ``duplicate_of`` set (see :meth:`_set_aside_duplicates`)."""
        with self._lock:
            followed = list(self._nodes.values())
        snaps = {n.name: n.snapshot() for n in followed}
        return self._set_aside_duplicates(snaps, {n.name: n.row.row_id for n in followed})

    def _set_aside_duplicates(
        self,
        snaps: dict[domain.NodeName, domain.NodeSnapshot],
        row_ids: dict[domain.NodeName, int],
    ) -> dict[domain.NodeName, domain.NodeSnapshot]:
        """Two node rows that show the same container ids reach one engine (a unix socket and
        a TCP alias, say): container ids are unique per engine, whereas engine IDs are shared by
        cloned machines. The later row (higher ``nodes.id``) is set aside: the planner places
        nothing there and ignores its containers, so nothing is removed or recreated because it
        shows up twice. Cached by the snapshots' identity, so a quiet fleet pays nothing."""
        key = tuple((name, id(snap)) for name, snap in snaps.items())
        if self._duplicates_cache is not None and self._duplicates_cache[0] == key:
            return dict(self._duplicates_cache[1])
        owner: dict[domain.ContainerId, domain.NodeName] = {}
        twins: dict[domain.NodeName, domain.NodeName] = {}
        for name in sorted(snaps, key=lambda n: (row_ids.get(n, 0), n)):
            for c in snaps[name].containers:
                first = owner.setdefault(c.id, name)
                if first != name:
                    twins[name] = first
                    break
        result = {
            name: dataclasses.replace(snap, duplicate_of=twins[name]) if name in twins else snap
            for name, snap in snaps.items()
        }
        self._duplicates_cache = (key, result)
        self._report_duplicates(twins)
        return dict(result)

    def _duplicate_note(self, node: domain.NodeName) -> str | None:
        first = self._set_aside.get(node)
        return None if first is None else _duplicate_message(node, first)

    def _report_duplicates(self, twins: dict[domain.NodeName, domain.NodeName]) -> None:
        for name, first in twins.items():
            if self._set_aside.get(name) == first:
                continue
            message = _duplicate_message(name, first)
            log.warning("node %s: %s", name, message)
            event = store_mod.Event(f"node/{name}", "DuplicateNode", message, "Warning")
            self._write(functools.partial(self._store.set_node_error, node=name, message=message))
            self._write(functools.partial(self._store.record_events, [event]))
        for name in set(self._set_aside) - set(twins):
            log.info("node %s is no longer a duplicate of node %s", name, self._set_aside[name])
            self._write(functools.partial(self._store.set_node_error, node=name, message=None))
        self._set_aside = dict(twins)

    def handles(self) -> dict[domain.NodeName, node_mod.Node]:
        """Every followed node; the executor uses ``.client`` and ``.refresh_containers``."""
        with self._lock:
            return dict(self._nodes)

    def node(self, name: str) -> node_mod.Node:
        """The node called ``name``; KeyError if no row has that name (any more)."""
        with self._lock:
            return self._nodes[domain.NodeName(name)]

    # -- following the table ------------------------------------------------------------------

    def _follow(self) -> None:
        while not self._stopping.wait(self.poll_interval):
            try:
                self.sync()
            except store_mod.DatabaseError:
                log.debug("cannot read the nodes table", exc_info=True)  # the store said so
            except Exception:
                log.exception("cannot follow the nodes table; trying again")

    def sync(self) -> None:
        """Bring the followed nodes in line with the table now (the thread does this every
        ``poll_interval``)."""
        with self._sync_lock:  # start() and the thread never overlap
            self._sync()

    def _sync(self) -> None:
        rows = {r.name: r for r in self._store.list_nodes()}
        with self._lock:
            if self._stopping.is_set():
                return
            current = dict(self._nodes)
            gone = [
                n
                for name, n in current.items()
                if name not in rows or _connection_fields(rows[name]) != _connection_fields(n.row)
            ]
            for n in gone:
                del self._nodes[n.name]
            added = [self._new_node(r) for r in rows.values() if r.name not in self._nodes]
            for n in added:
                self._nodes[n.name] = n
        self._stop_nodes(gone, forget=True)
        for name, row in rows.items():
            existing = current.get(name)
            if existing is not None and existing not in gone and existing.row != row:
                existing.update_row(row)  # reports its picture, which wakes the loop
        for n in added:
            self._write(
                functools.partial(
                    self._store.write_health,
                    node=n.name,
                    health=domain.Health.PENDING,
                    failures=0,
                    last_error=None,
                )
            )
            log.info("following node %s at %s", n.name, n.row.url)
            n.start()

    def _new_node(self, row: domain.NodeRow) -> node_mod.Node:
        rng = random.Random(self._rng.random())
        return node_mod.Node(
            row=row,
            settings=self.settings,
            observer=self,
            rng=rng,
            installation=self._installation,
        )

    def _stop_nodes(self, doomed: list[node_mod.Node], *, forget: bool = False) -> None:
        """Stop nodes without waiting for a hung call to return (their threads end later and
        report nothing); with ``forget``, drop their observed rows."""
        for n in doomed:
            n.stop(timeout=0)
            with self._lock:
                self._engine_ids.pop(n.name, None)
            if forget:
                log.info("no longer following node %s", n.name)
                self._publisher.dropped(n.name)
        if doomed and forget:
            self._on_change()

    # -- NodeObserver ---------------------------------------------------------------------------

    def health_changed(
        self,
        node: domain.NodeName,
        state: health.HealthState,
        transition: health.Transition | None,
    ) -> None:
        event = None
        if transition is not None:
            kind = "Warning" if transition.warning else "Normal"
            event = store_mod.Event(f"node/{node}", transition.reason, transition.message, kind)
        seen = _now() if state.health is domain.Health.HEALTHY and transition else None
        self._write(
            functools.partial(
                self._store.write_health,
                node=node,
                health=state.health,
                failures=state.failures,
                # A node set aside as a duplicate keeps saying so while it is healthy.
                last_error=state.last_error or self._duplicate_note(node),
                seen_at=seen,
                event=event,
            )
        )
        if transition is not None:
            self._on_change()
            if state.health is domain.Health.UNHEALTHY:
                self._wake_after_grace()

    def _wake_after_grace(self) -> None:
        timer = threading.Timer(self.node_grace + 0.5, self._on_change)
        timer.daemon = True
        timer.start()

    def specs_read(self, node: domain.NodeName, info: domain.EngineInfo) -> None:
        self._write(functools.partial(self._store.write_engine_info, node=node, info=info))
        self._check_duplicate(node, info.engine_id)

    def picture_changed(self, node: domain.NodeName, *, full: bool, changed: bool) -> None:
        self._publisher.changed(node, full=full)
        if changed:
            self._on_change()

    def _snapshot_of(self, name: domain.NodeName) -> domain.NodeSnapshot | None:
        with self._lock:
            followed = self._nodes.get(name)
        return followed.snapshot() if followed is not None else None

    def _check_duplicate(self, name: domain.NodeName, engine_id: str) -> None:
        with self._lock:
            self._engine_ids[name] = engine_id
            twins = sorted(n for n, i in self._engine_ids.items() if i == engine_id and n != name)
        for twin in twins:
            pair = frozenset((name, twin))
            if pair in self._duplicates_reported:
                continue
            self._duplicates_reported.add(pair)
            message = (
                f"nodes {twin} and {name} report the same engine ID {engine_id}: "
                "they may be one engine registered twice"
            )
            log.warning("%s", message)
            event = store_mod.Event(f"node/{name}", "DuplicateEngineID", message, "Warning")
            self._write(functools.partial(self._store.record_events, [event]))

    def _write(self, work: Callable[[], object]) -> object:
        """Run one store write; log (not raise) a failure. A standby writes nothing."""
        if not self._writing:
            return None
        try:
            return work()
        except store_mod.DatabaseError:
            log.debug("cannot write node state", exc_info=True)  # the store said so
            return None
        except store_mod.NotLeader:
            return None  # the lease was lost a moment ago: the new leader writes it
        except Exception:
            log.exception("cannot write node state to the database")
            return None


def _ready(snapshot: domain.NodeSnapshot) -> bool:
    if snapshot.health is domain.Health.UNHEALTHY:
        return True
    return snapshot.refreshed and snapshot.health is domain.Health.HEALTHY


def _now() -> datetime:
    return datetime.now(UTC)


def _duplicate_message(node: domain.NodeName, first: domain.NodeName) -> str:
    return (
        f"same engine as node {first} (the same containers show up on both); "
        f"node {node} is ignored until one of the two rows is removed or changed"
    )
