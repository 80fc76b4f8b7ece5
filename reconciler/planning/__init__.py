"""PURE: the plan of a pass, its vocabulary, the retry policy, and the plan in words.

``planning.plan(desired, snapshots, now=…, previous=…)`` is the planner (``planning.planner``);
``planning.actions`` holds the frozen actions and ``Plan``; ``planning.backoff`` the one backoff
formula, the row retry policy and the global retry budget; ``planning.statuses`` the status rows
a pass leaves behind; ``planning.describe`` renders a plan for people. Nothing here does I/O,
reads a clock or draws a random number: time and jitter are parameters.
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
    Rename,
    RowStatus,
    Start,
    Stop,
)
from reconciler.planning.planner import backoff_entries, plan
from reconciler.planning.statuses import status_rows

__all__ = [
    "Action",
    "Blocked",
    "Create",
    "Plan",
    "Recreate",
    "RecreateReason",
    "Remove",
    "RemoveReason",
    "Rename",
    "RowStatus",
    "Start",
    "Stop",
    "backoff_entries",
    "plan",
    "status_rows",
]
