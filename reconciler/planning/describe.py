"""A ``planning.Plan`` in words, one line per action, for ``reconciler plan`` and the logs.

Where this sits in a pass: after ``planning.plan`` and before (or instead of) the executor. Pure:
plans in, strings out.
"""

from __future__ import annotations

from typing import assert_never

from reconciler import planning

_REMOVE_REASONS = {
    planning.RemoveReason.ORPHAN: "desired row deleted",
    planning.RemoveReason.DUPLICATE: "duplicate",
    planning.RemoveReason.REPLACED: "row pinned to another node",
}
_RECREATE_REASONS = {
    planning.RecreateReason.SPEC_CHANGED: "spec changed",
    planning.RecreateReason.STALE_TASK: "stale task",
    planning.RecreateReason.DEAD: "container dead",
    planning.RecreateReason.UNHEALTHY: "health check failing",
}


def short_id(container_id: str) -> str:
    """Docker's 12-character short id, with an ellipsis when something was cut off."""
    return container_id[:12] + "…" if len(container_id) > 12 else container_id


def describe(action: planning.Action) -> str:
    """One line, e.g. ``create web-1 on n1`` or ``recreate api on n2 (spec changed)``."""
    match action:
        case planning.Create(name=name, node=node, start=start):
            return f"create {name} on {node}" + ("" if start else " (not started)")
        case planning.Start(name=name, node=node):
            return f"start {name} on {node}"
        case planning.Stop(name=name, node=node):
            return f"stop {name} on {node}"
        case planning.Recreate(name=name, node=node, reason=reason):
            return f"recreate {name} on {node} ({_RECREATE_REASONS[reason]})"
        case planning.Rename(name=name, node=node, to=to):
            return f"rename {name}'s new container on {node} to {to}"
        case planning.Remove(node=node, container_id=container_id, name=name, reason=reason):
            which = f"{short_id(container_id)}" + (f" ({name})" if name else "")
            return f"remove {which} on {node} ({_REMOVE_REASONS[reason]})"
        case planning.Blocked(name=name, reason=reason):
            return f"blocked {name}: {reason}"
        case _:
            assert_never(action)


def describe_status(name: str, status: planning.RowStatus) -> str:
    """One line for a row that needs no action, e.g. ``web-1 running on n1 (3f2a0b1c2d3e…)``."""
    where = f" on {status.node}" if status.node else ""
    which = f" ({short_id(status.container_id)})" if status.container_id else ""
    message = f": {status.message}" if status.message else ""
    return f"{name} {status.phase.value}{where}{which}{message}"


def lines(plan: planning.Plan, *, statuses: bool = False) -> list[str]:
    """Every action in plan order, then (with ``statuses``) the unchanged rows by name."""
    result = [describe(action) for action in plan.actions]
    if statuses:
        result.extend(describe_status(name, plan.statuses[name]) for name in sorted(plan.statuses))
    return result
