"""Measurement 5: where the time goes while reconciler converges N containers on one node.

* CPU split (``machine.CpuProbe``): the reconciler process, the engine side (dockerd,
  containerd, shims, runc and the containers) and the rest of the machine, over the convergence
  window. Taken from the convergence measurement's reconciler runs at this N when there are any
  (and from the raw SDK runs for comparison), otherwise from dedicated runs.
* A profile of the reconciler process over one more convergence: py-spy samples it 200 times a
  second while a thread holds the GIL (``--gil``: Python's CPU time, not its waits on sockets;
  ``--nonblocking``, so the daemon is never paused). The top functions by own and by inclusive
  samples are listed, the inclusive ones of reconciler's own modules apart, with the share of
  own samples per package.
"""

from __future__ import annotations

import collections
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

from bench import daemon, machine, stats
from bench.fleet import BenchFleet

TOP = 30


def ensure_py_spy() -> tuple[str | None, str]:
    """The py-spy binary (next to this Python, or on PATH), pip-installing it if missing."""
    beside = pathlib.Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found:
        return found, "found"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "py-spy"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode == 0 and beside.exists():
        return str(beside), "installed with pip"
    return None, f"pip install py-spy failed: {result.stderr.strip()[-300:]}"


def run(
    fleet: BenchFleet,
    *,
    n: int,
    runs: int,
    convergence: list[dict[str, Any]] | None,
    workdir: pathlib.Path,
) -> dict[str, Any]:
    samples = [
        s for s in convergence or [] if s["nodes"] == 1 and s["n"] == n and s["network"] == "unset"
    ]
    py_spy, note = ensure_py_spy()
    engines = fleet.engines(1)
    fleet.clean(engines)
    url = daemon.fresh_sqlite(workdir, "where")
    store = daemon.prepare_database(url, engines)
    profile: dict[str, Any] = {"tool": py_spy, "note": note}
    try:
        with daemon.ReconcilerProcess(url, nodes=1, log_path=workdir / "reconciler-where.log") as p:
            contender = daemon.Reconciler(fleet, engines, store)
            if not any(s["contender"] == "reconciler" for s in samples):
                samples += [_probed(fleet, contender, n, p.pid) for _ in range(runs)]
            if py_spy:
                profile.update(_profiled(fleet, contender, n, p.pid, py_spy, workdir))
    finally:
        store.dispose()
        fleet.clean(engines)
    return {"n": n, "split": _split(samples, n), "profile": profile}


def _probed(fleet: BenchFleet, contender: daemon.Reconciler, n: int, pid: int) -> dict[str, Any]:
    probe = machine.CpuProbe(marker=fleet.marker, daemon_pid=pid)
    probe.start()
    seconds = contender.converge(n)
    cpu = probe.stop()
    contender.remove()
    return {"contender": "reconciler", "converge_s": seconds, "cpu": cpu}


def _split(samples: list[dict[str, Any]], n: int) -> dict[str, Any]:
    """Median CPU seconds per group and contender, and CPU milliseconds per container."""
    by_contender: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for s in samples:
        by_contender[s["contender"]].append(s)
    result = {}
    for name, group in by_contender.items():
        keys = group[0]["cpu"].keys()
        result[name] = {
            "converge_s": stats.summarise([s["converge_s"] for s in group]).as_dict(),
            "cpu_s": {k: stats.summarise([s["cpu"][k] for s in group]).as_dict() for k in keys},
            "reconciler_ms_per_container": stats.summarise(
                [s["cpu"]["reconciler"] * 1000 / n for s in group]
            ).as_dict(),
            "engines_ms_per_container": stats.summarise(
                [s["cpu"]["engines"] * 1000 / n for s in group]
            ).as_dict(),
            "client_ms_per_container": stats.summarise(
                [s["cpu"]["bench"] * 1000 / n for s in group]
            ).as_dict(),
        }
    return result


def _profiled(
    fleet: BenchFleet,
    contender: daemon.Reconciler,
    n: int,
    pid: int,
    py_spy: str,
    workdir: pathlib.Path,
) -> dict[str, Any]:
    out = workdir / "profile.txt"
    out.unlink(missing_ok=True)
    argv = [
        py_spy,
        "record",
        "--pid",
        str(pid),
        "--rate",
        "200",
        "--format",
        "raw",
        "--output",
        str(out),
        "--nonblocking",
        "--gil",
    ]
    with (workdir / "py-spy.log").open("wb") as log:
        spy = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        time.sleep(1.0)  # attach
        probe = machine.CpuProbe(marker=fleet.marker, daemon_pid=pid)
        probe.start()
        seconds = contender.converge(n)
        cpu = probe.stop()
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait(10)
    contender.remove()
    if not out.exists():
        return {"error": f"py-spy wrote no profile; see {workdir / 'py-spy.log'}"}
    return {"converge_s": seconds, "cpu": cpu, **top_entries(out.read_text())}


def _function(frame: str) -> str:
    """``plan (reconciler/planning.py:120)`` → ``plan (reconciler/planning.py)``."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def _package(frame: str) -> str:
    where = frame.partition(" (")[2].rsplit(":", 1)[0]
    parts = where.split("/")
    if parts[0] == "reconciler" and len(parts) > 1:
        return "/".join(parts[:2]).removesuffix(".py")
    return parts[0].removesuffix(".py") if len(parts) > 1 else f"stdlib:{parts[0]}"


def top_entries(raw: str) -> dict[str, Any]:
    """Top functions by own and inclusive samples, and own samples per package."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    packages: collections.Counter[str] = collections.Counter()
    ours: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count, frames = int(count_text), stack.split(";")
        total += count
        own[_function(frames[-1])] += count
        packages[_package(frames[-1])] += count
        for function in {_function(f) for f in frames}:
            inclusive[function] += count
            if "(reconciler/" in function:
                ours[function] += count

    def share(counter: collections.Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": f, "samples": c, "share": c / total if total else 0.0}
            for f, c in counter.most_common(TOP)
        ]

    return {
        "samples": total,
        "own": share(own),
        "inclusive": share(inclusive),
        "reconciler": share(ours),
        "packages": share(packages),
    }
