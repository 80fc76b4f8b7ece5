"""The executor's recovery paths, driven by a scripted fake engine (pure: no Docker).

`ScriptedEngine` implements `docker_api.EngineAPI` the way a dockerd answers: names are unique
(a second create answers NameConflict), a start of a container that is not there answers
ContainerNotFound, and a test can script the next answer of any operation. Each test asserts the
outcome and the end state of the fake engine, not the sequence of calls. The real-engine side of
the same rules is in tests/test_hardening_docker.py.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace

from waiting import wait_for

from reconciler import docker_api, errors, planning
from reconciler.domain import (
    INSTALLATION_LABEL,
    MANAGED_LABEL,
    NAME_LABEL,
    ContainerId,
    ContainerSpec,
    NodeName,
    ObservedContainer,
    Phase,
)
from reconciler.runtime import executor

NODE = NodeName("n1")
SPEC = ContainerSpec(name="web", image="busybox:local", command=("sleep", "3600"))


@dataclass
class ScriptedEngine:
    """An in-memory engine; ``script[operation]`` holds errors its next calls raise."""

    node: NodeName = NODE
    containers: dict[ContainerId, ObservedContainer] = field(default_factory=dict)
    script: dict[str, list[errors.EngineError]] = field(default_factory=dict)
    #: When set, ``start`` blocks until it is set (a hung engine).
    gate: threading.Event | None = None
    created: int = 0

    def _scripted(self, operation: str) -> None:
        queued = self.script.get(operation)
        if queued:
            raise queued.pop(0)

    def _by_name_or_id(self, ref: str) -> ObservedContainer | None:
        for c in self.containers.values():
            if c.id == ref or c.name == f"/{ref}":
                return c
        return None

    def add(self, name: str, labels: Mapping[str, str], *, state: str = "created") -> ContainerId:
        self.created += 1
        cid = ContainerId(f"{self.created:064x}")
        self.containers[cid] = ObservedContainer(
            node=self.node, id=cid, name=f"/{name}", image=SPEC.image, state=state, labels=labels
        )
        return cid

    # -- docker_api.EngineAPI ---------------------------------------------------------------------

    def create_container(self, spec: ContainerSpec, *, labels: Mapping[str, str]) -> ContainerId:
        self._scripted("create")
        if self._by_name_or_id(spec.name) is not None:
            raise errors.NameConflict(f"name {spec.name} taken", node=self.node, status=409)
        return self.add(spec.name, {**spec.labels, **labels})

    def inspect_container(self, container_id: str) -> ObservedContainer:
        self._scripted("inspect")
        found = self._by_name_or_id(container_id)
        if found is None:
            raise errors.ContainerNotFound(f"No such container: {container_id}", status=404)
        return found

    def start(self, container_id: str) -> None:
        if self.gate is not None:
            self.gate.wait(30)
        self._scripted("start")
        found = self._by_name_or_id(container_id)
        if found is None:
            raise errors.ContainerNotFound(f"No such container: {container_id}", status=404)
        self.containers[found.id] = replace(found, state="running")

    def stop(self, container_id: str, *, timeout: int = 10) -> None:
        found = self._by_name_or_id(container_id)
        if found is None:
            raise errors.ContainerNotFound(f"No such container: {container_id}", status=404)
        self.containers[found.id] = replace(found, state="exited")

    def remove(self, container_id: str, *, force: bool = True) -> None:
        self._scripted("remove")
        found = self._by_name_or_id(container_id)
        if found is None:
            raise errors.ContainerNotFound(f"No such container: {container_id}", status=404)
        del self.containers[found.id]

    def rename(self, container_id: str, name: str) -> None:
        found = self._by_name_or_id(container_id)
        if found is None:
            raise errors.ContainerNotFound(f"No such container: {container_id}", status=404)
        if self._by_name_or_id(name) is not None:
            raise errors.NameConflict(f"name {name} taken", node=self.node, status=409)
        self.containers[found.id] = replace(found, name=f"/{name}")

    def by_name(self) -> dict[str, list[ObservedContainer]]:
        named: dict[str, list[ObservedContainer]] = {}
        for c in self.containers.values():
            named.setdefault(c.name.lstrip("/"), []).append(c)
        return named


@dataclass
class Handle:
    """An `executor.NodeHandle` over a `ScriptedEngine` that remembers what it was told."""

    engine: ScriptedEngine
    is_suspect: bool = False
    installation: str | None = None
    failures: list[errors.EngineError] = field(default_factory=list)
    refreshed: list[str] = field(default_factory=list)
    forgotten: list[str] = field(default_factory=list)

    @property
    def client(self) -> docker_api.EngineAPI:
        return self.engine

    @property
    def suspect(self) -> bool:
        return self.is_suspect

    @contextlib.contextmanager
    def acting_on(self, *, ids: Iterable[str] = (), names: Iterable[str] = ()) -> Iterator[None]:
        yield

    def refresh_containers(self, ids: Iterable[str]) -> None:
        self.refreshed += list(ids)

    def record_failure(self, error: errors.EngineError) -> None:
        if error.engine_fault:
            self.failures.append(error)

    def forget_containers(self, ids: Iterable[str]) -> None:
        self.forgotten += list(ids)


def ours(name: str) -> dict[str, str]:
    return {MANAGED_LABEL: "true", NAME_LABEL: name}


def run(
    engine: ScriptedEngine, *actions: planning.Action, installation: str | None = None
) -> tuple[list[executor.Outcome], Handle]:
    handle = Handle(engine, installation=installation)
    ex = executor.Executor()
    try:
        return ex.execute(actions, {NODE: handle}), handle
    finally:
        ex.close()


CREATE = planning.Create("web", NODE, SPEC, "h1")


def test_name_conflict_adopts_our_own_container_and_starts_it():
    engine = ScriptedEngine()
    cid = engine.add("web", ours("web"))  # left by a pass interrupted after create
    [outcome], handle = run(engine, CREATE)
    assert outcome.ok and outcome.phase is Phase.RUNNING
    assert outcome.container_id == cid and "adopted" in outcome.message
    assert [c.state for c in engine.by_name()["web"]] == ["running"]  # no second container
    assert handle.failures == []


def test_name_conflict_with_a_foreign_container_is_refused_and_leaves_it_alone():
    engine = ScriptedEngine()
    foreign = engine.add("web", {"owner": "someone else"}, state="running")
    [outcome], handle = run(engine, CREATE)
    assert not outcome.ok and outcome.phase is Phase.FAILED
    assert "does not manage" in outcome.message and foreign[:12] in outcome.message
    assert engine.containers[foreign].labels == {"owner": "someone else"}
    assert list(engine.containers) == [foreign]
    assert handle.failures == []  # the engine answered: not the node's fault


def test_name_conflict_with_another_installations_container_is_refused():
    """Issue 10, item 3: a container another reconciler database created is not ours to adopt,
    even though it is labelled managed with the same desired name."""
    engine = ScriptedEngine()
    theirs = engine.add("web", {**ours("web"), INSTALLATION_LABEL: "other-db"}, state="running")
    [outcome], _ = run(engine, CREATE, installation="this-db")
    assert not outcome.ok and "does not manage" in outcome.message
    assert list(engine.containers) == [theirs] and engine.containers[theirs].running


def test_created_containers_carry_the_installation_and_unlabelled_ones_are_adopted():
    engine = ScriptedEngine()
    old = engine.add("web", ours("web"))  # created before installation ids existed
    [adopted], _ = run(engine, CREATE, installation="this-db")
    assert adopted.ok and adopted.container_id == old and "adopted" in adopted.message
    fresh = ScriptedEngine()
    [created], _ = run(fresh, CREATE, installation="this-db")
    assert fresh.containers[created.container_id].labels[INSTALLATION_LABEL] == "this-db"


def test_stale_task_on_create_removes_and_recreates_the_container():
    engine = ScriptedEngine()
    engine.script["start"] = [errors.StaleTask("id already in use", node=NODE, status=409)]
    [outcome], handle = run(engine, CREATE)
    assert outcome.ok and outcome.phase is Phase.RUNNING
    [web] = engine.by_name()["web"]
    assert web.running and web.id == outcome.container_id
    assert web.id != ContainerId(f"{1:064x}")  # the first container is gone
    assert handle.failures == []


def test_stale_task_on_start_removes_the_container_for_the_next_pass():
    engine = ScriptedEngine()
    cid = engine.add("web", ours("web"))
    engine.script["start"] = [errors.StaleTask("task abc: already exists", node=NODE, status=500)]
    [outcome], handle = run(engine, planning.Start("web", NODE, cid))
    assert outcome.ok and outcome.phase is Phase.PENDING and "stale task" in outcome.message
    assert engine.containers == {} and handle.forgotten == [cid]
    assert handle.failures == []


def test_container_gone_before_start_is_forgotten_not_failed():
    engine = ScriptedEngine()
    gone = ContainerId("f" * 64)  # removed behind our back after the picture was taken
    [outcome], handle = run(engine, planning.Start("web", NODE, gone))
    assert outcome.ok and outcome.phase is Phase.PENDING and "disappeared" in outcome.message
    assert handle.forgotten == [gone] and handle.failures == []


def test_missing_network_on_start_fails_the_row_and_keeps_the_container():
    engine = ScriptedEngine()
    cid = engine.add("web", ours("web"))
    engine.script["start"] = [errors.NotFound("network nonet not found", node=NODE, status=404)]
    [outcome], handle = run(engine, planning.Start("web", NODE, cid))
    assert not outcome.ok and outcome.phase is Phase.FAILED and "nonet" in outcome.message
    assert list(engine.containers) == [cid] and handle.forgotten == []
    assert handle.failures == []


def test_a_suspect_node_does_not_hold_the_pass_and_reports_later():
    slow = ScriptedEngine(node=NodeName("slow"), gate=threading.Event())
    fast = ScriptedEngine(node=NodeName("fast"))
    slow_id = slow.add("a", ours("a"))
    fast_id = fast.add("b", ours("b"))
    handles = {slow.node: Handle(slow, is_suspect=True), fast.node: Handle(fast)}
    ex = executor.Executor()
    try:
        started = time.monotonic()
        first = ex.execute(
            [planning.Start("a", slow.node, slow_id), planning.Start("b", fast.node, fast_id)],
            handles,
        )
        took = time.monotonic() - started
        assert [o.name for o in first] == ["b"] and took < 1.0, (first, took)
        # The same action again while the first is still running is not sent twice.
        assert ex.execute([planning.Start("a", slow.node, slow_id)], handles) == []
        assert slow.gate is not None
        slow.gate.set()
        wait_for(lambda: slow.containers[slow_id].running, timeout=5)
        late = wait_for(lambda: ex.execute([], handles), timeout=5, message="late outcome")
        assert [(o.name, o.ok, o.phase) for o in late] == [("a", True, Phase.RUNNING)]
    finally:
        ex.close()


def test_close_cancels_queued_actions_and_execute_returns():
    engine = ScriptedEngine(gate=threading.Event())
    ids = [engine.add(f"c{i}", ours(f"c{i}")) for i in range(20)]
    ex = executor.Executor(max_per_node=2, close_timeout=0.5)
    result: list[list[executor.Outcome]] = []
    thread = threading.Thread(
        target=lambda: result.append(
            ex.execute(
                [planning.Start(f"c{i}", NODE, cid) for i, cid in enumerate(ids)],
                {NODE: Handle(engine)},
            )
        ),
        daemon=True,
    )
    thread.start()
    wait_for(lambda: thread.is_alive(), timeout=2)
    started = time.monotonic()
    ex.close()
    thread.join(timeout=5)
    assert not thread.is_alive(), "execute still waits on cancelled actions"
    assert time.monotonic() - started < 3
    assert result == [[]]  # two were in flight (hung), eighteen never started
    assert sum(c.running for c in engine.containers.values()) == 0
    assert engine.gate is not None
    engine.gate.set()
