"""``run --http``: /metrics scraped by a real Prometheus, linted by promtool; /healthz, /readyz.

The Prometheus tests run a daemon against the sandbox engines and a real ``prometheus`` server
(``sandbox.prometheus``) that scrapes it every second; series are read back through the query
API. The health tests run a daemon with no nodes (no engine is needed to wedge a loop).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from daemons import running_daemon
from waiting import wait_for

from reconciler.db import migrate
from reconciler.db.store import Store
from reconciler.runtime import metrics
from reconciler.runtime.daemon import Daemon
from reconciler.settings import Settings
from sandbox.prometheus import SandboxPrometheus, check_metrics

LOOPBACK_ANY_PORT = "127.0.0.1:0"


def get(address: str, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def series(exposition: str) -> set[str]:
    """The sample lines' names with labels (``name{a="b"}``), values dropped."""
    return {
        line.rsplit(" ", 1)[0]
        for line in exposition.splitlines()
        if line and not line.startswith("#")
    }


@contextlib.contextmanager
def bare_daemon(url: str, **overrides: Any) -> Iterator[Daemon]:
    """A daemon with no nodes, in a thread, serving its endpoints on a free port."""
    migrate.upgrade(url)
    settings = Settings(database_url=url, http=LOOPBACK_ANY_PORT, **overrides)
    daemon = Daemon(store=Store.open(url), settings=settings)
    thread = threading.Thread(target=daemon.run, name="bare-daemon", daemon=True)
    thread.start()
    try:
        wait_for(lambda: daemon.http_address, timeout=30, message="endpoints served")
        yield daemon
    finally:
        daemon.stop()
        thread.join(timeout=30)
        daemon.store.close()


def insert_row(daemon: Daemon, name: str, image: str = "busybox:local") -> None:
    with daemon.store.sql.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO desired_containers (name, image) VALUES (:n, :i)"),
            {"n": name, "i": image},
        )


def phase(daemon: Daemon, name: str) -> str | None:
    with daemon.store.sql.connect() as conn:
        return conn.execute(
            sa.text("SELECT phase FROM container_status WHERE name = :n"), {"n": name}
        ).scalar()


# -- the first scrape, promtool ----------------------------------------------------------------


@pytest.mark.engine
def test_first_scrape_has_every_series_and_promtool_accepts_it(engines, sqlite_url):
    with running_daemon(sqlite_url, engines, http=LOOPBACK_ANY_PORT) as d:
        assert d.http_address is not None
        status, body = get(d.http_address, "/metrics")
        assert status == 200
        found = series(body)
        for action in metrics.ACTIONS.values():
            for result in metrics.RESULTS:
                assert f'reconciler_actions_total{{action="{action}",result="{result}"}}' in found
        for p in metrics.PHASES:
            assert f'reconciler_rows{{phase="{p}"}}' in found
        for source in metrics.WAKE_SOURCES:
            assert f'reconciler_wakeups_total{{source="{source}"}}' in found
        for node in ("n1", "n2", "n3"):
            assert f'reconciler_node_healthy{{node="{node}"}}' in found
            assert f'reconciler_event_stream_reconnects_total{{node="{node}"}}' in found
            assert (
                f'reconciler_engine_requests_total{{call="GET /containers/json",node="{node}"}}'
                in found
            )
        assert "reconciler_leader" in found
        assert not any("_created" in name for name in found)  # no per-series creation times
        assert "reconciler_pass_duration_seconds_count" in found
        linted = check_metrics(body.encode())
        assert linted.returncode == 0, linted.stdout + linted.stderr
        assert linted.stdout.strip() == "" and linted.stderr.strip() == ""


# -- a real Prometheus -------------------------------------------------------------------------


@pytest.mark.engine
def test_prometheus_scrapes_the_daemon_and_reads_the_series_back(engines, sqlite_url):
    with running_daemon(sqlite_url, engines, http=LOOPBACK_ANY_PORT) as d:
        insert_row(d, "metrics-web")
        wait_for(lambda: phase(d, "metrics-web") == "running", timeout=60, message="row running")
        assert d.http_address is not None
        with SandboxPrometheus(targets=[d.http_address], interval=1.0) as prom:
            wait_for(prom.targets_up, timeout=60, message="prometheus scraped the daemon")

            def value(expression: str) -> float | None:
                found = prom.query(expression)
                return found[0][1] if found else None

            wait_for(
                lambda: (value('reconciler_rows{phase="running"}') or 0) >= 1,
                timeout=30,
                message="rows running as scraped",
            )
            healthy = {labels["node"]: v for labels, v in prom.query("reconciler_node_healthy")}
            assert healthy == {"n1": 1.0, "n2": 1.0, "n3": 1.0}
            created = value('reconciler_actions_total{action="create",result="succeeded"}')
            assert created is not None and created >= 1
            creates = value('sum(reconciler_engine_requests_total{call="POST /containers/create"})')
            assert creates is not None and creates >= 1
            assert value("reconciler_leader") == 1.0
            passes = value("reconciler_pass_duration_seconds_count")
            assert passes is not None and passes >= 1
            woke = value('reconciler_wakeups_total{source="node"}')  # the create's events
            assert woke is not None and woke >= 1
            reconnects = prom.query("reconciler_event_stream_reconnects_total")
            assert sorted(labels["node"] for labels, _ in reconnects) == ["n1", "n2", "n3"]

            # A node going away shows as 0 on the next scrape; back, it has reconnected (a new
            # client and event stream) and its request counter went on from where it was.
            requests_n3 = 'sum(reconciler_engine_requests_total{node="n3"})'
            before = value(requests_n3)
            assert before is not None and before > 0
            engines[2].pause()
            try:
                wait_for(
                    lambda: value('reconciler_node_healthy{node="n3"}') == 0.0,
                    timeout=60,
                    message="n3 unhealthy as scraped",
                )
            finally:
                engines[2].resume()
            wait_for(
                lambda: (
                    value('reconciler_node_healthy{node="n3"}') == 1.0
                    and (value('reconciler_event_stream_reconnects_total{node="n3"}') or 0) >= 1
                ),
                timeout=60,
                message="n3 healthy again, its stream reopened, as scraped",
            )
            after = value(requests_n3)
            assert after is not None and after > before
            assert value("sum(resets(reconciler_engine_requests_total[5m]))") == 0.0
            linted = check_metrics(get(d.http_address, "/metrics")[1].encode())
            assert linted.returncode == 0, linted.stdout + linted.stderr


