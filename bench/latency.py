"""Measurement 2: insert-to-running latency of one row, on SQLite and on PostgreSQL.

The daemon runs on one node and is idle. Each sample inserts one row (plain SQL, one
transaction) and waits, polling ``container_status`` every 10 ms, until the row is ``running``
(the controller writes that only after the engine's start call returned). The row is then
deleted, its container awaited gone, and the daemon left idle for a moment before the next
sample. SQLite wakes the daemon through ``PRAGMA data_version`` (polled every 100 ms),
PostgreSQL through ``LISTEN``/``NOTIFY``.
"""

from __future__ import annotations

import pathlib
import time
from typing import Any

import sqlalchemy as sa

from bench import daemon, stats
from bench.fleet import BenchFleet, wait_until
from sandbox import SandboxPostgres

_SETTLE = 0.3  # seconds of idle daemon before each sample


def run(fleet: BenchFleet, *, samples: int, workdir: pathlib.Path) -> dict[str, Any]:
    """p50/p95 (and every sample) for ``sqlite`` and ``postgresql``."""
    results = {"sqlite": _measure(fleet, daemon.fresh_sqlite(workdir, "latency"), samples, workdir)}
    with SandboxPostgres() as pg:
        url = pg.create_database("bench_latency")
        results["postgresql"] = _measure(fleet, url, samples, workdir)
    return results


def _measure(fleet: BenchFleet, url: str, samples: int, workdir: pathlib.Path) -> dict[str, Any]:
    engines = fleet.engines(1)
    fleet.clean(engines)
    store = daemon.prepare_database(url, engines)
    dialect = store.dialect.name
    log_path = workdir / f"reconciler-latency-{dialect}.log"
    values = []
    try:
        with daemon.ReconcilerProcess(url, nodes=1, log_path=log_path):
            for i in range(samples):
                values.append(_one(store, fleet, f"lat-{i:03}"))
                print(f"  {dialect:<10} sample {i + 1:>2}: {values[-1] * 1000:6.0f} ms", flush=True)
    finally:
        store.dispose()
        fleet.clean(engines)
    return {
        "p50": stats.percentile(values, 50),
        "p95": stats.percentile(values, 95),
        "summary": stats.summarise(values).as_dict(),
    }


def _one(store: sa.Engine, fleet: BenchFleet, name: str) -> float:
    started = time.monotonic()
    daemon.insert_rows(store, [name])
    running = "SELECT phase FROM container_status WHERE name = :name"
    done = wait_until(
        lambda: daemon.scalar(store, running, name=name) == "running",
        timeout=60,
        interval=0.01,
        what=f"{name} running",
    )
    with store.begin() as conn:
        conn.execute(sa.text("DELETE FROM desired_containers WHERE name = :name"), {"name": name})
    wait_until(
        lambda: (
            fleet.count(fleet.engines(1), label=daemon.MANAGED) == 0
            and daemon.scalar(store, running, name=name) is None
        ),
        timeout=60,
        interval=0.05,
        what=f"{name} removed",
    )
    time.sleep(_SETTLE)
    return done - started
