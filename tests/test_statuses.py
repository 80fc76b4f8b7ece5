"""Table tests of ``planning.statuses.status_rows``: the status rows a pass leaves behind."""

from __future__ import annotations

from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

import pytest

from reconciler import planning
from reconciler.domain import ContainerId, NodeName, Phase, StatusRow
from reconciler.planning import Blocked, Plan, Remove, RemoveReason, RowStatus, Start
from reconciler.planning.backoff import RowBackoff
from tests.fakes import cluster, container, node, row, spec

N1 = NodeName("n1")
CID = ContainerId("a" * 64)
NOW = 1000.0
RUNNING = RowStatus(Phase.RUNNING, N1, CID)


@dataclass(frozen=True)
class Result:
    """An executor outcome, as ``planning.statuses.ActionResult`` reads it."""

    action: planning.Action
    ok: bool
    phase: Phase | None
    node: NodeName | None
    container_id: ContainerId | None
    message: str

    @property
    def name(self) -> str | None:
        return self.action.name


START = Start("web", N1, CID)
CREATE = planning.Create("web", N1, spec("web"), "h1")


def ok(action: planning.Action = START, message: str = "started") -> Result:
    return Result(action, True, Phase.RUNNING, N1, CID, message)


def failed(message: str = "boom") -> Result:
    return Result(START, False, Phase.FAILED, N1, CID, message)


def status(
    phase: Phase = Phase.RUNNING,
    message: str = "",
    *,
    failures: int = 0,
    next_at: float | None = None,
    spec_hash: str | None = "h1",
    cid: ContainerId | None = CID,
) -> StatusRow:
    node = N1 if cid is not None else None
    return StatusRow("web", phase, node, cid, message, spec_hash, failures, next_at)


def plan(
    *actions: planning.Action,
    statuses: dict[str, RowStatus] | None = None,
    backoffs: dict[str, RowBackoff] | None = None,
) -> Plan:
    return Plan(actions, MappingProxyType(statuses or {}), MappingProxyType(backoffs or {}))


def case(case_id: str, expected: StatusRow | None, **kw: Any) -> Any:
    return pytest.param(kw, expected, id=case_id)


