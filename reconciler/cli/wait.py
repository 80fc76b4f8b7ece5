"""``reconciler apply --wait``: follow the applied rows until they run, fail, or time runs out.

A row is done when its status row was written for the spec just applied (same spec hash) and
says ``running`` (``stopped`` for a row whose desired state is ``stopped``). A row is failing
when that status says ``failed``, or when the row itself does not validate. The display is a
rich table redrawn every half second on a terminal (one final table otherwise); the result says
which rows did not make it, with their messages.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.live import Live
from rich.table import Table

from reconciler import domain
from reconciler.db import store as store_mod

POLL_INTERVAL = 0.5

_STYLES = {
    "running": "green",
    "completed": "green",
    "failed": "red",
    "unschedulable": "yellow",
    "stopped": "cyan",
}


@dataclass(frozen=True)
class Outcome:
    done: list[str]
    failed: list[tuple[str, str]]
    #: Rows neither done nor failed when the time ran out: (name, phase and message).
    waiting: list[tuple[str, str]]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.waiting


def _target(item: domain.DesiredContainer) -> str:
    return "stopped" if item.state is domain.DesiredState.STOPPED else "running"


def _where(item: domain.DesiredContainer, progress: store_mod.Progress | None) -> str:
    """``done``, ``failed``, or ``waiting`` for one row."""
    if item.error:
        return "failed"
    if progress is None or (progress.spec_hash and progress.spec_hash != item.spec_hash):
        return "waiting"  # the controller has not seen this spec yet
    if progress.phase in (_target(item), "completed") and progress.spec_hash == item.spec_hash:
        return "done"  # completed: exited 0 and, by its restart policy, not started again
    if progress.phase == "failed":
        return "failed"
    return "waiting"


def _table(items: Sequence[domain.DesiredContainer], found: dict[str, store_mod.Progress]) -> Table:
    table = Table(box=None, pad_edge=False)
    for header in ("NAME", "PHASE", "NODE", "MESSAGE"):
        table.add_column(header, overflow="fold")
    for item in items:
        p = found.get(item.name)
        phase = "invalid" if item.error else (p.phase if p and p.phase else "pending")
        if p is not None and p.spec_hash and p.spec_hash != item.spec_hash:
            phase = "pending"  # a status row for the previous spec
        message = item.error or (p.message if p else None) or ""
        style = _STYLES.get(phase, "")
        node = p.node if p else None
        table.add_row(item.name, f"[{style}]{phase}[/]" if style else phase, node, message)
    done = sum(1 for item in items if _where(item, found.get(item.name)) == "done")
    table.caption = f"{done}/{len(items)} ready"
    return table


def wait(
    store: store_mod.Store,
    items: Sequence[domain.DesiredContainer],
    *,
    timeout: float,
    console: Console | None = None,
) -> Outcome:
    """Poll the status rows of ``items`` until every one is done, one fails, or ``timeout``
    seconds pass; show progress on ``console``."""
    console = console or Console()
    names = [item.name for item in items]
    deadline = time.monotonic() + timeout
    found: dict[str, store_mod.Progress] = {}
    with Live(_table(items, found), console=console, refresh_per_second=4, transient=False) as live:
        while True:
            with contextlib.suppress(store_mod.DatabaseError):  # said once; keep waiting
                found = store.status_of(names)
            live.update(_table(items, found))
            states = {item.name: _where(item, found.get(item.name)) for item in items}
            failing = [n for n, s in states.items() if s == "failed"]
            if failing or all(s == "done" for s in states.values()):
                break
            if time.monotonic() >= deadline:
                break
            time.sleep(POLL_INTERVAL)
    if not console.is_terminal:
        console.line()  # the last table, then what comes next on a line of its own
    by_name = {item.name: item for item in items}
    failed, waiting, done = [], [], []
    for name, state in states.items():
        item, p = by_name[name], found.get(name)
        if state == "done":
            done.append(name)
        elif state == "failed":
            failed.append((name, item.error or (p.message if p else None) or "failed"))
        else:
            phase = p.phase if p and p.spec_hash == item.spec_hash else "pending"
            message = p.message if p and p.spec_hash == item.spec_hash else None
            waiting.append((name, f"{phase}: {message}" if message else str(phase)))
    return Outcome(done, failed, waiting)


__all__ = ["Outcome", "wait"]
