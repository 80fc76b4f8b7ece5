"""Properties of the planner over generated clusters (hypothesis), checked with ``fakes.apply``."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Mapping

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler import planning
from reconciler.domain import (
    Constraint,
    DesiredContainer,
    Health,
    NodeName,
    NodeSnapshot,
    ObservedContainer,
    Phase,
    PortBinding,
)
from reconciler.planning.placement import Policy, Strategy, constraint_holds
from tests.fakes import IMAGE, apply, cluster, container, node, row

NODES = ("n1", "n2", "n3")
NAMES = ("a", "b", "c", "d", "e", "f")
Cluster = dict[NodeName, NodeSnapshot]
STATES = ("running", "exited", "created", "dead", "restarting", "paused")
CALM_STATES = ("running", "exited", "created", "dead", "restarting")
#: True: managed; False: no managed label; "false": a managed label that is not "true".
MANAGED_FLAGS: tuple[bool | str, ...] = (True, True, True, False, "false")


@st.composite
def containers(draw: st.DrawFn, *, states: tuple[str, ...] = STATES) -> list[ObservedContainer]:
    """Managed, unmanaged and half-labelled containers spread over NODES, unique ids."""
    found = []
    for i in range(draw(st.integers(0, 10))):
        managed = draw(st.sampled_from(MANAGED_FLAGS))
        name = draw(st.sampled_from([*NAMES, "gone", None]))
        found.append(
            container(
                name,
                draw(st.sampled_from(NODES)),
                id=f"{i:064x}",
                state=draw(st.sampled_from(states)),
                spec_hash=draw(st.sampled_from(["h0", "h1"])),
                managed=managed,
                created=draw(st.one_of(st.none(), st.floats(0, 100))),
                docker_name=None if managed is True else f"u{i}",
            )
        )
    return found


@st.composite
def desired_rows(draw: st.DrawFn, *, tidy: bool = False) -> list[DesiredContainer]:
    """Rows with unique names; unless ``tidy``, some malformed, pinned nowhere or imageless."""
    pins = [None, None, *NODES] if tidy else [None, None, *NODES, "x"]
    rows = []
    for name in draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=len(NAMES))):
        broken = not tidy and draw(st.integers(0, 9)) == 0
        rows.append(
            row(
                name,
                state=draw(st.sampled_from(["running", "stopped"])),
                node=draw(st.sampled_from(pins)),
                spec_hash=draw(st.sampled_from(["h0", "h1"])),
                image=IMAGE if tidy or draw(st.integers(0, 9)) else "nonexistent/image:nope",
                error="command: not valid JSON" if broken else None,
            )
        )
    return rows


@st.composite
def clusters(
    draw: st.DrawFn, *, healthy: bool, states: tuple[str, ...] = STATES
) -> dict[NodeName, NodeSnapshot]:
    placed = draw(containers(states=states))
    snapshots = []
    for name in NODES:
        health = Health.HEALTHY if healthy else draw(st.sampled_from(list(Health)))
        snapshots.append(
            node(
                name,
                *(c for c in placed if c.node == name),
                health=health,
                refreshed=healthy or draw(st.booleans()),
                schedulable=draw(st.booleans()) if not healthy else draw(st.integers(0, 3)) > 0,
            )
        )
    return cluster(*snapshots)


def usable(snapshot: NodeSnapshot) -> bool:
    return snapshot.health is Health.HEALTHY and snapshot.refreshed


def managed_per_name(nodes: Mapping[NodeName, NodeSnapshot]) -> Counter[str | None]:
    return Counter(
        c.desired_name for n in nodes.values() if usable(n) for c in n.containers if c.managed
    )


@settings(max_examples=200)
@given(desired_rows(), clusters(healthy=True))
def test_applying_the_plan_converges(desired: list[DesiredContainer], nodes: Cluster) -> None:
    first = planning.plan(desired, nodes, now=0.0)
    second = planning.plan(desired, apply(first, nodes, now=1.0), now=1.0)
    assert second.changes == ()


@settings(max_examples=200)
@given(desired_rows(tidy=True), clusters(healthy=True, states=CALM_STATES))
def test_tidy_rows_end_up_as_desired(desired: list[DesiredContainer], nodes: Cluster) -> None:
    first = planning.plan(desired, nodes, now=0.0)
    after = apply(first, nodes, now=1.0)
    second = planning.plan(desired, after, now=1.0)
    assert second.changes == ()
    by_id = {c.id: c for n in after.values() for c in n.containers}
    blocked = {a.name: a for a in second.actions if isinstance(a, planning.Blocked)}
    for r in desired:
        if r.name in blocked:
            # The only thing that stops a tidy row on healthy nodes: nowhere to schedule it.
            assert blocked[r.name].phase is Phase.UNSCHEDULABLE
            assert "cordoned" in blocked[r.name].reason
        else:
            wanted = Phase.RUNNING if r.state == "running" else Phase.STOPPED
            status = second.statuses[r.name]
            assert status.phase is wanted
            assert status.container_id is not None
            kept = by_id[status.container_id]
            assert kept.spec_hash == r.spec_hash
            assert kept.running == (r.state == "running"), kept
            assert r.node is None or status.node == r.node


@settings(max_examples=200)
@given(desired_rows(), clusters(healthy=False))
def test_only_managed_containers_on_usable_nodes_are_targeted(
    desired: list[DesiredContainer], nodes: Cluster
) -> None:
    result = planning.plan(desired, nodes, now=0.0)
    by_id = {(c.node, c.id): c for n in nodes.values() for c in n.containers}
    for action in result.changes:
        assert not isinstance(action, planning.Blocked)
        assert usable(nodes[action.node]), action
        target = getattr(action, "container_id", None)
        if target is not None:
            assert by_id[(action.node, target)].managed, action


@settings(max_examples=200)
@given(desired_rows(), clusters(healthy=False))
def test_containers_on_unusable_nodes_are_never_removed(
    desired: list[DesiredContainer], nodes: Cluster
) -> None:
    after = apply(planning.plan(desired, nodes, now=0.0), nodes, now=1.0)
    for name, snapshot in nodes.items():
        if not usable(snapshot):
            assert after[name] == snapshot


@settings(max_examples=200)
@given(desired_rows(), clusters(healthy=False))
def test_at_most_one_container_per_name_where_it_can_be_seen(
    desired: list[DesiredContainer], nodes: Cluster
) -> None:
    after = apply(planning.plan(desired, nodes, now=0.0), nodes, now=1.0)
    counts = managed_per_name(after)
    for r in desired:
        assert counts[r.name] <= 1, r.name
    assert set(counts) <= {r.name for r in desired}, "an orphan survived on a usable node"


@settings(max_examples=100)
@given(desired_rows(), clusters(healthy=False), st.randoms(use_true_random=False))
def test_the_plan_does_not_depend_on_input_order(
    desired: list[DesiredContainer], nodes: Cluster, rnd: random.Random
) -> None:
    shuffled_rows = list(desired)
    rnd.shuffle(shuffled_rows)
    names = list(nodes)
    rnd.shuffle(names)
    shuffled_nodes = {n: nodes[n] for n in names}
    assert planning.plan(desired, nodes, now=0.0) == planning.plan(
        shuffled_rows, shuffled_nodes, now=0.0
    )


# -- scheduling (issue 11): capacity, host ports, constraints ---------------------------------

GIB = 1024**3
ZONES = ("a", "b")


@st.composite
def scheduled_rows(draw: st.DrawFn, prefix: str) -> list[DesiredContainer]:
    """Unpinned rows with reservations, host ports and constraints."""
    rows = []
    for i in range(draw(st.integers(0, 8))):
        base = row(f"{prefix}{i}")
        assert base.spec is not None
        port = draw(st.sampled_from([None, None, 8080, 8081]))
        body = dataclasses.replace(
            base.spec,
            memory_bytes=draw(st.sampled_from([None, 1 * GIB, 3 * GIB, 5 * GIB])),
            cpus=draw(st.sampled_from([None, 0.5, 1.0, 2.0])),
            ports=(PortBinding(80, "tcp", port),) if port else (),
        )
        constraints = draw(
            st.lists(
                st.builds(
                    Constraint,
                    st.sampled_from(["node.name", "node.labels.zone", "engine.labels.disk"]),
                    st.sampled_from([*NODES, *ZONES, "ssd"]),
                    st.booleans(),
                ),
                max_size=2,
            )
        )
        rows.append(dataclasses.replace(base, spec=body, constraints=tuple(constraints)))
    return rows


@st.composite
def sized_nodes(draw: st.DrawFn) -> Cluster:
    return cluster(
        *(
            dataclasses.replace(
                node(name),
                cpus=draw(st.integers(1, 4)),
                memory_bytes=draw(st.sampled_from([4, 8, 10])) * GIB,
                labels={"zone": draw(st.sampled_from(ZONES))},
                engine_labels=draw(st.sampled_from([{}, {"disk": "ssd"}])),
            )
            for name in NODES
        )
    )


@settings(max_examples=200)
@given(
    scheduled_rows("a"),
    scheduled_rows("b"),
    sized_nodes(),
    st.sampled_from(list(Strategy)),
)
def test_placement_keeps_capacity_ports_and_constraints(
    first: list[DesiredContainer],
    second: list[DesiredContainer],
    nodes: Cluster,
    strategy: Strategy,
) -> None:
    policy = Policy(strategy=strategy)
    after = apply(planning.plan(first, nodes, now=0.0, policy=policy), nodes, now=1.0)
    rows = first + second
    final = apply(planning.plan(rows, after, now=1.0, policy=policy), after, now=2.0)
    by_name = {r.name: r for r in rows}
    for snapshot in final.values():
        placed = [by_name[c.desired_name] for c in snapshot.containers if c.desired_name]
        specs = [r.spec for r in placed if r.spec is not None]
        assert snapshot.cpus is not None and snapshot.memory_bytes is not None
        assert sum(s.cpus or 0 for s in specs) <= snapshot.cpus * 1.05 + 1e-9
        assert sum(s.memory_bytes or 0 for s in specs) <= snapshot.memory_bytes * 1.05
        ports = [p.host_port for s in specs for p in s.ports if p.host_port]
        assert len(ports) == len(set(ports)), ports
        for r in placed:
            assert all(constraint_holds(c, snapshot) for c in r.constraints), (r, snapshot)
