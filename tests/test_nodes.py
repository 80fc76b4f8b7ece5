"""Nodes and the cluster against real engines: events, refresh, health, following the table.

Engines n1..n3 are shared by the session; a test that pauses or kills one brings it back in a
``finally`` (and the conftest checks again after each test). Containers are removed afterwards.
"""

from __future__ import annotations

import pathlib
import signal
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures

import pytest
import sqlalchemy as sa
from waiting import wait_for

from reconciler import docker_api, domain
from reconciler.db import engine as db_engine
from reconciler.db import migrate
from reconciler.db.store import Store
from reconciler.nodes import cluster as cluster_mod
from reconciler.nodes import monitor
from reconciler.nodes import node as node_mod
from reconciler.nodes.settings import NodeSettings
from sandbox import images
from sandbox.engines import SandboxEngine
from sandbox.tls import TlsFiles

IMAGE = "busybox:local"
#: Short knobs so failure tests take seconds; the defaults are exercised by the SIGSTOP tests.
FAST = NodeSettings(
    call_timeout=2.0,
    probe_timeout=1.0,
    backoff_initial=0.2,
    backoff_cap=1.0,
    heartbeat_interval=0.5,
    refresh_interval=30.0,
    stream_idle_timeout=5.0,
)


# -- fixtures and helpers ------------------------------------------------------------------------
@pytest.fixture
def db(sqlite_url: str) -> Iterator[sa.Engine]:
    migrate.upgrade(sqlite_url)
    engine = db_engine.make_engine(sqlite_url)
    yield engine
    engine.dispose()


@pytest.fixture
def start_cluster(db: sa.Engine) -> Iterator[Callable[..., cluster_mod.Cluster]]:
    """Start a cluster on ``db`` (stopped after the test); counts its ``on_change`` calls."""
    started: list[cluster_mod.Cluster] = []

    def start(settings: NodeSettings = FAST, **kwargs: object) -> cluster_mod.Cluster:
        wakes: list[float] = []
        cluster = cluster_mod.Cluster(
            store=Store(db),
            settings=settings,
            on_change=lambda: wakes.append(time.monotonic()),
            **kwargs,  # type: ignore[arg-type]
        )
        cluster.wakes = wakes  # type: ignore[attr-defined]
        cluster.start()
        started.append(cluster)
        return cluster

    yield start
    for cluster in started:
        cluster.stop()


@pytest.fixture
def names(engines: list[SandboxEngine]) -> Iterator[Callable[[], str]]:
    """Unique container names; whatever was created under them is removed from every engine."""
    made: list[str] = []

    def new() -> str:
        made.append(f"rcl-nodes-{uuid.uuid4().hex[:8]}")
        return made[-1]

    yield new
    for engine in engines:
        if made and engine.is_running() and not engine.is_paused():
            engine.docker("rm", "-f", *made, check=False)


def add_node(db: sa.Engine, name: str, url: str, **columns: object) -> None:
    """INSERT a node row with plain SQL, as a person would."""
    values = {"name": name, "url": url, **columns}
    keys = ", ".join(values)
    params = ", ".join(f":{k}" for k in values)
    with db.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO nodes ({keys}) VALUES ({params})"), values)


def node_row(db: sa.Engine, name: str) -> dict[str, object]:
    with db.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM nodes WHERE name = :n"), {"n": name}).first()
    assert row is not None, f"no row for node {name}"
    return dict(row._mapping)


def observed(db: sa.Engine, node: str) -> dict[str, dict[str, object]]:
    """``observed_containers`` of one node, by container name."""
    with db.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT * FROM observed_containers WHERE node = :n"), {"n": node}
        )
        return {r.name: dict(r._mapping) for r in rows}


def event_reasons(db: sa.Engine, obj: str) -> list[str]:
    with db.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT reason FROM events WHERE object = :o ORDER BY id"), {"o": obj}
        )
        return [r.reason for r in rows]


def health(db: sa.Engine, name: str) -> object:
    return node_row(db, name)["health"]


def timed(predicate: Callable[[], object], *, timeout: float, message: str) -> float:
    """Seconds until ``predicate`` holds (fails after ``timeout``)."""
    started = time.monotonic()
    wait_for(predicate, timeout=timeout, interval=0.01, message=message)
    return time.monotonic() - started


