"""PURE: the plan of a pass, its vocabulary, the retry policy, and the plan in words.

``planning.plan(desired, snapshots, now=…, backoff=…)`` is the planner (``planning.planner``);
``planning.actions`` holds the frozen actions and ``Plan``; ``planning.backoff`` the row retry
policy and the global retry budget; ``planning.describe`` renders a plan for people. Nothing here
does I/O, reads a clock or draws a random number: time and jitter are parameters.
"""

from reconciler.planning.actions import (
    Action,
    Blocked,
    Create,
    Plan,
    Recreate,
    RecreateReason,
    Remove,
    RemoveReason,
    RowStatus,
    Start,
    Stop,
)
from reconciler.planning.planner import plan

__all__ = [
    "Action",
    "Blocked",
    "Create",
    "Plan",
    "Recreate",
    "RecreateReason",
    "Remove",
    "RemoveReason",
    "RowStatus",
    "Start",
    "Stop",
    "plan",
]
