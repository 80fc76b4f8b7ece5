"""planning.services (pure): slot rows and the rolling update's state machine, table-driven
over hand-made observations (the behaviour on real engines is in test_services.py)."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler import spec
from reconciler.domain import (
    MANAGED_LABEL,
    NAME_LABEL,
    SERVICE_LABEL,
    SLOT_LABEL,
    SPEC_HASH_LABEL,
    DesiredContainer,
    DesiredState,
    Health,
    NodeName,
    NodeSnapshot,
    ObservedContainer,
    Phase,
    ServiceDef,
    ServiceState,
    StatusRow,
    UpdateState,
)
from reconciler.planning import services

NOW = 1000.0
N1 = NodeName("n1")


def svc(command: str = "3600", **extra: Any) -> ServiceDef:
    return spec.validate_service_strict(
        {"name": "web", "image": "busybox:local", "command": ["sleep", command], **extra}
    )


OLD, NEW = svc("3600", replicas=3), svc("3601", replicas=3)


def container(slot: int, of: ServiceDef, *, state: str = "running", age: float = 100, **kw: Any):
    assert of.spec_hash is not None
    labels = {
        MANAGED_LABEL: "true",
        NAME_LABEL: f"web.{slot}",
        SPEC_HASH_LABEL: of.spec_hash,
        SERVICE_LABEL: "web",
        SLOT_LABEL: str(slot),
    }
    return ObservedContainer(
        N1,
        kw.pop("cid", f"{slot}-{of.spec_hash[:6]}"),  # type: ignore[arg-type]
        kw.pop("name", f"web.{slot}"),
        "busybox:local",
        state,
        labels,
        created=NOW - age,
        **kw,
    )


def nodes(*containers: ObservedContainer) -> dict[NodeName, NodeSnapshot]:
    return {N1: NodeSnapshot(N1, Health.HEALTHY, containers=containers, refreshed=True)}


def run(
    service: ServiceDef,
    state: ServiceState | None,
    *containers: ObservedContainer,
    previous: dict[str, StatusRow] | None = None,
) -> tuple[dict[str, DesiredContainer], ServiceState]:
    found = services.expand([service], {"web": state} if state else {}, nodes(*containers),
                            previous or {}, now=NOW)  # fmt: skip
    return {r.name: r for r in found.rows}, found.states["web"]


def hashes(rows: dict[str, DesiredContainer]) -> list[str | None]:
    return [rows[n].spec_hash for n in sorted(rows)]


UPDATING = ServiceState("web", UpdateState.UPDATING, spec=NEW, previous=OLD)


def test_first_sight_is_completed_and_every_slot_gets_the_spec():
    rows, state = run(OLD, None)
    assert sorted(rows) == ["web.1", "web.2", "web.3"]
    assert state.update_state is UpdateState.COMPLETED and state.spec == OLD
    assert all(r.spec is not None and r.spec.service == "web" for r in rows.values())
    assert [r.spec.slot for r in rows.values() if r.spec] == [1, 2, 3]


def test_a_new_spec_starts_an_update_one_slot_at_a_time():
    old = [container(i, OLD) for i in (1, 2, 3)]
    rows, state = run(NEW, ServiceState("web", spec=OLD), *old)
    assert state.update_state is UpdateState.UPDATING
    assert state.spec == NEW and state.previous == OLD
    assert hashes(rows) == [NEW.spec_hash, OLD.spec_hash, OLD.spec_hash]


@pytest.mark.parametrize(
    ("age", "delay", "expected_new"),
    [
        pytest.param(0.5, 0, 1, id="slot-1-still-monitored"),
        pytest.param(10, 0, 2, id="slot-1-stable-next-batch"),
        pytest.param(10, 30, 1, id="stable-but-the-delay-holds"),
    ],
)
def test_monitor_and_delay_gate_the_next_batch(age, delay, expected_new):
    service = svc("3601", replicas=3, update_monitor_seconds=5, update_delay_seconds=delay)
    state = ServiceState("web", UpdateState.UPDATING, spec=service, previous=OLD)
    seen = [container(1, service, age=age), container(2, OLD), container(3, OLD)]
    rows, after = run(service, state, *seen)
    assert hashes(rows).count(service.spec_hash) == expected_new
    assert after.update_state is UpdateState.UPDATING


def test_changing_only_replicas_rolls_nothing():
    old = [container(i, OLD) for i in (1, 2, 3)]
    rows, state = run(svc("3600", replicas=2), ServiceState("web", spec=OLD), *old)
    assert sorted(rows) == ["web.1", "web.2"] and state.update_state is UpdateState.COMPLETED
    assert state.replicas_desired == 2 and state.replicas_running == 2


@pytest.mark.parametrize(
    ("action", "state_after", "new_slots"),
    [
        pytest.param("pause", UpdateState.PAUSED, 1, id="pause"),
        pytest.param("continue", UpdateState.UPDATING, 2, id="continue"),
        pytest.param("rollback", UpdateState.ROLLBACK_STARTED, 0, id="rollback"),
    ],
)
def test_a_failed_slot_applies_the_failure_action(action, state_after, new_slots):
    service = svc("3601", replicas=3, update_failure_action=action)
    state = ServiceState("web", UpdateState.UPDATING, spec=service, previous=OLD)
    seen = [
        container(1, service, state="exited", exit_code=1),
        container(2, OLD),
        container(3, OLD),
    ]
    rows, after = run(service, state, *seen)
    assert after.update_state is state_after
    assert hashes(rows).count(service.spec_hash) == new_slots, hashes(rows)
    if action == "pause":
        assert after.message == "update paused: slot 1 failed: container exited with code 1"
    if action == "rollback":
        assert after.spec == OLD and after.previous == service  # target and previous swap


def test_a_create_error_of_an_updated_slot_is_a_failure():
    state = ServiceState("web", UpdateState.UPDATING, spec=NEW, previous=OLD)
    failed = StatusRow("web.1", Phase.FAILED, message="image busybox:nope not found",
                       spec_hash=NEW.spec_hash)  # fmt: skip
    _, after = run(NEW, state, container(2, OLD), container(3, OLD), previous={"web.1": failed})
    assert after.update_state is UpdateState.PAUSED and "image busybox:nope" in after.message


def test_a_failing_rollback_pauses_and_is_never_rolled_back():
    state = ServiceState("web", UpdateState.ROLLBACK_STARTED, spec=OLD, previous=NEW)
    seen = [container(1, OLD, state="exited", exit_code=2), container(2, OLD), container(3, OLD)]
    _, after = run(NEW, state, *seen)
    assert after.update_state is UpdateState.ROLLBACK_PAUSED and after.spec == OLD


def test_after_a_rollback_the_failed_spec_in_the_row_starts_nothing_but_a_new_one_does():
    done = ServiceState("web", UpdateState.ROLLBACK_COMPLETED, spec=OLD, previous=NEW)
    old = [container(i, OLD) for i in (1, 2, 3)]
    rows, after = run(NEW, done, *old)
    assert after.update_state is UpdateState.ROLLBACK_COMPLETED
    assert set(hashes(rows)) == {OLD.spec_hash}
    newer = svc("3602", replicas=3)
    _, again = run(newer, done, *old)
    assert again.update_state is UpdateState.UPDATING and again.previous == OLD


def test_start_first_creates_the_new_container_under_a_temporary_name():
    service = svc("3601", replicas=3, update_order="start-first")
    state = ServiceState("web", UpdateState.UPDATING, spec=service, previous=OLD)
    rows, _ = run(service, state, *(container(i, OLD) for i in (1, 2, 3)))
    assert service.spec_hash is not None
    slot1 = rows["web.1"].spec
    assert slot1 is not None and slot1.container_name == f"web.1.next-{service.spec_hash[:8]}"
    assert rows["web.2"].spec is not None and rows["web.2"].spec.container_name is None


def test_a_plain_row_named_like_a_slot_is_a_conflict_on_both():
    expansion = services.expand([OLD], {}, nodes(), {}, now=NOW)
    plain = spec.validate_row_strict({"name": "web.2", "image": "busybox:local"})
    other = spec.validate_row_strict({"name": "api", "image": "busybox:local"})
    rows, messages = services.merge([plain, other], expansion)
    by_name = {r.name: r for r in rows}
    assert by_name["web.2"].spec is None and "conflict" in (by_name["web.2"].error or "")
    assert by_name["web.1"].spec is not None and by_name["api"].spec is not None
    assert "web.2" in messages["web"] and len(rows) == 4
    assert by_name["web.2"].state is DesiredState.RUNNING


def test_the_next_step_of_an_update_is_due_when_its_monitor_window_ends():
    service = svc("3601", replicas=3, update_monitor_seconds=5)
    state = ServiceState("web", UpdateState.UPDATING, spec=service, previous=OLD)
    seen = [container(1, service, age=2), container(2, OLD), container(3, OLD)]
    found = services.expand([service], {"web": state}, nodes(*seen), {}, now=NOW)
    assert found.due == pytest.approx(NOW + 3)
    settled = services.expand(
        [OLD], {}, nodes(*(container(i, OLD) for i in (1, 2, 3))), {}, now=NOW
    )
    assert settled.due is None