CRASH = "back-off 16s restarting (exit 1, 5 restarts)"
STATUS_CASES = [
    case("new-running-row", status(), the_plan=plan(statuses={"web": RUNNING})),
    case(
        "streak-kept-while-it-runs",
        status(failures=3, next_at=NOW - 100),
        the_plan=plan(statuses={"web": RUNNING}),
        previous=status(failures=3, next_at=NOW - 100),
    ),
    case(
        "streak-forgotten-after-10-minutes-of-running",
        status(),
        the_plan=plan(statuses={"web": RUNNING}),
        previous=status(failures=3, next_at=NOW - 600),
    ),
    case(
        "streak-of-another-spec-forgotten",
        status(),
        the_plan=plan(statuses={"web": RUNNING}),
        previous=status(failures=3, next_at=NOW - 10, spec_hash="h0"),
    ),
    case(
        "crash-back-off-recorded-durably",
        status(Phase.FAILED, CRASH, failures=5, next_at=NOW + 16),
        the_plan=plan(
            Blocked("web", Phase.FAILED, CRASH, "crash loop", N1, CID),
            backoffs={"web": RowBackoff(5, NOW + 16, "h1", CRASH)},
        ),
        previous=status(failures=4, next_at=NOW - 20),
    ),
    case(
        "blocked-keeps-its-streak",
        status(Phase.FAILED, CRASH, failures=5, next_at=NOW + 9),
        the_plan=plan(Blocked("web", Phase.FAILED, CRASH, "backing off", N1, CID)),
        previous=status(Phase.FAILED, CRASH, failures=5, next_at=NOW + 9),
    ),
    case(
        "blocked-of-a-new-spec-starts-afresh",
        status(Phase.FAILED, "image x not found on node n1", cid=None),
        the_plan=plan(Blocked("web", Phase.FAILED, "image x not found on node n1")),
        previous=status(Phase.FAILED, "boom", failures=2, next_at=NOW + 9, spec_hash="h0"),
    ),
    case(
        "rate-limited-retry",
        status(Phase.FAILED, "boom (retry rate-limited)", failures=2, next_at=NOW - 1, cid=None),
        the_plan=plan(START),
        limited=[Blocked("web", Phase.FAILED, "boom (retry rate-limited)", "rate-limited")],
        previous=status(Phase.FAILED, "boom", failures=2, next_at=NOW - 1),
    ),
    case(
        "start-keeps-the-crash-streak",
        status(message="started", failures=5, next_at=NOW - 1),
        the_plan=plan(START),
        outcomes=[ok()],
        previous=status(Phase.FAILED, CRASH, failures=5, next_at=NOW - 1),
    ),
    case(
        "create-starts-afresh",
        status(message="created"),
        the_plan=plan(CREATE),
        outcomes=[ok(CREATE, "created")],
        previous=status(Phase.FAILED, "boom", failures=5, next_at=NOW - 1),
    ),
    case(
        "first-failure-with-jitter",
        status(Phase.FAILED, "boom (retry in 1s)", failures=1, next_at=NOW + 0.75),
        the_plan=plan(START),
        outcomes=[failed()],
        jitter={"web": 0.5},
    ),
    case(
        "failures-grow-up-to-the-cap",
        status(Phase.FAILED, "boom (retry in 5s)", failures=7, next_at=NOW + 5),
        the_plan=plan(START),
        outcomes=[failed()],
        previous=status(Phase.FAILED, "boom", failures=6, next_at=NOW - 1),
        cap=10.0,
    ),
    case(
        "removal-of-an-orphan-has-no-row",
        status(Phase.PENDING, cid=None, spec_hash=None),
        the_plan=plan(Remove(N1, CID, None, RemoveReason.ORPHAN)),
        outcomes=[Result(Remove(N1, CID, None, RemoveReason.ORPHAN), True, None, N1, CID, "")],
    ),
    case(
        "untouched-row-keeps-its-row",
        status(Phase.UNKNOWN, "node n1 is unhealthy", failures=2, next_at=NOW + 1),
        the_plan=plan(),
        previous=status(Phase.UNKNOWN, "node n1 is unhealthy", failures=2, next_at=NOW + 1),
    ),
    case("a-deleted-row-loses-its-row", None, desired=[], the_plan=plan(), previous=status()),
]


@pytest.mark.parametrize(("kwargs", "expected"), STATUS_CASES)
def test_status_rows(kwargs: dict[str, Any], expected: StatusRow | None) -> None:
    previous = kwargs.pop("previous", None)
    desired = kwargs.pop("desired", [row("web")])
    wanted = planning.status_rows(
        desired,
        kwargs.pop("the_plan"),
        previous={"web": previous} if previous else {},
        now=NOW,
        **kwargs,
    )
    assert wanted.get("web") == expected


def test_an_unchanged_row_is_the_very_same_object() -> None:
    """The controller skips unchanged rows by identity: a converged fleet writes nothing."""
    for old in (status(), status(failures=3, next_at=NOW - 100)):
        wanted = planning.status_rows(
            [row("web")], plan(statuses={"web": RUNNING}), previous={"web": old}, now=NOW
        )
        assert wanted["web"] is old


def test_a_crash_loop_through_passes() -> None:
    """Plan and record pass after pass: the streak and the message grow, durably."""
    exited = replace(container("web", "n1", state="exited"), exit_code=1)
    rows: dict[str, StatusRow] = {"web": StatusRow("web", Phase.RUNNING, N1, exited.id, "", "h1")}
    now, messages, starts = 0.0, [], 0
    while now < 40.0:
        the_plan = planning.plan([row("web")], cluster(node("n1", exited)), now=now, previous=rows)
        outcomes = [
            Result(a, True, Phase.RUNNING, N1, exited.id, "started")
            for a in the_plan.actions
            if isinstance(a, Start)
        ]
        starts += len(outcomes)
        rows = planning.status_rows(
            [row("web")], the_plan, outcomes=outcomes, previous=rows, now=now
        )
        messages.append(rows["web"].message)
        now += 0.5  # a pass every half second; the container exits at once after each start
    assert starts <= 8, "at most 8 starts in any 40 s"
    assert starts >= 4, "it is restarted all the same"
    assert "back-off 16s restarting (exit 1, 5 restarts)" in messages
    assert rows["web"].failures >= 5