# -- events and refresh -------------------------------------------------------------------------
def test_cli_changes_behind_our_back_reach_observed_containers_within_1s_via_events(
    engines: list[SandboxEngine], db: sa.Engine, start_cluster, names
) -> None:
    engine = engines[0]
    add_node(db, "n1", engine.url)
    cluster = start_cluster(FAST)  # forced refresh every 30 s: only events can explain < 1 s
    wait_for(lambda: health(db, "n1") == "healthy", timeout=10, message="n1 healthy")
    name = names()
    engine.docker("create", "--name", name, IMAGE, "sleep", "60")
    seen = {"create": timed(lambda: name in observed(db, "n1"), timeout=1, message="created")}
    assert observed(db, "n1")[name]["state"] == "created"
    engine.docker("start", name)
    seen["start"] = timed(
        lambda: observed(db, "n1")[name]["state"] == "running", timeout=1, message="running"
    )
    engine.docker("stop", "-t", "0", name)
    seen["stop"] = timed(
        lambda: observed(db, "n1")[name]["state"] == "exited", timeout=1, message="exited"
    )
    assert observed(db, "n1")[name]["exit_code"] == 137
    engine.docker("rm", name)
    seen["rm"] = timed(lambda: name not in observed(db, "n1"), timeout=1, message="removed")
    print("event-to-SQL latency:", {k: f"{v * 1000:.0f} ms" for k, v in seen.items()})
    assert cluster.node("n1").full_refreshes == 1, "no forced refresh ran: events did it"


def test_with_the_event_stream_cut_one_forced_refresh_catches_up(
    engines: list[SandboxEngine], db: sa.Engine, start_cluster, names
) -> None:
    engine = engines[0]
    add_node(db, "n1", engine.url)
    settings = NodeSettings(**{**FAST.__dict__, "events": False, "refresh_interval": 2.0})
    cluster = start_cluster(settings)
    wait_for(lambda: health(db, "n1") == "healthy", timeout=10, message="n1 healthy")
    assert cluster.node("n1").event_monitor is None
    one_refresh = settings.refresh_interval * (1 + settings.refresh_jitter) + 0.5
    name = names()
    engine.docker("run", "-d", "--name", name, IMAGE, "sleep", "60")
    wait_for(
        lambda: observed(db, "n1").get(name, {}).get("state") == "running",
        timeout=one_refresh,
        message="seen by a forced refresh",
    )
    engine.docker("rm", "-f", name)
    wait_for(lambda: name not in observed(db, "n1"), timeout=one_refresh, message="gone")


def test_a_cut_stream_is_resubscribed_with_since_and_loses_nothing(
    engines: list[SandboxEngine], names
) -> None:
    engine = engines[0]
    node = node_mod.Node(
        row=domain.NodeRow(name=domain.NodeName("n1"), url=engine.url), settings=FAST
    )
    node.start()
    try:
        wait_for(lambda: node.snapshot().refreshed, timeout=10, message="refreshed")
        monitor = node.event_monitor
        assert monitor is not None and monitor.subscriptions == 1
        monitor.cut()  # the monitor backs off ~1 s before resubscribing
        name = names()
        engine.docker("create", "--name", name, IMAGE)  # happens while no stream is open
        wait_for(
            lambda: any(c.name == name for c in node.snapshot().containers),
            timeout=5,
            message="event replayed after resubscribing",
        )
        assert monitor.subscriptions == 2 and node.health_state.failures == 0
    finally:
        node.stop()


