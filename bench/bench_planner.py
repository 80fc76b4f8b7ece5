"""Time the pure planner on a converged fleet: the cost every idle pass pays.

    .venv/bin/python bench/bench_planner.py [--rows 1000 10000] [--repeat 7]

Builds N desired rows, all running on 3 synthetic healthy nodes with matching spec hashes (so the
plan is empty), and prints the CPU time (``time.process_time``) of ``planning.plan``: the best
and the median of ``--repeat`` runs. Floor: 100 ms CPU at 10,000 rows.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reconciler import planning
from reconciler.domain import (
    MANAGED_LABEL,
    NAME_LABEL,
    NODE_LABEL,
    SPEC_HASH_LABEL,
    ContainerId,
    ContainerSpec,
    DesiredContainer,
    DesiredState,
    Health,
    NodeName,
    NodeSnapshot,
    ObservedContainer,
    ObservedImage,
)

NODES = tuple(NodeName(f"n{i}") for i in (1, 2, 3))
IMAGE = "busybox:local"
FLOOR_MS = 100.0


def converged_fleet(rows: int) -> tuple[list[DesiredContainer], dict[NodeName, NodeSnapshot]]:
    """``rows`` running rows, spread round-robin, each with exactly its one matching container."""
    desired: list[DesiredContainer] = []
    placed: dict[NodeName, list[ObservedContainer]] = {n: [] for n in NODES}
    for i in range(rows):
        name = f"web-{i:05}"
        spec_hash = f"{i:064x}"
        spec = ContainerSpec(name=name, image=IMAGE, command=("sleep", "3600"))
        desired.append(DesiredContainer(name, DesiredState.RUNNING, None, spec, spec_hash))
        node = NODES[i % len(NODES)]
        labels = {
            MANAGED_LABEL: "true",
            NAME_LABEL: name,
            SPEC_HASH_LABEL: spec_hash,
            NODE_LABEL: node,
        }
        placed[node].append(
            ObservedContainer(node, ContainerId(f"{i:064x}"), f"/{name}", IMAGE, "running", labels)
        )
    nodes = {
        n: NodeSnapshot(
            n,
            Health.HEALTHY,
            containers=tuple(placed[n]),
            images=(ObservedImage(n, "sha256:" + "0" * 64, (IMAGE,)),),
            refreshed=True,
        )
        for n in NODES
    }
    return desired, nodes


def cpu_ms(rows: int, repeat: int) -> list[float]:
    desired, nodes = converged_fleet(rows)
    samples = []
    for _ in range(repeat):
        gc.collect()
        start = time.process_time()
        result = planning.plan(desired, nodes, now=0.0)
        samples.append((time.process_time() - start) * 1000)
        assert result.actions == () and len(result.statuses) == rows, result.summary()
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    worst = 0.0
    for rows in args.rows:
        samples = cpu_ms(rows, args.repeat)
        best, median = min(samples), statistics.median(samples)
        print(
            f"no-op plan, {rows:>6} rows, 3 nodes: best {best:5.1f} ms CPU, median {median:5.1f} ms"
        )
        if rows >= 10_000:
            worst = max(worst, median)
    if worst > FLOOR_MS:
        print(
            f"FAIL: median {worst:.1f} ms CPU at 10,000 rows is above the {FLOOR_MS:.0f} ms floor"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