# -- /healthz and /readyz ----------------------------------------------------------------------


def test_healthz_turns_503_when_the_loop_wedges(sqlite_url):
    with bare_daemon(sqlite_url, reconcile_interval=0.3) as d:
        assert d.http_address is not None
        wait_for(lambda: get(d.http_address, "/healthz")[0] == 200, message="live")
        wait_for(lambda: get(d.http_address, "/readyz") == (200, "ok\n"), message="ready")
        release = threading.Event()
        original = d.controller.reconcile

        def wedged(**kwargs: Any) -> Any:
            release.wait(30)
            return original(**kwargs)

        d.controller.reconcile = wedged  # type: ignore[method-assign]
        try:
            _, body = wait_for(
                lambda: (r := get(d.http_address, "/healthz"))[0] == 503 and r,
                timeout=10,
                message="healthz 503 while the pass hangs",
            )
            assert "no pass has finished for" in body
        finally:
            release.set()
            d.controller.reconcile = original  # type: ignore[method-assign]
        wait_for(lambda: get(d.http_address, "/healthz")[0] == 200, message="live again")


def test_readyz_says_why_not(sqlite_url):
    with bare_daemon(sqlite_url, reconcile_interval=0.3) as d:
        assert d.http_address is not None
        wait_for(lambda: get(d.http_address, "/readyz") == (200, "ok\n"), message="ready")
        original = d.controller.reconcile

        def broken(**_kwargs: Any) -> Any:
            raise RuntimeError("the planner tripped")

        d.controller.reconcile = broken  # type: ignore[method-assign]
        try:
            _, body = wait_for(
                lambda: (r := get(d.http_address, "/readyz"))[0] == 503 and r,
                timeout=10,
                message="readyz 503 after a failed pass",
            )
            assert "the last pass failed: RuntimeError: the planner tripped" in body
            assert get(d.http_address, "/healthz")[0] == 200  # failing, not wedged
        finally:
            d.controller.reconcile = original  # type: ignore[method-assign]
        wait_for(lambda: get(d.http_address, "/readyz") == (200, "ok\n"), message="ready again")

        # The database goes away: every statement fails as on a dropped server.
        def unreachable(*_args: Any, **_kwargs: Any) -> Any:
            raise sa.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection"))

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(d.store.sql, "connect", unreachable)
            status, body = get(d.http_address, "/readyz")
        assert status == 503
        assert body == "database unreachable: server closed the connection\n"


def test_a_taken_port_does_not_stop_the_daemon(sqlite_url, caplog):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        migrate.upgrade(sqlite_url)
        d = Daemon(
            store=Store.open(sqlite_url),
            settings=Settings(database_url=sqlite_url, http=address, reconcile_interval=0.3),
        )
        thread = threading.Thread(target=d.run, daemon=True)
        thread.start()
        try:
            wait_for(lambda: d.passes >= 2, timeout=30, message="passes go on")
            assert d.http_address is None
            assert any("cannot serve /metrics on " + address in r.message for r in caplog.records)
        finally:
            d.stop()
            thread.join(timeout=30)
            d.store.close()


def test_counts_of_a_replaced_client_are_kept():
    class Client:
        def __init__(self) -> None:
            self.calls = {"GET /containers/json": 0}

    tracked = metrics._Tracked()
    first = Client()
    first.calls["GET /containers/json"] = 5
    tracked.update(first, metrics._calls)
    first.calls["GET /containers/json"] = 7  # counted after the last scrape, then replaced
    tracked.update(None, metrics._calls)  # disconnected
    second = Client()
    second.calls["GET /containers/json"] = 2
    tracked.update(second, metrics._calls)
    assert tracked.total == {"GET /containers/json": 9.0}


def test_http_empty_serves_nothing(sqlite_url):
    migrate.upgrade(sqlite_url)
    d = Daemon(
        store=Store.open(sqlite_url),
        settings=Settings(database_url=sqlite_url, http="", reconcile_interval=0.3),
    )
    thread = threading.Thread(target=d.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: d.passes >= 1, timeout=30, message="a pass")
        assert d.http_address is None
    finally:
        d.stop()
        thread.join(timeout=30)
        d.store.close()
