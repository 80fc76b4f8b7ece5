"""Rescheduling after a node is lost: ``python -m bench.reschedule`` (a benchmark, not a test).

Starts three sandboxed dockerd, a SQLite database and a reconciler daemon (default timings,
``--node-grace`` as given), inserts ``--rows`` unpinned rows (spread: a third on each node),
waits until they all run, then freezes n3's dockerd (SIGSTOP) and prints:

- detection: SIGSTOP → n3 ``unhealthy`` (heartbeat, probes, failure threshold);
- grace: the configured ``--node-grace``;
- placement: end of the grace → the last of n3's rows ``running`` on n1/n2;
- total: SIGSTOP → that moment (what the README calls "a node's loss to its last rescheduled
  row running").

Then SIGCONT, and the time until exactly one container per row exists fleet-wide again.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import tempfile
import threading
import time
from collections import Counter

import docker
import sqlalchemy as sa

from reconciler.db import engine as db_engine
from reconciler.db import migrate
from reconciler.db.store import Store
from reconciler.domain import Health, NodeName
from reconciler.runtime.daemon import Daemon
from reconciler.settings import Settings
from sandbox.engines import EngineFleet


def _wait(predicate, timeout: float, what: str, interval: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"timed out waiting for {what}")


def _status(store: sa.Engine) -> dict[str, tuple[str, str | None]]:
    with store.connect() as conn:
        rows = conn.execute(sa.text("SELECT name, phase, node FROM container_status"))
        return {r.name: (r.phase, r.node) for r in rows}


def _copies(urls: list[str]) -> Counter[str]:
    found: Counter[str] = Counter()
    for url in urls:
        with docker.APIClient(base_url=url, version="auto", timeout=30) as api:
            for c in api.containers(all=True, filters={"label": "reconciler.managed=true"}):
                found[c["Labels"]["reconciler.name"]] += 1
    return found


def run(rows: int, grace: float) -> dict[str, float]:
    with EngineFleet(3, image=True).start() as fleet, tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{pathlib.Path(tmp) / 'bench.db'}"
        migrate.upgrade(url)
        store = db_engine.make_engine(url)
        with store.begin() as conn:
            for i, e in enumerate(fleet, 1):
                conn.execute(
                    sa.text("INSERT INTO nodes (name, url) VALUES (:n, :u)"),
                    {"n": f"n{i}", "u": e.url},
                )
        daemon = Daemon(store=Store(store), settings=Settings(database_url=url, node_grace=grace))
        thread = threading.Thread(target=daemon.run, daemon=True)
        thread.start()
        try:
            names = [f"r{i:03d}" for i in range(rows)]
            with store.begin() as conn:
                for n in names:
                    conn.execute(
                        sa.text(
                            "INSERT INTO desired_containers (name, image, command)"
                            " VALUES (:n, 'busybox:local', '[\"sleep\", \"3600\"]')"
                        ),
                        {"n": n},
                    )
            _wait(
                lambda: all(_status(store).get(n, ("",))[0] == "running" for n in names),
                180,
                "every row running",
            )
            on_n3 = [n for n, (_, node) in _status(store).items() if node == "n3"]
            n3 = fleet[2]
            lost_at = time.time()
            n3.pause()

            def unhealthy() -> float | None:
                snap = daemon.cluster.snapshots()[NodeName("n3")]
                return snap.unhealthy_since if snap.health is Health.UNHEALTHY else None

            since = _wait(unhealthy, 120, "n3 unhealthy", interval=0.01)

            def moved() -> bool:
                now = _status(store)
                return all(now[n][0] == "running" and now[n][1] in ("n1", "n2") for n in on_n3)

            _wait(moved, 120, "n3's rows running elsewhere", interval=0.02)
            done = time.time()
            n3.resume()
            resumed = time.monotonic()
            urls = [e.url for e in fleet]
            _wait(
                lambda: (c := _copies(urls)) and all(c[n] == 1 for n in names),
                120,
                "one container per row",
                interval=0.2,
            )
            return {
                "rows": rows,
                "rows_on_lost_node": len(on_n3),
                "node_grace_s": grace,
                "detection_s": round(since - lost_at, 2),
                "placement_after_grace_s": round(done - since - grace, 2),
                "loss_to_last_rescheduled_running_s": round(done - lost_at, 2),
                "recovery_to_one_copy_each_s": round(time.monotonic() - resumed, 2),
            }
        finally:
            daemon.stop()
            thread.join(timeout=30)
            store.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=30)
    parser.add_argument("--node-grace", type=float, default=30.0)
    args = parser.parse_args()
    print(json.dumps(run(args.rows, args.node_grace), indent=2))


if __name__ == "__main__":
    main()
