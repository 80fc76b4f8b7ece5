"""Takeover benchmark: how long a standby takes to lead, and what a standby costs.

    .venv/bin/python -m bench.takeover [--runs 10] [--lease-duration 15 --renew-deadline 10
                                        --retry-period 2]

A benchmark, not a test: it prints numbers and asserts nothing. Two sandboxed engines and a
throwaway PostgreSQL; every daemon is a ``reconciler run`` subprocess stopped by its pid.

* **takeover after SIGKILL / SIGTERM** (``--runs`` each): the leader is signalled while a
  standby runs (nodes connected, warm); a row is inserted at that moment. *lease* is the time
  until another controller holds the lease (``leases.holder``), *first action* the time until
  that row is running (the new leader acted). The killed daemon is started again as the next
  standby.
* **cold start**: a daemon started with the lease free and a row waiting, until the row runs:
  what a takeover would cost on top if standbys did not keep their nodes connected.
* **a standby's cost**: CPU and RSS of an idle standby (``/proc``) over ``--window`` seconds,
  and the database transactions per second it adds (``pg_stat_database.xact_commit`` with and
  without it, the leader idle in both).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import docker
import sqlalchemy as sa

from bench.daemon import prepare_database
from reconciler import settings
from sandbox import EngineFleet, SandboxEngine
from sandbox import postgres as sandbox_postgres

T = TypeVar("T")
RECONCILER = [sys.executable, "-m", "reconciler"]
TICKS = os.sysconf("SC_CLK_TCK")
#: Several daemons on one machine: no /metrics port each (where that option exists).
_NO_HTTP = ["--http", ""] if "http" in settings.field_names() else []


def wait(predicate: Callable[[], T], timeout: float, interval: float = 0.01) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout}s for {predicate}")
        time.sleep(interval)


class Daemon:
    def __init__(self, url: str, logs: Path, identity: str, lease: list[str]) -> None:
        self.identity = identity
        self.log = logs / f"{identity}.log"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    *RECONCILER,
                    "--database-url",
                    url,
                    "run",
                    "--identity",
                    identity,
                    *lease,
                    *_NO_HTTP,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def warm(self, nodes: int) -> bool:
        return self.log.read_bytes().count(b"is healthy") >= nodes

    def stop(self, sig: signal.Signals = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        self.proc.wait(timeout=60)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")


class Bench:
    def __init__(self, url: str, engines: list[SandboxEngine], logs: Path, lease: list[str]):
        self.url, self.engines, self.logs, self.lease = url, engines, logs, lease
        self.store = prepare_database(url, engines)
        self.daemons: dict[str, Daemon] = {}
        self._n = 0

    def start(self) -> Daemon:
        self._n += 1
        d = Daemon(self.url, self.logs, f"d{self._n}", self.lease)
        self.daemons[d.identity] = d
        wait(lambda: d.warm(len(self.engines)), 90, 0.05)
        return d

    def holder(self) -> str | None:
        with self.store.connect() as conn:
            return conn.execute(
                sa.text("SELECT holder FROM leases WHERE name = 'controller'")
            ).scalar()

    def insert(self, name: str) -> None:
        with self.store.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO desired_containers (name, image, command) "
                    "VALUES (:n, 'busybox:local', '[\"sleep\", \"3600\"]')"
                ),
                {"n": name},
            )

    def running(self, name: str) -> bool:
        with self.store.connect() as conn:
            phase = conn.execute(
                sa.text("SELECT phase FROM container_status WHERE name = :n"), {"n": name}
            ).scalar()
        return phase == "running"

    def xacts(self) -> int:
        with self.store.connect() as conn:
            return int(
                conn.execute(
                    sa.text(
                        "SELECT xact_commit + xact_rollback FROM pg_stat_database "
                        "WHERE datname = current_database()"
                    )
                ).scalar()
                or 0
            )

    def takeover(self, sig: signal.Signals) -> tuple[float, float]:
        leader = self.daemons[str(wait(self.holder, 120))]
        name = f"t-{uuid.uuid4().hex[:8]}"
        started = time.monotonic()
        leader.stop(sig)
        self.insert(name)
        wait(lambda: self.holder() not in (None, leader.identity), 120)
        lease = time.monotonic() - started
        wait(lambda: self.running(name), 60)
        action = time.monotonic() - started
        del self.daemons[leader.identity]
        self.start()  # the next standby
        return lease, action

    def cold_start(self) -> float:
        for d in list(self.daemons.values()):
            d.stop(signal.SIGTERM)  # releases the lease
        self.daemons.clear()
        name = f"c-{uuid.uuid4().hex[:8]}"
        self.insert(name)
        started = time.monotonic()
        self._n += 1
        d = Daemon(self.url, self.logs, f"d{self._n}", self.lease)
        self.daemons[d.identity] = d
        wait(lambda: self.running(name), 90)
        return time.monotonic() - started

    def standby_cost(self, window: float) -> dict[str, float]:
        for d in list(self.daemons.values()):
            d.stop(signal.SIGTERM)
        self.daemons.clear()
        leader = self.start()
        wait(lambda: self.holder() == leader.identity, 60)
        time.sleep(3)  # let the first passes and the republish settle
        alone = self._rate(window)
        standby = self.start()
        time.sleep(3)
        cpu0 = standby.cpu_seconds()
        with_standby = self._rate(window)
        cpu = (standby.cpu_seconds() - cpu0) / window
        return {
            "standby_cpu_percent": 100 * cpu,
            "standby_rss_mib": standby.rss_mib(),
            "leader_rss_mib": leader.rss_mib(),
            "xact_per_s_leader_alone": alone,
            "xact_per_s_with_standby": with_standby,
            "standby_xact_per_s": with_standby - alone,
        }

    def _rate(self, window: float) -> float:
        before = self.xacts()
        time.sleep(window)
        return (self.xacts() - before - 1) / window  # the reading itself is one transaction

    def close(self) -> None:
        for d in self.daemons.values():
            d.stop()
        self.store.dispose()
        for e in self.engines:
            with docker.APIClient(base_url=e.unix_url, version="auto") as api:
                for c in api.containers(all=True, filters={"label": "reconciler.managed=true"}):
                    api.remove_container(c["Id"], force=True)


def _summary(values: list[float]) -> str:
    return f"p50 {statistics.median(values):.2f}s, max {max(values):.2f}s"


@contextlib.contextmanager
def _environment() -> Iterator[tuple[str, list[SandboxEngine], Path]]:
    with (
        EngineFleet(2) as fleet,
        sandbox_postgres.SandboxPostgres() as pg,
        tempfile.TemporaryDirectory(prefix="takeover-") as logs,
    ):
        fleet.start()
        yield pg.create_database("takeover"), list(fleet.engines), Path(logs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--lease-duration", default="15")
    parser.add_argument("--renew-deadline", default="10")
    parser.add_argument("--retry-period", default="2")
    parser.add_argument("--window", type=float, default=30.0, help="seconds of standby cost")
    parser.add_argument("--signals", default="SIGTERM,SIGKILL", help="takeovers to measure")
    parser.add_argument("--takeovers-only", action="store_true", help="no cold start, no cost")
    args = parser.parse_args(argv)
    lease = ["--lease-duration", args.lease_duration, "--renew-deadline", args.renew_deadline]
    lease += ["--retry-period", args.retry_period]
    with _environment() as (url, engines, logs):
        bench = Bench(url, engines, logs, lease)
        try:
            bench.start()
            bench.start()
            results: dict[str, list[tuple[float, float]]] = {}
            for sig in (signal.Signals[name] for name in args.signals.split(",")):
                results[sig.name] = [bench.takeover(sig) for _ in range(args.runs)]
            if not args.takeovers_only:
                cold = [bench.cold_start() for _ in range(min(args.runs, 5))]
                cost = bench.standby_cost(args.window)
        finally:
            bench.close()
    print(
        f"lease {args.lease_duration}s, renew deadline {args.renew_deadline}s, "
        f"retry {args.retry_period}s; 2 engines; PostgreSQL; {args.runs} runs each"
    )
    for name, runs in results.items():
        print(f"after {name}: lease taken {_summary([r[0] for r in runs])}; ", end="")
        print(f"first action {_summary([r[1] for r in runs])}")
    if args.takeovers_only:
        return
    print(f"cold start (no warm standby) to first action: {_summary(cold)}")
    print(
        f"an idle standby: CPU {cost['standby_cpu_percent']:.2f}% of one core, "
        f"RSS {cost['standby_rss_mib']:.0f} MiB (leader {cost['leader_rss_mib']:.0f} MiB), "
        f"+{cost['standby_xact_per_s']:.2f} database transactions/s "
        f"({cost['xact_per_s_leader_alone']:.2f}/s with the leader alone)"
    )


if __name__ == "__main__":
    main()
