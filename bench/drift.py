"""Measurement 3: drift repair, reconciler against swarm mode's restart policy.

Reconciler: the daemon keeps three rows running on one node. Each sample removes (``docker rm
-f``) or stops (``docker stop -t 0``: the container is killed at once and stays exited) one of
the containers behind its back and times, from the moment the engine call returned, until a
container of that row runs again (polling the engine every 10 ms). The next sample waits until
the status row shows the repair.

Swarm mode, one-node swarm on the same engine: with ``--restart-delay 0`` one replica at a
time, like reconciler; with the default policy (5 s delay) every replica of a 10-replica service
at once (the delay dominates; sequential samples would take a minute), each timed on its own.
"""

from __future__ import annotations

import functools
import pathlib
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

import docker
import sqlalchemy as sa

from bench import contenders, daemon, stats
from bench.fleet import BenchFleet, wait_until

ROWS = 3
KINDS = ("rm", "stop")


def _disturb(api: docker.APIClient, container_id: str, kind: str) -> float:
    """Break one container; return the monotonic time the engine call returned."""
    if kind == "rm":
        api.remove_container(container_id, force=True)
    else:
        api.stop(container_id, timeout=0)
    return time.monotonic()


def _summary(values: list[float]) -> dict[str, Any]:
    return {"p50": stats.percentile(values, 50), "summary": stats.summarise(values).as_dict()}


def run(fleet: BenchFleet, *, samples: int, workdir: pathlib.Path) -> dict[str, Any]:
    results: dict[str, Any] = {"reconciler": _reconciler(fleet, samples, workdir)}
    engine = fleet.engines(1)[0]
    fleet.clean([engine])
    with fleet.swarm_mode(engine) as api:
        results["swarm-delay-0"] = _swarm_sequential(api, samples)
        results["swarm-default"] = _swarm_parallel(api, samples)
    return results


# -- reconciler -----------------------------------------------------------------------------------
def _reconciler(fleet: BenchFleet, samples: int, workdir: pathlib.Path) -> dict[str, Any]:
    engines = fleet.engines(1)
    fleet.clean(engines)
    url = daemon.fresh_sqlite(workdir, "drift")
    store = daemon.prepare_database(url, engines)
    api = fleet.api(engines[0])
    names = [f"drift-{i}" for i in range(ROWS)]
    result: dict[str, Any] = {}
    try:
        with daemon.ReconcilerProcess(url, nodes=1, log_path=workdir / "reconciler-drift.log"):
            daemon.insert_rows(store, names)
            for name in names:
                _wait_repaired(store, api, name)
            for kind in KINDS:
                values = [_one(store, api, names[i % ROWS], kind) for i in range(samples)]
                print(f"  reconciler {kind:<4}: " + " ".join(f"{v:.2f}" for v in values))
                result[kind] = _summary(values)
    finally:
        store.dispose()
        fleet.clean(engines)
    return result


def _running_id(api: docker.APIClient, name: str) -> str | None:
    found = api.containers(filters={"label": f"reconciler.name={name}", "status": "running"})
    return found[0]["Id"] if found else None


def _one(store: sa.Engine, api: docker.APIClient, name: str, kind: str) -> float:
    old = _running_id(api, name)
    assert old is not None, f"{name} is not running before the sample"
    broken = _disturb(api, old, kind)
    done = wait_until(
        lambda: _running_id(api, name) is not None,
        timeout=60,
        interval=0.01,
        what=f"{name} running again",
    )
    _wait_repaired(store, api, name)
    return done - broken


def _wait_repaired(store: sa.Engine, api: docker.APIClient, name: str) -> None:
    """Until the status row names the running container, then a short idle moment."""
    sql = "SELECT container_id FROM container_status WHERE name = :n AND phase = 'running'"

    def settled() -> bool:
        cid = _running_id(api, name)
        return cid is not None and daemon.scalar(store, sql, n=name) == cid

    wait_until(settled, timeout=60, interval=0.02, what=f"status of {name}")
    time.sleep(0.3)


# -- swarm mode -----------------------------------------------------------------------------------
def _slots(api: docker.APIClient, service: str) -> dict[int, str]:
    """Running container id by task slot."""
    tasks = api.tasks(filters={"service": service, "desired-state": "running"})
    return {
        t["Slot"]: t["Status"]["ContainerStatus"]["ContainerID"]
        for t in tasks
        if t["Status"]["State"] == "running"
    }


def _swarm_service(api: docker.APIClient, name: str, replicas: int, delay: float | None) -> None:
    swarm = contenders.Swarm(api, poll=0.05)
    swarm.create_service(replicas, name=name, restart_delay=delay)
    wait_until(
        lambda: len(_slots(api, name)) == replicas,
        timeout=120,
        interval=0.05,
        what=f"{replicas} tasks of {name}",
    )


def _swarm_sequential(api: docker.APIClient, samples: int) -> dict[str, Any]:
    service = "drift-delay-0"
    _swarm_service(api, service, 1, 0.0)
    result: dict[str, Any] = {}
    for kind in KINDS:
        values = []
        for _ in range(samples):
            old = _slots(api, service)[1]
            broken = _disturb(api, old, kind)
            done = wait_until(
                functools.partial(_replaced, api, service, old),
                timeout=120,
                interval=0.01,
                what="a new swarm task",
            )
            values.append(done - broken)
            time.sleep(0.3)
        print(f"  swarm delay 0 {kind:<4}: " + " ".join(f"{v:.2f}" for v in values))
        result[kind] = _summary(values)
    contenders.Swarm(api).remove(service)
    return result


def _replaced(api: docker.APIClient, service: str, old: str) -> bool:
    """Slot 1 of ``service`` runs a container other than ``old``."""
    return _slots(api, service).get(1) not in (None, old)


def _swarm_parallel(api: docker.APIClient, replicas: int) -> dict[str, Any]:
    service = "drift-default"
    _swarm_service(api, service, replicas, None)
    result: dict[str, Any] = {}
    for kind in KINDS:
        before = _slots(api, service)
        with futures.ThreadPoolExecutor(8) as pool:
            broken = dict(
                zip(
                    before,
                    pool.map(lambda cid, k=kind: _disturb(api, cid, k), before.values()),
                    strict=True,
                )
            )
        repaired: dict[int, float] = {}
        wait_until(
            _collect(api, service, before, repaired),
            timeout=120,
            interval=0.02,
            what="every replica replaced",
        )
        values = [repaired[s] - broken[s] for s in before]
        print(f"  swarm default {kind:<4}: " + " ".join(f"{v:.2f}" for v in values))
        result[kind] = _summary(values)
    contenders.Swarm(api).remove(service)
    return result


def _collect(
    api: docker.APIClient, service: str, before: dict[int, str], repaired: dict[int, float]
) -> Callable[[], bool]:
    """A condition that records when each slot first runs a new container."""

    def check() -> bool:
        now_running = _slots(api, service)
        now = time.monotonic()
        for slot, old in before.items():
            if slot not in repaired and now_running.get(slot) not in (None, old):
                repaired[slot] = now
        return len(repaired) == len(before)

    return check