def test_a_steady_state_refresh_of_100_containers_is_one_list_and_no_inspect(
    engines: list[SandboxEngine], names
) -> None:
    """With events followed, a forced refresh lists containers only: images are listed when an
    image event says they changed (shown at the end with a new tag), not on every refresh."""
    engine = engines[1]
    creator = docker_api.connect(
        domain.NodeRow(name=domain.NodeName("n2"), url=engine.url), timeout=30
    )
    batch = [names() for _ in range(100)]
    tag = f"{names()}:1"
    with futures.ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda n: creator.create_container(
                    domain.ContainerSpec(name=n, image=IMAGE), labels={}
                ),
                batch,
            )
        )
    settings = NodeSettings(**{**FAST.__dict__, "heartbeat_interval": 60.0})
    node = node_mod.Node(
        row=domain.NodeRow(name=domain.NodeName("n2"), url=engine.url), settings=settings
    )
    node.start()
    try:
        wait_for(lambda: node.snapshot().refreshed, timeout=20, message="first refresh")
        assert {c.name for c in node.snapshot().containers} >= set(batch)
        first = node.client.calls
        assert first[docker_api.INSPECT_CONTAINER] >= 100, "the first refresh inspects all"
        before, started = node.full_refreshes, time.monotonic()
        node.request_refresh()
        wait_for(lambda: node.full_refreshes > before, timeout=10, message="second refresh")
        before_refreshes = node.full_refreshes
        took = time.monotonic() - started
        calls = node.client.calls - first
        print(
            f"steady-state refresh of {len(node.snapshot().containers)} containers: "
            f"{dict(calls)} in {took * 1000:.0f} ms"
        )
        assert calls == {docker_api.LIST_CONTAINERS: 1}

        before = node.client.calls
        engine.docker("tag", IMAGE, tag)
        wait_for(
            lambda: any(tag in i.tags for i in node.snapshot().images),
            timeout=10,
            message="the new tag in the node's images",
        )
        assert node.client.calls - before == {docker_api.LIST_IMAGES: 1}
        assert node.full_refreshes == before_refreshes, "no forced refresh was needed"
    finally:
        node.stop()
        engine.docker("rm", "-f", *batch, timeout=120, check=False)
        engine.docker("rmi", tag, check=False)
        creator.close()


def test_the_executor_refreshes_what_it_touched_and_cannot_use_a_node_before_it_connects(
    engines: list[SandboxEngine], names
) -> None:
    node = node_mod.Node(
        row=domain.NodeRow(name=domain.NodeName("n1"), url=engines[0].url),
        settings=NodeSettings(**{**FAST.__dict__, "events": False}),
    )
    with pytest.raises(Exception, match="not connected"):
        _ = node.client
    node.start()
    try:
        wait_for(lambda: node.snapshot().refreshed, timeout=10, message="refreshed")
        name = names()
        cid = node.client.create_container(
            domain.ContainerSpec(name=name, image=IMAGE), labels={domain.MANAGED_LABEL: "true"}
        )
        node.refresh_containers([cid])
        (container,) = [c for c in node.snapshot().containers if c.id == cid]
        assert container.managed and container.state == "created"
        node.client.remove(cid)
        node.refresh_containers([cid])
        assert all(c.id != cid for c in node.snapshot().containers)
    finally:
        node.stop()


def test_unchanged_rows_are_not_rewritten_and_engine_facts_are_stored(
    engines: list[SandboxEngine], db: sa.Engine, start_cluster, names
) -> None:
    engine = engines[0]
    name = names()
    engine.docker("create", "--name", name, IMAGE)
    add_node(db, "n1", engine.url)
    settings = NodeSettings(**{**FAST.__dict__, "refresh_interval": 0.5, "refresh_jitter": 0.0})
    cluster = start_cluster(settings)
    wait_for(lambda: name in observed(db, "n1"), timeout=10, message="observed")
    first = observed(db, "n1")[name]["observed_at"]
    refreshes = cluster.node("n1").full_refreshes
    wait_for(
        lambda: cluster.node("n1").full_refreshes >= refreshes + 3,
        timeout=10,
        message="three more forced refreshes",
    )
    assert observed(db, "n1")[name]["observed_at"] == first
    row = node_row(db, "n1")
    assert row["engine_id"] == engine.engine_id() and row["api_version"] == "1.41"
    assert row["engine_version"] and row["cpus"] and row["memory_bytes"]
    assert '"node": "n1"' in str(row["engine_labels"]) or "n1" in str(row["engine_labels"])
    assert row["last_seen_at"] is not None and row["consecutive_failures"] == 0
    assert event_reasons(db, "node/n1") == ["NodeHealthy"]


