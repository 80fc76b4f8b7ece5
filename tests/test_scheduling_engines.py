"""Placement on three real engines (issue 11): constraints, memory reservations, host ports,
spread vs binpack, drain, ``node rm``.

Each test runs a real daemon (``daemons.running_daemon``) over the session's three sandboxed
dockerd (registered n1..n3, each reporting the engine label ``node=<name>`` and the machine's
memory) and checks where the containers really are, by asking the engines.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from click.testing import CliRunner
from daemons import client, execute, insert, managed, running_daemon, status
from waiting import wait_for

from reconciler import cli

SLEEP = ["sleep", "3600"]
#: The constraint and memory tests: what places a waiting row must be the change itself (a node
#: relabelled, a row deleted), not the next interval.
SLOW_INTERVAL = 60.0


def _prefix() -> str:
    return uuid.uuid4().hex[:5]


def placed(engines: list[Any]) -> dict[str, list[tuple[str, str]]]:
    """Row name → [(node, container state)] over every engine, asked in order n1, n2, n3."""
    found: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for i, engine in enumerate(engines, 1):
        for c in managed(engine):
            found[c["Labels"]["reconciler.name"]].append((f"n{i}", c["State"]))
    return found


def phases(store: sa.Engine, names: list[str]) -> dict[str, str | None]:
    rows = status(store)
    return {n: rows.get(n, {}).get("phase") for n in names}


def running(store: sa.Engine, names: list[str]) -> bool:
    return all(p == "running" for p in phases(store, names).values())


def row(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "busybox:local", "command": SLEEP, **extra}


def node_of(store: sa.Engine, name: str) -> str | None:
    return status(store).get(name, {}).get("node")


def invoke(url: str, *args: str) -> Any:
    return CliRunner().invoke(cli.main, ["--database-url", url, *args])


def test_constraints_on_node_and_engine_labels(engines, sqlite_url):
    p = _prefix()
    names = {k: f"{p}-{k}" for k in ("engine", "not", "zone")}
    with running_daemon(sqlite_url, engines, reconcile_interval=SLOW_INTERVAL) as daemon:
        store = daemon.store.sql
        insert(
            store,
            row(names["engine"], constraints=["engine.labels.node==n3"]),
            row(names["not"], constraints=["node.name!=n1", "engine.labels.node!=n3"]),
            row(names["zone"], constraints=["node.labels.zone==b"]),
        )
        wait_for(lambda: running(store, [names["engine"], names["not"]]), timeout=60)
        assert node_of(store, names["engine"]) == "n3"
        assert node_of(store, names["not"]) == "n2"
        wait_for(lambda: phases(store, [names["zone"]])[names["zone"]] == "unschedulable")
        message = status(store)[names["zone"]]["message"]
        assert message == (
            "no node fits: n1 constraint node.labels.zone==b; n2 constraint node.labels.zone==b;"
            " n3 constraint node.labels.zone==b"
        )
        execute(
            store, "UPDATE nodes SET labels = :l WHERE name = 'n2'", l=json.dumps({"zone": "b"})
        )
        changed = time.monotonic()
        wait_for(lambda: running(store, [names["zone"]]), timeout=30)
        # The interval is 60 s: the change itself (the node row followed) wakes the pass.
        assert time.monotonic() - changed < 5, "placed once the labels changed"
        assert node_of(store, names["zone"]) == "n2"
        assert placed(engines)[names["zone"]] == [("n2", "running")]


def test_memory_reservations_two_per_node(engines, sqlite_url):
    with client(engines[0]) as api:
        memory = int(api.info()["MemTotal"])
    size = int(memory * 0.4)  # two fit in memory x 1.05, a third does not
    p = _prefix()
    names = [f"{p}-m{i}" for i in range(6)]
    extra = f"{p}-m9"
    with running_daemon(sqlite_url, engines, reconcile_interval=SLOW_INTERVAL) as daemon:
        store = daemon.store.sql
        insert(store, *(row(n, memory_bytes=size) for n in names))
        wait_for(lambda: running(store, names), timeout=90, message="six rows running")
        where = placed(engines)
        per_node = defaultdict(int)
        for n in names:
            assert len(where[n]) == 1
            per_node[where[n][0][0]] += 1
        assert dict(per_node) == {"n1": 2, "n2": 2, "n3": 2}
        wait_for(lambda: _nodes(str(store.url))["n1"]["containers"] == "2/2", timeout=15)
        listing = _nodes(str(store.url))
        assert {n: listing[n]["reserved_memory_bytes"] for n in listing} == dict.fromkeys(
            ("n1", "n2", "n3"), 2 * size
        )
        insert(store, row(extra, memory_bytes=size))
        wait_for(lambda: phases(store, [extra])[extra] == "unschedulable", timeout=30)
        message = status(store)[extra]["message"]
        assert message.startswith("no node fits: n1 memory (needs ")
        assert message.count("memory (needs") == 3, message
        deleted = time.monotonic()
        execute(store, "DELETE FROM desired_containers WHERE name = :n", n=names[0])
        wait_for(lambda: running(store, [extra]), timeout=30)
        assert time.monotonic() - deleted < 5, (
            "placed at once when a row is deleted (60 s interval)"
        )
        assert node_of(store, extra) == where[names[0]][0][0]


def test_host_port_once_per_node(engines, sqlite_url):
    p = _prefix()
    names = [f"{p}-p{i}" for i in range(4)]
    with running_daemon(sqlite_url, engines) as daemon:
        store = daemon.store.sql
        insert(store, *(row(n, ports=["18080:80"]) for n in names))
        wait_for(lambda: running(store, names[:3]), timeout=60)
        wait_for(lambda: phases(store, names)[names[3]] == "unschedulable", timeout=30)
        nodes = {node_of(store, n) for n in names[:3]}
        assert nodes == {"n1", "n2", "n3"}
        message = status(store)[names[3]]["message"]
        assert message == (
            "no node fits: n1 port 18080/tcp taken; n2 port 18080/tcp taken;"
            " n3 port 18080/tcp taken"
        )
        assert names[3] not in placed(engines)


def _placements(url: str, engines: list[Any], strategy: str) -> dict[str, str]:
    p = _prefix()
    names = [f"{p}-s{i}" for i in range(4)]
    with running_daemon(url, engines, strategy=strategy) as daemon:
        store = daemon.store.sql
        insert(store, *(row(n) for n in names))
        wait_for(lambda: running(store, names), timeout=60)
        where = placed(engines)
        return {n[-2:]: where[n][0][0] for n in names}


def test_binpack_and_spread_with_the_same_rows(engines, tmp_path):
    spread = _placements(f"sqlite:///{tmp_path / 'spread.db'}", engines, "spread")
    binpack = _placements(f"sqlite:///{tmp_path / 'binpack.db'}", engines, "binpack")
    assert spread == {"s0": "n1", "s1": "n2", "s2": "n3", "s3": "n1"}
    assert binpack == {"s0": "n1", "s1": "n1", "s2": "n1", "s3": "n1"}


def test_drain_starts_replacements_before_removing_originals(engines, sqlite_url):
    p = _prefix()
    names = [f"{p}-d{i}" for i in range(6)]
    pinned = f"{p}-pin"
    with running_daemon(sqlite_url, engines) as daemon:
        store = daemon.store.sql
        insert(store, *(row(n) for n in names), row(pinned, node="n1"))
        wait_for(lambda: running(store, [*names, pinned]), timeout=90)
        on_n1 = [n for n in names if node_of(store, n) == "n1"]
        assert on_n1, "spread puts some rows on n1"

        result = invoke(str(store.url), "node", "drain", "n1")
        assert result.exit_code == 0, result.output
        assert f"pinned rows that stay on n1: {pinned}" in result.output, result.output

        gaps: list[str] = []

        def moved() -> bool:
            where = placed(engines)  # n1 first: a gap cannot hide between two lists
            gaps.extend(n for n in names if not any(s == "running" for _, s in where[n]))
            return all(where[n] == [(node_of(store, n), "running")] for n in names) and all(
                node != "n1" for n in names for node, _ in where[n]
            )

        wait_for(moved, timeout=60, interval=0.05, message="rows moved off n1")
        assert not gaps, f"rows without a running container during the drain: {set(gaps)}"
        assert placed(engines)[pinned] == [("n1", "running")]
        events = _events(store)
        assert any("moved off draining node n1" in m for m in events)

        wait_for(lambda: _availability(str(store.url), "n1") == "drained", timeout=30)
        assert _availability(str(store.url), "n2") == "active"

        result = invoke(str(store.url), "node", "uncordon", "n1")
        assert result.exit_code == 0, result.output
        assert _availability(str(store.url), "n1") == "active"
        # n1 takes new rows again (it is the least loaded), and nothing moves back to it.
        wait_for(lambda: daemon.cluster.snapshots()["n1"].schedulable, message="n1 followed")
        insert(store, row(f"{p}-new"))
        wait_for(lambda: running(store, [f"{p}-new"]), timeout=30)
        assert node_of(store, f"{p}-new") == "n1"
        where = placed(engines)
        assert [n for n in names if where[n][0][0] == "n1"] == []


def _nodes(url: str) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in json.loads(invoke(url, "node", "ls", "-o", "json").output)}


def _availability(url: str, name: str) -> str:
    out = invoke(url, "node", "ls", "-o", "json").output
    return {n["name"]: n for n in json.loads(out)}[name]["availability"]


def _events(store: sa.Engine) -> list[str]:
    with store.connect() as conn:
        return list(conn.execute(sa.text("SELECT message FROM events")).scalars())


def test_node_rm_refuses_while_managed_containers_run(engines, sqlite_url):
    p = _prefix()
    names = [f"{p}-r{i}" for i in range(3)]
    with running_daemon(sqlite_url, engines) as daemon:
        store = daemon.store.sql
        insert(store, *(row(n) for n in names))
        wait_for(lambda: running(store, names), timeout=60)
        gone = node_of(store, names[0])
        wait_for(lambda: _observed(store, gone), timeout=15, message="observed rows written")
        result = invoke(str(store.url), "node", "rm", gone)
        assert result.exit_code != 0
        assert "drain it first" in result.output and names[0] in result.output
        result = invoke(str(store.url), "node", "rm", "--force", gone)
        assert result.exit_code == 0, result.output
        wait_for(
            lambda: running(store, names) and node_of(store, names[0]) != gone,
            timeout=30,
            message="the row of the removed node placed elsewhere",
        )
        assert any(f"rescheduled from {gone} (node removed)" in m for m in _events(store))


def _observed(store: sa.Engine, node: str) -> bool:
    with store.connect() as conn:
        found = conn.execute(
            sa.text("SELECT count(*) FROM observed_containers WHERE node = :n AND managed"),
            {"n": node},
        ).scalar()
    return bool(found)
