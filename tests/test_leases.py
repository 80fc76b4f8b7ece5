"""The lease in SQL, on SQLite and PostgreSQL: one holder, expiry on the database's clock, a new
generation per acquisition, release, and the fence that refuses a former leader's writes; the
elector's local deadline; the lease timings validated like client-go's."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from waiting import wait_for

from reconciler import cli
from reconciler.db import migrate
from reconciler.db import store as store_mod
from reconciler.runtime import lease
from reconciler.settings import Settings


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest) -> store_mod.Store:
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    migrate.upgrade(url)
    the_store = store_mod.Store.open(url)
    request.addfinalizer(the_store.close)
    return the_store


def _row(store: store_mod.Store) -> dict[str, object]:
    with store.sql.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM leases WHERE name = 'controller'")).mappings()
        return dict(row.one())


def _events(store: store_mod.Store) -> list[tuple[str, str]]:
    with store.sql.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT reason, message FROM events WHERE object = 'lease/controller' ORDER BY id"
            )
        )
        return [(r.reason, r.message) for r in rows]


def test_one_holder_then_expiry_gives_a_new_generation(store: store_mod.Store) -> None:
    assert _row(store)["holder"] is None  # the migration creates the row, released
    a = store.acquire_lease(identity="a", duration=0.6, generation=None)
    assert a.held is not None and a.acquired and a.held.generation == 1
    b = store.acquire_lease(identity="b", duration=0.6, generation=None)
    assert b.held is None and b.holder == "a"
    renewed = store.acquire_lease(identity="a", duration=0.6, generation=1)
    assert renewed.held == a.held and not renewed.acquired
    assert store.lease_holder() == "a"
    # a stops renewing: after the lease duration (on the database's clock) b takes it.
    taken = wait_for(
        lambda: store.acquire_lease(identity="b", duration=0.6, generation=None).held,
        timeout=5,
        interval=0.1,
    )
    assert taken.generation == 2 and store.lease_holder() == "b"
    # a cannot renew under its old generation, nor take a lease that is not expired.
    assert store.acquire_lease(identity="a", duration=0.6, generation=1).held is None
    assert _row(store)["transitions"] == 2
    assert [reason for reason, _ in _events(store)] == ["BecameLeader", "BecameLeader"]


def test_release_lets_a_standby_take_at_once(store: store_mod.Store) -> None:
    a = store.acquire_lease(identity="a", duration=60, generation=None).held
    assert a is not None
    assert store.release_lease(a)
    assert _row(store)["holder"] is None
    b = store.acquire_lease(identity="b", duration=60, generation=None).held
    assert b is not None and b.generation == a.generation + 1
    assert not store.release_lease(a), "a released token cannot release someone else's lease"
    assert store.lease_holder() == "b"
    assert "ReleasedLease" in [reason for reason, _ in _events(store)]


def test_racing_acquirers_get_exactly_one_lease(store: store_mod.Store) -> None:
    winners: list[str] = []
    barrier = threading.Barrier(6)

    def contend(name: str) -> None:
        barrier.wait()
        for _ in range(3):
            try:
                if store.acquire_lease(identity=name, duration=60, generation=None).held:
                    winners.append(name)
                return
            except store_mod.DatabaseError:  # SQLite: a writer gave up waiting; try again
                time.sleep(0.05)

    threads = [threading.Thread(target=contend, args=(f"c{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1, winners
    assert store.lease_holder() == winners[0]
    assert _row(store)["transitions"] == 1


def test_fenced_writes_commit_only_under_the_lease(store: store_mod.Store) -> None:
    event = store_mod.Event("test/fence", "Probe", "written")
    token: list[store_mod.LeaseToken | None] = [None]
    store.fence = lambda: token[0]
    with pytest.raises(store_mod.NotLeader):
        store.record_events([event])  # plan mode / a standby: refused
    token[0] = store.acquire_lease(identity="a", duration=0.6, generation=None).held
    store.record_events([event])  # the leader writes
    # Another controller takes the expired lease: a's token no longer writes anything.
    wait_for(
        lambda: store.acquire_lease(identity="b", duration=60, generation=None).held,
        timeout=5,
        interval=0.1,
    )
    with pytest.raises(store_mod.NotLeader):
        store.record_events([event])
    with store.sql.connect() as conn:
        count = conn.execute(sa.text("SELECT count(*) FROM events WHERE object = 'test/fence'"))
        assert count.scalar() == 1, "the refused writes were rolled back"


def test_elector_ends_its_term_at_the_local_deadline(store: store_mod.Store) -> None:
    now = [100.0]
    elected: list[bool] = []
    elector = lease.Elector(
        store=store,
        identity="a",
        duration=30,
        renew_deadline=2,
        retry_period=0.5,
        on_elected=lambda: elected.append(True),
        on_lost=lambda: elected.append(False),
        clock=lambda: now[0],
    )
    assert elector.attempt() and elector.is_leader
    term = elector.term()
    assert term is not None and elector.may_act(term)
    now[0] += 2.5  # paused past the renew deadline (SIGSTOP, a GC, a frozen VM)
    assert not elector.may_act(term), "no call planned before the pause may run after it"
    assert elector.term() is None and elector.token() is None
    # Renewed again under the same generation (nobody took it): a new term, not the old one.
    assert elector.attempt()
    new_term = elector.term()
    assert new_term is not None and new_term.generation == term.generation
    assert new_term.number == term.number + 1 and not elector.may_act(term)
    assert elected == [True, False, True]
    elector.stop(release=True)
    assert store.lease_holder() is None
    assert [r for r, _ in _events(store)][-2:] == ["LostLease", "ReleasedLease"]


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"lease_duration": 10, "renew_deadline": 10}, "--lease-duration (10) must be greater"),
        ({"renew_deadline": 2, "retry_period": 2}, "--renew-deadline (2) must be greater"),
    ],
)
def test_lease_timings_are_validated_like_client_go(
    values: dict[str, float], complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint.replace("(", r"\(").replace(")", r"\)")):
        dataclasses.replace(Settings(), **values)
    assert Settings(lease_duration=3, renew_deadline=2, retry_period=0.5).retry_period == 0.5


def test_bad_lease_timings_are_a_usage_error(sqlite_url: str) -> None:
    result = CliRunner().invoke(
        cli.main,
        ["--database-url", sqlite_url, "run", "--lease-duration", "5", "--renew-deadline", "6"],
    )
    assert result.exit_code == 2, result.output
    assert "--lease-duration (5) must be greater than --renew-deadline (6)" in result.output
