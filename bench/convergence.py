"""Measurement 1: convergence and removal of N containers, reconciler against the others.

For every run, node count and N, each contender starts N busybox ``sleep`` containers on empty
engines and removes them again; both are timed from the outside, and the CPU time of every
process on the machine is accounted over each window (``machine.CpuProbe``). The order of the
contenders rotates from run to run, and the reconciler daemon runs only during its own block, so
no contender pays for another's event listeners. Swarm mode and docker-compose, tools for one
engine, run on one node only; reconciler and the raw SDK on every node count.

Each block begins with an untimed warm-up of ``WARM_UP`` containers, and each measurement waits
until the machine is quiet (``machine.wait_quiet``), so that nobody pays for the previous
contender's background work (swarm mode leaving, say) or for a cold start.

One extra size with ``--network none`` (for the raw SDK and reconciler, on one node) shows the
other network setup: dockerd runs a prestart hook per container there.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa

from bench import contenders, daemon, machine
from bench.fleet import BenchFleet
from sandbox import SandboxEngine

Sample = dict[str, Any]

#: Containers each contender starts and removes, untimed, before its first measured size of a
#: block: a freshly started daemon (or client) pays for first calls (imports, compiled SQL
#: statements, connection set-up) that a long-running one does not.
WARM_UP = 5


class Contender(Protocol):
    name: str

    def converge(self, n: int, *, network: str | None = None) -> float: ...

    def remove(self) -> float: ...


@dataclass(frozen=True)
class Setup:
    sizes: tuple[int, ...]
    node_counts: tuple[int, ...]
    runs: int
    none_size: int | None
    compose: str | None
    workdir: pathlib.Path


@dataclass(frozen=True)
class _Block:
    """One contender's share of a run: it yields samples and cleans up after itself."""

    name: str
    measure: Callable[[int, int], Iterator[Sample]]


def run(fleet: BenchFleet, setup: Setup) -> list[Sample]:
    """Every sample of every run; progress on stdout."""
    stores = {k: _store(fleet, setup, k) for k in setup.node_counts}
    samples: list[Sample] = []
    try:
        for r in range(setup.runs):
            for k in setup.node_counts:
                blocks = _blocks(fleet, setup, stores[k])
                shift = r % len(blocks)
                for block in blocks[shift:] + blocks[:shift]:
                    samples.extend(block.measure(r, k))
    finally:
        for store in stores.values():
            store.dispose()
    return samples


def _store(fleet: BenchFleet, setup: Setup, k: int) -> sa.Engine:
    url = daemon.fresh_sqlite(setup.workdir, f"convergence-{k}")
    return daemon.prepare_database(url, fleet.engines(k))


def _blocks(fleet: BenchFleet, setup: Setup, store: sa.Engine) -> list[_Block]:
    def reconciler_block(r: int, k: int) -> Iterator[Sample]:
        engines = fleet.engines(k)
        url = store.url.render_as_string(hide_password=False)
        log_path = setup.workdir / f"reconciler-convergence-{k}.log"
        with daemon.ReconcilerProcess(url, nodes=k, log_path=log_path) as proc:
            contender = daemon.Reconciler(fleet, engines, store)
            yield from _sizes(fleet, setup, contender, engines, r, pid=proc.pid)

    def raw_block(r: int, k: int) -> Iterator[Sample]:
        engines = fleet.engines(k)
        yield from _sizes(fleet, setup, contenders.RawSdk(fleet, engines), engines, r)

    def compose_block(r: int, k: int) -> Iterator[Sample]:
        assert setup.compose is not None
        if k != 1:
            return  # compose drives one engine; like swarm mode it is measured on one node
        engines = fleet.engines(k)
        contender = contenders.Compose(setup.compose, engines, setup.workdir)
        yield from _sizes(fleet, setup, contender, engines, r, none=False)

    def swarm_block(r: int, k: int) -> Iterator[Sample]:
        if k != 1:
            return  # swarm mode is measured on one node only
        engine = fleet.engines(1)[0]
        with fleet.swarm_mode(engine) as api:
            yield from _sizes(fleet, setup, contenders.Swarm(api), [engine], r, none=False)

    blocks = [_Block("reconciler", reconciler_block), _Block("raw-sdk", raw_block)]
    if setup.compose:
        blocks.append(_Block("compose", compose_block))
    blocks.append(_Block("swarm", swarm_block))
    return blocks


def _sizes(
    fleet: BenchFleet,
    setup: Setup,
    contender: Contender,
    engines: list[SandboxEngine],
    r: int,
    *,
    pid: int | None = None,
    none: bool = True,
) -> Iterator[Sample]:
    """Every size with the network mode unset, then the ``--network none`` size if due."""
    variants: list[tuple[int, str | None]] = [(n, None) for n in setup.sizes]
    if none and setup.none_size and len(engines) == 1:
        variants.append((setup.none_size, "none"))
    fleet.clean(engines)
    contender.converge(WARM_UP)  # untimed: first calls of a fresh process are not the steady rate
    contender.remove()
    for n, network in variants:
        fleet.clean(engines)
        yield _measure(fleet, contender, engines, n, network, run=r, pid=pid)
    fleet.clean(engines)


def _measure(
    fleet: BenchFleet,
    contender: Contender,
    engines: list[SandboxEngine],
    n: int,
    network: str | None,
    *,
    run: int,
    pid: int | None,
) -> Sample:
    quiet = machine.wait_quiet()
    probe = machine.CpuProbe(marker=fleet.marker, daemon_pid=pid)
    probe.start()
    seconds = contender.converge(n, network=network)
    cpu = probe.stop()
    probe.start()
    removal = contender.remove()
    removal_cpu = probe.stop()
    sample = {
        "contender": contender.name,
        "nodes": len(engines),
        "n": n,
        "network": network or "unset",
        "run": run,
        "converge_s": seconds,
        "remove_s": removal,
        "cpu": cpu,
        "remove_cpu": removal_cpu,
        "quiet_wait_s": quiet,
    }
    print(
        f"  run {run + 1} {contender.name:<10} nodes={len(engines)} N={n:<4} "
        f"network={network or 'unset':<5} converge {seconds:6.2f} s ({n / seconds:5.1f}/s)  "
        f"remove {removal:6.2f} s",
        flush=True,
    )
    return sample
