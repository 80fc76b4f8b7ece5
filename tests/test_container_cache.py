"""Which events cost an inspect: the node's container cache, with plain values.

The cache decides, per container an event named, whether the event is news (inspect it) or not
(it was covered by a later inspect, the cache already shows what it says, the container is gone,
or the executor is acting on it and will observe the result itself). These are pure decisions
over the cache's own records, so an in-memory engine that counts inspects is enough here; that
a real create+start costs one inspect and a removal none is shown on real engines in
test_nodes.py.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from reconciler import domain, errors
from reconciler.docker_api import ContainerSummary, EngineEvent
from reconciler.nodes.containers import ContainerCache

NODE = domain.NodeName("n1")


class Engine:
    """Containers by id; counts inspects; ``during_inspect`` runs inside the next inspect."""

    def __init__(self) -> None:
        self.containers: dict[str, domain.ObservedContainer] = {}
        self.inspected: list[str] = []
        self.during_inspect: Callable[[], None] | None = None

    def put(
        self, cid: str, name: str, state: str = "running", exit_code: int | None = None
    ) -> None:
        self.containers[cid] = domain.ObservedContainer(
            NODE, domain.ContainerId(cid), name, "busybox:local", state, exit_code=exit_code
        )

    def inspect_container(self, container_id: str) -> domain.ObservedContainer:
        self.inspected.append(container_id)
        if self.during_inspect is not None:
            hook, self.during_inspect = self.during_inspect, None
            hook()
        try:
            return self.containers[container_id]
        except KeyError:
            raise errors.NotFound(f"no such container {container_id}", status=404) from None

    def list_containers(self) -> list[ContainerSummary]:
        return [
            ContainerSummary(domain.ContainerId(c.id), c.name, c.image, None, c.state, c.state)
            for c in self.containers.values()
        ]


def event(action: str, cid: str, **attributes: str) -> EngineEvent:
    return EngineEvent("container", action, cid, 0, attributes)


def look(cache: ContainerCache, engine: Engine) -> list[str]:
    """What a node's worker does when woken by events: inspect what is news."""
    dirty = cache.take_dirty()
    cache.inspect(engine, dirty)  # type: ignore[arg-type]
    return dirty


@pytest.fixture
def engine() -> Engine:
    engine = Engine()
    engine.put("c1", "web")
    return engine


@pytest.fixture
def cache(engine: Engine) -> ContainerCache:
    cache = ContainerCache(node=NODE)
    cache.inspect(engine, ["c1"])  # type: ignore[arg-type]
    engine.inspected.clear()
    return cache


def test_an_event_about_an_unknown_container_is_inspected(
    cache: ContainerCache, engine: Engine
) -> None:
    engine.put("c2", "db")
    cache.note_event(event("create", "c2", name="db"))
    assert look(cache, engine) == ["c2"]
    assert {c.name for c in cache.containers()} == {"web", "db"}


@pytest.mark.parametrize(
    ("actions", "state", "exit_code"),
    [
        pytest.param(["start"], "running", None, id="start-of-a-running-container"),
        pytest.param(["create", "start"], "running", None, id="create-and-start"),
        pytest.param(["kill", "die", "stop"], "exited", 137, id="stop-of-an-exited-container"),
        pytest.param(["pause"], "paused", None, id="pause-of-a-paused-container"),
    ],
)
def test_an_event_the_cache_already_shows_costs_no_inspect(
    engine: Engine, actions: list[str], state: str, exit_code: int | None
) -> None:
    engine.put("c1", "web", state, exit_code)
    cache = ContainerCache(node=NODE)
    cache.inspect(engine, ["c1"])  # type: ignore[arg-type]
    engine.inspected.clear()
    for action in actions:  # delivered late: after the inspect that saw their effect
        attrs = {"name": "web", **({"exitCode": str(exit_code)} if action == "die" else {})}
        cache.note_event(event(action, "c1", **attrs))
    assert look(cache, engine) == []
    assert engine.inspected == []


@pytest.mark.parametrize(
    ("action", "attributes"),
    [
        pytest.param("die", {"exitCode": "137"}, id="die-of-a-running-container"),
        pytest.param("health_status: unhealthy", {}, id="health-status"),
        pytest.param("rename", {"name": "web-2", "oldName": "/web"}, id="rename"),
        pytest.param("update", {}, id="update"),
    ],
)
def test_an_event_that_is_news_is_inspected(
    cache: ContainerCache, engine: Engine, action: str, attributes: dict[str, str]
) -> None:
    engine.put("c1", attributes.get("name", "web"), "exited" if action == "die" else "running")
    cache.note_event(event(action, "c1", **attributes))
    assert look(cache, engine) == ["c1"]
    assert cache.containers()[0] == engine.containers["c1"]


