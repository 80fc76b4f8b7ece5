"""The store: every read and write the rest of reconciler makes, as named operations.

Where this sits: the runtime (controller, daemon), the nodes (cluster, publisher) and the CLI
hold a :class:`Store`, never a SQLAlchemy engine; each method is one transaction (or one read)
and says what it does in the words of a pass: ``load_desired``, ``record_pass``,
``write_health``, ``publish_observed``. Everything SQL stays in this package (the import-linter
contracts in ``.importlinter`` keep it so).

Three things are called "engine" in this project; here they are told apart:

* the **database engine** is SQLAlchemy's connection pool (``Store.sql``, created by
  ``db.engine.make_engine``);
* a **Docker engine** is a dockerd a node row points at (``nodes``, ``docker_api``);
* a **sandbox engine** is a dockerd the test harness starts (``sandbox/``, not in the wheel).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa

from reconciler import domain
from reconciler.db import (
    changes,
    desired,
    events,
    inspect,
    leases,
    migrate,
    models,
    node_state,
    nodes,
    observed,
    scheduling,
    status,
)
from reconciler.db import engine as db_engine
from reconciler.db import services as services_db
from reconciler.db import watch as watch_mod

#: Raised by every method when the database cannot be reached or refuses a statement
#: (locked, a constraint broken by a concurrent writer). Callers outside ``db`` catch this name.
DatabaseError = sa.exc.DBAPIError

DatabaseURLError = db_engine.DatabaseURLError
Event = events.Event
StatusRow = status.StatusRow
StatusCache = status.StatusCache
SchemaMismatch = migrate.SchemaMismatch
NodeExists = nodes.NodeExists
NodeListing = nodes.NodeListing
NodeUsage = scheduling.NodeUsage
DesiredWithStatus = desired.DesiredWithStatus
UpsertResult = desired.UpsertResult
Watcher = watch_mod.Watcher
StoredEvent = events.StoredEvent
RowDetails = inspect.RowDetails
NodeDetails = inspect.NodeDetails
Progress = inspect.Progress
NotLeader = leases.NotLeader
LeaseToken = leases.LeaseToken
LeaseState = leases.LeaseState
#: What the publisher last wrote per node, so the next write is a diff (in memory only).
ObservedMirror = observed.Mirror

log = logging.getLogger(__name__)


class Outage:
    """Says once that the database went away and once that it is back, whoever noticed.

    An outage of 20 s used to print a traceback from every thread that touched the database
    (thousands of lines). Now the first failure logs one plain line, ``database unreachable:
    <reason>; retrying``, the first success after it logs ``database is reachable again``, and
    tracebacks are logged at debug level only. Thread-safe: the store's methods, the change
    watcher and the daemon all report here.
    """

    def __init__(self, *, announce: bool = False) -> None:
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self.announce = announce
        """Log the two lines (the daemon does); a one-shot CLI command reports the error
        itself, so for it the outage is logged at debug level only."""

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def failed(self, error: BaseException) -> None:
        log.debug("database call failed", exc_info=error)
        with self._lock:
            if self._down_since is not None:
                return
            self._down_since = time.monotonic()
        log.log(self._level, "database unreachable: %s; retrying", reason(error))

    def succeeded(self) -> None:
        if self._down_since is None:  # the common case, without the lock
            return
        with self._lock:
            since, self._down_since = self._down_since, None
        if since is not None:
            log.log(
                self._level, "database is reachable again after %.1fs", time.monotonic() - since
            )

    @property
    def _level(self) -> int:
        return logging.WARNING if self.announce else logging.DEBUG


def reason(error: BaseException) -> str:
    """The first line of what the database driver said, without the statement or parameters
    (they may hold env values)."""
    cause = getattr(error, "orig", None) or error
    lines = str(cause).strip().splitlines()
    return lines[0] if lines else type(cause).__name__


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _reported(method: _Method) -> _Method:
    """Report a store method's database failures to the store's :class:`Outage`."""

    @functools.wraps(method)
    def wrapper(self: Store, *args: Any, **kwargs: Any) -> Any:
        try:
            result = method(self, *args, **kwargs)
        except DatabaseError as e:
            self.outage.failed(e)
            raise
        self.outage.succeeded()
        return result

    return wrapper  # type: ignore[return-value]


@dataclass(frozen=True)
class DesiredLoad:
    """What :meth:`Store.load_desired` found: the generation, and the rows if it moved."""

    generation: int
    rows: list[domain.DesiredContainer] | None


class Store:
    """One database (SQLite file or PostgreSQL), shared by every thread of the process."""

    def __init__(self, sql: sa.Engine) -> None:
        self.sql = sql
        """The database engine, for tests and migrations; the rest of reconciler uses methods."""
        self.outage = Outage()
        self.fence: Callable[[], LeaseToken | None] | None = None
        """Set by a daemon: the lease token its controller-owned writes (status, observed rows,
        node health and facts, events) must hold, checked inside each write's transaction
        (``NotLeader`` and a rollback otherwise). A function returning None refuses every such
        write (``reconciler plan``); None (tests, one-shot CLI commands) checks nothing."""

    @classmethod
    def open(cls, url: str | None = None) -> Store:
        """A store for ``url`` (default ``RECONCILER_DATABASE_URL`` or ``reconciler.db``)."""
        return cls(db_engine.make_engine(url))

    def close(self) -> None:
        self.sql.dispose()

    @property
    def dialect(self) -> str:
        return self.sql.dialect.name

    @property
    def display_url(self) -> str:
        """The URL with its password masked: safe for logs and messages."""
        return self.sql.url.render_as_string(hide_password=True)

    @_reported
    def require_head(self) -> None:
        """Raise ``SchemaMismatch`` unless the schema is at the newest revision."""
        migrate.require_head(self.sql)

    @_reported
    def installation_id(self) -> str:
        """This database's identity, carried by its containers as ``reconciler.installation``."""
        with self.sql.connect() as conn:
            found = conn.execute(sa.select(models.installation.c.id)).scalars().all()
        if len(found) != 1:
            raise SchemaMismatch(
                f"the installation table holds {len(found)} rows, expected 1: "
                "restore it from a backup or downgrade to 0002 and upgrade again"
            )
        return str(found[0])

    # -- a reconcile pass -----------------------------------------------------------------------

    @_reported
    def load_desired(self, *, known_generation: int | None) -> DesiredLoad:
        """The desired rows, read only when the change generation moved past ``known``."""
        with self.sql.connect() as conn:
            generation = changes.generation(conn)
            if generation == known_generation:
                return DesiredLoad(generation, None)
            # Read the rows after the counter: a change in between is seen next pass.
            return DesiredLoad(generation, desired.load(conn))

    @_reported
    def load_status(self) -> StatusCache:
        with self.sql.connect() as conn:
            return StatusCache.load(conn)

    @_reported
    def record_pass(
        self,
        *,
        upserts: Sequence[StatusRow],
        deletes: Sequence[str],
        events: Sequence[Event],
        now: float,
    ) -> None:
        """Write a pass's status rows and events in one transaction."""
        with self.sql.begin() as conn:
            status.upsert(conn, upserts, now=now)
            status.delete(conn, deletes)
            _record_events(conn, events)
            self._fenced(conn)

    @_reported
    def record_events(self, items: Iterable[Event]) -> None:
        with self.sql.begin() as conn:
            _record_events(conn, items)
            self._fenced(conn)

    @_reported
    def trim_events(self, *, keep: int, older_than: float | None = None) -> int:
        """Keep the newest ``keep`` events and none older than ``older_than`` seconds."""
        before = None
        if older_than is not None:
            before = datetime.now(UTC) - timedelta(seconds=older_than)
        with self.sql.begin() as conn:
            trimmed = events.trim(conn, keep=keep, before=before)
            # The status history (phase changes) follows the events' retention.
            trimmed += status.trim_history(conn, keep=keep, before=before)
            self._fenced(conn)
            return trimmed

    @_reported
    def ping(self) -> None:
        """Return when the database answers (``/readyz``); raise ``DatabaseError`` otherwise."""
        with self.sql.connect() as conn:
            inspect.ping(conn)

    def watcher(self, *, on_change: Callable[[], None], interval: float) -> Watcher:
        """A thread that calls ``on_change`` soon after someone changes the desired rows."""
        return watch_mod.make_watcher(
            self.sql, on_change=on_change, interval=interval, outage=self.outage
        )

    # -- nodes: the cluster's side --------------------------------------------------------------

    @_reported
    def list_nodes(self) -> list[domain.NodeRow]:
        with self.sql.connect() as conn:
            return nodes.list_nodes(conn)

    @_reported
    def write_health(
        self,
        *,
        node: domain.NodeName,
        health: domain.Health,
        failures: int,
        last_error: str | None,
        seen_at: datetime | None = None,
        event: Event | None = None,
    ) -> None:
        with self.sql.begin() as conn:
            node_state.write_health(
                conn,
                node=node,
                health=health,
                failures=failures,
                last_error=last_error,
                seen_at=seen_at,
                event=event,
            )
            self._fenced(conn)

    @_reported
    def set_node_error(self, *, node: domain.NodeName, message: str | None) -> None:
        """Set (or with None clear) a node's ``last_error`` without touching its health."""
        with self.sql.begin() as conn:
            node_state.set_last_error(conn, node=node, message=message)
            self._fenced(conn)  # controller-owned, like every other write of node state

    @_reported
    def write_engine_info(self, *, node: domain.NodeName, info: domain.EngineInfo) -> None:
        with self.sql.begin() as conn:
            node_state.write_engine_info(conn, node=node, info=info)
            self._fenced(conn)

    @_reported
    def publish_observed(
        self,
        *,
        node: domain.NodeName,
        containers: Iterable[domain.ObservedContainer],
        images: tuple[domain.ObservedImage, ...] | None,
        previous: Mapping[str, domain.ObservedContainer] | None,
        now: datetime,
        seen: bool,
    ) -> None:
        """Write one node's picture as a diff against ``previous`` (None: against the table);
        ``images`` None leaves its images alone; ``seen`` touches ``nodes.last_seen_at``."""
        with self.sql.begin() as conn:
            observed.sync_containers(
                conn,
                node=node,
                containers=containers,
                now=now,
                previous=previous,
            )
            if images is not None:
                observed.sync_images(conn, node=node, images=images, now=now)
            if seen:
                node_state.touch_seen(conn, node=node, at=now)
            self._fenced(conn)

    @_reported
    def drop_observed(self, *, node: domain.NodeName) -> None:
        with self.sql.begin() as conn:
            observed.drop_node(conn, node=node)
            self._fenced(conn)

    # -- the lease ------------------------------------------------------------------------------

    def _fenced(self, conn: sa.Connection) -> None:
        if self.fence is not None:
            leases.check_held(conn, self.fence())

    @_reported
    def acquire_lease(
        self,
        *,
        identity: str,
        duration: float,
        generation: int | None,
        name: str = leases.CONTROLLER,
        events: Sequence[Event] = (),
    ) -> LeaseState:
        """Renew the lease under ``generation`` if still ours, else take it if free or expired
        (one transaction, the database's clock); a take records a ``BecameLeader`` event, and
        ``events`` (a loss noticed earlier) are written in the same transaction."""
        with self.sql.begin() as conn:
            _record_events(conn, events)
            return leases.acquire_or_renew(
                conn, name=name, identity=identity, duration=duration, generation=generation
            )

    def end_idle_transactions_after(self, seconds: float) -> None:
        """PostgreSQL ends this process's sessions idle inside a transaction for ``seconds``, so a
        frozen leader cannot hold row locks (the lease's included) past its renew deadline."""
        leases.end_idle_transactions_after(self.sql, seconds)

    @_reported
    def release_lease(self, token: LeaseToken) -> bool:
        """Give the lease up (holder NULL) if ``token`` still holds it."""
        with self.sql.begin() as conn:
            return leases.release(conn, token)

    @_reported
    def lease_holder(self, name: str = leases.CONTROLLER) -> str | None:
        with self.sql.connect() as conn:
            return leases.holder(conn, name)

    # -- the command line -----------------------------------------------------------------------

    @_reported
    def add_node(self, row: domain.NodeRow) -> None:
        """Register a node; ``NodeExists`` if the name is taken."""
        with self.sql.begin() as conn:
            nodes.add_node(conn, row)

    @_reported
    def remove_node(self, name: str) -> bool:
        with self.sql.begin() as conn:
            return nodes.remove_node(conn, name)

    @_reported
    def set_schedulable(self, name: str, *, schedulable: bool) -> bool:
        with self.sql.begin() as conn:
            return nodes.set_schedulable(conn, name, schedulable=schedulable)

    @_reported
    def drain_node(self, name: str) -> bool:
        """Mark node ``name`` draining and unschedulable; False if there is no such node."""
        with self.sql.begin() as conn:
            return scheduling.set_drain(conn, name)

    @_reported
    def pinned_to(self, name: str) -> list[str]:
        """The desired rows pinned to node ``name``."""
        with self.sql.connect() as conn:
            return scheduling.pinned_to(conn, name)

    @_reported
    def running_on(self, name: str) -> list[str]:
        """Desired names with a managed container running on node ``name``."""
        with self.sql.connect() as conn:
            return scheduling.running_on(conn, name)

    @_reported
    def write_node_usage(self, usage: Mapping[domain.NodeName, scheduling.NodeUsage]) -> None:
        """Store the nodes' reservations and managed container counts (``node ls``)."""
        with self.sql.begin() as conn:
            scheduling.write_usage(conn, usage)

    @_reported
    def list_node_status(self) -> list[NodeListing]:
        with self.sql.connect() as conn:
            return nodes.list_node_status(conn)

    @_reported
    def apply_desired(
        self,
        items: Sequence[domain.DesiredContainer],
        *,
        prune: bool,
        check_nodes: Callable[[Collection[str]], None] = lambda _known: None,
    ) -> tuple[UpsertResult, list[str]]:
        """Upsert ``items`` (and with ``prune`` delete the rows not among them) in one
        transaction; ``check_nodes`` sees the registered node names first and may raise."""
        with self.sql.begin() as conn:
            check_nodes({n.name for n in nodes.list_nodes(conn)})
            result = desired.upsert(conn, items)
            pruned = desired.prune(conn, keep={item.name for item in items}) if prune else []
        return result, pruned

    @_reported
    def list_desired_with_status(self, name: str | None = None) -> list[DesiredWithStatus]:
        with self.sql.connect() as conn:
            return desired.list_with_status(conn, name)

    @_reported
    def describe_row(self, name: str) -> RowDetails | None:
        """Everything known about desired row ``name`` (``reconciler describe``)."""
        with self.sql.connect() as conn:
            return inspect.row(conn, name)

    @_reported
    def describe_node(self, name: str) -> NodeDetails | None:
        """Everything known about node ``name`` (``reconciler describe node``)."""
        with self.sql.connect() as conn:
            return inspect.node(conn, name)

    @_reported
    def list_events(
        self,
        *,
        objects: Collection[str] | None = None,
        since: float | None = None,
        after_id: int | None = None,
        last: int | None = None,
    ) -> list[StoredEvent]:
        """Events oldest first: about ``objects`` (all when None), from the last ``since``
        seconds, with an id above ``after_id``; with ``last``, the newest ``last`` only."""
        after = None if since is None else datetime.now(UTC) - timedelta(seconds=since)
        with self.sql.connect() as conn:
            return events.since(conn, objects=objects, after=after, after_id=after_id, last=last)

    @_reported
    def status_of(self, names: Sequence[str]) -> dict[str, Progress]:
        """The status rows of ``names``, those that have one (``apply --wait``)."""
        with self.sql.connect() as conn:
            return inspect.status_of(conn, list(names))

    @_reported
    def delete_desired(self, names: Collection[str]) -> list[str]:
        """Delete the rows called ``names``; if any is missing, delete nothing and return the
        missing names."""
        with self.sql.begin() as conn:
            missing = sorted(set(names) - set(desired.names(conn)))
            if not missing:
                desired.delete(conn, names)
        return missing

    # -- services ---------------------------------------------------------------------------------

    @_reported
    def load_services(self) -> tuple[list[domain.ServiceDef], dict[str, domain.ServiceState]]:
        """The ``services`` rows, validated, and the ``service_status`` rows, in one read."""
        with self.sql.connect() as conn:
            return services_db.load(conn), services_db.load_status(conn)

    @_reported
    def write_service_status(
        self,
        *,
        upserts: Sequence[domain.ServiceState],
        deletes: Collection[str],
        now: float,
    ) -> None:
        """Write service states (controller-owned: fenced by the lease like ``record_pass``)."""
        with self.sql.begin() as conn:
            self._fenced(conn)
            services_db.write_status(conn, upserts, deletes, now=now)

    @_reported
    def apply_services(
        self, items: Sequence[domain.ServiceDef], *, prune: bool
    ) -> tuple[list[str], list[str], list[str]]:
        """Upsert services (with ``prune``, delete the others): (created, updated, pruned)."""
        with self.sql.begin() as conn:
            created, updated = services_db.upsert(conn, items)
            pruned = services_db.prune(conn, keep={i.name for i in items}) if prune else []
        return created, updated, pruned


def _record_events(conn: sa.Connection, items: Iterable[Event]) -> None:
    events.record_many(conn, items)


def display_url(url: str) -> str:
    """``url`` with its password masked (normalised driver); raises ``DatabaseURLError``."""
    return db_engine.parse_url(url).render_as_string(hide_password=True)


__all__ = [
    "DatabaseError",
    "DatabaseURLError",
    "DesiredLoad",
    "DesiredWithStatus",
    "Event",
    "LeaseState",
    "LeaseToken",
    "NodeExists",
    "NodeListing",
    "NotLeader",
    "ObservedMirror",
    "Outage",
    "SchemaMismatch",
    "StatusCache",
    "StatusRow",
    "Store",
    "UpsertResult",
    "display_url",
]
