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

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from reconciler import domain
from reconciler.db import changes, desired, events, migrate, node_state, nodes, observed, status
from reconciler.db import engine as db_engine
from reconciler.db import watch as watch_mod

#: Raised by every method when the database cannot be reached or refuses a statement
#: (locked, a constraint broken by a concurrent writer). Callers outside ``db`` catch this name.
DatabaseError = sa.exc.DBAPIError

Event = events.Event
StatusRow = status.StatusRow
StatusCache = status.StatusCache
SchemaMismatch = migrate.SchemaMismatch
NodeExists = nodes.NodeExists
NodeListing = nodes.NodeListing
DesiredWithStatus = desired.DesiredWithStatus
UpsertResult = desired.UpsertResult
Watcher = watch_mod.Watcher
#: What the publisher last wrote per node, so the next write is a diff (in memory only).
ObservedMirror = observed.Mirror


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

    def require_head(self) -> None:
        """Raise ``SchemaMismatch`` unless the schema is at the newest revision."""
        migrate.require_head(self.sql)

    # -- a reconcile pass -----------------------------------------------------------------------

    def load_desired(self, *, known_generation: int | None) -> DesiredLoad:
        """The desired rows, read only when the change generation moved past ``known``."""
        with self.sql.connect() as conn:
            generation = changes.generation(conn)
            if generation == known_generation:
                return DesiredLoad(generation, None)
            # Read the rows after the counter: a change in between is seen next pass.
            return DesiredLoad(generation, desired.load(conn))

    def load_status(self) -> StatusCache:
        with self.sql.connect() as conn:
            return StatusCache.load(conn)

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

    def record_events(self, items: Iterable[Event]) -> None:
        with self.sql.begin() as conn:
            _record_events(conn, items)

    def trim_events(self, *, keep: int) -> int:
        with self.sql.begin() as conn:
            return events.trim(conn, keep=keep)

    def watcher(self, *, on_change: Callable[[], None], interval: float) -> Watcher:
        """A thread that calls ``on_change`` soon after someone changes the desired rows."""
        return watch_mod.make_watcher(self.sql, on_change=on_change, interval=interval)

    # -- nodes: the cluster's side --------------------------------------------------------------

    def list_nodes(self) -> list[domain.NodeRow]:
        with self.sql.connect() as conn:
            return nodes.list_nodes(conn)

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

    def write_engine_info(self, *, node: domain.NodeName, info: domain.EngineInfo) -> None:
        with self.sql.begin() as conn:
            node_state.write_engine_info(conn, node=node, info=info)

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

    def drop_observed(self, *, node: domain.NodeName) -> None:
        with self.sql.begin() as conn:
            observed.drop_node(conn, node=node)

    # -- the command line -----------------------------------------------------------------------

    def add_node(self, row: domain.NodeRow) -> None:
        """Register a node; ``NodeExists`` if the name is taken."""
        with self.sql.begin() as conn:
            nodes.add_node(conn, row)

    def remove_node(self, name: str) -> bool:
        with self.sql.begin() as conn:
            return nodes.remove_node(conn, name)

    def set_schedulable(self, name: str, *, schedulable: bool) -> bool:
        with self.sql.begin() as conn:
            return nodes.set_schedulable(conn, name, schedulable=schedulable)

    def list_node_status(self) -> list[NodeListing]:
        with self.sql.connect() as conn:
            return nodes.list_node_status(conn)

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

    def list_desired_with_status(self, name: str | None = None) -> list[DesiredWithStatus]:
        with self.sql.connect() as conn:
            return desired.list_with_status(conn, name)

    def delete_desired(self, names: Collection[str]) -> list[str]:
        """Delete the rows called ``names``; if any is missing, delete nothing and return the
        missing names."""
        with self.sql.begin() as conn:
            missing = sorted(set(names) - set(desired.names(conn)))
            if not missing:
                desired.delete(conn, names)
        return missing


def _record_events(conn: sa.Connection, items: Iterable[Event]) -> None:
    events.record_many(conn, items)


def display_url(url: str) -> str:
    """``url`` with its password masked, as people wrote it (normalised driver)."""
    return sa.make_url(db_engine.normalise_url(url)).render_as_string(hide_password=True)


__all__ = [
    "DatabaseError",
    "DesiredLoad",
    "DesiredWithStatus",
    "Event",
    "NodeExists",
    "NodeListing",
    "ObservedMirror",
    "SchemaMismatch",
    "StatusCache",
    "StatusRow",
    "Store",
    "UpsertResult",
    "display_url",
]
