"""Measurement 4: the steady state. Docker API calls, CPU of a no-op pass, daemon RSS.

* **API calls** (in-process, real engines): a ``Cluster`` and a ``Controller`` converge a few
  rows per node; the bench counts the HTTP requests each node's ``EngineClient`` sends
  (``EngineClient.calls``) while converging them (calls per created container), during one
  no-op pass, during one forced full refresh per node, and while removing them again.
* **No-op pass CPU** (in-process, synthetic nodes): the real ``Controller.reconcile`` over a
  SQLite store holding 1,000 / 10,000 rows whose status is already written, with node snapshots
  built in memory to match every row (3 healthy nodes, each container running with the row's
  spec hash), so the database, planner and status-diff parts are real and the engines are not
  needed. CPU is ``time.thread_time`` of the calling thread (a no-op pass starts no other).
  The planner alone is timed by ``bench_planner``.
* **RSS** (subprocess): ``reconciler run`` with 0 / 1,000 / 10,000 rows pinned to a node that
  does not exist (phase ``unschedulable``: the rows are loaded, planned and given status rows
  every pass, but no container is created, which 10,000 real containers on 2 cores would not
  allow). The memory real containers would add, their observed snapshots, is estimated with
  ``tracemalloc`` from the synthetic snapshots.
"""

from __future__ import annotations

import collections
import functools
import pathlib
import time
import tracemalloc
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from bench import bench_planner, daemon, machine, stats
from bench.fleet import BenchFleet, wait_until
from reconciler import spec
from reconciler.db import desired
from reconciler.db.store import Store
from reconciler.domain import (
    ContainerId,
    DesiredContainer,
    Health,
    NodeName,
    NodeSnapshot,
    ObservedContainer,
    ObservedImage,
)
from reconciler.nodes import cluster as cluster_mod
from reconciler.runtime import controller as controller_mod
from reconciler.runtime import executor
from reconciler.settings import Settings

ROWS_PER_NODE = 10


def run(
    fleet: BenchFleet, *, node_count: int, sizes: Sequence[int], runs: int, workdir: pathlib.Path
) -> dict[str, Any]:
    return {
        "api_calls": api_calls(fleet, node_count=node_count, runs=runs, workdir=workdir),
        "noop_pass": {str(n): noop_pass(n, runs=max(runs, 5), workdir=workdir) for n in sizes},
        "rss": {str(n): rss(fleet, n, runs=runs, workdir=workdir) for n in (0, *sizes)},
    }


# -- API calls ------------------------------------------------------------------------------------
def _calls(cluster: cluster_mod.Cluster) -> dict[str, collections.Counter[str]]:
    return {name: node.client.calls for name, node in cluster.handles().items()}


def _diff(
    after: Mapping[str, collections.Counter[str]], before: Mapping[str, collections.Counter[str]]
) -> dict[str, dict[str, int]]:
    return {n: dict(after[n] - before[n]) for n in after}


def api_calls(
    fleet: BenchFleet, *, node_count: int, runs: int, workdir: pathlib.Path
) -> dict[str, Any]:
    engines = fleet.engines(node_count)
    fleet.clean(engines)
    url = daemon.fresh_sqlite(workdir, "steady-calls")
    store = daemon.prepare_database(url, engines)
    daemon.insert_rows(store, [f"steady-{i}" for i in range(ROWS_PER_NODE * node_count)])
    settings = Settings(database_url=url)
    cluster = cluster_mod.Cluster(store=Store(store), settings=settings)
    cluster.start()
    ctl = controller_mod.Controller(store=Store(store), cluster=cluster, settings=settings)
    try:
        # wait_ready can return between a node's first refresh and its connection being
        # published (Node._recover), so wait for healthy nodes instead
        wait_until(
            lambda: _healthy(cluster, node_count), timeout=30, interval=0.02, what="healthy nodes"
        )
        start = _calls(cluster)
        _converge(ctl)
        time.sleep(1.0)  # the events of our own actions: let the nodes inspect what they name
        creating = _diff(_calls(cluster), start)
        passes = []
        for _ in range(runs):
            before = _calls(cluster)
            result = ctl.reconcile()
            assert controller_mod.converged(result), result.plan.summary()
            passes.append(_diff(_calls(cluster), before))
        refreshes = [_refresh_all(cluster) for _ in range(runs)]
        removing = _remove_all(store, cluster, ctl)
    finally:
        ctl.close()
        cluster.stop()
        store.dispose()
        fleet.clean(engines)
    return {
        "containers_per_node": ROWS_PER_NODE,
        "noop_pass": passes,
        "refresh": refreshes,
        "converge": creating,
        "remove": removing,
    }


def _remove_all(
    store: sa.Engine, cluster: cluster_mod.Cluster, ctl: controller_mod.Controller
) -> dict[str, dict[str, int]]:
    """Delete every row, converge, settle: the calls each node made for the removals."""
    before = _calls(cluster)
    with store.begin() as conn:
        conn.execute(sa.text("DELETE FROM desired_containers"))
    _converge(ctl)
    time.sleep(1.0)
    return _diff(_calls(cluster), before)


def _healthy(cluster: cluster_mod.Cluster, count: int) -> bool:
    snapshots = cluster.snapshots().values()
    return len(snapshots) == count and all(
        s.health is Health.HEALTHY and s.refreshed for s in snapshots
    )


def _converge(ctl: controller_mod.Controller) -> None:
    for _ in range(50):
        if controller_mod.converged(ctl.reconcile()):
            return
        time.sleep(0.2)
    raise TimeoutError("the steady-state rows did not converge in 50 passes")