# -- health ------------------------------------------------------------------------------------
def _watch_refreshes(cluster: cluster_mod.Cluster, others: list[str]) -> Callable[[], dict]:
    """Poll each other node's last refresh time; return the largest gap seen so far."""
    last = {n: cluster.node(n).last_full_refresh_at for n in others}
    gaps = dict.fromkeys(others, 0.0)

    def sample() -> dict:
        now = time.monotonic()
        for n in others:
            at = cluster.node(n).last_full_refresh_at
            if at != last[n]:
                last[n] = at
            gaps[n] = max(gaps[n], now - (last[n] or now))
        return gaps

    return sample


def _three_nodes(engines: list[SandboxEngine], db: sa.Engine, start_cluster) -> cluster_mod.Cluster:
    for engine in engines:
        add_node(db, engine.name, engine.url)
    # Default timing knobs, except a 1 s forced refresh so "on time" is measurable.
    cluster = start_cluster(NodeSettings(refresh_interval=1.0))
    for engine in engines:
        wait_for(
            lambda e=engine: health(db, e.name) == "healthy",
            timeout=15,
            message=f"{engine.name} healthy",
        )
    return cluster


def _outage(
    engines: list[SandboxEngine],
    db: sa.Engine,
    cluster: cluster_mod.Cluster,
    names,
    *,
    fail: Callable[[SandboxEngine], None],
    heal: Callable[[SandboxEngine], None],
) -> tuple[float, float]:
    """Break n3, check the others keep refreshing on time, heal it; (detect s, recover s)."""
    victim = engines[2]
    others = [e.name for e in engines[:2]]
    sample = _watch_refreshes(cluster, others)
    fail(victim)
    try:
        detect = timed(
            lambda: sample() and health(db, victim.name) == "unhealthy",
            timeout=30,
            message=f"{victim.name} unhealthy",
        )
    finally:
        heal(victim)
    recover = timed(
        lambda: health(db, victim.name) == "healthy",
        timeout=15,
        message=f"{victim.name} healthy again",
    )
    late = {n: g for n, g in sample().items() if g > 1.0 * 1.2 + 0.5}
    assert not late, f"other nodes missed their forced refresh: {late}"
    name = names()
    victim.docker("create", "--name", name, IMAGE)
    timed(
        lambda: name in observed(db, victim.name),
        timeout=1,
        message="an event observed after recovery",
    )
    reasons = event_reasons(db, f"node/{victim.name}")
    assert reasons[-2:] == ["NodeUnhealthy", "NodeRecovered"]
    return detect, recover


def test_a_hung_engine_is_unhealthy_within_30s_and_healthy_within_15s_of_resuming(
    engines: list[SandboxEngine], db: sa.Engine, start_cluster, names
) -> None:
    cluster = _three_nodes(engines, db, start_cluster)
    last_errors: list[object] = []

    def pause(engine: SandboxEngine) -> None:
        engine.pause()

    def resume(engine: SandboxEngine) -> None:
        last_errors.append(node_row(db, engine.name)["last_error"])
        engine.resume()

    detect, recover = _outage(engines, db, cluster, names, fail=pause, heal=resume)
    print(f"SIGSTOP -> unhealthy {detect:.1f} s; SIGCONT -> healthy {recover:.1f} s")
    assert "no answer in time" in str(last_errors[0])
    assert node_row(db, engines[2].name)["last_error"] is None


def test_a_killed_engine_restarted_on_the_same_roots_recovers(
    engines: list[SandboxEngine], db: sa.Engine, start_cluster, names
) -> None:
    cluster = _three_nodes(engines, db, start_cluster)

    def kill(engine: SandboxEngine) -> None:
        engine.kill(signal.SIGKILL)

    def restart(engine: SandboxEngine) -> None:
        assert "connection refused" in str(node_row(db, engine.name)["last_error"])
        engine.start()

    detect, recover = _outage(engines, db, cluster, names, fail=kill, heal=restart)
    print(f"SIGKILL -> unhealthy {detect:.1f} s; restarted -> healthy {recover:.1f} s")


