"""Services on real engines (issue 13): replicas spread and scale, rolling updates (stop-first
and start-first, sampled every 100 ms), rollback and pause on a failing update.

Each test runs the daemon in a thread (tests/daemons.py) with a short reconcile interval and a
short ``update_monitor_seconds``, and reads the truth from the engines themselves.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
import sqlalchemy as sa
from daemons import execute, managed, running_daemon
from waiting import wait_for

SLEEP = ["sleep", "3600"]
QUICK = {"reconcile_interval": 0.3}


def add_service(store: sa.Engine, **row: Any) -> None:
    values = {k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in row.items()}
    cols = ", ".join(f'"{k}"' for k in values)
    marks = ", ".join(f":{k}" for k in values)
    execute(store, f"INSERT INTO services ({cols}) VALUES ({marks})", **values)


def service_status(store: sa.Engine, name: str) -> dict[str, Any]:
    with store.connect() as conn:
        row = (
            conn.execute(sa.text("SELECT * FROM service_status WHERE name = :n"), {"n": name})
            .mappings()
            .first()
        )
        return dict(row) if row else {}


def slots(engines: Sequence[Any], service: str) -> list[dict[str, Any]]:
    """The service's containers on every engine: name, node, state, slot, command hash."""
    found = []
    for i, e in enumerate(engines, 1):
        for c in managed(e):
            labels = c["Labels"]
            if labels.get("reconciler.service") == service:
                found.append(
                    {
                        "id": c["Id"],
                        "name": c["Names"][0].lstrip("/"),
                        "node": f"n{i}",
                        "state": c["State"],
                        "slot": int(labels["reconciler.slot"]),
                        "desired": labels["reconciler.name"],
                        "hash": labels["reconciler.spec-hash"],
                        "command": c["Command"],
                    }
                )
    return sorted(found, key=lambda c: (c["slot"], c["name"]))


def running_slots(engines: Sequence[Any], service: str, n: int, *, command: str | None = None):
    found = [c for c in slots(engines, service) if c["state"] == "running"]
    ok = sorted(c["slot"] for c in found) == list(range(1, n + 1)) and all(
        c["name"] == c["desired"] for c in found
    )
    if ok and command is not None:
        ok = all(command in c["command"] for c in found)
    return ok and found


def _name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:5]}"


def test_a_service_spreads_over_the_nodes_and_scales_up_and_down(engines, sqlite_url):
    name = _name("web")
    with running_daemon(sqlite_url, engines, **QUICK) as d:
        store = d.store.sql
        add_service(
            store, name=name, image="busybox:local", command=SLEEP, replicas=3, stop_timeout=0
        )
        three = wait_for(lambda: running_slots(engines, name, 3), timeout=60, message="3 slots")
        assert sorted(c["node"] for c in three) == ["n1", "n2", "n3"], three
        assert [c["name"] for c in three] == [f"{name}.1", f"{name}.2", f"{name}.3"]

        execute(store, "UPDATE services SET replicas = 5 WHERE name = :n", n=name)
        five = wait_for(lambda: running_slots(engines, name, 5), timeout=60, message="5 slots")
        assert {c["id"] for c in three} <= {c["id"] for c in five}, "slots 1-3 were kept"

        execute(store, "UPDATE services SET replicas = 2 WHERE name = :n", n=name)
        two = wait_for(
            lambda: (found := slots(engines, name)) and len(found) == 2 and found,
            timeout=60,
            message="slots 3-5 removed",
        )
        assert [c["slot"] for c in two] == [1, 2]
        assert {c["id"] for c in two} == {c["id"] for c in three if c["slot"] <= 2}
        st = wait_for(
            lambda: (s := service_status(store, name)).get("replicas_running") == 2 and s,
            timeout=30,
        )
        assert st["replicas_desired"] == 2 and st["update_state"] == "completed"
        rows = (
            d.store.sql.connect()
            .execute(
                sa.text("SELECT name, service FROM container_status WHERE service = :n"),
                {"n": name},
            )
            .all()
        )
        assert sorted(r[0] for r in rows) == [f"{name}.1", f"{name}.2"]


