"""The PNG chart: convergence seconds against N, one line per contender, one panel per node count.

Points are medians; the error bars span min to max. The ``--network none`` variant is drawn as
separate, dashed points.
"""

from __future__ import annotations

import pathlib
from collections import defaultdict
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench import stats

COLOURS = {
    "reconciler": "tab:blue",
    "raw-sdk": "tab:orange",
    "swarm": "tab:green",
    "compose": "tab:red",
}


def _series(samples: list[dict[str, Any]], nodes: int) -> dict[tuple[str, str], list[tuple]]:
    values: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for s in samples:
        if s["nodes"] == nodes:
            values[(s["contender"], s["network"], s["n"])].append(s["converge_s"])
    series: dict[tuple[str, str], list[tuple]] = defaultdict(list)
    for (name, network, n), seconds in sorted(values.items()):
        summary = stats.summarise(seconds)
        series[(name, network)].append((n, summary.median, summary.low, summary.high))
    return series


def write(samples: list[dict[str, Any]], path: pathlib.Path, title: str) -> None:
    node_counts = sorted({s["nodes"] for s in samples})
    if not node_counts:
        return
    fig, axes = plt.subplots(
        1, len(node_counts), figsize=(6 * len(node_counts), 4.5), squeeze=False, sharey=True
    )
    for ax, nodes in zip(axes[0], node_counts, strict=True):
        for (name, network), points in sorted(_series(samples, nodes).items()):
            ns, med, low, high = zip(*points, strict=True)
            errors = [
                [m - lo for m, lo in zip(med, low, strict=True)],
                [h - m for m, h in zip(med, high, strict=True)],
            ]
            label = name if network == "unset" else f"{name} (--network {network})"
            ax.errorbar(
                ns,
                med,
                yerr=errors,
                marker="o" if network == "unset" else "x",
                linestyle="-" if network == "unset" else "--",
                capsize=3,
                color=COLOURS.get(name),
                label=label,
            )
        ax.set_title(f"{nodes} node{'s' if nodes > 1 else ''}")
        ax.set_xlabel("containers (N)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("seconds until all N run (median, min-max)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
