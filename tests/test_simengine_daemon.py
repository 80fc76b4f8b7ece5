"""The real reconciler daemon against simulated engines: it converges and repairs as on dockerd.

Three simulated engines (one `SimFleet` process, dockerd's default latencies) registered as
nodes by their tcp://127.0.0.1:PORT URLs, exactly as sandbox engines are in test_reconcile.
"""

from __future__ import annotations

import uuid

from daemons import execute, insert, managed, running_daemon, status
from waiting import wait_for

from simengine import SimFleet

SLEEP = ["sleep", "3600"]


def _running(store, names):
    rows = status(store)
    return all(rows.get(n, {}).get("phase") == "running" for n in names) and rows


def _on_engines(engines):
    """desired name → [(node, container id, state)] for every managed container."""
    found: dict[str, list[tuple[str, str, str]]] = {}
    for i, e in enumerate(engines, 1):
        for c in managed(e):
            found.setdefault(c["Labels"]["reconciler.name"], []).append(
                (f"n{i}", c["Id"], c["State"])
            )
    return found


def test_the_daemon_converges_twenty_rows_on_three_simulated_engines(sqlite_url):
    names = [f"sim-{uuid.uuid4().hex[:6]}" for _ in range(20)]
    with SimFleet(3).start() as fleet, running_daemon(sqlite_url, fleet.engines) as d:
        store = d.store.sql
        insert(store, *({"name": n, "image": "busybox:local", "command": SLEEP} for n in names))
        rows = wait_for(lambda: _running(store, names), timeout=60, message="all rows running")
        on_engines = _on_engines(fleet.engines)
        assert sorted(on_engines) == sorted(names)
        for n in names:
            assert len(on_engines[n]) == 1, f"{n} has {on_engines[n]}"
            node, cid, state = on_engines[n][0]
            assert (rows[n]["node"], rows[n]["container_id"], state) == (node, cid, "running")
        per_node = sorted(sum(1 for n in names if rows[n]["node"] == f"n{i}") for i in (1, 2, 3))
        assert per_node == [6, 7, 7]

        # A process that dies behind the daemon's back is noticed (die event) and run again.
        victim = names[0]
        node, cid, _ = on_engines[victim][0]
        fleet.engines[int(node[1:]) - 1].exit_container(cid, 1)
        wait_for(
            lambda: (
                [s for _, _, s in _on_engines(fleet.engines).get(victim, [])] == ["running"]
                and status(store)[victim]["phase"] == "running"
            ),
            timeout=30,
            message=f"{victim} running again",
        )

        # Deleted rows lose their containers.
        gone = names[-5:]
        for n in gone:
            execute(store, "DELETE FROM desired_containers WHERE name = :n", n=n)
        wait_for(
            lambda: not set(gone) & set(_on_engines(fleet.engines)),
            timeout=30,
            message="deleted rows' containers removed",
        )
        assert set(_on_engines(fleet.engines)) == set(names[:-5])
