"""Table-driven tests of placement (issue 11): constraints, reservations, host ports,
strategies, drain, rescheduling after a node is lost; and the row fields behind them."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from reconciler import planning, spec
from reconciler.domain import (
    Constraint,
    DesiredContainer,
    Health,
    NodeName,
    NodeSnapshot,
    ObservedContainer,
    Phase,
    PortBinding,
    Reschedule,
    StatusRow,
)
from reconciler.planning import Blocked, Create, Remove, RemoveReason, RowStatus
from reconciler.planning.placement import Policy, Strategy
from tests.fakes import container, node, row

N1, N2, N3 = NodeName("n1"), NodeName("n2"), NodeName("n3")
GIB = 1024**3
NOW = 1000.0


def r(
    name: str,
    *,
    constraints: tuple[str, ...] = (),
    memory: int | None = None,
    cpus: float | None = None,
    port: int | None = None,
    pinned: str | None = None,
    reschedule: Reschedule = Reschedule.ON_NODE_FAILURE,
) -> DesiredContainer:
    base = row(name, node=pinned)
    assert base.spec is not None
    ports = (PortBinding(80, "tcp", port),) if port else ()
    body = dataclasses.replace(base.spec, memory_bytes=memory, cpus=cpus, ports=ports)
    parsed = tuple(spec.model.parse_constraint(c) for c in constraints)
    return dataclasses.replace(base, spec=body, constraints=parsed, reschedule=reschedule)


def n(name: str, *containers: ObservedContainer, **kw: Any) -> NodeSnapshot:
    base = node(
        name,
        *containers,
        **{k: v for k, v in kw.items() if k in ("health", "schedulable", "refreshed")},
    )
    extra = {k: v for k, v in kw.items() if k not in ("health", "schedulable", "refreshed")}
    extra.setdefault("cpus", 4)
    extra.setdefault("memory_bytes", 10 * GIB)
    return dataclasses.replace(base, **extra)


def created(name: str, at: NodeName, the_row: DesiredContainer, note: str = "") -> Create:
    assert the_row.spec is not None and the_row.spec_hash is not None
    return Create(name, at, the_row.spec, the_row.spec_hash, True, note)


def unschedulable(name: str, reason: str) -> Blocked:
    return Blocked(name, Phase.UNSCHEDULABLE, reason, "no node fits")


def placements(result: planning.Plan) -> dict[str, str]:
    return {a.name: a.node for a in result.actions if isinstance(a, Create)}


def run(rows: list[DesiredContainer], nodes: list[NodeSnapshot], **kw: Any) -> planning.Plan:
    return planning.plan(rows, {s.name: s for s in nodes}, now=kw.pop("now", NOW), **kw)


ZONES = [
    n("n1", labels={"zone": "a"}),
    n("n2", labels={"zone": "b"}),
    n("n3", labels={"zone": "b"}, engine_labels={"disk": "ssd"}),
]


@pytest.mark.parametrize(
    ("rows", "nodes", "expected"),
    [
        pytest.param(
            [r("web", constraints=("node.labels.zone==b",))], ZONES, {"web": N2}, id="node-label"
        ),
        pytest.param(
            [r("web", constraints=("node.labels.zone!=a", "node.name!=n2"))],
            ZONES,
            {"web": N3},
            id="not-equal-and-name",
        ),
        pytest.param(
            [r("web", constraints=("engine.labels.disk==ssd",))], ZONES, {"web": N3}, id="engine"
        ),
        pytest.param(
            [r("web", constraints=("engine.labels.disk!=ssd", "node.labels.zone==b"))],
            ZONES,
            {"web": N2},
            id="missing-engine-label-is-not-equal",
        ),
        pytest.param(
            [r(f"w{i}", memory=4 * GIB) for i in range(6)],
            [n("n1"), n("n2"), n("n3")],
            {"w0": N1, "w1": N2, "w2": N3, "w3": N1, "w4": N2, "w5": N3},
            id="memory-spread-two-per-node",
        ),
        pytest.param(
            [r(f"w{i}") for i in range(4)],
            [n("n1"), n("n2")],
            {"w0": N1, "w1": N2, "w2": N1, "w3": N2},
            id="spread-without-reservations",
        ),
        pytest.param(
            [r(f"w{i}", port=18080) for i in range(3)],
            [n("n1"), n("n2"), n("n3")],
            {"w0": N1, "w1": N2, "w2": N3},
            id="port-once-per-node",
        ),
        pytest.param(
            [r("web", port=18080)],
            [
                n(
                    "n1",
                    dataclasses.replace(
                        container("other", "n1", managed=False),
                        ports=(PortBinding(80, "tcp", 18080, "0.0.0.0"),),
                    ),
                ),
                n("n2"),
            ],
            {"web": N2},
            id="port-held-by-unmanaged-container",
        ),
        pytest.param(
            [r("web", port=18080)],
            [
                n(
                    "n1",
                    dataclasses.replace(
                        container("other", "n1", managed=False, state="exited"),
                        ports=(PortBinding(80, "tcp", 18080),),
                    ),
                ),
            ],
            {"web": N1},
            id="port-of-exited-unmanaged-container-is-free",
        ),
        pytest.param(
            [r("web", cpus=2.0), r("big", cpus=3.0)],
            [n("n1", cpus=4)],
            {"big": N1},  # rows go in name order; web (2 cpus) no longer fits in 4.2
            id="cpus-reserved",
        ),
    ],
)
def test_placement(
    rows: list[DesiredContainer], nodes: list[NodeSnapshot], expected: dict[str, str]
) -> None:
    assert placements(run(rows, nodes)) == expected


def test_binpack_fills_one_node_then_the_next() -> None:
    rows = [r(f"w{i}", memory=4 * GIB) for i in range(4)]
    nodes = [n("n1"), n("n2"), n("n3")]
    spread = placements(run(rows, nodes))
    packed = placements(run(rows, nodes, policy=Policy(strategy=Strategy.BINPACK)))
    assert spread == {"w0": N1, "w1": N2, "w2": N3, "w3": N1}
    assert packed == {"w0": N1, "w1": N1, "w2": N2, "w3": N2}


def test_binpack_without_reservations_uses_one_node() -> None:
    rows = [r(f"w{i}") for i in range(5)]
    packed = run(rows, [n("n1"), n("n2")], policy=Policy(strategy=Strategy.BINPACK))
    assert set(placements(packed).values()) == {N1}


@pytest.mark.parametrize(
    ("rows", "nodes", "expected"),
    [
        pytest.param(
            [r("web", constraints=("node.labels.zone==c",))],
            [n("n1", schedulable=False), *ZONES[1:]],
            "no node fits: n1 cordoned; n2 constraint node.labels.zone==c;"
            " n3 constraint node.labels.zone==c",
            id="impossible-constraint",
        ),
        pytest.param(
            [r("a", memory=4 * GIB), r("b", memory=4 * GIB), r("c", memory=4 * GIB)],
            [n("n1"), n("n2", drain=True, schedulable=False)],
            "no node fits: n1 memory (needs 4.0 GiB, 2.5 GiB free); n2 draining",
            id="memory",
        ),
        pytest.param(
            [r("a", port=18080), r("b", port=18080)],
            [n("n1"), n("n2", health=Health.UNHEALTHY)],
            "no node fits: n1 port 18080/tcp taken; n2 unhealthy",
            id="port",
        ),
        pytest.param(
            [r("a", cpus=1.0), r("b", cpus=4.0)],
            [n("n1", cpus=4)],
            "no node fits: n1 cpus (needs 4, 3.2 free)",
            id="cpus",
        ),
    ],
)
def test_unschedulable_names_each_node(
    rows: list[DesiredContainer], nodes: list[NodeSnapshot], expected: str
) -> None:
    result = run(rows, nodes)
    blocked = [a for a in result.actions if isinstance(a, Blocked)]
    assert blocked == [unschedulable(rows[-1].name, expected)]


def test_pinned_row_respects_reservations() -> None:
    rows = [r("a", memory=8 * GIB, pinned="n1"), r("b", memory=8 * GIB, pinned="n1")]
    result = run(rows, [n("n1")])
    assert placements(result) == {"a": N1}
    assert [a.reason for a in result.actions if isinstance(a, Blocked)] == [
        "no node fits: n1 memory (needs 8.0 GiB, 2.5 GiB free)"
    ]


# -- drain -------------------------------------------------------------------------------------

WEB1 = container("web", "n1")
WEB2 = container("web", "n2", created=5.0)


@pytest.mark.parametrize(
    ("rows", "nodes", "previous", "expected"),
    [
        pytest.param(
            [r("web")],
            [n("n1", WEB1, drain=True, schedulable=False), n("n2")],
            {},
            [created("web", N2, r("web"), "moved off draining node n1")],
            id="replacement-first-original-kept",
        ),
        pytest.param(
            [r("web")],
            [n("n1", WEB1, drain=True, schedulable=False), n("n2", WEB2)],
            {"web": StatusRow("web", Phase.RUNNING, N2, WEB2.id)},
            [Remove(N1, WEB1.id, "web", RemoveReason.DUPLICATE)],
            id="original-removed-once-the-replacement-runs",
        ),
        pytest.param(
            [r("web", pinned="n1")],
            [n("n1", WEB1, drain=True, schedulable=False), n("n2")],
            {},
            [],
            id="pinned-row-stays",
        ),
        pytest.param(
            [r("web")],
            [n("n1", WEB1, drain=True, schedulable=False), n("n2", schedulable=False)],
            {},
            [],
            id="nowhere-to-go-stays",
        ),
    ],
)
def test_drain(
    rows: list[DesiredContainer],
    nodes: list[NodeSnapshot],
    previous: dict[str, StatusRow],
    expected: list[Any],
) -> None:
    assert list(run(rows, nodes, previous=previous).actions) == expected


# -- rescheduling ------------------------------------------------------------------------------

LOST = {"health": Health.UNHEALTHY, "unhealthy_since": NOW - 31}
WAS_ON_N3 = {"web": StatusRow("web", Phase.RUNNING, N3, container("web", "n3").id)}


@pytest.mark.parametrize(
    ("rows", "n3", "previous", "expected", "status"),
    [
        pytest.param(
            [r("web")],
            n("n3", container("web", "n3"), **LOST),
            WAS_ON_N3,
            [created("web", N1, r("web"), "rescheduled from n3 (unhealthy for 31 s)")],
            None,
            id="lost-node-row-rescheduled",
        ),
        pytest.param(
            [r("web")],
            n("n3", **LOST),
            WAS_ON_N3,
            [created("web", N1, r("web"), "rescheduled from n3 (unhealthy for 31 s)")],
            None,
            id="lost-node-without-picture",
        ),
        pytest.param(
            [r("web")],
            n("n3", container("web", "n3"), health=Health.UNHEALTHY, unhealthy_since=NOW - 29),
            WAS_ON_N3,
            [],
            "node n3 is unhealthy",
            id="within-grace-held",
        ),
        pytest.param(
            [r("web", pinned="n3")],
            n("n3", container("web", "n3"), **LOST),
            WAS_ON_N3,
            [],
            "node n3 is unhealthy for 31 s; not rescheduled: the row is pinned to n3",
            id="pinned-stays-unknown",
        ),
        pytest.param(
            [r("web", reschedule=Reschedule.NEVER)],
            n("n3", **LOST),
            WAS_ON_N3,
            [],
            "node n3 is unhealthy for 31 s; not rescheduled: reschedule is 'never'",
            id="never-stays-unknown",
        ),
    ],
)
def test_rescheduling(
    rows: list[DesiredContainer],
    n3: NodeSnapshot,
    previous: dict[str, StatusRow],
    expected: list[Any],
    status: str | None,
) -> None:
    result = run(rows, [n("n1"), n("n2", container("x", "n2")), n3], previous=previous)
    assert [a for a in result.actions if a.name == "web"] == expected
    if status is not None:
        assert result.statuses["web"].phase is Phase.UNKNOWN
        assert result.statuses["web"].message == status


@pytest.mark.parametrize(
    "old_state", [pytest.param("running", id="still-running"), pytest.param("exited", id="exited")]
)
def test_stale_copy_removed_when_lost_node_returns(old_state: str) -> None:
    """The copy kept is where the status row places the row, not the oldest one."""
    old = container("web", "n3", state=old_state, created=0.0)
    new = container("web", "n1", created=50.0)
    previous = {"web": StatusRow("web", Phase.RUNNING, N1, new.id)}
    result = run([r("web")], [n("n1", new), n("n3", old)], previous=previous)
    assert list(result.actions) == [Remove(N3, old.id, "web", RemoveReason.DUPLICATE)]
    assert result.statuses["web"] == RowStatus(Phase.RUNNING, N1, new.id)


def test_the_rescheduled_note_stays_on_the_status_row() -> None:
    new = container("web", "n1", created=50.0)
    note = "rescheduled from n3 (unhealthy for 31 s)"
    created_by_move = f"container web has been created: {note}"
    previous = {"web": StatusRow("web", Phase.RUNNING, N1, new.id, created_by_move)}
    result = run([r("web")], [n("n1", new)], previous=previous)
    assert result.statuses["web"] == RowStatus(Phase.RUNNING, N1, new.id, note)
    other = {"web": StatusRow("web", Phase.RUNNING, N1, new.id, "container web has been created")}
    assert run([r("web")], [n("n1", new)], previous=other).statuses["web"].message == ""


def test_copy_on_lost_node_is_left_alone_while_it_is_away() -> None:
    old = container("web", "n3")
    new = container("web", "n1", created=50.0)
    previous = {"web": StatusRow("web", Phase.RUNNING, N1, new.id)}
    result = run([r("web")], [n("n1", new), n("n3", old, **LOST)], previous=previous)
    assert result.actions == ()
    assert result.statuses["web"] == RowStatus(Phase.RUNNING, N1, new.id)


# -- the row fields ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "words"),
    [
        pytest.param('["zone=a"]', "must look like KEY==VALUE", id="no-operator"),
        pytest.param('["host.name==a"]', "unknown key 'host.name'", id="unknown-key"),
        pytest.param('["node.labels.==a"]', "unknown key", id="empty-label"),
        pytest.param('"node.name==a"', "must be a list", id="not-a-list"),
        pytest.param("[1]", "must be a string", id="not-a-string"),
        pytest.param('["node.name=="]', "must look like", id="no-value"),
    ],
)
def test_malformed_constraint_fails_the_row(value: str, words: str) -> None:
    parsed = spec.parse_row({"name": "web", "image": "busybox", "constraints": value})
    assert parsed.spec is None and parsed.error is not None
    assert parsed.error.startswith("constraints")
    assert words in parsed.error


def test_constraints_and_reschedule_parsed() -> None:
    parsed = spec.parse_row(
        {
            "name": "web",
            "image": "busybox",
            "constraints": '["node.labels.zone == a", "engine.labels.disk!=hdd"]',
            "reschedule": "never",
        }
    )
    assert parsed.constraints == (
        Constraint("node.labels.zone", "a"),
        Constraint("engine.labels.disk", "hdd", equal=False),
    )
    assert parsed.reschedule is Reschedule.NEVER
    bad = spec.parse_row({"name": "web", "image": "busybox", "reschedule": "always"})
    assert bad.error == "reschedule: must be 'on-node-failure' or 'never', got 'always'"
    plain = spec.parse_row({"name": "web", "image": "busybox"})
    assert plain.spec_hash == spec.parse_row({**parsed_raw(), "reschedule": "never"}).spec_hash


def parsed_raw() -> dict[str, Any]:
    return {"name": "web", "image": "busybox", "constraints": '["node.name==n1"]'}


def test_desired_row_triggers_survive_every_revision(tmp_path: Any) -> None:
    """A revision that recreates desired_containers on SQLite (a batch) drops the 0002
    triggers, and the daemon no longer notices new rows."""
    import sqlite3

    from reconciler.db import migrate

    path = tmp_path / "t.db"
    url = f"sqlite:///{path}"
    migrate.upgrade(url)
    migrate.downgrade(url, "0003")
    migrate.upgrade(url)
    with sqlite3.connect(path) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}
    assert {f"desired_containers_changed_{op}" for op in ("insert", "update", "delete")} <= names
