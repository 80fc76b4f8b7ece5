"""``db.observed`` and ``db.node_state`` with plain values, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from waiting import wait_for

from reconciler.db import engine as db_engine
from reconciler.db import events, migrate, node_state, observed
from reconciler.db.store import Store
from reconciler.domain import (
    ContainerId,
    EngineInfo,
    Health,
    NodeName,
    NodeSnapshot,
    ObservedContainer,
    ObservedImage,
)
from reconciler.nodes import publish

N1 = NodeName("n1")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[sa.Engine]:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else sqlite_url
    migrate.upgrade(url)
    engine = db_engine.make_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO nodes (name, url) VALUES ('n1', 'unix:///x.sock')"))
    yield engine
    engine.dispose()


def container(cid: str, name: str, *, state: str = "running", **labels: str) -> ObservedContainer:
    return ObservedContainer(
        node=N1,
        id=ContainerId(cid),
        name=name,
        image="busybox:local",
        state=state,
        labels=labels,
        image_id="sha256:abc",
        status=f"{state} since 2026-01-01T00:00:00Z",
        exit_code=0,
        created=1_767_225_600.0,
    )


def sync(db: sa.Engine, containers: list[ObservedContainer], now: datetime) -> observed.SyncResult:
    with db.begin() as conn:
        return observed.sync_containers(conn, node=N1, containers=containers, now=now)


def observed_at(db: sa.Engine) -> dict[str, object]:
    with db.connect() as conn:
        rows = conn.execute(sa.text("SELECT container_id, observed_at FROM observed_containers"))
        return {r.container_id: r.observed_at for r in rows}


def test_containers_are_written_as_a_diff(db: sa.Engine) -> None:
    web = container("a" * 64, "web", **{"reconciler.managed": "true", "reconciler.name": "web"})
    other = container("b" * 64, "other")
    assert sync(db, [web, other], T0) == observed.SyncResult(inserted=2)
    assert not sync(db, [web, other], T0 + timedelta(seconds=5)), "unchanged: nothing written"
    first = observed_at(db)
    stopped = container("a" * 64, "web", state="exited", **web.labels)
    assert sync(db, [stopped, other], T0 + timedelta(seconds=10)) == observed.SyncResult(updated=1)
    after = observed_at(db)
    assert after["b" * 64] == first["b" * 64] and after["a" * 64] != first["a" * 64]
    assert sync(db, [stopped], T0 + timedelta(seconds=15)) == observed.SyncResult(deleted=1)
    with db.connect() as conn:
        (loaded,) = observed.load_containers(conn, node=N1)
        row = conn.execute(sa.text("SELECT managed, desired_name FROM observed_containers")).one()
    assert loaded == stopped
    assert bool(row.managed) and row.desired_name == "web"


def test_images_are_written_as_a_diff_and_a_removed_node_is_dropped(db: sa.Engine) -> None:
    image = ObservedImage(node=N1, id="sha256:abc", tags=("busybox:local",), size_bytes=10)
    with db.begin() as conn:
        assert observed.sync_images(conn, node=N1, images=[image], now=T0).inserted == 1
        assert not observed.sync_images(conn, node=N1, images=[image], now=T0)
        retagged = ObservedImage(node=N1, id="sha256:abc", tags=("a:1", "busybox:local"))
        assert observed.sync_images(conn, node=N1, images=[retagged], now=T0).updated == 1
        observed.sync_containers(conn, node=N1, containers=[container("c" * 64, "x")], now=T0)
        assert observed.drop_node(conn, node=N1) == 2


def test_health_transitions_and_engine_facts_reach_the_node_row(db: sa.Engine) -> None:
    event = events.Event(
        "node/n1", "NodeUnhealthy", "node n1 is unhealthy after 3 failures: x", "Warning"
    )
    info = EngineInfo(
        engine_id="ID1",
        name="host",
        version="20.10.24",
        api_version="1.41",
        os="Debian",
        cpus=2,
        memory_bytes=1 << 30,
        labels={"node": "n1"},
    )
    with db.begin() as conn:
        node_state.write_health(
            conn, node=N1, health=Health.UNHEALTHY, failures=3, last_error="x", event=event
        )
        assert node_state.write_engine_info(conn, node=N1, info=info)
        assert not node_state.write_engine_info(conn, node=N1, info=info), "unchanged"
        node_state.touch_seen(conn, node=N1, at=T0)
        assert not node_state.write_health(
            conn, node=NodeName("gone"), health=Health.HEALTHY, failures=0, last_error=None
        )
    with db.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM nodes WHERE name = 'n1'")).one()
        logged = conn.execute(sa.text("SELECT type, reason, message FROM events")).all()
    assert (row.health, row.consecutive_failures, row.last_error) == ("unhealthy", 3, "x")
    assert (row.engine_id, row.api_version, row.cpus) == ("ID1", "1.41", 2)
    assert row.last_seen_at is not None
    assert [tuple(r) for r in logged] == [("Warning", "NodeUnhealthy", event.message)]


# -- the publisher: coalesced writes, drops in order ----------------------------------------------
class Pictures:
    """What ``PicturePublisher`` reads: the newest snapshot per node; counts the reads."""

    def __init__(self) -> None:
        self.snapshots: dict[NodeName, NodeSnapshot] = {}
        self.reads = 0

    def set(self, *containers: ObservedContainer) -> None:
        self.snapshots[N1] = NodeSnapshot(N1, Health.HEALTHY, containers=containers)

    def __call__(self, node: NodeName) -> NodeSnapshot | None:
        self.reads += 1
        return self.snapshots.get(node)


def names_in(db: sa.Engine) -> set[str]:
    with db.connect() as conn:
        return set(conn.execute(sa.text("SELECT name FROM observed_containers")).scalars())


def test_a_burst_of_changes_is_one_write_of_the_newest_picture(db: sa.Engine) -> None:
    pictures = Pictures()
    publisher = publish.PicturePublisher(store=Store(db), snapshot_of=pictures)  # not started
    for i in range(100):
        pictures.set(*(container(f"c{j}", f"web-{j}") for j in range(i + 1)))
        publisher.changed(N1, full=False)
    publisher.flush()
    assert pictures.reads == 1
    assert names_in(db) == {f"web-{j}" for j in range(100)}


def test_a_drop_is_ordered_with_the_writes_of_the_same_node(db: sa.Engine) -> None:
    pictures = Pictures()
    publisher = publish.PicturePublisher(store=Store(db), snapshot_of=pictures)
    pictures.set(container("c1", "old"))
    publisher.changed(N1, full=False)
    publisher.flush()
    assert names_in(db) == {"old"}

    publisher.changed(N1, full=False)  # a change still pending when the node is removed
    publisher.dropped(N1)
    publisher.flush()
    assert names_in(db) == set(), "the pending write must not bring the rows back"

    publisher.dropped(N1)  # replaced: the old node's rows go, the new node's picture follows
    pictures.set(container("c2", "new"))
    publisher.changed(N1, full=False)
    publisher.flush()
    assert names_in(db) == {"new"}


def test_the_thread_writes_a_change_without_being_asked_to_flush(db: sa.Engine) -> None:
    pictures = Pictures()
    publisher = publish.PicturePublisher(store=Store(db), snapshot_of=pictures, min_gap=0.01)
    publisher.start()
    try:
        pictures.set(container("c1", "web"))
        publisher.changed(N1, full=False)
        wait_for(lambda: names_in(db) == {"web"}, timeout=5, message="the write")
    finally:
        publisher.stop()