def _refresh_all(cluster: cluster_mod.Cluster) -> dict[str, dict[str, int]]:
    """One forced full refresh per node, one node at a time; the calls each made."""
    counts: dict[str, dict[str, int]] = {}
    for name, node in cluster.handles().items():
        before, done = node.client.calls, node.full_refreshes
        node.request_refresh()
        wait_until(
            functools.partial(lambda n, d: n.full_refreshes > d, node, done),
            timeout=30,
            interval=0.005,
            what=f"a full refresh of {name}",
        )
        time.sleep(0.05)  # the same step may ping right after the refresh
        counts[name] = dict(node.client.calls - before)
    return counts


# -- no-op pass CPU -------------------------------------------------------------------------------
class SyntheticNodes(controller_mod.NodeSource):
    """Node snapshots built in memory; no handles (a no-op pass acts on nothing)."""

    def __init__(self, snapshots: dict[NodeName, NodeSnapshot]) -> None:
        self._snapshots = snapshots

    def snapshots(self) -> Mapping[NodeName, NodeSnapshot]:
        return self._snapshots

    def handles(self) -> Mapping[NodeName, executor.NodeHandle]:
        return {}


def synthetic_snapshots(rows: Sequence[DesiredContainer]) -> dict[NodeName, NodeSnapshot]:
    """Every row running on one of 3 healthy nodes, labelled with its own spec hash."""
    nodes = [NodeName(f"n{i}") for i in (1, 2, 3)]
    placed: dict[NodeName, list[ObservedContainer]] = {n: [] for n in nodes}
    for i, row in enumerate(rows):
        assert row.spec is not None and row.spec_hash is not None, row.error
        node = nodes[i % len(nodes)]
        labels = spec.container_labels(row.spec, row.spec_hash, node=node)
        placed[node].append(
            ObservedContainer(
                node, ContainerId(f"{i:064x}"), f"/{row.name}", row.spec.image, "running", labels
            )
        )
    image = ObservedImage(nodes[0], "sha256:" + "0" * 64, ("busybox:local",))
    return {
        n: NodeSnapshot(
            n, Health.HEALTHY, containers=tuple(placed[n]), images=(image,), refreshed=True
        )
        for n in nodes
    }


def noop_pass(n: int, *, runs: int, workdir: pathlib.Path) -> dict[str, Any]:
    url = daemon.fresh_sqlite(workdir, f"steady-noop-{n}")
    store = daemon.prepare_database(url, [])
    daemon.insert_rows(store, [f"row-{i:05}" for i in range(n)])
    with store.connect() as conn:
        rows = desired.load(conn)
    tracemalloc.start()
    snapshots = synthetic_snapshots(rows)
    snapshot_mib = tracemalloc.get_traced_memory()[0] / 2**20
    tracemalloc.stop()
    ctl = controller_mod.Controller(
        store=Store(store), cluster=SyntheticNodes(snapshots), settings=Settings(database_url=url)
    )
    try:
        first = ctl.reconcile()  # writes n status rows
        assert first.status_changes == n, first.status_changes
        cpu, wall = [], []
        for _ in range(runs):
            t, w = time.thread_time(), time.perf_counter()
            result = ctl.reconcile()
            cpu.append((time.thread_time() - t) * 1000)
            wall.append((time.perf_counter() - w) * 1000)
            assert controller_mod.converged(result) and result.status_changes == 0
    finally:
        ctl.close()
        store.dispose()
    planner = bench_planner.cpu_ms(n, runs)
    return {
        "pass_cpu_ms": stats.summarise(cpu).as_dict(),
        "pass_wall_ms": stats.summarise(wall).as_dict(),
        "planner_cpu_ms": stats.summarise(planner).as_dict(),
        "snapshot_mib": snapshot_mib,
    }


# -- RSS ------------------------------------------------------------------------------------------
def rss(fleet: BenchFleet, n: int, *, runs: int, workdir: pathlib.Path) -> dict[str, Any]:
    """RSS of a daemon holding ``n`` unschedulable rows, after its first pass; CPU while idle."""
    url = daemon.fresh_sqlite(workdir, f"steady-rss-{n}")
    store = daemon.prepare_database(url, fleet.engines(1))
    daemon.insert_rows(store, [f"ghost-{i:05}" for i in range(n)], node="ghost")
    mib, first, idle = [], [], []
    try:
        for _ in range(runs):
            with store.begin() as conn:
                conn.execute(sa.text("DELETE FROM container_status"))
            log_path = workdir / f"reconciler-rss-{n}.log"
            with daemon.ReconcilerProcess(url, nodes=1, log_path=log_path, interval=1.0) as proc:
                ready = time.monotonic()
                wait_until(
                    lambda: daemon.scalar(store, "SELECT count(*) FROM container_status") == n,
                    timeout=600,
                    interval=0.05,
                    what=f"{n} status rows",
                )
                first.append(time.monotonic() - ready)
                time.sleep(1.0)
                idle.append(_idle_cpu(proc.pid, seconds=2.0))
                mib.append(machine.rss_mib(proc.pid) or 0.0)
    finally:
        store.dispose()
    print(f"  rss at {n:>6} rows: {stats.summarise(mib).text('.1f')} MiB", flush=True)
    return {
        "rss_mib": stats.summarise(mib).as_dict(),
        "first_pass_s": stats.summarise(first).as_dict(),
        "idle_cpu_s_per_s": stats.summarise(idle).as_dict(),
    }


def _idle_cpu(pid: int, *, seconds: float) -> float:
    """CPU seconds per second of ``pid`` over ``seconds`` (the daemon passes every second)."""
    before = machine.process_cpu(pid)
    time.sleep(seconds)
    return (machine.process_cpu(pid) - before) / seconds
