"""The daemon converges rows written with plain SQL onto real engines, and repairs drift.

Each test runs a `Daemon` in a thread against a fresh SQLite file and the session's three
sandbox engines, and waits by polling for the end state the issue asks for.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from daemons import execute, insert, managed, running_daemon, status
from waiting import wait_for

from reconciler import docker_api

SLEEP = ["sleep", "3600"]


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _running(store, names):
    rows = status(store)
    return all(rows.get(n, {}).get("phase") == "running" for n in names) and rows


def _on_engines(engines):
    """desired name → (node, container id, state) for every managed container."""
    found = {}
    for i, e in enumerate(engines, 1):
        for c in managed(e):
            found.setdefault(c["Labels"]["reconciler.name"], []).append(
                (f"n{i}", c["Id"], c["State"])
            )
    return found


def test_rows_inserted_with_sql_converge_spread_over_nodes(engines, sqlite_url):
    names = [_unique("web") for _ in range(6)]
    with running_daemon(sqlite_url, engines) as d:
        store = d.store.sql
        insert(store, *({"name": n, "image": "busybox:local", "command": SLEEP} for n in names))
        rows = wait_for(lambda: _running(store, names), timeout=30, message="all rows running")
        on_engines = _on_engines(engines)
        for n in names:
            assert len(on_engines[n]) == 1, f"{n} has {on_engines[n]}"
            node, cid, state = on_engines[n][0]
            assert (rows[n]["node"], rows[n]["container_id"], state) == (node, cid, "running")
        per_node = sorted(sum(1 for n in names if rows[n]["node"] == f"n{i}") for i in (1, 2, 3))
        assert per_node == [2, 2, 2]


def test_delete_change_stop_and_drift_repair(engines, sqlite_url):
    web, api = _unique("web"), _unique("api")
    with running_daemon(sqlite_url, engines) as d:
        store = d.store.sql
        insert(
            store,
            {"name": web, "image": "busybox:local", "command": SLEEP, "stop_timeout": 1},
            {"name": api, "image": "busybox:local", "command": SLEEP, "stop_timeout": 1},
        )
        first = wait_for(lambda: _running(store, [web, api]), timeout=30)
        node = int(first[web]["node"][1:]) - 1
        old_id = first[web]["container_id"]

        # docker rm -f behind its back → running again within 2 s
        engines[node].docker("rm", "-f", old_id)
        repaired = wait_for(
            lambda: (
                (r := status(store)[web])["container_id"] != old_id
                and r["phase"] == "running"
                and r
            ),
            timeout=2,
            message="rm -f repaired",
        )
        assert _on_engines(engines)[web][0][2] == "running"

        # docker stop behind its back → started again within 2 s
        cid = repaired["container_id"]
        engines[node].docker("stop", "-t", "0", cid)
        wait_for(
            lambda: [s for _, c, s in _on_engines(engines)[web] if c == cid] == ["running"],
            timeout=2 + 1,
            message="docker stop repaired",
        )

        # a new command → recreated with a new id
        execute(
            store,
            "UPDATE desired_containers SET command = :c WHERE name = :n",
            c='["sleep", "7200"]',
            n=web,
        )
        wait_for(
            lambda: (
                status(store)[web]["container_id"] not in (cid, None)
                and status(store)[web]["phase"] == "running"
            ),
            timeout=15,
        )
        assert len(_on_engines(engines)[web]) == 1

        # state='stopped' → stopped, not removed
        execute(store, "UPDATE desired_containers SET state = 'stopped' WHERE name = :n", n=api)
        wait_for(lambda: status(store)[api]["phase"] == "stopped", timeout=15)
        assert [s for _, _, s in _on_engines(engines)[api]] == ["exited"]

        # delete → removed, and its status row goes with it
        execute(store, "DELETE FROM desired_containers WHERE name = :n", n=web)
        wait_for(lambda: web not in _on_engines(engines) and web not in status(store), timeout=15)


def test_unmanaged_containers_survive(engines, sqlite_url):
    hand = _unique("hand")
    lookalike = _unique("lookalike")
    engines[0].docker("create", "--name", hand, "busybox:local", "sleep", "60")
    engines[0].docker(
        "create",
        "--name",
        lookalike,
        "--label",
        f"reconciler.name={lookalike}",
        "--label",
        "reconciler.spec-hash=x",
        "busybox:local",
        "sleep",
        "60",
    )
    try:
        with running_daemon(sqlite_url, engines) as d:
            store = d.store.sql
            ok = _unique("ok")
            # the desired row wants the lookalike's name: it must not be taken over
            insert(
                store,
                {"name": ok, "image": "busybox:local", "command": SLEEP, "node": "n1"},
                {"name": lookalike, "image": "busybox:local", "node": "n1"},
            )
            wait_for(lambda: _running(store, [ok]), timeout=30)
            clash = wait_for(
                lambda: (r := status(store).get(lookalike)) and r["phase"] == "failed" and r,
                timeout=15,
                message="name clash reported",
            )
            assert "does not manage" in clash["message"], clash
            for name in (hand, lookalike):
                inspect = engines[0].docker("inspect", "-f", "{{.State.Status}}", name)
                assert inspect.stdout.strip() == "created", name
    finally:
        engines[0].docker("rm", "-f", hand, lookalike, check=False)


BAD_ROWS = [
    ({"command": "not json"}, "command"),
    ({"env": '{"A": 1'}, "env"),
    ({"labels": "[1, 2]"}, "labels"),
    ({"state": "paused"}, "state"),
    ({"image": "nonexistent/image:nope"}, "nonexistent/image:nope"),
    ({"node": "nowhere"}, "nowhere"),
]


def test_bad_rows_get_a_message_and_good_rows_still_run(engines, sqlite_url):
    good = [_unique("good") for _ in range(3)]
    bad = {_unique("bad"): (fields, needle) for fields, needle in BAD_ROWS}
    with running_daemon(sqlite_url, engines) as d:
        store = d.store.sql
        with store.begin() as conn:  # bad JSON straight into the columns, as sqlite3 would
            for name, (fields, _) in bad.items():
                row = {"name": name, "image": "busybox:local", **fields}
                cols = ", ".join(f'"{k}"' for k in row)
                conn.execute(
                    sa.text(
                        f"INSERT INTO desired_containers ({cols}) VALUES "
                        f"({', '.join(':' + k for k in row)})"
                    ),
                    row,
                )
        insert(store, *({"name": n, "image": "busybox:local", "command": SLEEP} for n in good))
        wait_for(lambda: _running(store, good), timeout=30)
        rows = wait_for(
            lambda: (
                (r := status(store))
                and all(r.get(n, {}).get("phase") in ("failed", "unschedulable") for n in bad)
                and r
            ),
            timeout=15,
            message="bad rows reported",
        )
        for name, (_, needle) in bad.items():
            assert needle in rows[name]["message"], (name, rows[name])
        # the loop lives: a row added afterwards still converges
        late = _unique("late")
        insert(store, {"name": late, "image": "busybox:local", "command": SLEEP})
        wait_for(lambda: _running(store, [late]), timeout=10)


def test_an_insert_wakes_the_loop_before_the_interval(engines, sqlite_url):
    with running_daemon(sqlite_url, engines, reconcile_interval=60.0) as d:
        store = d.store.sql
        wait_for(lambda: d.passes >= 1, timeout=30)
        name = _unique("fast")
        insert(store, {"name": name, "image": "busybox:local", "command": SLEEP})
        # The interval is 60 s: only the change watcher can explain a quick convergence.
        wait_for(lambda: _running(store, [name]), timeout=5, interval=0.01)


def test_missing_image_is_reported_then_converges_once_the_image_arrives(engines, sqlite_url):
    name, image = _unique("late"), f"{_unique('img')}:1"
    with running_daemon(sqlite_url, engines) as d:
        store = d.store.sql
        # pull: never: the image must already be there (with the default, it would be pulled).
        insert(
            store, {"name": name, "image": image, "command": SLEEP, "node": "n1", "pull": "never"}
        )
        row = wait_for(
            lambda: (r := status(store).get(name)) and r["phase"] == "failed" and r,
            timeout=15,
            message="missing image reported",
        )
        assert f"image {image} not found on node n1" in row["message"], row
        engines[0].docker("tag", "busybox:local", image)
        try:
            wait_for(
                lambda: _running(store, [name]),
                timeout=10,
                message="converged after the image was tagged",
            )
        finally:
            engines[0].docker("rmi", "-f", image, check=False)


def test_a_hung_node_keeps_its_containers_as_unknown_and_others_keep_converging(
    engines, sqlite_url
):
    pinned, later = _unique("pinned"), _unique("later")
    with running_daemon(sqlite_url, engines, docker_timeout=2.0) as d:
        store = d.store.sql
        insert(store, {"name": pinned, "image": "busybox:local", "command": SLEEP, "node": "n2"})
        before = wait_for(lambda: _running(store, [pinned]), timeout=30)[pinned]
        engines[1].pause()  # SIGSTOP: every call to n2 hangs until its timeout
        try:
            wait_for(
                lambda: status(store)[pinned]["phase"] == "unknown",
                timeout=30,
                message="the hung node's container shown as unknown",
            )
            insert(store, {"name": later, "image": "busybox:local", "command": SLEEP})
            row = wait_for(
                lambda: _running(store, [later]),
                timeout=10,
                message="a new row converges elsewhere while n2 hangs",
            )[later]
            assert row["node"] in ("n1", "n3")
        finally:
            engines[1].resume()
        after = wait_for(
            lambda: (r := status(store)[pinned])["phase"] == "running" and r,
            timeout=20,
            message="running again after SIGCONT",
        )
        assert after["container_id"] == before["container_id"], "kept its place, not recreated"


def test_a_sqlite3_shell_and_the_daemon_write_side_by_side(engines, sqlite_url):
    """WAL + busy timeouts: inserts from the sqlite3 program while the daemon writes status."""
    import subprocess

    database = sa.make_url(sqlite_url).database
    names = [_unique("shell") for _ in range(15)]
    with running_daemon(sqlite_url, engines) as d:
        for name in names:  # one process per INSERT, as a person at a prompt would
            done = subprocess.run(
                [
                    "sqlite3",
                    "-cmd",
                    ".timeout 5000",
                    database,
                    f"INSERT INTO desired_containers (name, image, command) "
                    f"VALUES ('{name}', 'busybox:local', '[\"sleep\", \"3600\"]')",
                ],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert done.returncode == 0 and not done.stderr, done.stderr
        wait_for(lambda: _running(d.store.sql, names), timeout=30)


def test_a_create_costs_one_inspect_and_a_removal_none(engines, sqlite_url):
    """Create, start and one inspect per container; one remove call per removal. The events
    these actions cause are covered by the executor's own inspect or remove.

    The counts are read after a barrier: a hand-made container created with the docker CLI
    afterwards, whose create event comes after every event of the actions and is news, so once
    it is in the node's picture every earlier event has been looked at.
    """
    names = [_unique("calls") for _ in range(20)]
    engine = engines[0]

    def barrier(node):
        hand = _unique("barrier")
        engine.docker("create", "--name", hand, "busybox:local", "sleep", "3600")
        wait_for(
            lambda: any(c.name == hand for c in node.snapshot().containers),
            timeout=10,
            message="the barrier container in the picture",
        )
        engine.docker("rm", "-f", hand)

    with running_daemon(sqlite_url, engines[:1]) as d:
        store, node = d.store.sql, d.cluster.node("n1")
        before = node.client.calls
        insert(store, *({"name": n, "image": "busybox:local", "command": SLEEP} for n in names))
        wait_for(lambda: _running(store, names), timeout=60, message="all rows running")
        barrier(node)
        creating = node.client.calls - before

        before = node.client.calls
        execute(store, "DELETE FROM desired_containers")
        wait_for(lambda: not managed(engine), timeout=60, message="every container removed")
        barrier(node)
        removing = node.client.calls - before

    n = len(names)
    assert creating[docker_api.CREATE_CONTAINER] == n
    assert creating[docker_api.START_CONTAINER] == n
    assert creating[docker_api.INSPECT_CONTAINER] == n + 1, dict(creating)  # + the barrier
    assert removing[docker_api.REMOVE_CONTAINER] == n
    assert removing[docker_api.INSPECT_CONTAINER] == 1, dict(removing)  # the barrier