def test_a_url_nothing_listens_on_is_unhealthy_with_an_actionable_error(
    db: sa.Engine, start_cluster
) -> None:
    with socket.socket() as s:  # a port nothing listens on once it is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    add_node(db, "ghost", f"tcp://127.0.0.1:{port}")
    cluster = start_cluster(FAST)
    wait_for(lambda: health(db, "ghost") == "unhealthy", timeout=10, message="ghost unhealthy")
    error = str(node_row(db, "ghost")["last_error"])
    assert f"tcp://127.0.0.1:{port}" in error and "connection refused" in error
    assert "is dockerd running" in error
    assert node_row(db, "ghost")["consecutive_failures"] >= 3
    assert cluster.snapshots()["ghost"].health is domain.Health.UNHEALTHY
    assert event_reasons(db, "node/ghost") == ["NodeUnhealthy"]


def test_tls_with_the_wrong_ca_is_unhealthy_and_with_the_right_one_healthy(
    tls_engine: SandboxEngine, other_tls: TlsFiles, db: sa.Engine, start_cluster
) -> None:
    files = tls_engine.tls
    assert files is not None
    pem = {
        k: pathlib.Path(p).read_text()
        for k, p in {
            "ca": files.ca_cert,
            "cert": files.client_cert,
            "key": files.client_key,
        }.items()
    }
    add_node(
        db,
        "good",
        tls_engine.url,
        tls_ca_cert=pem["ca"],
        tls_client_cert=pem["cert"],
        tls_client_key=pem["key"],
    )
    add_node(
        db,
        "bad",
        tls_engine.url,
        tls_ca_cert=str(other_tls.ca_cert),
        tls_client_cert=str(files.client_cert),
        tls_client_key=str(files.client_key),
    )
    cluster = start_cluster(FAST)
    wait_for(lambda: health(db, "good") == "healthy", timeout=15, message="good healthy")
    wait_for(lambda: health(db, "bad") == "unhealthy", timeout=15, message="bad unhealthy")
    assert "certificate verification failed" in str(node_row(db, "bad")["last_error"])
    # The event stream is read over its own TLS socket (docker_api.streams) with the row's
    # certificates: an event on that engine reaches the node's monitor.
    good = cluster.node("good")
    watcher = good.event_monitor
    assert watcher is not None and watcher.subscribed.wait(5)
    tag = f"tlsprobe:{uuid.uuid4().hex[:8]}"
    images.import_busybox(tls_engine.unix_url, tag, force=True)  # an image event
    try:
        wait_for(lambda: watcher.events_seen >= 1, timeout=5, message="event over TLS")
        assert watcher.subscriptions == 1 and good.health_state.failures == 0
        assert good.client.calls[docker_api.EVENTS] == 1
    finally:
        tls_engine.docker("rmi", tag)


def test_plain_tcp_to_a_remote_host_is_refused_with_a_clear_error(
    db: sa.Engine, start_cluster
) -> None:
    add_node(db, "remote", "tcp://192.0.2.10:2375")
    start_cluster(FAST)
    wait_for(lambda: health(db, "remote") == "unhealthy", timeout=10, message="unhealthy")
    assert "refusing plain tcp://" in str(node_row(db, "remote")["last_error"])


# -- following the table ----------------------------------------------------------------------
def test_rows_inserted_changed_and_deleted_by_plain_sql_are_followed(
    engines: list[SandboxEngine], db: sa.Engine, start_cluster, names
) -> None:
    name = names()
    engines[0].docker("create", "--name", name, IMAGE)
    cluster = start_cluster(FAST)
    assert cluster.snapshots() == {}
    add_node(db, "late", engines[0].url, labels='{"zone": "a"}')
    timed(lambda: health(db, "late") == "healthy", timeout=3, message="inserted row connected")
    wait_for(lambda: name in observed(db, "late"), timeout=2, message="its containers observed")
    first = cluster.node("late")
    assert first.snapshot().labels == {"zone": "a"}
    with db.begin() as conn:
        conn.execute(sa.text("""UPDATE nodes SET labels = '{"zone": "b"}' WHERE name = 'late'"""))
    wait_for(
        lambda: cluster.node("late").snapshot().labels == {"zone": "b"},
        timeout=3,
        message="labels taken in place",
    )
    assert cluster.node("late") is first, "a label change keeps the connection"
    with db.begin() as conn:
        conn.execute(
            sa.text("UPDATE nodes SET url = :u WHERE name = 'late'"), {"u": engines[0].unix_url}
        )
    wait_for(lambda: cluster.node("late") is not first, timeout=3, message="node replaced")
    wait_for(lambda: first.event_monitor is None, timeout=3, message="old monitor stopped")
    wait_for(lambda: cluster.snapshots()["late"].refreshed, timeout=10, message="reconnected")
    second = cluster.node("late")
    with db.begin() as conn:
        conn.execute(sa.text("DELETE FROM nodes WHERE name = 'late'"))
    timed(lambda: "late" not in cluster.snapshots(), timeout=3, message="deleted row dropped")
    wait_for(lambda: second.event_monitor is None, timeout=3, message="its monitor stopped")
    with pytest.raises(Exception, match="not connected"):
        _ = second.client
    wait_for(lambda: observed(db, "late") == {}, timeout=3, message="its observed rows dropped")
    assert len(cluster.wakes) >= 3  # type: ignore[attr-defined]


