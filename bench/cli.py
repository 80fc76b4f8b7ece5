"""``python -m bench``: flags, the run, and cleanup that always happens.

Engines are started once for the whole run and removed in a ``finally`` (also on Ctrl-C; the
sandbox's own exit hooks cover SIGTERM). Each measurement cleans the engines before it starts.
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from bench import contenders, convergence, drift, latency, machine, report, steady, where
from bench.fleet import BenchFleet

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
MEASUREMENTS = ("convergence", "latency", "drift", "steady", "profile")


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def _names(text: str) -> tuple[str, ...]:
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    unknown = set(names) - set(MEASUREMENTS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown measurement(s): {', '.join(sorted(unknown))}")
    return names


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark reconciler against the raw docker SDK, swarm mode and "
        "docker-compose on sandboxed engines (issue 5).",
    )
    parser.add_argument(
        "--only",
        type=_names,
        default=MEASUREMENTS,
        help=f"comma-separated subset of {','.join(MEASUREMENTS)}",
    )
    parser.add_argument(
        "--sizes",
        type=_ints,
        default=None,
        help="convergence sizes N (default 50,100; --full 50,100,200; --quick 10,20)",
    )
    parser.add_argument("--nodes", type=_ints, default=(1, 3), help="node counts (default 1,3)")
    parser.add_argument(
        "--runs", type=int, default=None, help="runs per figure (default 2; --full 3)"
    )
    parser.add_argument(
        "--none-size",
        type=int,
        default=None,
        help="N of the --network none variant (default 50; 0 = skip)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes, 1 run, fewer samples: a smoke check of every part",
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="the whole set: sizes 50,100,200, 3 runs (about 22 minutes here; the default, "
        "about 10)",
    )
    parser.add_argument(
        "--out", type=pathlib.Path, default=RESULTS, help="results folder (default bench/results)"
    )
    parser.add_argument("--no-compose", action="store_true", help="leave docker-compose out")
    args = parser.parse_args(argv)
    quick = args.quick
    full = args.full and not quick
    args.sizes = args.sizes or ((10, 20) if quick else (50, 100, 200) if full else (50, 100))
    args.runs = args.runs or (1 if quick else 3 if full else 2)
    if args.none_size is None:
        args.none_size = 10 if quick else 50
    args.samples = 5 if quick else 20  # latency samples
    args.drift_samples = 3 if quick else 10
    args.steady_sizes = (1_000,) if quick else (1_000, 10_000)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = time.monotonic()
    workdir = args.out / "tmp"
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": machine.facts(), "args": _args_dict(args)}
    print(f"machine: {results['machine']}", flush=True)
    fleet = BenchFleet(max(args.nodes))
    try:
        print(f"starting {max(args.nodes)} sandbox engine(s)...", flush=True)
        fleet.start()
        for name in MEASUREMENTS:
            if name in args.only:
                measure = functools.partial(_MEASURE[name], fleet, args, workdir, results)
                _section(name, measure, results)
    except KeyboardInterrupt:
        print("interrupted: cleaning up", file=sys.stderr, flush=True)
        return 130
    finally:
        fleet.close()
    results["seconds"] = time.monotonic() - started
    report.write(results, args.out)
    print(report.console(results), flush=True)
    print(
        f"wrote {args.out}/latest.md, latest.json, convergence.png "
        f"in {results['seconds'] / 60:.1f} min",
        flush=True,
    )
    return 0


def _section(name: str, measure: Callable[[], Any], results: dict[str, Any]) -> None:
    """Run one measurement; a failure is recorded (and the engines cleaned), not fatal."""
    print(f"== {name}", flush=True)
    t = time.monotonic()
    try:
        results[name] = measure()
    except Exception as e:
        traceback.print_exc()
        results.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}"
    print(f"== {name} took {time.monotonic() - t:.0f} s", flush=True)


def _args_dict(args: argparse.Namespace) -> dict[str, Any]:
    return json.loads(json.dumps(vars(args), default=str))


def _convergence(
    fleet: BenchFleet, args: argparse.Namespace, workdir: pathlib.Path, results: dict[str, Any]
) -> Any:
    compose, note = (None, "left out (--no-compose)")
    if not args.no_compose:
        compose, note = contenders.ensure_compose()
    results["compose"] = {"binary": compose, "note": note}
    setup = convergence.Setup(
        sizes=args.sizes,
        node_counts=args.nodes,
        runs=args.runs,
        none_size=args.none_size or None,
        compose=compose,
        workdir=workdir,
    )
    return convergence.run(fleet, setup)


_MEASURE: dict[str, Callable[[BenchFleet, argparse.Namespace, pathlib.Path, dict[str, Any]], Any]]
_MEASURE = {
    "convergence": _convergence,
    "latency": lambda fleet, args, workdir, _: latency.run(
        fleet, samples=args.samples, workdir=workdir
    ),
    "steady": lambda fleet, args, workdir, _: steady.run(
        fleet,
        node_count=max(args.nodes),
        sizes=args.steady_sizes,
        runs=args.runs,
        workdir=workdir,
    ),
    "profile": lambda fleet, args, workdir, results: where.run(
        fleet,
        n=max(args.sizes),
        runs=args.runs,
        convergence=results.get("convergence"),
        workdir=workdir,
    ),
    "drift": lambda fleet, args, workdir, _: drift.run(
        fleet, samples=args.drift_samples, workdir=workdir
    ),
}
