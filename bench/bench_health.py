"""How fast a node's health follows its engine, with the default settings.

Starts three sandbox engines and a ``Cluster`` (default ``NodeSettings``) on a throwaway SQLite
file, then per run: SIGSTOP one engine → seconds until its node is ``unhealthy``; SIGCONT →
seconds until ``healthy`` again; SIGKILL → ``unhealthy``; restart on the same roots →
``healthy``. Also the Docker API calls one node makes per steady-state forced refresh.
Prints medians with min-max; ``--runs N`` (default 3).

    .venv/bin/python -m bench.bench_health --runs 3
"""

from __future__ import annotations

import argparse
import collections
import signal
import statistics
import tempfile
import time
from collections.abc import Callable

import sqlalchemy as sa

from reconciler import domain
from reconciler.db import engine as db_engine
from reconciler.db import migrate
from reconciler.db.store import Store
from reconciler.nodes import cluster as cluster_mod
from reconciler.nodes.settings import NodeSettings
from sandbox.engines import EngineFleet, SandboxEngine


def _until(predicate: Callable[[], bool], *, timeout: float = 120.0) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise TimeoutError("condition not reached")
        time.sleep(0.02)
    return time.monotonic() - started


def _health(cluster: cluster_mod.Cluster, name: str) -> domain.Health:
    return cluster.snapshots()[domain.NodeName(name)].health


def _one_run(cluster: cluster_mod.Cluster, engine: SandboxEngine, name: str) -> dict[str, float]:
    ok = domain.Health.HEALTHY
    _until(lambda: _health(cluster, name) is ok)
    figures = {}
    engine.pause()
    figures["SIGSTOP → unhealthy"] = _until(lambda: _health(cluster, name) is not ok)
    engine.resume()
    figures["SIGCONT → healthy"] = _until(lambda: _health(cluster, name) is ok)
    engine.kill(signal.SIGKILL)
    figures["SIGKILL → unhealthy"] = _until(lambda: _health(cluster, name) is not ok)
    engine.start()  # returns once the new dockerd answers
    figures["restart → healthy"] = _until(lambda: _health(cluster, name) is ok)
    return figures


def _refresh_calls(cluster: cluster_mod.Cluster, name: str) -> collections.Counter[str]:
    """The requests of the next forced full refresh of ``name`` (events excluded)."""
    node = cluster.node(name)
    before = node.client.calls
    done = node.full_refreshes
    node.request_refresh()
    _until(lambda: node.full_refreshes > done)
    after = node.client.calls
    return collections.Counter({k: after[k] - before[k] for k in after if after[k] - before[k]})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    settings = NodeSettings()
    with tempfile.TemporaryDirectory(prefix="rcl-health-") as tmp, EngineFleet(3) as fleet:
        fleet.start()
        url = f"sqlite:///{tmp}/health.db"
        migrate.upgrade(url)
        store = db_engine.make_engine(url)
        with store.begin() as conn:
            for i, e in enumerate(fleet, 1):
                conn.execute(
                    sa.text("INSERT INTO nodes (name, url) VALUES (:n, :u)"),
                    {"n": f"n{i}", "u": e.url},
                )
        cluster = cluster_mod.Cluster(store=Store(store), settings=settings)
        cluster.start()
        try:
            runs = [_one_run(cluster, list(fleet)[1], "n2") for _ in range(args.runs)]
            calls = _refresh_calls(cluster, "n1")
        finally:
            cluster.stop()
            store.dispose()
    print(
        f"defaults: call timeout {settings.call_timeout:g} s, threshold "
        f"{settings.failure_threshold}, backoff cap {settings.backoff_cap:g} s"
    )
    for what in runs[0]:
        values = [r[what] for r in runs]
        print(
            f"{what:22} {statistics.median(values):6.1f} s  "
            f"({min(values):.1f}-{max(values):.1f}, {len(values)} runs)"
        )
    print(
        "calls per steady-state forced refresh:",
        ", ".join(f"{k} {v}" for k, v in sorted(calls.items())),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
