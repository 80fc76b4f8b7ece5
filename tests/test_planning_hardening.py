"""Table tests of the planner's hardening rules (issue 10): crash loops back off, rows whose
node's picture is unknown stay where they were last seen, a duplicate node is ignored."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from reconciler import planning
from reconciler.domain import ContainerId, Health, NodeName, Phase, StatusRow
from reconciler.planning import Blocked, Create, RowStatus, Start
from reconciler.planning.backoff import RowBackoff
from tests.fakes import cluster, container, node, row, spec

N1, N2 = NodeName("n1"), NodeName("n2")
NOW = 1000.0
EXITED = replace(container("web", "n1", state="exited"), exit_code=1)
CREATED = container("web", "n1", state="created")
GONE_ID = ContainerId("c" * 64)  # a container last seen on a node whose picture is now unknown


def was(
    phase: Phase = Phase.RUNNING,
    *,
    on: str = "n1",
    cid: str | None = EXITED.id,
    failures: int = 0,
    next_at: float | None = None,
    spec_hash: str = "h1",
    message: str = "",
) -> dict[str, StatusRow]:
    """The previous status row of "web"."""
    container_id = None if cid is None else ContainerId(cid)
    row_ = StatusRow(
        "web", phase, NodeName(on), container_id, message, spec_hash, failures, next_at
    )
    return {"web": row_}


def crash(restarts: int, delay: int, exit_code: int | str = 1) -> Blocked:
    plural = "restart" if restarts == 1 else "restarts"
    code = f"exit {exit_code}" if exit_code != "?" else "exited"
    message = f"back-off {delay}s restarting ({code}, {restarts} {plural})"
    return Blocked("web", Phase.FAILED, message, "crash loop", N1, EXITED.id)


def case(case_id: str, desired: list[Any], nodes: list[Any], expected: Any, **kw: Any) -> Any:
    return pytest.param(desired, nodes, kw, expected, id=case_id)


CRASH_CASES = [
    case(
        "exit-after-running-backs-off-1s",
        [row("web")],
        [node("n1", EXITED)],
        [crash(1, 1)],
        previous=was(),
    ),
    case(
        "fifth-exit-backs-off-16s",
        [row("web")],
        [node("n1", EXITED)],
        [crash(5, 16)],
        previous=was(failures=4, next_at=NOW - 20),
    ),
    case(
        "delay-capped-at-60s",
        [row("web")],
        [node("n1", EXITED)],
        [crash(9, 60)],
        previous=was(failures=8, next_at=NOW - 70),
    ),
    case(
        "unknown-exit-code",
        [row("web")],
        [node("n1", replace(EXITED, exit_code=None))],
        [crash(1, 1, "?")],
        previous=was(),
    ),
    case(
        "held-while-waiting",
        [row("web")],
        [node("n1", EXITED)],
        [Blocked("web", Phase.FAILED, "back-off 16s", "backing off", N1, EXITED.id)],
        previous=was(Phase.FAILED, failures=5, next_at=NOW + 3, message="back-off 16s"),
    ),
    case(
        "started-once-the-wait-is-over",
        [row("web")],
        [node("n1", EXITED)],
        [Start("web", N1, EXITED.id)],
        previous=was(Phase.FAILED, failures=5, next_at=NOW, message="back-off 16s"),
    ),
    case(
        "first-sight-of-an-exited-container-starts-it",
        [row("web")],
        [node("n1", EXITED)],
        [Start("web", N1, EXITED.id)],
    ),
    case(
        "streak-forgotten-after-10-minutes-of-running",
        [row("web")],
        [node("n1", EXITED)],
        [crash(1, 1)],
        previous=was(failures=6, next_at=NOW - 600),
    ),
    case(
        "streak-kept-before-10-minutes",
        [row("web")],
        [node("n1", EXITED)],
        [crash(7, 60)],
        previous=was(failures=6, next_at=NOW - 599),
    ),
    case(
        "streak-of-another-spec-not-counted",
        [row("web")],
        [node("n1", EXITED)],
        [crash(1, 1)],
        previous=was(failures=6, next_at=NOW - 10, spec_hash="h0"),
    ),
    case(
        "exit-of-another-container-not-counted",
        [row("web")],
        [node("n1", EXITED)],
        [Start("web", N1, EXITED.id)],
        previous=was(cid="d" * 64),
    ),
    case(
        "created-container-is-not-a-crash",
        [row("web")],
        [node("n1", CREATED)],
        [Start("web", N1, CREATED.id)],
        previous=was(cid=CREATED.id),
    ),
    case(
        "exit-of-a-stopped-row-is-what-it-wants",
        [row("web", state="stopped")],
        [node("n1", EXITED)],
        [],
        previous=was(),
    ),
    case(
        "running-container-of-a-crash-streak-left-alone",
        [row("web")],
        [node("n1", WEB := container("web", "n1"))],
        [],
        previous=was(cid=WEB.id, failures=3, next_at=NOW - 5),
    ),
]


@pytest.mark.parametrize(("desired", "nodes", "kwargs", "expected"), CRASH_CASES)
def test_crash_loop(
    desired: list[Any], nodes: list[Any], kwargs: dict[str, Any], expected: list[Any]
) -> None:
    result = planning.plan(desired, cluster(*nodes), now=NOW, **kwargs)
    assert list(result.actions) == expected


def test_a_crash_starts_a_durable_backoff_entry() -> None:
    result = planning.plan([row("web")], cluster(node("n1", EXITED)), now=NOW, previous=was())
    message = "back-off 1s restarting (exit 1, 1 restart)"
    assert dict(result.backoffs) == {"web": RowBackoff(1, NOW + 1, "h1", message)}


def test_a_plan_without_crashes_has_no_backoff_entries() -> None:
    result = planning.plan([row("web")], cluster(node("n1", EXITED)), now=NOW)
    assert dict(result.backoffs) == {}


PENDING_N1 = node("n1", health=Health.PENDING, refreshed=False)
RECONNECTING_N1 = node("n1", refreshed=False)
UNHEALTHY_N1 = node("n1", health=Health.UNHEALTHY, refreshed=False)


def unknown(message: str) -> RowStatus:
    return RowStatus(Phase.UNKNOWN, N1, GONE_ID, message)


HOLD_CASES = [
    case(
        "held-on-a-node-never-reached",
        [row("web")],
        [PENDING_N1, node("n2")],
        ([], unknown("node n1 has not been reached yet")),
        previous=was(cid=GONE_ID),
    ),
    case(
        "held-on-a-reconnecting-node",
        [row("web")],
        [RECONNECTING_N1, node("n2")],
        ([], unknown("node n1 has not been refreshed yet")),
        previous=was(cid=GONE_ID),
    ),
    case(
        "held-on-an-unhealthy-node-without-a-picture",
        [row("web")],
        [UNHEALTHY_N1, node("n2")],
        ([], unknown("node n1 is unhealthy")),
        previous=was(Phase.UNKNOWN, cid=GONE_ID),
    ),
    case(
        "held-pinned-row-not-moved-yet",
        [row("web", node="n2")],
        [PENDING_N1, node("n2")],
        ([], unknown("node n1 has not been reached yet; the row is pinned to n2")),
        previous=was(cid=GONE_ID),
    ),
    case(
        "placed-once-its-node-is-observed-without-it",
        [row("a"), row("web")],
        [node("n1"), node("n2", container("a", "n2"))],
        ([Create("web", N1, spec("web"), "h1")], None),
        previous=was(cid=GONE_ID),
    ),
    case(
        "placed-when-its-node-is-no-longer-registered",
        [row("web")],
        [node("n2")],
        ([Create("web", N2, spec("web"), "h1", note="rescheduled from n1 (node removed)")], None),
        previous=was(cid=GONE_ID),
    ),
    case(
        "placed-when-it-never-had-a-container",
        [row("web")],
        [PENDING_N1, node("n2")],
        ([Create("web", N2, spec("web"), "h1")], None),
        previous=was(Phase.PENDING, cid=None),
    ),
    case(
        "new-rows-still-placed-beside-held-ones",
        [row("web"), row("api")],
        [PENDING_N1, node("n2")],
        ([Create("api", N2, spec("api"), "h1")], unknown("node n1 has not been reached yet")),
        previous=was(cid=GONE_ID),
    ),
]


@pytest.mark.parametrize(("desired", "nodes", "kwargs", "expected"), HOLD_CASES)
def test_rows_held_where_last_seen(
    desired: list[Any], nodes: list[Any], kwargs: dict[str, Any], expected: Any
) -> None:
    actions, status = expected
    result = planning.plan(desired, cluster(*nodes), now=NOW, **kwargs)
    assert list(result.actions) == actions
    assert result.statuses.get("web") == status


WEB_N1 = container("web", "n1")
WEB_SEEN_TWICE = replace(WEB_N1, node=N2)  # the same container, seen through the alias n2


def dup(*containers: Any) -> Any:
    return replace(node("n2", *containers), duplicate_of=N1)


DUPLICATE_CASES = [
    case(
        "its-containers-are-not-duplicates",
        [row("web")],
        [node("n1", WEB_N1), dup(WEB_SEEN_TWICE)],
        [],
    ),
    case(
        "its-containers-are-not-orphans",
        [],
        [node("n1"), dup(container("old", "n2"))],
        [],
    ),
    case(
        "no-placement-on-it",
        [row("web"), row("api")],
        [node("n1", WEB_N1), dup(WEB_SEEN_TWICE)],
        [Create("api", N1, spec("api"), "h1")],
    ),
    case(
        "a-row-pinned-to-it-waits",
        [row("api", node="n2")],
        [node("n1"), dup()],
        [
            Blocked(
                "api",
                Phase.PENDING,
                "node n2 is the same engine as node n1",
                "n2 duplicate",
            )
        ],
    ),
]


@pytest.mark.parametrize(("desired", "nodes", "kwargs", "expected"), DUPLICATE_CASES)
def test_a_duplicate_node_is_ignored(
    desired: list[Any], nodes: list[Any], kwargs: dict[str, Any], expected: list[Any]
) -> None:
    result = planning.plan(desired, cluster(*nodes), now=NOW, **kwargs)
    assert list(result.actions) == expected
