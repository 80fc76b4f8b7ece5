"""The controller's bookkeeping: per-row backoff, its reset on a spec change, the global retry
rate limit, and status rows for rows that are gone.

Docker is replaced by a small in-memory client that fails every create: these tests are about
what the controller records and when it retries, which needs a clock it can move. That the
actions work on real engines is shown in test_reconcile.py and test_daemon_process.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterable, Iterator, Mapping

import pytest
import sqlalchemy as sa
from waiting import wait_for

from reconciler import errors
from reconciler.db import engine as db_engine
from reconciler.db import migrate
from reconciler.db.store import Store
from reconciler.domain import (
    ContainerId,
    ContainerSpec,
    Health,
    NodeName,
    NodeSnapshot,
    ObservedImage,
)
from reconciler.runtime.controller import Controller
from reconciler.settings import Settings

NODE = NodeName("n1")


class FailingClient:
    """Refuses every create, counting the attempts."""

    node = NODE

    def __init__(self) -> None:
        self.creates: list[str] = []

    def create_container(self, spec: object, *, labels: Mapping[str, str]) -> ContainerId:
        self.creates.append(labels["reconciler.name"])
        raise errors.EngineAPIError("no space left on device", node=NODE, status=500)


class Handle:
    suspect = False  # answers at once: the executor waits for its actions
    installation = None  # containers unlabelled with an installation id

    def __init__(self, client: FailingClient) -> None:
        self.client = client
        self.failures: list[errors.EngineError] = []

    @contextlib.contextmanager
    def acting_on(self, *, ids: Iterable[str] = (), names: Iterable[str] = ()) -> Iterator[None]:
        yield

    def refresh_containers(self, ids: Iterable[str]) -> None:
        pass

    def record_failure(self, error: errors.EngineError) -> None:
        self.failures.append(error)

    def forget_containers(self, ids: Iterable[str]) -> None:
        pass


class OneNode:
    def __init__(self) -> None:
        self.handle = Handle(FailingClient())

    def snapshots(self) -> dict[NodeName, NodeSnapshot]:
        image = ObservedImage(NODE, "sha256:1", ("busybox:local",))
        return {NODE: NodeSnapshot(NODE, Health.HEALTHY, images=(image,), refreshed=True)}

    def handles(self) -> dict[NodeName, Handle]:
        return {NODE: self.handle}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(sqlite_url: str) -> Iterable[sa.Engine]:
    migrate.upgrade(sqlite_url)
    engine = db_engine.make_engine(sqlite_url)
    yield engine
    engine.dispose()


def _controller(store: sa.Engine, clock: Clock, **settings: float) -> tuple[Controller, OneNode]:
    cluster = OneNode()
    controller = Controller(
        store=Store(store),
        cluster=cluster,  # type: ignore[arg-type]
        settings=dataclasses.replace(Settings(), **settings),  # type: ignore[arg-type]
        clock=clock,
        jitter=lambda: 0.0,  # the delay is exactly half the exponential step
    )
    return controller, cluster


def _insert(store: sa.Engine, *names: str, image: str = "busybox:local") -> None:
    with store.begin() as conn:
        for name in names:
            conn.execute(
                sa.text("INSERT INTO desired_containers (name, image) VALUES (:n, :i)"),
                {"n": name, "i": image},
            )


def _status(store: sa.Engine) -> dict[str, sa.RowMapping]:
    with store.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM container_status")).mappings()
        return {r["name"]: r for r in rows}


def test_a_failing_row_backs_off_and_a_spec_change_resets_it(store: sa.Engine) -> None:
    clock = Clock()
    controller, cluster = _controller(store, clock)
    client = cluster.handle.client
    _insert(store, "web")

    controller.reconcile()
    row = _status(store)["web"]
    assert (row["phase"], row["failures"]) == ("failed", 1)
    assert "no space left on device" in row["message"] and "retry in" in row["message"]
    assert cluster.handle.failures, "a 5xx counts against the node's health"

    clock.now += 0.1  # inside the backoff: no new attempt, the message stays
    controller.reconcile()
    assert client.creates == ["web"]
    assert _status(store)["web"]["message"] == row["message"]

    for expected_failures in (2, 3):  # once the backoff is over, a retry; the streak grows
        clock.now += 60
        controller.reconcile()
        assert _status(store)["web"]["failures"] == expected_failures
    assert client.creates == ["web"] * 3

    with store.begin() as conn:  # a new spec is a new attempt: no waiting, streak starts again
        conn.execute(sa.text("UPDATE desired_containers SET command = '[\"true\"]'"))
    clock.now += 0.1
    controller.reconcile()
    assert client.creates == ["web"] * 4
    assert _status(store)["web"]["failures"] == 1


def test_retries_are_rate_limited_but_first_attempts_are_not(store: sa.Engine) -> None:
    clock = Clock()
    controller, cluster = _controller(store, clock, retry_burst=3, retries_per_second=0.001)
    names = [f"row-{i:02d}" for i in range(10)]
    _insert(store, *names)

    controller.reconcile()
    assert sorted(cluster.handle.client.creates) == names  # first attempts: all ten

    clock.now += 120  # every backoff is over: ten retries are due, the budget allows three
    controller.reconcile()
    assert len(cluster.handle.client.creates) == 10 + 3
    limited = [n for n, r in _status(store).items() if "rate-limited" in r["message"]]
    assert len(limited) == 7


def test_status_rows_of_deleted_rows_go(store: sa.Engine) -> None:
    clock = Clock()
    controller, _ = _controller(store, clock)
    _insert(store, "a", "b")
    controller.reconcile()
    assert set(_status(store)) == {"a", "b"}
    with store.begin() as conn:
        conn.execute(sa.text("DELETE FROM desired_containers WHERE name = 'a'"))
    controller.reconcile()
    assert set(_status(store)) == {"b"}


class GatedClient:
    """Creates and starts at once, except the start of ``slow``, which waits for ``release``."""

    node = NODE

    def __init__(self) -> None:
        self.release = threading.Event()

    def create_container(self, spec: ContainerSpec, *, labels: Mapping[str, str]) -> ContainerId:
        return ContainerId(f"id-{spec.name}")

    def start(self, container_id: str) -> None:
        if container_id == "id-slow":
            assert self.release.wait(30), "never released"


def test_status_rows_are_written_while_a_long_pass_still_runs(store: sa.Engine) -> None:
    """A row that is running shows so before the pass ends; nothing is written twice."""
    cluster = OneNode()
    client = GatedClient()
    cluster.handle.client = client  # type: ignore[assignment]
    controller = Controller(
        store=Store(store),
        cluster=cluster,  # type: ignore[arg-type]
        settings=Settings(),
        status_every=0.0,  # write with every outcome
    )
    _insert(store, "fast", "slow")
    passing = threading.Thread(target=controller.reconcile)
    passing.start()
    try:
        wait_for(
            lambda: _status(store).get("fast", {}).get("phase") == "running",
            timeout=10,
            message="the fast row running in container_status during the pass",
        )
        assert passing.is_alive(), "the pass is still waiting for the slow start"
        assert "slow" not in _status(store) or _status(store)["slow"]["phase"] != "running"
    finally:
        client.release.set()
        passing.join(30)
    rows = _status(store)
    assert {n: r["phase"] for n, r in rows.items()} == {"fast": "running", "slow": "running"}
    assert rows["fast"]["container_id"] == "id-fast"
    with store.connect() as conn:
        created = conn.execute(
            sa.text("SELECT object FROM events WHERE reason = 'Created' ORDER BY object")
        ).scalars()
        assert list(created) == ["container/fast", "container/slow"]