def test_a_die_with_another_exit_code_is_news(engine: Engine) -> None:
    engine.put("c1", "web", "exited", 0)
    cache = ContainerCache(node=NODE)
    cache.inspect(engine, ["c1"])  # type: ignore[arg-type]
    # started and died again behind our back; only the die arrived so far
    engine.put("c1", "web", "exited", 1)
    cache.note_event(event("die", "c1", name="web", exitCode="1"))
    assert look(cache, engine) == ["c1"]
    assert cache.containers()[0].exit_code == 1


def test_an_inspect_after_the_event_covers_it(cache: ContainerCache, engine: Engine) -> None:
    engine.put("c1", "web", "exited", 137)
    cache.note_event(event("die", "c1", name="web", exitCode="137"))
    cache.inspect(engine, ["c1"])  # type: ignore[arg-type]  (the executor's, say)
    engine.inspected.clear()
    assert look(cache, engine) == []


def test_events_about_a_claimed_container_wait_for_the_action(
    cache: ContainerCache, engine: Engine
) -> None:
    with cache.claimed(ids=["c1"]):
        engine.put("c1", "web", "exited", 137)
        cache.note_event(event("die", "c1", name="web", exitCode="137"))
        assert look(cache, engine) == [], "held while the action runs"
        cache.inspect(engine, ["c1"])  # type: ignore[arg-type]  (the action observes its result)
    engine.inspected.clear()
    assert look(cache, engine) == [], "covered by the action's own inspect"


def test_events_the_action_did_not_cover_are_inspected_after_it(
    cache: ContainerCache, engine: Engine
) -> None:
    with cache.claimed(ids=["c1"]):
        engine.put("c1", "web", "exited", 137)
        cache.note_event(event("die", "c1", name="web", exitCode="137"))
        assert look(cache, engine) == []
        # the action failed before observing anything
    assert cache.has_dirty()
    assert look(cache, engine) == ["c1"]
    assert cache.containers()[0].state == "exited"


def test_a_create_is_claimed_by_name_before_its_id_is_known(
    cache: ContainerCache, engine: Engine
) -> None:
    with cache.claimed(names=["db"]):
        engine.put("c2", "db")
        cache.note_event(event("create", "c2", name="db"))
        cache.note_event(event("start", "c2", name="db"))
        assert look(cache, engine) == []
        cache.inspect(engine, ["c2"])  # type: ignore[arg-type]
    engine.inspected.clear()
    cache.note_event(event("start", "c2", name="db"))  # delivered late
    assert look(cache, engine) == []
    assert engine.inspected == []


def test_events_about_a_removed_container_cost_nothing(
    cache: ContainerCache, engine: Engine
) -> None:
    cache.note_event(event("kill", "c1", name="web"))
    del engine.containers["c1"]
    cache.note_event(event("destroy", "c1", name="web"))
    cache.note_event(event("die", "c1", name="web", exitCode="137"))  # delivered late
    assert look(cache, engine) == []
    assert engine.inspected == []
    assert cache.containers() == ()


def test_an_inspect_that_started_before_a_removal_cannot_bring_it_back(
    cache: ContainerCache, engine: Engine
) -> None:
    engine.put("c1", "web", "exited", 137)
    # the executor removes c1 while the worker's inspect of it is on its way back
    engine.during_inspect = lambda: cache.forget([domain.ContainerId("c1")])
    cache.inspect(engine, ["c1"])  # type: ignore[arg-type]
    assert cache.containers() == ()


def test_a_list_that_started_before_a_removal_cannot_bring_it_back(
    cache: ContainerCache, engine: Engine
) -> None:
    engine.put("c2", "db")

    class ListThenRemove(Engine):
        def list_containers(self) -> list[ContainerSummary]:
            listed = engine.list_containers()
            cache.forget([domain.ContainerId("c2")])  # removed after the list answered
            return listed

    slow = ListThenRemove()
    slow.containers = engine.containers
    cache.refresh(slow)  # type: ignore[arg-type]
    assert [c.name for c in cache.containers()] == ["web"]
