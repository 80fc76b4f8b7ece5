"""The machine a run measured, and CPU accounting from /proc.

``facts()`` is printed with every result (nproc, memory, kernel, dockerd version, load average).
``CpuProbe`` splits the CPU time spent during a window into the reconciler process, the engine
side (every dockerd, containerd, shim and container process under the sandbox folder) and the
rest of the machine, from ``/proc/<pid>/stat`` and ``/proc/stat``. A process's figure includes
its reaped children (``cutime``/``cstime``), so runc runs count for their shim and dockerd's
prestart hooks for dockerd; processes that started and exited inside the window without such a
parent land in "rest".
"""

from __future__ import annotations

import os
import pathlib
import platform
import shutil
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass

TICK = os.sysconf("SC_CLK_TCK")
_ENGINE_PROGRAMS = ("dockerd", "containerd", "runc", "docker-", "containerd-shim")


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable ({e})"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""


def _cpu_model() -> str:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def _memory_gib() -> float:
    for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return 0.0


def _git() -> str:
    """The commit of the reconciler code this run imports, and whether it has local edits."""
    import reconciler

    root = pathlib.Path(reconciler.__file__).resolve().parents[1]
    commit = _first_line(["git", "-C", str(root), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain", "--", "reconciler", "migrations"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return f"{commit}{' + uncommitted edits' if dirty else ''} ({root})"


def facts() -> dict[str, object]:
    """What a reader needs to judge the figures: cores, memory, kernel, versions, load."""
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    compose = shutil.which("docker-compose")
    return {
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gib": round(_memory_gib(), 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "dockerd": _first_line([dockerd, "--version"]),
        "docker_compose": _first_line([compose, "version", "--short"]) if compose else None,
        "git": _git(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


# -- CPU accounting -------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Proc:
    ppid: int
    start: int
    ticks: int  # utime + stime + cutime + cstime
    command: str


def _read_proc(pid: int) -> _Proc | None:
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
        command = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3); utime is field 14, starttime field 22
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    return _Proc(ppid=int(fields[1]), start=int(fields[19]), ticks=ticks, command=command)


def _all_procs() -> dict[int, _Proc]:
    found = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (proc := _read_proc(int(entry.name))) is not None:
            found[int(entry.name)] = proc
    return found


def _machine_busy_ticks() -> int:
    """Busy ticks of all CPUs: user, nice, system, irq, softirq, steal (not idle, not iowait)."""
    fields = pathlib.Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return user + nice + system + irq + softirq + steal


def wait_quiet(*, max_busy: float = 0.25, window: float = 0.25, timeout: float = 10.0) -> float:
    """Wait until the machine's CPUs were at most ``max_busy`` busy over one ``window``
    (background work of the previous measurement, e.g. swarm mode leaving, has settled); give
    up after ``timeout``. Returns the seconds waited."""
    started = time.monotonic()
    cpus = os.cpu_count() or 1
    while time.monotonic() - started < timeout:
        before = _machine_busy_ticks()
        time.sleep(window)
        if (_machine_busy_ticks() - before) / TICK / (window * cpus) <= max_busy:
            break
    return time.monotonic() - started


def _with_descendants(procs: dict[int, _Proc], roots: Iterable[int]) -> set[int]:
    found = {r for r in roots if r in procs}
    while children := {p for p, info in procs.items() if info.ppid in found and p not in found}:
        found |= children
    return found


def _engine_pids(procs: dict[int, _Proc], marker: str) -> set[int]:
    roots = [
        pid
        for pid, p in procs.items()
        if marker in p.command
        and os.path.basename(p.command.split(" ", 1)[0]).startswith(_ENGINE_PROGRAMS)
    ]
    return _with_descendants(procs, roots)


class CpuProbe:
    """CPU seconds between :meth:`start` and :meth:`stop`, by group.

    ``marker`` is the sandbox folder (every engine process names it); ``daemon_pid`` is the
    reconciler process, if one is measured.
    """

    def __init__(self, *, marker: str, daemon_pid: int | None = None) -> None:
        self._marker = marker
        self._daemon_pid = daemon_pid
        self._before: dict[int, _Proc] = {}
        self._busy_before = 0

    def start(self) -> None:
        self._before = _all_procs()
        self._busy_before = _machine_busy_ticks()

    def stop(self) -> dict[str, float]:
        """``{"machine", "reconciler", "engines", "bench", "rest"}`` in CPU seconds."""
        busy = _machine_busy_ticks() - self._busy_before
        after = _all_procs()
        groups = {
            "reconciler": _with_descendants(after, [self._daemon_pid] if self._daemon_pid else []),
            "engines": _engine_pids(after, self._marker),
            "bench": {os.getpid()},
        }
        result = {name: self._delta(after, pids) / TICK for name, pids in groups.items()}
        result["machine"] = busy / TICK
        result["rest"] = max(0.0, result["machine"] - sum(result[g] for g in groups))
        return result

    def _delta(self, after: dict[int, _Proc], pids: set[int]) -> int:
        total = 0
        for pid in pids:
            now, then = after[pid], self._before.get(pid)
            same = then is not None and then.start == now.start
            total += now.ticks - then.ticks if same and then is not None else now.ticks
        return total


def rss_mib(pid: int) -> float | None:
    """Resident memory of ``pid`` in MiB (``VmRSS``), None when it is gone."""
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def process_cpu(pid: int) -> float:
    """CPU seconds ``pid`` has used so far (all threads), 0.0 when it is gone."""
    proc = _read_proc(pid)
    return proc.ticks / TICK if proc else 0.0