def test_two_rows_for_one_engine_are_reported_not_fatal(
    engines: list[SandboxEngine], db: sa.Engine, start_cluster
) -> None:
    add_node(db, "a", engines[0].url)
    add_node(db, "b", engines[0].unix_url)
    start_cluster(FAST)
    for name in ("a", "b"):
        wait_for(lambda n=name: health(db, n) == "healthy", timeout=10, message=f"{name} healthy")
    wait_for(
        lambda: "DuplicateEngineID" in event_reasons(db, "node/b") + event_reasons(db, "node/a"),
        timeout=5,
        message="duplicate reported",
    )


# -- the event monitor on its own -------------------------------------------------------------
@pytest.fixture
def n1_client(engines: list[SandboxEngine]) -> Iterator[docker_api.EngineClient]:
    client = docker_api.connect(
        domain.NodeRow(name=domain.NodeName("n1"), url=engines[0].url), timeout=5
    )
    yield client
    client.close()


def test_the_idle_watchdog_probes_and_resubscribes_without_losing_or_repeating_events(
    engines: list[SandboxEngine], n1_client: docker_api.EngineClient, names
) -> None:
    seen: list[docker_api.EngineEvent] = []
    failures: list[Exception] = []
    probes: list[float] = []

    def probe() -> bool:
        n1_client.ping()
        probes.append(time.monotonic())
        return True

    watcher = monitor.EventMonitor(
        node=domain.NodeName("n1"),
        subscribe=lambda since: n1_client.events(since=since, idle_timeout=0.3),
        on_event=seen.append,
        on_error=failures.append,
        probe=probe,
    )
    watcher.start()
    try:
        wait_for(lambda: watcher.subscriptions >= 3, timeout=5, message="idle resubscriptions")
        name = names()
        engines[0].docker("create", "--name", name, IMAGE)
        wait_for(lambda: any(e.attributes.get("name") == name for e in seen), timeout=2)
        later = watcher.subscriptions + 2  # each replays from `since`; duplicates are dropped
        wait_for(lambda: watcher.subscriptions >= later, timeout=5, message="more resubscriptions")
        creates = [e for e in seen if e.action == "create" and e.attributes.get("name") == name]
        assert len(creates) == 1
        assert not failures and len(probes) >= 3
    finally:
        started = time.monotonic()
        watcher.stop()
        watcher.join(2)
    assert not watcher.alive and time.monotonic() - started < 1, "stop() ends it at once"


def test_the_monitor_stops_after_its_iteration_limit(
    engines: list[SandboxEngine], n1_client: docker_api.EngineClient, names
) -> None:
    seen: list[docker_api.EngineEvent] = []
    watcher = monitor.EventMonitor(
        node=domain.NodeName("n1"),
        subscribe=lambda since: n1_client.events(since=since, idle_timeout=5),
        on_event=seen.append,
        on_error=lambda e: None,
        probe=lambda: True,
        max_events=2,
    )
    watcher.start()
    assert watcher.subscribed.wait(5)
    engines[0].docker("create", "--name", names(), IMAGE)
    engines[0].docker("create", "--name", names(), IMAGE)
    wait_for(lambda: not watcher.alive, timeout=5, message="monitor ended by itself")
    assert len(seen) == 2 and watcher.events_seen == 2
