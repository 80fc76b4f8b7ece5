"""``make bench-fleet`` (issue 15): one controller, a thousand simulated nodes, 30,000 rows.

A benchmark, not a test: it prints tables and writes them to ``bench/results/fleet.md`` (and
every sample to ``fleet.json``); nothing is asserted, each goal is printed as pass/MISS.

Per database (SQLite file; PostgreSQL from ``sandbox.postgres``), on a fresh ``simengine``
fleet of ``--nodes`` engines (default latencies, ``simengine/latency.py``) registered as nodes
over loopback TCP, with ``reconciler run`` as a subprocess (default settings):

1. **Start**: seconds until every node is ``healthy``; threads, RSS.
2. **Converge** ``--rows`` rows inserted in one transaction from empty, until every status row
   is ``running``. *Engine ceiling*: a simulated engine answers any number of calls at once,
   each after its latency; reconciler runs at most ``max_per_node`` (4) actions per node at
   once, so the engines allow ``ceil(rows / nodes / 4) * (create + start latency)`` seconds;
   the ratio is that time over the measured time (1.0 = the controller costs nothing).
3. **Insert-to-running** of one row at that size, ``--inserts`` times one after another:
   from the INSERT's commit until its status row says ``running`` (polled every 5 ms).
4. **Idle** for ``--idle`` seconds: the daemon's CPU (share of one core), RSS, threads; engine
   calls per second summed over the fleet (``/_sim/stats``), with the per-second histogram
   (min/median/max and the busiest second, so synchronised bursts show); PostgreSQL
   transactions per second (``pg_stat_database``; SQLite has no server-side counter).
5. **Loss** of one node, then of ``--loss`` nodes at once (``/_sim/pause``: every call hangs,
   like a SIGSTOPped dockerd): seconds until every row is ``running`` again (rows of a lost
   node are rescheduled after the planner's node grace).
6. **No-op pass** (in this process, after the daemon stopped): a real ``Cluster`` on the same
   fleet and a real ``Controller`` on the same database, ``--passes`` passes with nothing to do:
   CPU (``thread_time``) and wall p50/p99, and SQL statements per pass.

Then **growth** (SQLite only): ``--growth`` node counts with 10 rows per node: start, converge,
idle CPU, threads, RSS, so what breaks first shows. **Profile**: py-spy over the idle window and
over the converge of the first database (``--no-profile`` leaves it out).

``--quick`` (100 nodes, 1,000 rows, SQLite only, short windows) is a smoke run of a few minutes.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import functools
import json
import math
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from bench import machine, stats, where
from reconciler.db import engine as db_engine
from reconciler.db import migrate
from sandbox import processes
from simengine import SimFleet
from simengine import latency as sim_latency

RESULTS = pathlib.Path(__file__).parent / "results"
IMAGE = "busybox:local"
MAX_PER_NODE = 4  # runtime.executor.Executor's default


@dataclass
class Options:
    nodes: int = 1000
    rows: int = 30000
    dbs: tuple[str, ...] = ("sqlite", "postgres")
    inserts: int = 100
    idle: float = 30.0
    passes: int = 20
    loss: int = 100
    growth: tuple[int, ...] = (100, 300)
    profile: bool = True
    out: pathlib.Path = RESULTS


# -- the daemon ---------------------------------------------------------------------------------
class DaemonProcess:
    """``reconciler run`` on ``url`` as a subprocess in its own session; stopped by pid."""

    def __init__(self, url: str, *, log_path: pathlib.Path, env: dict[str, str] | None = None):
        self.url = url
        self.log_path = log_path
        self._env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, store: sa.Engine, *, nodes: int, timeout: float) -> float:
        """Start; seconds until ``nodes`` nodes are healthy."""
        argv = [sys.executable, "-m", "reconciler", "--database-url", self.url, "run"]
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self._env},
            )
        processes.on_exit(self, self.stop)
        healthy = "SELECT count(*) FROM nodes WHERE health = 'healthy'"
        wait(lambda: self._alive() and scalar(store, healthy) == nodes, timeout, "healthy nodes")
        return time.monotonic() - started

    def _alive(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"reconciler exited ({self.proc.returncode}); see {self.log_path}")
        return True

    def threads(self) -> int:
        for line in pathlib.Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
        return 0

    def rss(self) -> float:
        return machine.rss_mib(self.pid) or 0.0

    def cpu(self) -> float:
        return machine.process_cpu(self.pid)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        processes.forget(self)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


# -- helpers ----------------------------------------------------------------------------------
def wait(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> float:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
    return time.monotonic()


def scalar(store: sa.Engine, sql: str, **params: object) -> Any:
    with store.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()


def running(store: sa.Engine) -> int:
    return int(scalar(store, "SELECT count(*) FROM container_status WHERE phase = 'running'"))


def prepare(url: str, urls: Sequence[str]) -> sa.Engine:
    migrate.upgrade(url)
    store = db_engine.make_engine(url)
    with store.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO nodes (name, url) VALUES (:name, :url)"),
            [{"name": f"s{i:04}", "url": u} for i, u in enumerate(urls, 1)],
        )
    return store


def insert(store: sa.Engine, names: Sequence[str]) -> None:
    with store.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO desired_containers (name, image, command) "
                "VALUES (:name, :image, :command)"
            ),
            [{"name": n, "image": IMAGE, "command": '["sleep", "3600"]'} for n in names],
        )


def fleet_stats(fleet: SimFleet) -> list[dict[str, Any]]:
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        return list(pool.map(lambda e: e.stats(), fleet.engines))


def calls_total(all_stats: list[dict[str, Any]]) -> int:
    return sum(sum(s["calls"].values()) for s in all_stats)


def per_second(all_stats: list[dict[str, Any]], first: int, last: int) -> list[int]:
    """Engine calls in each whole second from ``first`` to ``last`` (epoch), fleet-wide."""
    counts: collections.Counter[int] = collections.Counter()
    for s in all_stats:
        for second, n in s.get("per_second", {}).items():
            counts[int(second)] += n
    return [counts.get(t, 0) for t in range(first, last + 1)]


def pg_xacts(store: sa.Engine) -> int | None:
    if store.dialect.name != "postgresql":
        return None
    sql = (
        "SELECT xact_commit + xact_rollback FROM pg_stat_database "
        "WHERE datname = current_database()"
    )
    return int(scalar(store, sql))


def is_running(store: sa.Engine, name: str) -> bool:
    sql = "SELECT phase FROM container_status WHERE name = :n"
    return bool(scalar(store, sql, n=name) == "running")


def pcts(samples: Sequence[float], qs: Sequence[int] = (50, 90, 99)) -> dict[str, float]:
    return {f"p{q}": stats.percentile(samples, q) for q in qs}


@contextmanager
def py_spy(pid: int, out: pathlib.Path, enabled: bool) -> Iterator[dict[str, Any]]:
    """py-spy (``--gil --nonblocking``, 100 Hz) on ``pid`` for the block; its top functions."""
    result: dict[str, Any] = {}
    tool = where.ensure_py_spy()[0] if enabled else None
    if tool is None:
        yield result
        return
    out.unlink(missing_ok=True)
    argv = [tool, "record", "--pid", str(pid), "--rate", "100", "--format", "raw"]
    argv += ["--output", str(out), "--nonblocking", "--gil"]
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    try:
        yield result
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(60)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait(10)
        if out.exists():
            result.update(where.top_entries(out.read_text()))


# -- the phases -------------------------------------------------------------------------------
def converge(store: sa.Engine, rows: int, nodes: int, prefix: str) -> dict[str, Any]:
    names = [f"{prefix}{i:05}" for i in range(rows)]
    started = time.monotonic()
    insert(store, names)
    timeline: list[tuple[float, int]] = []

    def done() -> bool:
        timeline.append((time.monotonic() - started, running(store)))
        return timeline[-1][1] >= rows

    wait(done, timeout=max(600.0, rows / 20), what=f"{rows} running rows", interval=0.5)
    seconds = time.monotonic() - started
    latencies = sim_latency.Latencies()
    per_container = latencies.create + latencies.start
    ceiling = math.ceil(rows / nodes / MAX_PER_NODE) * per_container
    return {
        "rows": rows,
        "seconds": seconds,
        "per_second": rows / seconds,
        "ceiling_seconds": ceiling,
        "ratio": ceiling / seconds,
        "timeline": timeline[:: max(1, len(timeline) // 60)],
    }


def insert_latency(store: sa.Engine, count: int) -> dict[str, Any]:
    samples = []
    for i in range(count):
        name = f"probe{i:04}"
        started = time.monotonic()
        insert(store, [name])
        wait(functools.partial(is_running, store, name), 60, name, interval=0.005)
        samples.append(time.monotonic() - started)
    with store.begin() as conn:
        conn.execute(sa.text("DELETE FROM desired_containers WHERE name LIKE 'probe%'"))
    left = "SELECT count(*) FROM container_status WHERE name LIKE 'probe%'"
    try:
        wait(lambda: scalar(store, left) == 0, 120, "probe rows removed")
    except TimeoutError as e:
        say(f"warning: {e}")  # measured anyway; the idle window then includes the removals
    return {"samples": samples, **pcts(samples)}


def idle(daemon: DaemonProcess, fleet: SimFleet, store: sa.Engine, seconds: float) -> dict:
    time.sleep(2.0)
    first = int(time.time()) + 1
    cpu0, x0, t0 = daemon.cpu(), pg_xacts(store), time.monotonic()
    time.sleep(seconds)
    cpu1, x1, t1 = daemon.cpu(), pg_xacts(store), time.monotonic()
    last = int(time.time()) - 1
    histogram = per_second(fleet_stats(fleet), first, last)
    span = t1 - t0
    return {
        "seconds": span,
        "cpu_share": (cpu1 - cpu0) / span,
        "rss_mib": daemon.rss(),
        "threads": daemon.threads(),
        "calls_per_s": sum(histogram) / max(1, len(histogram)),
        "calls_histogram": histogram,
        "calls_busiest": max(histogram, default=0),
        "calls_median": stats.percentile(histogram, 50) if histogram else 0,
        "db_xacts_per_s": None if x0 is None or x1 is None else (x1 - x0) / span,
    }


def loss(fleet: SimFleet, store: sa.Engine, rows: int, count: int) -> dict[str, Any]:
    lost = fleet.engines[-count:]
    started = time.monotonic()
    for engine in lost:
        engine.pause()
    try:
        wait(lambda: running(store) < rows, 120, "the lost rows to be noticed", interval=0.2)
        noticed = time.monotonic() - started
        try:
            wait(lambda: running(store) >= rows, 240, "all rows running again", interval=0.5)
            back: float | None = time.monotonic() - started
        except TimeoutError:
            back = None  # not within 4 minutes (no rescheduling, or too slow): reported so
    finally:
        for engine in lost:
            engine.resume()
    return {
        "nodes": count,
        "noticed_s": noticed,
        "all_running_s": back,
        "running_after": running(store),
    }


def noop_passes(url: str, passes: int) -> dict[str, Any]:
    """Real Cluster + Controller in this process; ``passes`` passes with nothing to do."""
    from reconciler.db.store import Store
    from reconciler.nodes import cluster as cluster_mod
    from reconciler.runtime import controller as controller_mod
    from reconciler.settings import Settings

    sql = db_engine.make_engine(url)
    statements = [0]
    sa.event.listen(
        sql, "before_cursor_execute", lambda *a: statements.__setitem__(0, statements[0] + 1)
    )
    settings = Settings(database_url=url)
    cluster = cluster_mod.Cluster(store=Store(sql), settings=settings)
    cluster.start()
    ctl = controller_mod.Controller(store=Store(sql), cluster=cluster, settings=settings)
    try:
        wait(
            lambda: bool(cluster.snapshots()) and cluster.wait_ready(timeout=1),
            300,
            "cluster ready",
        )
        first = ctl.reconcile()
        cpu, wall, per_pass = [], [], []
        for _ in range(passes):
            n0, t, w = statements[0], time.thread_time(), time.perf_counter()
            result = ctl.reconcile()
            cpu.append((time.thread_time() - t) * 1000)
            wall.append((time.perf_counter() - w) * 1000)
            per_pass.append(statements[0] - n0)
            time.sleep(0.2)
        return {
            "first_changes": first.plan.summary(),
            "last_changes": result.plan.summary(),
            "cpu_ms": {**pcts(cpu, (50, 99)), "samples": cpu},
            "wall_ms": {**pcts(wall, (50, 99)), "samples": wall},
            "statements_per_pass": stats.percentile(per_pass, 50),
        }
    finally:
        ctl.close()
        cluster.stop()
        sql.dispose()


# -- one database, one size -------------------------------------------------------------------
def run_database(kind: str, opts: Options, workdir: pathlib.Path, *, profile: bool) -> dict:
    result: dict[str, Any] = {"database": kind, "nodes": opts.nodes, "rows": opts.rows}
    with database(kind, workdir) as url, SimFleet(opts.nodes).start() as fleet:
        store = prepare(url, fleet.urls)
        daemon = DaemonProcess(url, log_path=workdir / f"fleet-{kind}.log")
        try:
            healthy = daemon.start(store, nodes=opts.nodes, timeout=600)
            result["start"] = {
                "healthy_s": healthy,
                "threads": daemon.threads(),
                "rss_mib": daemon.rss(),
            }
            say(f"{kind}: {opts.nodes} nodes healthy in {healthy:.1f} s")
            with py_spy(daemon.pid, workdir / f"spy-converge-{kind}.txt", profile) as spy_c:
                result["converge"] = converge(store, opts.rows, opts.nodes, "f")
            result["converge"]["profile"] = spy_c
            result["converge"]["threads"] = daemon.threads()
            say(f"{kind}: {opts.rows} rows running in {result['converge']['seconds']:.1f} s")
            result["insert"] = insert_latency(store, opts.inserts)
            say(f"{kind}: insert-to-running p99 {result['insert']['p99'] * 1000:.0f} ms")
            with py_spy(daemon.pid, workdir / f"spy-idle-{kind}.txt", profile) as spy_i:
                result["idle"] = idle(daemon, fleet, store, opts.idle)
            result["idle"]["profile"] = spy_i
            say(f"{kind}: idle {result['idle']['cpu_share'] * 100:.1f} % of a core")
            result["loss"] = [loss(fleet, store, opts.rows, n) for n in sorted({1, opts.loss}) if n]
            say(f"{kind}: loss {result['loss']}")
        finally:
            daemon.stop()
        result["noop"] = noop_passes(url, opts.passes)
        say(f"{kind}: no-op pass p99 {result['noop']['wall_ms']['p99']:.0f} ms wall")
        store.dispose()
    return result


def growth(opts: Options, workdir: pathlib.Path) -> list[dict[str, Any]]:
    out = []
    for nodes in opts.growth:
        entry: dict[str, Any] = {"nodes": nodes, "rows": nodes * 10}
        try:
            with database("sqlite", workdir) as url, SimFleet(nodes).start() as fleet:
                store = prepare(url, fleet.urls)
                daemon = DaemonProcess(url, log_path=workdir / f"growth-{nodes}.log")
                try:
                    entry["healthy_s"] = daemon.start(store, nodes=nodes, timeout=900)
                    entry["start_threads"] = daemon.threads()
                    entry["converge_s"] = converge(store, nodes * 10, nodes, "g")["seconds"]
                    entry.update(
                        {
                            k: v
                            for k, v in idle(daemon, fleet, store, min(opts.idle, 20)).items()
                            if k
                            in ("cpu_share", "rss_mib", "threads", "calls_per_s", "calls_busiest")
                        }
                    )
                finally:
                    daemon.stop()
                store.dispose()
        except (TimeoutError, RuntimeError) as e:
            entry["error"] = str(e)
        say(f"growth {nodes}: {entry}")
        out.append(entry)
    return out


@contextmanager
def database(kind: str, workdir: pathlib.Path) -> Iterator[str]:
    if kind == "sqlite":
        path = workdir / "fleet.db"
        for suffix in ("", "-wal", "-shm"):
            pathlib.Path(f"{path}{suffix}").unlink(missing_ok=True)
        yield f"sqlite:///{path}"
        return
    from sandbox.postgres import SandboxPostgres

    with SandboxPostgres() as pg:
        yield pg.create_database("fleet")


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


# -- the report --------------------------------------------------------------------------------
def _mark(ok: bool) -> str:
    return "pass" if ok else "MISS"


def _loss_text(d: dict[str, Any], *, i: int) -> str:
    entry = d["loss"][i]
    back = entry["all_running_s"]
    done = "not within 240 s" if back is None else f"{back:.1f} s"
    return f"{done} (noticed {entry['noticed_s']:.1f} s, back {entry['running_after']} running)"


def report(results: dict[str, Any]) -> str:
    lines = [f"# bench-fleet ({results['when']}, {results['machine']})", ""]
    dbs = results["databases"]
    if dbs:
        n, r = dbs[0]["nodes"], dbs[0]["rows"]
        lines += [f"{n:,} simulated nodes, {r:,} rows; `reconciler run` with default settings.", ""]
        lines += [
            "| figure | " + " | ".join(d["database"] for d in dbs) + " | goal |",
            "| --- | " + " | ".join("---" for _ in dbs) + " | --- |",
        ]

        def row(label: str, fn: Callable[[dict], str], goal: str = "") -> None:
            lines.append(f"| {label} | " + " | ".join(fn(d) for d in dbs) + f" | {goal} |")

        row("start: all nodes healthy", lambda d: f"{d['start']['healthy_s']:.1f} s")
        row(
            "start: threads / RSS",
            lambda d: f"{d['start']['threads']} / {d['start']['rss_mib']:.0f} MiB",
        )
        row(
            "converge from empty",
            lambda d: (
                f"{d['converge']['seconds']:.1f} s ({d['converge']['per_second']:.0f} rows/s)"
            ),
        )
        row(
            "… engine ceiling / ratio",
            lambda d: f"{d['converge']['ceiling_seconds']:.1f} s / {d['converge']['ratio']:.3f}",
        )
        row(
            "insert-to-running p50/p90/p99",
            lambda d: (
                "/".join(f"{d['insert'][p] * 1000:.0f}" for p in ("p50", "p90", "p99"))
                + f" ms {_mark(d['insert']['p99'] <= 0.4)}"
            ),
            "p99 ≤ 400 ms (aim 100)",
        )
        row(
            "no-op pass CPU p50/p99",
            lambda d: f"{d['noop']['cpu_ms']['p50']:.0f}/{d['noop']['cpu_ms']['p99']:.0f} ms",
        )
        row(
            "no-op pass wall p50/p99",
            lambda d: (
                f"{d['noop']['wall_ms']['p50']:.0f}/{d['noop']['wall_ms']['p99']:.0f} ms "
                f"{_mark(d['noop']['wall_ms']['p99'] <= 400)}"
            ),
            "p99 ≤ 400 ms",
        )
        row("SQL statements per no-op pass", lambda d: f"{d['noop']['statements_per_pass']:.0f}")
        row(
            "idle CPU",
            lambda d: (
                f"{d['idle']['cpu_share'] * 100:.1f} % {_mark(d['idle']['cpu_share'] <= 0.10)}"
            ),
            "≤ 10 % of a core",
        )
        row(
            "idle RSS / threads",
            lambda d: (
                f"{d['idle']['rss_mib']:.0f} MiB {_mark(d['idle']['rss_mib'] <= 1024)} / "
                f"{d['idle']['threads']}"
            ),
            "≤ 1 GiB",
        )
        row(
            "idle engine calls/s (median s, busiest s)",
            lambda d: (
                f"{d['idle']['calls_per_s']:.0f} "
                f"({d['idle']['calls_median']}, {d['idle']['calls_busiest']})"
            ),
        )
        row(
            "idle DB transactions/s",
            lambda d: (
                "n/a"
                if d["idle"]["db_xacts_per_s"] is None
                else f"{d['idle']['db_xacts_per_s']:.1f}"
            ),
        )
        for i in range(len(dbs[0].get("loss", []))):
            k = dbs[0]["loss"][i]["nodes"]
            row(
                f"loss of {k} node(s): all running again",
                functools.partial(_loss_text, i=i),
            )
        lines += ["", "Idle engine calls per second, fleet-wide (one number per second):", ""]
        for d in dbs:
            lines.append(
                f"- {d['database']}: {' '.join(str(c) for c in d['idle']['calls_histogram'])}"
            )
        for d in dbs:
            for phase in ("converge", "idle"):
                prof = d[phase].get("profile") or {}
                top = prof.get("own") or []
                if top:
                    lines += ["", f"py-spy, {d['database']}, {phase} (own samples, top 8):", ""]
                    lines += [f"- {e['share'] * 100:.1f} % {e['function']}" for e in top[:8]]
    if results.get("growth"):
        lines += [
            "",
            "Growth (SQLite, 10 rows per node):",
            "",
            "| nodes | healthy | converge | idle CPU | RSS | threads "
            "| idle calls/s (busiest s) | note |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for g in results["growth"]:
            if "error" in g and "cpu_share" not in g:
                lines.append(f"| {g['nodes']:,} | | | | | | | {g['error']} |")
                continue
            lines.append(
                f"| {g['nodes']:,} | {g['healthy_s']:.1f} s | {g['converge_s']:.1f} s | "
                f"{g['cpu_share'] * 100:.1f} % | {g['rss_mib']:.0f} MiB | {g['threads']} | "
                f"{g['calls_per_s']:.0f} ({g['calls_busiest']}) | |"
            )
    lines += ["", f"Whole run: {results['seconds'] / 60:.1f} minutes.", ""]
    return "\n".join(lines)


def parse(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(
        prog="python -m bench.fleet_scale", description=__doc__.split("\n")[0]
    )
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--rows", type=int, default=30000)
    p.add_argument("--dbs", default="sqlite,postgres")
    p.add_argument("--inserts", type=int, default=100)
    p.add_argument("--idle", type=float, default=30.0)
    p.add_argument("--passes", type=int, default=20)
    p.add_argument("--loss", type=int, default=100, help="nodes lost at once (0: no loss phase)")
    p.add_argument(
        "--growth", default="100,300", help="node counts besides --nodes ('' to skip; 3000 fits)"
    )
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--quick", action="store_true", help="100 nodes, 1,000 rows, SQLite, short")
    p.add_argument("--out", type=pathlib.Path, default=RESULTS)
    a = p.parse_args(argv)
    opts = Options(
        nodes=a.nodes,
        rows=a.rows,
        dbs=tuple(x for x in a.dbs.split(",") if x),
        inserts=a.inserts,
        idle=a.idle,
        passes=a.passes,
        loss=a.loss,
        growth=tuple(int(x) for x in a.growth.split(",") if x),
        profile=not a.no_profile,
        out=a.out,
    )
    if a.quick:
        opts = Options(
            nodes=100,
            rows=1000,
            dbs=("sqlite",),
            inserts=20,
            idle=10,
            passes=5,
            loss=10,
            growth=(),
            profile=False,
            out=a.out,
        )
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse(argv)
    workdir = opts.out / "tmp"
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at start",
        "options": {
            k: (list(v) if isinstance(v, tuple) else str(v) if isinstance(v, pathlib.Path) else v)
            for k, v in vars(opts).items()
        },
        "databases": [],
    }

    def save() -> str:
        results["seconds"] = time.monotonic() - started
        text = report(results)
        (opts.out / "fleet.md").write_text(text)
        (opts.out / "fleet.json").write_text(json.dumps(results, indent=1, default=str))
        return text

    for i, kind in enumerate(opts.dbs):
        try:
            entry = run_database(kind, opts, workdir, profile=opts.profile and i == 0)
        except (TimeoutError, RuntimeError) as e:
            say(f"{kind}: {e}")
            continue
        results["databases"].append(entry)
        save()
    results["growth"] = growth(opts, workdir)
    print(save())
    return 0


if __name__ == "__main__":
    sys.exit(main())
