"""Table-driven tests of the pure planner (one case per rule of issue 4) and of its rendering."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from reconciler import planning
from reconciler.domain import ContainerId, Health, NodeName, ObservedContainer, Phase
from reconciler.planning import Blocked, Create, Recreate, Remove, RowStatus, Start, Stop
from reconciler.planning import RecreateReason as Why
from reconciler.planning import RemoveReason as Gone
from reconciler.planning import describe as plan_format
from reconciler.planning.backoff import RowBackoff
from tests.fakes import cluster, container, node, row, spec

N1, N2, N3 = NodeName("n1"), NodeName("n2"), NodeName("n3")
WEB = container("web", "n1")  # running, hash h1: matches row("web")
WEB_EXITED = container("web", "n1", state="exited")
WEB_OLD = container("web", "n1", spec_hash="h0")
WEB_N2 = container("web", "n2", created=5.0)  # a newer duplicate of WEB
BAD_IMAGE = "nonexistent/image:nope"
NO_IMAGE = f"image {BAD_IMAGE} not found on node n1"
DOWN = Health.UNHEALTHY
FAILED, PENDING, UNSCHEDULABLE = Phase.FAILED, Phase.PENDING, Phase.UNSCHEDULABLE


def create(name: str, at: NodeName, *, start: bool = True, image: str = "busybox:local") -> Create:
    return Create(name, at, spec(name, image=image), "h1", start)


def recreate(c: ObservedContainer, why: Why = Why.SPEC_CHANGED, *, start: bool = True) -> Recreate:
    return Recreate("web", c.node, c.id, spec("web"), "h1", why, start)


def remove(c: ObservedContainer, why: Gone) -> Remove:
    return Remove(c.node, c.id, c.desired_name, why)


def blocked(
    name: str, phase: Phase, reason: str, cause: str, on: ObservedContainer | None = None
) -> Blocked:
    if on is None:
        return Blocked(name, phase, reason, cause)
    return Blocked(name, phase, reason, cause, on.node, on.id)


def case(case_id: str, desired: list[Any], nodes: list[Any], expected: Any, **kw: Any) -> Any:
    return pytest.param(desired, nodes, kw, expected, id=case_id)


def held(until: float, spec_hash: str = "h1", message: str = "boom") -> dict[str, RowBackoff]:
    return {"web": RowBackoff(3, until, spec_hash, message)}


CASES = [
    # --- create / start / stop ---------------------------------------------------------------
    case("create-new-row", [row("web")], [node("n1")], [create("web", N1)]),
    case(
        "stopped-row-created-not-started",
        [row("web", state="stopped")],
        [node("n1")],
        [create("web", N1, start=False)],
    ),
    case("running-and-converged", [row("web")], [node("n1", WEB)], []),
    case("start-exited", [row("web")], [node("n1", WEB_EXITED)], [Start("web", N1, WEB_EXITED.id)]),
    case(
        "start-created",
        [row("web")],
        [node("n1", c := container("web", "n1", state="created"))],
        [Start("web", N1, c.id)],
    ),
    case(
        "stop-running-when-stopped-desired",
        [row("web", state="stopped", stop_timeout=5)],
        [node("n1", WEB)],
        [Stop("web", N1, WEB.id, 5)],
    ),
    case("stopped-and-converged", [row("web", state="stopped")], [node("n1", WEB_EXITED)], []),
    case(
        "stop-paused-when-stopped-desired",
        [row("web", state="stopped")],
        [node("n1", c := container("web", "n1", state="paused"))],
        [Stop("web", N1, c.id, None)],
    ),
    case(
        "paused-left-alone", [row("web")], [node("n1", container("web", "n1", state="paused"))], []
    ),
    # --- drift and recreate ------------------------------------------------------------------
    case("drifted-spec", [row("web")], [node("n1", WEB_OLD)], [recreate(WEB_OLD)]),
    case(
        "drifted-spec-of-stopped-row",
        [row("web", state="stopped")],
        [node("n1", WEB_OLD)],
        [recreate(WEB_OLD, start=False)],
    ),
    case(
        "dead-container-recreated",
        [row("web")],
        [node("n1", c := container("web", "n1", state="dead"))],
        [recreate(c, Why.DEAD)],
    ),
    case(
        "stale-task-marked-by-caller",
        [row("web")],
        [node("n1", WEB_EXITED)],
        [recreate(WEB_EXITED, Why.STALE_TASK)],
        stale_tasks=frozenset({WEB_EXITED.id}),
    ),
    case(
        "drift-to-missing-image-keeps-old-container",
        [row("web", image=BAD_IMAGE, pull="never")],
        [node("n1", WEB_OLD)],
        [blocked("web", FAILED, NO_IMAGE, "image missing", WEB_OLD)],
    ),
    case(
        "drift-on-cordoned-node-recreated-in-place",
        [row("web")],
        [node("n1", WEB_OLD, schedulable=False), node("n2")],
        [recreate(WEB_OLD)],
    ),
    # --- ownership ---------------------------------------------------------------------------
    case(
        "orphan-removed", [], [node("n1", c := container("gone", "n1"))], [remove(c, Gone.ORPHAN)]
    ),
    case(
        "managed-without-name-is-orphan",
        [],
        [node("n1", c := container(None, "n1"))],
        [remove(c, Gone.ORPHAN)],
    ),
    case(
        "orphan-on-unhealthy-node-kept", [], [node("n1", container("gone", "n1"), health=DOWN)], []
    ),
    case(
        "orphan-on-unrefreshed-node-kept",
        [],
        [node("n1", container("gone", "n1"), refreshed=False)],
        [],
    ),
    case(
        "unmanaged-containers-invisible",
        [],
        [node("n1", container("x", "n1", managed=False), container("y", "n1", managed="false"))],
        [],
    ),
    case(
        "name-label-without-managed-label-ignored",
        [row("web")],
        [node("n1", container("web", "n1", managed=False, docker_name="hand-made"))],
        [create("web", N1)],
    ),
    case(
        "unmanaged-name-clash-avoided",
        [row("web")],
        [node("n1", container("web", "n1", managed=False)), node("n2")],
        [create("web", N2)],
    ),
    case(
        "unmanaged-name-clash-blocks",
        [row("web")],
        [node("n1", container("web", "n1", managed=False))],
        [
            blocked(
                "web",
                FAILED,
                "name 'web' is taken by a container reconciler does not manage on node n1",
                "name taken",
            )
        ],
    ),
    # --- duplicates --------------------------------------------------------------------------
    case(
        "duplicates-keep-the-running-one",
        [row("web")],
        [node("n1", WEB_EXITED), node("n2", WEB_N2)],
        [remove(WEB_EXITED, Gone.DUPLICATE)],
    ),
    case(
        "duplicates-keep-matching-hash",
        [row("web")],
        [node("n1", WEB_OLD), node("n2", WEB_N2)],
        [remove(WEB_OLD, Gone.DUPLICATE)],
    ),
    case(
        "duplicates-keep-the-oldest",
        [row("web")],
        [node("n1", WEB), node("n2", WEB_N2)],
        [remove(WEB_N2, Gone.DUPLICATE)],
    ),
    case(
        "duplicates-unknown-age-counts-as-newest",
        [row("web")],
        [node("n1", WEB, c := container("web", "n1", id="b" * 64, created=None))],
        [remove(c, Gone.DUPLICATE)],
    ),
    case(
        "duplicate-on-unhealthy-node-left-alone",
        [row("web")],
        [node("n1", WEB), node("n2", container("web", "n2", created=-1.0), health=DOWN)],
        [],
    ),
    case(
        "duplicates-of-a-malformed-row-removed",
        [row("web", error="env: not an object")],
        [node("n1", WEB), node("n2", WEB_N2)],
        [
            remove(WEB_N2, Gone.DUPLICATE),
            blocked("web", FAILED, "env: not an object", "invalid row", WEB),
        ],
    ),
    # --- malformed rows ----------------------------------------------------------------------
    case(
        "malformed-row-failed-container-kept",
        [row("web", error="command: not valid JSON")],
        [node("n1", WEB)],
        [blocked("web", FAILED, "command: not valid JSON", "invalid row", WEB)],
    ),
    case(
        "malformed-row-failed",
        [row("web", error="state: 'runing' is not running or stopped")],
        [node("n1")],
        [blocked("web", FAILED, "state: 'runing' is not running or stopped", "invalid row")],
    ),
    # --- pinned rows -------------------------------------------------------------------------
    case(
        "pinned-to-unknown-node",
        [row("db", node="x")],
        [node("n1")],
        [blocked("db", UNSCHEDULABLE, "node 'x' is not registered", "node 'x' is not registered")],
    ),
    case(
        "pinned-to-unhealthy-node",
        [row("db", node="n2")],
        [node("n1"), node("n2", health=DOWN)],
        [blocked("db", PENDING, "node n2 is unhealthy", "n2 unhealthy")],
    ),
    case(
        "pinned-to-pending-node",
        [row("db", node="n2")],
        [node("n1"), node("n2", health=Health.PENDING)],
        [blocked("db", PENDING, "node n2 has not been reached yet", "n2 pending")],
    ),
    case(
        "pinned-to-unrefreshed-node",
        [row("db", node="n2")],
        [node("n1"), node("n2", refreshed=False)],
        [blocked("db", PENDING, "node n2 has not been refreshed yet", "n2 not refreshed")],
    ),
    case(
        "pinned-to-cordoned-node",
        [row("db", node="n2")],
        [node("n1"), node("n2", schedulable=False)],
        [blocked("db", UNSCHEDULABLE, "node n2 is cordoned", "n2 cordoned")],
    ),
    case(
        "pinned-ignores-load",
        [row("db", node="n2"), row("a"), row("b")],
        [node("n1"), node("n2", container("a", "n2"), container("b", "n2"))],
        [create("db", N2)],
    ),
    case(
        "pinned-moves-from-other-node",
        [row("web", node="n2")],
        [node("n1", WEB), node("n2")],
        [remove(WEB, Gone.REPLACED), create("web", N2)],
    ),
    case(
        "pinned-keeps-the-one-on-its-node",
        [row("web", node="n2")],
        [node("n1", c := container("web", "n1", created=-5.0)), node("n2", WEB_N2)],
        [remove(c, Gone.DUPLICATE)],
    ),
    case(
        "pinned-move-waits-for-unhealthy-source",
        [row("web", node="n2")],
        [node("n1", WEB, health=DOWN), node("n2")],
        [],
    ),
    case(
        "pinned-move-waits-for-unhealthy-target",
        [row("web", node="n2")],
        [node("n1", WEB), node("n2", health=DOWN)],
        [blocked("web", PENDING, "node n2 is unhealthy", "n2 unhealthy", WEB)],
    ),
    case(
        "pinned-move-waits-for-image",
        [row("web", node="n2", image=BAD_IMAGE, pull="never")],
        [node("n1", WEB), node("n2")],
        [blocked("web", FAILED, f"image {BAD_IMAGE} not found on node n2", "image missing", WEB)],
    ),
    # --- unhealthy and cordoned nodes keep what they run -------------------------------------
    case(
        "unhealthy-node-keeps-its-container",
        [row("web")],
        [node("n1", WEB, health=DOWN), node("n2")],
        [],
    ),
    case(
        "unrefreshed-node-keeps-its-container",
        [row("web")],
        [node("n1", WEB_OLD, refreshed=False), node("n2")],
        [],
    ),
    case(
        "cordoned-node-keeps-its-container",
        [row("web")],
        [node("n1", WEB, schedulable=False), node("n2")],
        [],
    ),
    case(
        "cordoned-node-restarts-its-container",
        [row("web")],
        [node("n1", WEB_EXITED, schedulable=False), node("n2")],
        [Start("web", N1, WEB_EXITED.id)],
    ),
    # --- placement ---------------------------------------------------------------------------
    case(
        "spread-fewest-managed-first",
        [row("web"), row("a"), row("b"), row("c")],
        [node("n1", container("a", "n1"), container("b", "n1")), node("n2", container("c", "n2"))],
        [create("web", N2)],
    ),
    case(
        "spread-tie-broken-by-name",
        [row("web")],
        [node("n2"), node("n1"), node("n3")],
        [create("web", N1)],
    ),
    case(
        "spread-counts-this-pass",
        [row(name) for name in "fedcba"],
        [node("n1"), node("n2"), node("n3")],
        [create(name, at) for name, at in zip("abcdef", [N1, N2, N3] * 2, strict=True)],
    ),
    case(
        "spread-counts-only-managed",
        [row("web"), row("c")],
        [
            node("n1", container("a", "n1", managed=False), container("b", "n1", managed=False)),
            node("n2", container("c", "n2")),
        ],
        [create("web", N1)],
    ),
    case(
        "spread-skips-unhealthy-and-cordoned",
        [row("web")],
        [node("n1", health=DOWN), node("n2", schedulable=False), node("n3")],
        [create("web", N3)],
    ),
    case(
        "no-healthy-schedulable-node",
        [row("web")],
        [node("n1", health=DOWN), node("n2", schedulable=False), node("n3", refreshed=False)],
        [
            blocked(
                "web",
                UNSCHEDULABLE,
                "no healthy schedulable node (n1 unhealthy, n2 cordoned, n3 not refreshed)",
                "no schedulable node",
            )
        ],
    ),
    case(
        "no-nodes-registered",
        [row("web")],
        [],
        [
            blocked(
                "web",
                UNSCHEDULABLE,
                "no healthy schedulable node (no nodes registered)",
                "no schedulable node",
            )
        ],
    ),
    case(
        "image-missing-on-the-only-node",
        [row("web", image=BAD_IMAGE, pull="never")],
        [node("n1")],
        [blocked("web", FAILED, NO_IMAGE, "image missing")],
    ),
    case(
        "image-missing-everywhere",
        [row("web", image=BAD_IMAGE, pull="never")],
        [node("n1"), node("n2")],
        [blocked("web", FAILED, f"image {BAD_IMAGE} not found on nodes n1, n2", "image missing")],
    ),
    case(
        "placement-prefers-a-node-with-the-image-among-equally-loaded",
        [row("web", image="other:1")],
        [node("n1"), node("n2", images=["other:1"])],
        [create("web", N2, image="other:1")],
    ),
    case(
        "placement-pulls-rather-than-crowd-a-node",
        [row("web", image="other:1"), row("a")],
        [node("n1"), node("n2", container("a", "n2"), images=["other:1"])],
        [create("web", N1, image="other:1")],
    ),
    case(
        "pull-missing-places-a-row-whose-image-is-nowhere",
        [row("web", image=BAD_IMAGE)],
        [node("n1")],
        [create("web", N1, image=BAD_IMAGE)],
    ),
    # --- backoff -----------------------------------------------------------------------------
    case(
        "backing-off-row-blocked",
        [row("web")],
        [node("n1", WEB_EXITED)],
        [blocked("web", FAILED, "boom", "backing off", WEB_EXITED)],
        now=10.0,
        backoff=held(until=12.0),
    ),
    case(
        "backoff-expired",
        [row("web")],
        [node("n1", WEB_EXITED)],
        [Start("web", N1, WEB_EXITED.id)],
        now=12.0,
        backoff=held(until=12.0),
    ),
    case(
        "backoff-reset-on-spec-change",
        [row("web")],
        [node("n1")],
        [create("web", N1)],
        now=10.0,
        backoff=held(until=60.0, spec_hash="h0"),
    ),
    case(
        "backoff-ignored-when-nothing-to-do",
        [row("web")],
        [node("n1", WEB)],
        [],
        now=10.0,
        backoff=held(until=60.0),
    ),
    case(
        "backoff-keeps-the-more-precise-block",
        [row("web", image=BAD_IMAGE, pull="never")],
        [node("n1")],
        [blocked("web", FAILED, NO_IMAGE, "image missing")],
        now=10.0,
        backoff=held(until=60.0),
    ),
    case(
        "backing-off-new-row-takes-no-place",
        [row("a"), row("web")],
        [node("n1"), node("n2")],
        [create("a", N1), blocked("web", FAILED, "boom", "backing off")],
        now=10.0,
        backoff=held(until=60.0),
    ),
]


@pytest.mark.parametrize(("desired", "nodes", "kwargs", "expected"), CASES)
def test_plan(
    desired: list[Any], nodes: list[Any], kwargs: dict[str, Any], expected: list[Any]
) -> None:
    result = planning.plan(desired, cluster(*nodes), **{"now": 0.0, **kwargs})
    assert list(result.actions) == expected


STATUS_CASES = [
    case("running", [row("web")], [node("n1", WEB)], RowStatus(Phase.RUNNING, N1, WEB.id)),
    case(
        "stopped",
        [row("web", state="stopped")],
        [node("n1", WEB_EXITED)],
        RowStatus(Phase.STOPPED, N1, WEB_EXITED.id),
    ),
    case(
        "unknown-on-unhealthy-node",
        [row("web")],
        [node("n1", WEB, health=DOWN)],
        RowStatus(Phase.UNKNOWN, N1, WEB.id, "node n1 is unhealthy"),
    ),
    case(
        "unknown-on-unrefreshed-node",
        [row("web")],
        [node("n1", WEB_OLD, refreshed=False)],
        RowStatus(Phase.UNKNOWN, N1, WEB_OLD.id, "node n1 has not been refreshed yet"),
    ),
    case(
        "unknown-waiting-to-move",
        [row("web", node="n2")],
        [node("n1", WEB, health=DOWN), node("n2")],
        RowStatus(Phase.UNKNOWN, N1, WEB.id, "node n1 is unhealthy; the row is pinned to n2"),
    ),
    case(
        "paused",
        [row("web")],
        [node("n1", c := container("web", "n1", state="paused"))],
        RowStatus(Phase.PENDING, N1, c.id, "container is paused"),
    ),
    case(
        "kept-while-its-duplicate-is-removed",
        [row("web")],
        [node("n1", WEB), node("n2", WEB_N2)],
        RowStatus(Phase.RUNNING, N1, WEB.id),
    ),
    case("none-when-an-action-is-planned", [row("web")], [node("n1", WEB_EXITED)], None),
    case("none-when-blocked", [row("web", node="x")], [node("n1")], None),
]


@pytest.mark.parametrize(("desired", "nodes", "kwargs", "expected"), STATUS_CASES)
def test_statuses(desired: list[Any], nodes: list[Any], kwargs: Any, expected: Any) -> None:
    assert planning.plan(desired, cluster(*nodes), now=0.0).statuses.get("web") == expected


SUMMARY_CASES = [
    case("empty", [], [node("n1")], "nothing to do"),
    case("converged", [row("web")], [node("n1", WEB)], "nothing to do"),
    case(
        "mixed",
        [row("a"), row("b"), row("web"), *(row(f"p{i}", node="n2") for i in range(3))],
        [node("n1", WEB_OLD, container("gone", "n1")), node("n2", health=DOWN)],
        "create 2, recreate 1, remove 1, blocked 3 (n2 unhealthy)",
    ),
    case(
        "blocked-causes-counted",
        [row("a", node="x"), row("b", node="x"), row("c", image=BAD_IMAGE, pull="never")],
        [node("n1")],
        "blocked 3 (2 node 'x' is not registered, 1 image missing)",
    ),
    case(
        "unknown-rows-reported",
        [row("web"), row("api")],
        [node("n1", WEB, container("api", "n1"), health=DOWN)],
        "nothing to do, unknown 2 (on n1)",
    ),
]


@pytest.mark.parametrize(("desired", "nodes", "kwargs", "expected"), SUMMARY_CASES)
def test_summary(desired: list[Any], nodes: list[Any], kwargs: Any, expected: str) -> None:
    assert planning.plan(desired, cluster(*nodes), now=0.0).summary() == expected


def test_a_batch_of_100_spreads_evenly() -> None:
    desired = [row(f"web-{i:03}") for i in range(100)]
    result = planning.plan(desired, cluster(node("n1"), node("n2"), node("n3")), now=0.0)
    per_node = Counter(a.node for a in result.actions if isinstance(a, Create))
    assert sorted(per_node.values()) == [33, 33, 34]


def test_a_batch_fills_the_emptier_node_first() -> None:
    existing = [container(f"old-{i}", "n1") for i in range(4)]
    desired = [row(f"old-{i}") for i in range(4)] + [row(f"new-{i}") for i in range(6)]
    result = planning.plan(desired, cluster(node("n1", *existing), node("n2")), now=0.0)
    per_node = Counter(a.node for a in result.actions if isinstance(a, Create))
    assert per_node == {N2: 5, N1: 1}


def test_the_order_of_the_rows_does_not_matter() -> None:
    desired = [row("c"), row("a", node="n2"), row("b", state="stopped"), row("d")]
    nodes = cluster(node("n1", container("a", "n1"), container("zz", "n1")), node("n2"))
    forward = planning.plan(desired, nodes, now=0.0)
    assert forward == planning.plan(desired[::-1], nodes, now=0.0)
    assert [getattr(a, "name", None) for a in forward.actions] == ["a", "a", "b", "c", "d", "zz"]


def test_a_repeated_desired_name_keeps_the_first_row() -> None:
    result = planning.plan([row("web"), row("web", node="x")], cluster(node("n1")), now=0.0)
    assert result.actions == (create("web", N1),)


def test_changes_leave_out_blocked() -> None:
    result = planning.plan([row("a"), row("b", node="x")], cluster(node("n1")), now=0.0)
    assert result.changes == (create("a", N1),)
    assert len(result.actions) == 2


# --- the plan in words (plan_format) -----------------------------------------------------------

LONG_ID = ContainerId("3f2a0b1c2d3e" + "0" * 52)


def test_one_line_per_action() -> None:
    actions: list[planning.Action] = [
        Create("web-1", N1, spec("web-1"), "h1"),
        Create("batch", N1, spec("batch"), "h1", start=False),
        Start("web-2", N1, LONG_ID),
        Stop("web-3", N2, LONG_ID, 5),
        Recreate("api", N2, LONG_ID, spec("api"), "h2", Why.SPEC_CHANGED),
        Remove(N1, LONG_ID, None, Gone.ORPHAN),
        Remove(N1, LONG_ID, "web-1", Gone.DUPLICATE),
        Blocked("db", UNSCHEDULABLE, "node 'x' is not registered"),
    ]
    assert plan_format.lines(planning.Plan(tuple(actions))) == [
        "create web-1 on n1",
        "create batch on n1 (not started)",
        "start web-2 on n1",
        "stop web-3 on n2",
        "recreate api on n2 (spec changed)",
        "remove 3f2a0b1c2d3e… on n1 (desired row deleted)",
        "remove 3f2a0b1c2d3e… (web-1) on n1 (duplicate)",
        "blocked db: node 'x' is not registered",
    ]


def test_statuses_in_words_on_request() -> None:
    web = container("web", "n1", id=LONG_ID)
    result = planning.plan([row("web"), row("api")], cluster(node("n1", web)), now=0.0)
    assert plan_format.lines(result) == ["create api on n1"]
    assert plan_format.lines(result, statuses=True) == [
        "create api on n1",
        "web running on n1 (3f2a0b1c2d3e…)",
    ]
