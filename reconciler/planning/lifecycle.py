"""PURE: a container's lifecycle under its row's restart policy and health check.

Where this sits in a pass: ``planning.planner`` asks these small questions about a row's one
container on a usable node, before deciding to start, back off or replace it:

- ``exited_for_good``: an exited container that ``restart`` does not start again
  (``never``; ``on-failure`` after exit 0) is left as it is, with phase ``completed`` (exit 0)
  or ``failed`` and its exit code. ``always`` (the default) and ``on-failure`` after a non-zero
  exit start it again after the crash-loop back-off (``planning.backoff.crash_delay``).
- ``unhealthy``: a running container whose health check says ``unhealthy`` is replaced (a
  ``Recreate``), after the same back-off, as swarm mode does. A health check is never required.
"""

from __future__ import annotations

from reconciler.domain import DesiredContainer, ObservedContainer, Phase, RestartPolicy
from reconciler.planning import backoff
from reconciler.planning.actions import RowStatus

__all__ = ["backoff_message", "exited_for_good", "unhealthy"]


def exited_for_good(row: DesiredContainer, c: ObservedContainer) -> RowStatus | None:
    """The status of ``c`` when it exited and ``row``'s restart policy does not restart it."""
    if c.state != "exited" or row.spec is None:
        return None
    policy, code = row.spec.restart, c.exit_code
    if policy is RestartPolicy.ALWAYS or (policy is RestartPolicy.ON_FAILURE and code != 0):
        return None
    if code == 0:
        return RowStatus(Phase.COMPLETED, c.node, c.id, f"completed (exit 0, restart {policy})")
    return RowStatus(Phase.FAILED, c.node, c.id, f"exited with code {code} (restart {policy})")


def unhealthy(c: ObservedContainer) -> bool:
    """True when ``c`` runs and its health check reports it unhealthy."""
    return c.health == "unhealthy" and c.running


def backoff_message(*, delay: float, c: ObservedContainer, restarts: int) -> str:
    """``back-off 4s restarting (exit 1, 3 restarts)``, or ``… replacing (unhealthy, …)``."""
    if unhealthy(c):
        plural = "restart" if restarts == 1 else "restarts"
        return f"back-off {delay:.0f}s replacing (unhealthy, {restarts} {plural})"
    return backoff.crash_message(delay=delay, exit_code=c.exit_code, restarts=restarts)
