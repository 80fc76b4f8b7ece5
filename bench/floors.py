"""The floors of issue 5, judged against a run's results (printed, never asserted).

Each ``Floor`` says what was measured, against what target, pass or miss, and by how much.
Convergence and removal are judged on the median of the paired ratios (run *i* of reconciler
against run *i* of the raw SDK); their range is shown beside it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bench import stats

Samples = list[dict[str, Any]]


@dataclass(frozen=True)
class Floor:
    name: str
    target: str
    measured: str
    ok: bool | None  # None: not measured in this run
    note: str = ""

    @property
    def verdict(self) -> str:
        return {True: "pass", False: "MISS", None: "not measured"}[self.ok]


def paired(samples: Samples, contender: str, key: str) -> dict[tuple[int, str, int], Any]:
    """``{(nodes, network, n): Summary of raw-sdk[key] / contender[key], run by run}``."""
    by_run: dict[tuple[str, int, str, int], dict[int, float]] = defaultdict(dict)
    for s in samples:
        by_run[(s["contender"], s["nodes"], s["network"], s["n"])][s["run"]] = s[key]
    result = {}
    for (name, nodes, network, n), runs in by_run.items():
        raw = by_run.get(("raw-sdk", nodes, network, n), {})
        if name != contender or not raw:
            continue
        common = sorted(set(runs) & set(raw))
        ratios = stats.paired_ratios([raw[r] for r in common], [runs[r] for r in common])
        if ratios:
            result[(nodes, network, n)] = stats.summarise(ratios)
    return result


def _ratio_floors(samples: Samples, key: str, what: str) -> Iterator[Floor]:
    for (nodes, network, n), ratio in sorted(paired(samples, "reconciler", key).items()):
        ok = ratio.median >= 0.9
        gap = "" if ok else f"{(0.9 - ratio.median) / 0.9:.0%} short of 0.9x"
        yield Floor(
            f"{what} throughput, {nodes} node(s), N={n}, network {network}",
            ">= 0.9x raw SDK (paired)",
            f"{ratio.text('.2f')}x",
            ok,
            gap,
        )


def _at_most(name: str, value: float | None, limit: float, unit: str, fmt: str = ".3f") -> Floor:
    if value is None:
        return Floor(name, f"<= {limit:{fmt}} {unit}", "-", None)
    ok = value <= limit
    note = "" if ok else f"{value - limit:{fmt}} {unit} over ({value / limit:.1f}x the floor)"
    return Floor(name, f"<= {limit:{fmt}} {unit}", f"{value:{fmt}} {unit}", ok, note)


def _latency(results: dict[str, Any]) -> Iterator[Floor]:
    latency = results.get("latency") or {}
    for db, scale in (("sqlite", 1.0), ("postgresql", 2.0)):
        got = latency.get(db) or {}
        yield _at_most(f"insert-to-running p50, {db}", got.get("p50"), 0.3 * scale, "s")
        yield _at_most(f"insert-to-running p95, {db}", got.get("p95"), 0.6 * scale, "s")


def _drift(results: dict[str, Any]) -> Iterator[Floor]:
    got = (results.get("drift") or {}).get("reconciler") or {}
    for kind, label in (("rm", "docker rm -f"), ("stop", "docker stop")):
        yield _at_most(
            f"drift repair p50 after {label}", (got.get(kind) or {}).get("p50"), 0.5, "s"
        )


def refresh_calls(results: dict[str, Any]) -> dict[str, float] | None:
    """Median calls per node per forced refresh, by operation."""
    calls = ((results.get("steady") or {}).get("api_calls") or {}).get("refresh")
    if not calls:
        return None
    per_node = [counts for run in calls for counts in run.values()]
    ops = {op for counts in per_node for op in counts}
    return {op: stats.summarise([c.get(op, 0) for c in per_node]).median for op in sorted(ops)}


def _steady(results: dict[str, Any]) -> Iterator[Floor]:
    steady = results.get("steady") or {}
    noop = (steady.get("noop_pass") or {}).get("10000") or {}
    cpu = (noop.get("pass_cpu_ms") or {}).get("median")
    yield _at_most("no-op pass CPU at 10,000 rows (controller pass)", cpu, 100, "ms", ".1f")
    calls = refresh_calls(results)
    if calls is None:
        yield Floor("calls per node per refresh", "0 inspect, 1 list", "-", None)
    else:
        inspects = calls.get("GET /containers/{id}/json", 0)
        lists = calls.get("GET /containers/json", 0)
        images = calls.get("GET /images/json", 0)
        measured = f"{inspects:g} inspect, {lists:g} container list, {images:g} image list"
        note = f"plus {images:g} image list (2 list calls if both count)" if images else ""
        yield Floor(
            "calls per node per refresh",
            "0 inspect, 1 list",
            measured,
            inspects == 0 and lists == 1,
            note,
        )
    rss = (steady.get("rss") or {}).get("10000") or {}
    value = (rss.get("rss_mib") or {}).get("median")
    extra = noop.get("snapshot_mib") or 0.0
    floor = _at_most(
        "daemon RSS at 10,000 rows (+ est. snapshots)",
        value + extra if value is not None else None,
        150,
        "MiB",
        ".1f",
    )
    yield floor


def evaluate(results: dict[str, Any]) -> list[Floor]:
    samples = results.get("convergence") or []
    return [
        *_ratio_floors(samples, "converge_s", "convergence"),
        *_ratio_floors(samples, "remove_s", "removal"),
        *_latency(results),
        *_drift(results),
        *_steady(results),
    ]
