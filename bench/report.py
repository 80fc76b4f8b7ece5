"""Present a run: markdown tables (also printed), the JSON of every sample, the PNG chart.

``write(results, folder)`` writes ``latest.md``, ``latest.json`` and ``convergence.png``.
Figures are ``median (min-max)`` over the runs; ratios are paired within a run (``floors``).
"""

from __future__ import annotations

import json
import pathlib
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from bench import chart, floors, stats

CONTENDERS = ("reconciler", "raw-sdk", "swarm", "compose")


def write(results: dict[str, Any], folder: pathlib.Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    results["floors"] = [vars(f) | {"verdict": f.verdict} for f in floors.evaluate(results)]
    (folder / "latest.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (folder / "latest.md").write_text(markdown(results))
    if results.get("convergence"):
        m = results["machine"]
        title = f"reconciler vs raw SDK, swarm, compose; {m['nproc']} cores, {m['dockerd']}"
        chart.write(results["convergence"], folder / "convergence.png", title)


def console(results: dict[str, Any]) -> str:
    return markdown(results)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(results: dict[str, Any]) -> str:
    parts = ["# reconciler benchmarks (issue 5)", _machine(results)]
    for title, section in (
        ("Convergence", _convergence),
        ("Removal", _removal),
        ("--network none", _network_none),
        ("Insert-to-running latency", _latency),
        ("Drift repair", _drift),
        ("Steady state", _steady),
        ("Where the time goes", _where),
        ("Floors", _floors),
    ):
        body = section(results)
        if body:
            parts.append(f"## {title}\n\n{body}")
    return "\n\n".join(parts) + "\n"


def _machine(results: dict[str, Any]) -> str:
    m = results["machine"]
    rest = _rest_share(results.get("convergence") or [])
    lines = [
        f"Machine: {m['nproc']} cores ({m['cpu']}), {m['memory_gib']} GiB, kernel {m['kernel']}, "
        f"{m['dockerd']}, docker-compose {m.get('docker_compose') or 'absent'}, "
        f"Python {m['python']}; reconciler at {m.get('git', '?')}.",
        f"Load average at start {m['load_average_at_start']}"
        + (
            f"; other processes used {rest} of the machine's CPU during the convergence windows"
            if rest
            else ""
        )
        + ".",
        f"Arguments: `{_args(results.get('args') or {})}`; took "
        f"{(results.get('seconds') or 0) / 60:.1f} min.",
    ]
    for name, error in (results.get("errors") or {}).items():
        lines.append(f"**{name} failed**: {error}")
    if results.get("compose") and not results["compose"].get("binary"):
        lines.append(f"docker-compose: {results['compose']['note']}.")
    return "  \n".join(lines)


def _args(args: dict[str, Any]) -> str:
    keys = ("only", "sizes", "nodes", "runs", "none_size", "quick")
    return " ".join(f"{k}={args[k]}" for k in keys if k in args)


def _rest_share(samples: list[dict[str, Any]]) -> str:
    shares = [s["cpu"]["rest"] / s["cpu"]["machine"] for s in samples if s["cpu"]["machine"]]
    return stats.summarise(shares).text(".0%") if shares else ""


# -- convergence ----------------------------------------------------------------------------------
def _groups(samples: list[dict[str, Any]], network: str) -> dict[tuple[int, int], dict]:
    grouped: dict[tuple[int, int], dict[str, list[dict[str, Any]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for s in samples:
        if s["network"] == network:
            grouped[(s["nodes"], s["n"])][s["contender"]].append(s)
    return grouped


def _cell(group: list[dict[str, Any]] | None, key: str, n: int) -> str:
    if not group:
        return "-"
    seconds = stats.summarise([s[key] for s in group])
    return f"{seconds.text('.2f')} s, {n / seconds.median:.1f}/s"


def _speed_table(results: dict[str, Any], key: str, network: str) -> str:
    samples = results.get("convergence") or []
    grouped = _groups(samples, network)
    if not grouped:
        return ""
    ratios = floors.paired(samples, "reconciler", key)
    present = [c for c in CONTENDERS if any(c in g for g in grouped.values())]
    rows = []
    for (nodes, n), by in sorted(grouped.items()):
        ratio = ratios.get((nodes, network, n))
        rows.append(
            [
                str(nodes),
                str(n),
                *(_cell(by.get(c), key, n) for c in present),
                f"{ratio.text('.2f')}x" if ratio else "-",
            ]
        )
    return _table(["nodes", "N", *present, "reconciler ÷ raw throughput"], rows)


def _convergence(results: dict[str, Any]) -> str:
    table = _speed_table(results, "converge_s", "unset")
    if not table:
        return ""
    return (
        "Seconds from the start (reconciler: the INSERT of N rows in one transaction) until all "
        "N busybox containers run, and containers per second; network mode unset for every "
        "contender; swarm mode and compose on 1 node only. Median (min-max) of the runs. "
        "Chart: `convergence.png`.\n\n" + table
    )


def _removal(results: dict[str, Any]) -> str:
    table = _speed_table(results, "remove_s", "unset")
    return (
        (
            "Seconds until every container of the previous table is gone (reconciler: one "
            "DELETE).\n\n" + table
        )
        if table
        else ""
    )


def _network_none(results: dict[str, Any]) -> str:
    converge = _speed_table(results, "converge_s", "none")
    remove = _speed_table(results, "remove_s", "none")
    if not converge:
        return ""
    return (
        "The same with `--network none` (dockerd runs a prestart hook per container).\n\n"
        f"{converge}\n\nRemoval:\n\n{remove}"
    )


# -- latency, drift -------------------------------------------------------------------------------
def _latency(results: dict[str, Any]) -> str:
    latency = results.get("latency")
    if not latency:
        return ""
    rows = [
        [
            db,
            f"{got['p50']:.3f} s",
            f"{got['p95']:.3f} s",
            f"{got['summary']['min']:.3f}-{got['summary']['max']:.3f} s",
            str(len(got["summary"]["samples"])),
        ]
        for db, got in latency.items()
    ]
    return (
        "One row inserted into an idle daemon (1 node) until its status row says running.\n\n"
        + _table(["database", "p50", "p95", "min-max", "samples"], rows)
    )


def _drift(results: dict[str, Any]) -> str:
    drift = results.get("drift")
    if not drift:
        return ""
    rows = []
    for who, got in drift.items():
        rows.append([who, *(_p50(got[k]) for k in ("rm", "stop"))])
    return (
        "From the engine call returning until a container of that row/replica runs again; "
        "p50 (min-max). `stop` is `docker stop -t 0`. swarm-default: all replicas at once "
        "(the 5 s restart delay dominates).\n\n"
        + _table(["who", "docker rm -f", "docker stop"], rows)
    )


def _p50(got: dict[str, Any]) -> str:
    spread = got["summary"]
    return f"{got['p50']:.2f} s ({spread['min']:.2f}-{spread['max']:.2f})"


# -- steady state ---------------------------------------------------------------------------------
def _steady(results: dict[str, Any]) -> str:
    steady = results.get("steady")
    if not steady:
        return ""
    calls = floors.refresh_calls(results) or {}
    passes = [c for run in steady["api_calls"]["noop_pass"] for c in run.values()]
    pass_calls = sum(sum(c.values()) for c in passes) / max(1, len(passes))
    lines = [
        "API calls per node per forced full refresh (median): "
        + (", ".join(f"`{op}` {v:g}" for op, v in calls.items()) or "none")
        + f"; per no-op pass: {pass_calls:g} (mean over nodes and passes; "
        f"{steady['api_calls']['containers_per_node']} running containers per node). "
        f"While creating them: {_per_container(steady['api_calls'], 'converge')} per container "
        "(the raw SDK needs 2: create, start); while removing them: "
        f"{_per_container(steady['api_calls'], 'remove')} (the raw SDK: 1 remove).",
    ]
    rows = []
    for n, got in steady["noop_pass"].items():
        rss = steady["rss"].get(n, {})
        rows.append(
            [
                f"{int(n):,}",
                _ms(got["pass_cpu_ms"]),
                _ms(got["planner_cpu_ms"]),
                _mib(rss.get("rss_mib")),
                f"{got['snapshot_mib']:.1f} MiB",
                _fmt(rss.get("first_pass_s"), ".2f", " s"),
                _fmt(rss.get("idle_cpu_s_per_s"), ".2f"),
            ]
        )
    base = steady["rss"].get("0", {})
    lines.append(
        "No-op pass CPU: the real `Controller.reconcile` over SQLite rows with synthetic node "
        "snapshots (3 nodes, every row running); planner alone from `bench_planner`. RSS: "
        "`reconciler run` holding the rows pinned to a non-existent node (unschedulable, no "
        f"containers); an empty daemon is {_mib(base.get('rss_mib'))}; the snapshots column "
        "estimates what real containers would add (tracemalloc). Idle CPU with `--interval 1`.\n\n"
        + _table(
            [
                "rows",
                "no-op pass CPU",
                "planner CPU",
                "daemon RSS",
                "+ snapshots",
                "first pass",
                "idle CPU s/s",
            ],
            rows,
        )
    )
    return "\n\n".join(lines)


def _per_container(api_calls: dict[str, Any], phase: str) -> str:
    """Calls per container while creating (``converge``) or removing them, by operation."""
    by_node = api_calls.get(phase) or {}
    total: dict[str, int] = defaultdict(int)
    for counts in by_node.values():
        for op, count in counts.items():
            total[op] += count
    containers = api_calls["containers_per_node"] * max(1, len(by_node))
    parts = [f"`{op}` {c / containers:.2f}" for op, c in sorted(total.items()) if c]
    return f"{sum(total.values()) / containers:.2f} calls (" + ", ".join(parts) + ")"


def _fmt(summary: dict[str, Any] | None, fmt: str, unit: str = "") -> str:
    if not summary:
        return "-"
    return f"{summary['median']:{fmt}}{unit} ({summary['min']:{fmt}}-{summary['max']:{fmt}})"


def _ms(summary: dict[str, Any] | None) -> str:
    return _fmt(summary, ".1f", " ms")


def _mib(summary: dict[str, Any] | None) -> str:
    return _fmt(summary, ".1f", " MiB")


# -- where the time goes --------------------------------------------------------------------------
def _where(results: dict[str, Any]) -> str:
    where = results.get("profile")
    if not where:
        return ""
    rows = [_where_row(who, got) for who, got in where["split"].items()]
    text = (
        f"CPU seconds during the convergence of N={where['n']} containers on 1 node (the "
        "client column is the bench process and its children: the SDK calls, compose).\n\n"
        + _table(
            [
                "contender",
                "wall",
                "reconciler",
                "engines",
                "client",
                "rest",
                "machine",
                "reconciler or client/container",
                "engines/container",
            ],
            rows,
        )
    )
    return text + "\n\n" + "\n\n".join(_profile(where["profile"]))


def _where_row(who: str, got: dict[str, Any]) -> list[str]:
    ours = who == "reconciler"
    cpu = got["cpu_s"]
    return [
        who,
        _fmt(got["converge_s"], ".2f", " s"),
        _fmt(cpu["reconciler"], ".2f", " s") if ours else "-",
        *(_fmt(cpu[k], ".2f", " s") for k in ("engines", "bench", "rest", "machine")),
        _fmt(got["reconciler_ms_per_container" if ours else "client_ms_per_container"], ".1f",
             " ms"),
        _fmt(got["engines_ms_per_container"], ".0f", " ms"),
    ]  # fmt: skip


def _profile(profile: dict[str, Any]) -> Iterator[str]:
    if not profile.get("samples"):
        yield f"Profile: {profile.get('error') or profile.get('note')}."
        return
    yield (
        f"py-spy, GIL-holding samples of the reconciler process during one more convergence "
        f"({profile['samples']} samples at 200 Hz, {profile['cpu']['reconciler']:.2f} s CPU):"
    )
    for key, title in (
        ("own", "own time"),
        ("reconciler", "inclusive, reconciler's modules"),
        ("packages", "own time by package"),
    ):
        rows = [[f"{e['share']:.1%}", f"`{e['function']}`"] for e in profile[key][:15]]
        yield f"Top {title}:\n\n" + _table(["share", "function"], rows)


def _floors(results: dict[str, Any]) -> str:
    rows = [[f.name, f.target, f.measured, f.verdict, f.note] for f in floors.evaluate(results)]
    return _table(["floor", "target", "measured", "verdict", "by how much"], rows)
