"""The controller's hook for services: slot rows in before planning, service_status out.

Where this sits in a pass: ``controller`` loads the desired rows, then :meth:`ServiceHook.merge`
reads the ``services`` and ``service_status`` rows, asks ``planning.services.expand`` (pure)
for the slot rows and each service's next state, and returns the plain rows plus the slot rows
for the planner. :meth:`ServiceHook.save` writes the states that changed *before* the pass acts
(an update that started, paused or turned into a rollback is durable before any container is
touched, so a controller killed mid-update continues it). :meth:`ServiceHook.annotate` adds the
lifecycle columns (``service``, ``health``, ``restarts``) to the pass's status rows.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence

from reconciler.db import store as store_mod
from reconciler.domain import (
    DesiredContainer,
    NodeName,
    NodeSnapshot,
    ServiceState,
    StatusRow,
)
from reconciler.planning import services as planning_services

log = logging.getLogger(__name__)


class ServiceHook:
    """Holds what one pass's service work hands to the next (the merged rows, the states)."""

    def __init__(self, store: store_mod.Store) -> None:
        self._store = store
        self._pending: tuple[list[ServiceState], list[str]] = ([], [])
        self._merged: list[DesiredContainer] | None = None
        self._plain: Sequence[DesiredContainer] | None = None
        self._service_of: dict[str, str] = {}
        self._health: dict[str, str | None] = {}
        self._due: float | None = None

    def merge(
        self,
        plain: Sequence[DesiredContainer],
        snapshots: Mapping[NodeName, NodeSnapshot],
        previous: Mapping[str, StatusRow],
        *,
        now: float,
    ) -> Sequence[DesiredContainer]:
        """``plain`` plus every service's slot rows; ``plain`` itself when there are no
        services. The same list object as last pass when nothing changed, so the controller's
        plan cache still works."""
        self._health = {
            c.id: c.health for s in snapshots.values() for c in s.containers if c.health
        }
        services, states = self._store.load_services()
        if not services and not states:
            self._service_of = {}
            return plain
        expansion = planning_services.expand(services, states, snapshots, previous, now=now)
        self._due = expansion.due
        rows, conflicts = planning_services.merge(plain, expansion)
        next_states = dict(expansion.states)
        for name, message in conflicts.items():
            next_states[name] = dataclasses.replace(next_states[name], message=message)
        self._pending = (
            [s for name, s in next_states.items() if states.get(name) != s],
            [name for name in states if name not in next_states],
        )
        self._service_of = {
            row.name: row.spec.service
            for row in expansion.rows
            if row.spec is not None and row.spec.service is not None
        }
        if self._merged is not None and self._plain is plain and self._merged == rows:
            return self._merged
        self._merged, self._plain = rows, plain
        return rows

    def next_due(self) -> float | None:
        """When a rolling update may take its next step (epoch seconds), if it waits on time:
        the daemon runs a pass then rather than at the next interval tick."""
        return self._due

    def save(self, *, now: float) -> None:
        """Write the service states :meth:`merge` changed (before the pass acts)."""
        upserts, deletes = self._pending
        if not upserts and not deletes:
            return
        self._store.write_service_status(upserts=upserts, deletes=deletes, now=now)
        self._pending = ([], [])
        for state in upserts:
            if state.update_state.value != "completed" or state.message:
                log.info("service %s: %s %s", state.name, state.update_state, state.message)

    def annotate(self, rows: Mapping[str, StatusRow]) -> dict[str, StatusRow]:
        """The status rows with ``service``, ``health`` and ``restarts`` filled in."""
        result = {}
        for name, row in rows.items():
            service = self._service_of.get(name)
            health = self._health.get(row.container_id) if row.container_id else None
            restarts = row.failures if row.container_id is not None else 0
            if (row.service, row.health, row.restarts) != (service, health, restarts):
                row = dataclasses.replace(row, service=service, health=health, restarts=restarts)
            result[name] = row
        return result