class Sampler:
    """Samples the service's containers every 100 ms in a thread until stopped."""

    def __init__(self, engines: Sequence[Any], service: str) -> None:
        self.samples: list[list[dict[str, Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(engines, service), daemon=True)

    def _run(self, engines: Sequence[Any], service: str) -> None:
        while not self._stop.is_set():
            self.samples.append(slots(engines, service))
            self._stop.wait(0.1)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _rolling_update(engines, sqlite_url, order: str) -> tuple[Sampler, dict[str, Any]]:
    name = _name("roll")
    with running_daemon(sqlite_url, engines, **QUICK) as d:
        store = d.store.sql
        add_service(
            store,
            name=name,
            image="busybox:local",
            command=SLEEP,
            replicas=4,
            stop_timeout=0,
            update_monitor_seconds=1,
            update_order=order,
        )
        wait_for(lambda: running_slots(engines, name, 4), timeout=60, message="4 slots")
        with Sampler(engines, name) as sampler:
            started = time.monotonic()
            execute(
                store,
                "UPDATE services SET command = :c WHERE name = :n",
                c=json.dumps(["sleep", "3601"]),
                n=name,
            )
            wait_for(
                lambda: (
                    running_slots(engines, name, 4, command="3601")
                    and service_status(store, name).get("update_state") == "completed"
                ),
                timeout=90,
                message="all 4 slots on the new spec",
            )
            took = time.monotonic() - started
        print(f"{order}: update of 4 took {took:.1f}s, {len(sampler.samples)} samples")
        st = service_status(store, name)
        final = slots(engines, name)
    # One sample lists 3 engines (100 ms apart, slower when the machine is busy).
    assert len(sampler.samples) >= 10, "sampled throughout the update"
    assert len(final) == 4 and all("3601" in c["command"] for c in final), final
    assert [c["name"] for c in final] == [f"{name}.{i}" for i in range(1, 5)]
    assert st["replicas_updated"] == 4 and st["update_state"] == "completed"
    return sampler, st


def test_a_stop_first_rolling_update_takes_down_one_slot_at_a_time(engines, sqlite_url):
    sampler, _ = _rolling_update(engines, sqlite_url, "stop-first")
    running = [sum(1 for c in s if c["state"] == "running") for s in sampler.samples]
    print(f"running per sample: min {min(running)}, max {max(running)}")
    assert min(running) >= 3, f"more than one slot down at once: {running}"
    assert max(len(s) for s in sampler.samples) <= 4


def test_a_start_first_rolling_update_never_runs_more_than_one_extra(engines, sqlite_url):
    sampler, _ = _rolling_update(engines, sqlite_url, "start-first")
    totals = [len(s) for s in sampler.samples]
    running = [sum(1 for c in s if c["state"] == "running") for s in sampler.samples]
    print(f"containers per sample: max {max(totals)}; running: min {min(running)}")
    assert max(totals) <= 5, f"more than 5 containers at once: {totals}"
    assert max(totals) == 5, "start-first did start the new one beside the old one"
    assert min(running) >= 4, f"a slot went down during a start-first update: {running}"


def _failing_update(engines, sqlite_url, action: str) -> tuple[dict[str, Any], list[dict]]:
    name = _name("fail")
    with running_daemon(sqlite_url, engines, **QUICK) as d:
        store = d.store.sql
        add_service(
            store,
            name=name,
            image="busybox:local",
            command=SLEEP,
            replicas=3,
            stop_timeout=0,
            update_monitor_seconds=1,
            update_failure_action=action,
        )
        before = wait_for(lambda: running_slots(engines, name, 3), timeout=60, message="3 slots")
        execute(
            store,
            "UPDATE services SET command = :c WHERE name = :n",
            c=json.dumps(["sh", "-c", "exit 1"]),
            n=name,
        )
        final_state = "rollback_completed" if action == "rollback" else "paused"
        st = wait_for(
            lambda: (s := service_status(store, name)).get("update_state") == final_state and s,
            timeout=60,
            message=final_state,
        )
        if action == "rollback":  # every slot back on the old spec, running
            wait_for(lambda: running_slots(engines, name, 3, command="3600"), timeout=30)
        found = slots(engines, name)
        print(f"{action}: {st['update_state']}: {st['message']}")
    return st, [before, found]


def test_a_failing_update_with_rollback_returns_every_slot_to_the_old_spec(engines, sqlite_url):
    st, (before, after) = _failing_update(engines, sqlite_url, "rollback")
    assert st["update_state"] == "rollback_completed"
    assert len(after) == 3 and all(c["state"] == "running" for c in after), after
    assert all("3600" in c["command"] for c in after), after
    assert {c["hash"] for c in after} == {c["hash"] for c in before}, "the old spec hash"
    # Slots 2 and 3 were never touched: the same containers as before the update.
    untouched = {c["id"] for c in before if c["slot"] > 1}
    assert untouched <= {c["id"] for c in after}
    assert "rollback" in st["message"]


def test_a_failing_update_with_pause_keeps_the_old_slots_running(engines, sqlite_url):
    st, (before, after) = _failing_update(engines, sqlite_url, "pause")
    assert st["update_state"] == "paused" and "slot 1 failed" in st["message"], st
    old = [c for c in after if c["slot"] > 1]
    assert [c["id"] for c in old] == [c["id"] for c in before if c["slot"] > 1]
    assert all(c["state"] == "running" and "3600" in c["command"] for c in old), after
    assert [c["slot"] for c in after if "exit 1" in c["command"]] == [1]


def test_sigkill_mid_update_then_restart_continues_the_update(engines, sqlite_url, tmp_path):
    from daemons import register, remove_managed
    from test_daemon_process import daemon_process

    for e in engines:
        remove_managed(e)
    store = register(sqlite_url, engines)
    name = _name("kill")
    log = tmp_path / "daemon.log"
    fast = ("--interval", "0.3")
    try:
        with daemon_process(sqlite_url, log, *fast) as proc:
            wait_for(lambda: b"starting" in log.read_bytes(), timeout=30, message="daemon up")
            add_service(
                store,
                name=name,
                image="busybox:local",
                command=SLEEP,
                replicas=4,
                stop_timeout=0,
                update_monitor_seconds=3,
            )
            wait_for(lambda: running_slots(engines, name, 4), timeout=60, message="4 slots")
            execute(
                store,
                "UPDATE services SET command = :c WHERE name = :n",
                c=json.dumps(["sleep", "3601"]),
                n=name,
            )
            wait_for(
                lambda: any("3601" in c["command"] for c in slots(engines, name)),
                timeout=30,
                message="the first slot updated",
            )
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        at_kill = slots(engines, name)
        kept = service_status(store, name)
        done_before = {c["slot"]: c["id"] for c in at_kill if "3601" in c["command"]}
        assert kept["update_state"] == "updating", kept
        assert 1 <= len(done_before) < 4, at_kill
        assert json.loads(kept["previous_spec"])["command"] == SLEEP  # kept durably
        with Sampler(engines, name) as sampler, daemon_process(sqlite_url, log, *fast):
            wait_for(
                lambda: (
                    running_slots(engines, name, 4, command="3601")
                    and service_status(store, name).get("update_state") == "completed"
                ),
                timeout=90,
                message="the update completed after the restart",
            )
        final = slots(engines, name)
    finally:
        for e in engines:
            remove_managed(e)
        store.dispose()
    per_slot = [
        max(sum(1 for c in s if c["slot"] == n) for s in sampler.samples) for n in (1, 2, 3, 4)
    ]
    print(f"updated before the kill: {sorted(done_before)}; containers per slot (max): {per_slot}")
    assert per_slot == [1, 1, 1, 1], "no slot doubled"
    assert [c["slot"] for c in final] == [1, 2, 3, 4]
    for slot, cid in done_before.items():  # continued, not restarted from scratch
        assert next(c["id"] for c in final if c["slot"] == slot) == cid


APPLY = """
- name: solo
  image: busybox:local
  command: ["sleep", "3600"]
  restart: on-failure
- kind: service
  name: api
  image: busybox:local
  command: ["sleep", "3600"]
  replicas: 3
  update_order: start-first
  update_failure_action: rollback
  healthcheck: {test: ["CMD", "true"], interval_seconds: 2}
"""


def test_apply_accepts_services_in_the_same_yaml_and_prune_covers_both(sqlite_url):
    from click.testing import CliRunner

    from reconciler import cli
    from reconciler.db import engine as db_engine
    from reconciler.db import migrate

    migrate.upgrade(sqlite_url)

    def apply(text: str, *args: str):
        result = CliRunner().invoke(
            cli.main, ["--database-url", sqlite_url, "apply", "-f", "-", *args], input=text
        )
        return result

    first = apply(APPLY)
    assert first.exit_code == 0, first.output
    assert "service api created" in first.output
    sql = db_engine.make_engine(sqlite_url)
    with sql.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM services")).mappings().one()
        plain = conn.execute(sa.text("SELECT name, restart FROM desired_containers")).all()
    assert (row["name"], row["replicas"], row["update_order"]) == ("api", 3, "start-first")
    assert row["update_failure_action"] == "rollback"
    assert json.loads(row["healthcheck"])["test"] == ["CMD", "true"]
    assert [tuple(r) for r in plain] == [("solo", "on-failure")]

    bad = apply("- kind: service\n  name: x1\n  image: busybox:local\n  replicas: -1\n")
    assert bad.exit_code != 0 and "replicas: must be >= 0" in bad.output, bad.output
    wrong = apply("- kind: job\n  name: x1\n  image: busybox:local\n")
    assert wrong.exit_code != 0 and "kind: must be 'container' or 'service'" in wrong.output

    pruned = apply(APPLY.split("- kind: service")[0], "--prune")
    assert pruned.exit_code == 0 and "service api pruned" in pruned.output, pruned.output
    with sql.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM services")).scalar() == 0
    sql.dispose()


@pytest.mark.parametrize("url_fixture", ["sqlite_url", "pg_url"])
def test_service_rows_and_their_kept_specs_round_trip(url_fixture, request):
    from reconciler.db import migrate
    from reconciler.db.store import Store
    from reconciler.domain import ServiceState, UpdateState

    url = request.getfixturevalue(url_fixture)
    migrate.upgrade(url)
    store = Store.open(url)
    try:
        add_service(
            store.sql,
            name="api",
            image="busybox:local",
            command=SLEEP,
            replicas=2,
            healthcheck={"test": ["CMD", "true"], "interval_seconds": 2},
        )
        add_service(store.sql, name="bad", image="busybox:local", replicas=-1)
        (good, bad), states = store.load_services()
        assert states == {}
        assert good.spec is not None and good.replicas == 2 and good.spec.healthcheck is not None
        assert bad.spec is None and "replicas: must be >= 0" in (bad.error or "")
        older = dataclasses.replace(good, source={**good.source, "command": ["sleep", "1"]})
        from reconciler import spec

        older = spec.validate_service_strict(dict(older.source))
        state = ServiceState(
            "api", UpdateState.ROLLBACK_STARTED, 2, 1, 1, "rollback started", older, good
        )
        store.write_service_status(upserts=[state], deletes=[], now=time.time())
        _, again = store.load_services()
        assert again["api"] == state, "the target and previous specs survive a restart"
        store.write_service_status(upserts=[], deletes=["api"], now=time.time())
        assert store.load_services()[1] == {}
    finally:
        store.close()


def test_a_plain_row_named_like_a_slot_is_a_conflict_and_steals_nothing(engines, sqlite_url):
    from daemons import insert, status

    name = _name("clash")
    with running_daemon(sqlite_url, engines, **QUICK) as d:
        store = d.store.sql
        add_service(store, name=name, image="busybox:local", command=SLEEP, replicas=2)
        before = wait_for(lambda: running_slots(engines, name, 2), timeout=60, message="2 slots")
        insert(store, {"name": f"{name}.1", "image": "busybox:local", "command": ["sleep", "5"]})
        row = wait_for(
            lambda: (
                "conflict" in ((r := status(store).get(f"{name}.1") or {}).get("message") or "")
                and r
            ),
            timeout=30,
            message="the conflict reported on the row",
        )
        st = wait_for(
            lambda: "conflict" in ((s := service_status(store, name)).get("message") or "") and s,
            timeout=30,
        )
        # The status row is written at the end of the pass that planned the conflict: anything
        # that pass removed or recreated is gone by now.
        after = slots(engines, name)
    assert row["phase"] == "failed" and st["update_state"] == "completed"
    assert [c["id"] for c in after] == [c["id"] for c in before], "nothing removed or recreated"
    assert all(c["state"] == "running" for c in after)
