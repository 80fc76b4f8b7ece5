"""High availability: several `reconciler run` on one database, one leader by lease.

Every daemon is a real subprocess (its own session, signalled by pid), so SIGKILL, SIGSTOP and
SIGTERM are the real thing; the engines are the session's sandboxed dockerd. A sampler lists the
managed containers of every engine every 100 ms for the whole of a test and remembers the worst
moment: no row may ever have two containers, in any state. Lease timings are short (duration
3 s, renew deadline 2 s, retry 0.5 s) to keep the suite fast.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import operator
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import docker
import pytest
import sqlalchemy as sa
from daemons import execute, insert, managed, register, remove_managed, status
from waiting import wait_for

from reconciler import settings as settings_mod
from sandbox import postgres as sandbox_postgres
from sandbox.engines import SandboxEngine

DURATION, DEADLINE, RETRY = 3.0, 2.0, 0.5
LEASE = ["--lease-duration", "3", "--renew-deadline", "2", "--retry-period", "0.5"]
SLEEP = ["sleep", "3600"]
RECONCILER = [sys.executable, "-m", "reconciler"]
DOCKER_CALL = re.compile(rb"docker call: ")


class Daemon:
    """One `reconciler run` subprocess and its log."""

    def __init__(self, url: str, log: Path, identity: str, *, debug: bool = False) -> None:
        self.identity = identity
        self.log = log
        extra = ["--http", ""] if "http" in settings_mod.field_names() else []
        verbose = ["-vv"] if debug else []
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    *RECONCILER,
                    *verbose,
                    "--database-url",
                    url,
                    "run",
                    "--interval",
                    "2",
                    "--identity",
                    identity,
                    *LEASE,
                    *extra,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def text(self) -> bytes:
        return self.log.read_bytes()

    def count(self, what: bytes | re.Pattern[bytes]) -> int:
        data = self.text()
        if isinstance(what, bytes):
            return data.count(what)
        return len(what.findall(data))

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


@contextlib.contextmanager
def daemons(
    url: str, tmp: Path, *identities: str, debug: Sequence[str] = ()
) -> Iterator[dict[str, Daemon]]:
    started: dict[str, Daemon] = {}
    try:
        for name in identities:
            started[name] = Daemon(url, tmp / f"{name}.log", name, debug=name in debug)
        yield started
    finally:
        for d in started.values():
            d.kill()


class Sampler(threading.Thread):
    """Lists every engine's managed containers every 100 ms; remembers any name seen twice."""

    def __init__(self, engines: Sequence[SandboxEngine]) -> None:
        super().__init__(name="duplicate-sampler", daemon=True)
        self._clients = [
            docker.APIClient(base_url=e.url, version="auto", timeout=30) for e in engines
        ]
        self._halt = threading.Event()
        self.samples = 0
        self.duplicates: list[dict[str, int]] = []

    def run(self) -> None:
        while not self._halt.wait(0.1):
            seen: Counter[str] = Counter()
            for api in self._clients:
                listed = api.containers(all=True, filters={"label": "reconciler.managed=true"})
                seen.update(c["Labels"].get("reconciler.name", c["Id"]) for c in listed)
            twice = {name: n for name, n in seen.items() if n > 1}
            if twice:
                self.duplicates.append(twice)
            self.samples += 1

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)
        for api in self._clients:
            api.close()


@contextlib.contextmanager
def sampling(engines: Sequence[SandboxEngine]) -> Iterator[Sampler]:
    sampler = Sampler(engines)
    sampler.start()
    try:
        yield sampler
    finally:
        sampler.stop()
    assert sampler.samples > 10, "the sampler did not run"
    assert sampler.duplicates == [], f"a row had two containers: {sampler.duplicates[:3]}"


def lease_row(store: sa.Engine) -> dict[str, Any]:
    with store.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM leases WHERE name = 'controller'")).mappings()
        return dict(row.one())


def holder(store: sa.Engine) -> str | None:
    return lease_row(store)["holder"]


def lease_events(store: sa.Engine) -> list[str]:
    with store.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT reason FROM events WHERE object = 'lease/controller' ORDER BY id")
        )
        return [r.reason for r in rows]


def names(prefix: str, n: int) -> list[str]:
    tag = uuid.uuid4().hex[:6]
    return [f"{prefix}-{tag}-{i:03d}" for i in range(n)]


def rows(*wanted: str) -> list[dict[str, Any]]:
    return [{"name": n, "image": "busybox:local", "command": SLEEP} for n in wanted]


def all_running(store: sa.Engine, wanted: Sequence[str]) -> bool:
    current = status(store)
    return all(current.get(n, {}).get("phase") == "running" for n in wanted)


def containers_by_name(engines: Sequence[SandboxEngine]) -> Counter[str]:
    return Counter(c["Labels"]["reconciler.name"] for e in engines for c in managed(e))


def takeover_from(store: sa.Engine, old: str, *, timeout: float) -> tuple[str, float]:
    """Wait for a holder other than ``old``; return it and the seconds it took."""
    start = time.monotonic()
    new = wait_for(
        lambda: (h := holder(store)) not in (None, old) and h,
        timeout=timeout,
        interval=0.02,
        message=f"a standby takes the lease from {old}",
    )
    return str(new), time.monotonic() - start


@pytest.fixture
def clean(engines: list[SandboxEngine]) -> Iterator[None]:
    for e in engines:
        remove_managed(e)
    yield
    for e in engines:
        remove_managed(e)


def test_three_daemons_on_postgresql_one_leader_rows_converge_once(
    engines, pg_url, tmp_path, clean
):
    store = register(pg_url, engines)
    wanted = names("ha3", 12)
    with daemons(pg_url, tmp_path, "d1", "d2", "d3") as ds, sampling(engines):
        leader = wait_for(lambda: holder(store), timeout=60, message="a leader")
        wait_for(lambda: ds[leader].count(b"became leader") == 1, timeout=10)
        insert(store, *rows(*wanted))
        wait_for(lambda: all_running(store, wanted), timeout=90, message="12 rows running")
        # Exactly one leader all along: the others never led, never created anything.
        standbys = [d for name, d in ds.items() if name != leader]
        wait_for(lambda: all(b"reconciler starting" in d.text() for d in standbys), timeout=30)
        assert all(d.count(b"became leader") == 0 for d in standbys)
        assert all(d.count(b"has been created") == 0 for d in standbys)
        assert ds[leader].count(b"has been created") == len(wanted)
        assert holder(store) == leader and lease_row(store)["transitions"] == 1
        assert lease_events(store) == ["BecameLeader"]
    assert containers_by_name(engines) == Counter(wanted), "each row has exactly one container"
    with store.connect() as conn:
        created = conn.execute(
            sa.text("SELECT count(*) FROM events WHERE reason = 'Created' AND object LIKE :p"),
            {"p": f"container/{wanted[0].rsplit('-', 1)[0]}-%"},
        ).scalar()
    assert created == len(wanted), "each row was created once"
    store.dispose()


def test_sigkill_of_the_leader_mid_convergence_takeover_without_duplicates(
    engines, pg_url, tmp_path, clean
):
    store = register(pg_url, engines)
    wanted = names("kill", 100)
    with daemons(pg_url, tmp_path, "d1", "d2", "d3") as ds, sampling(engines):
        leader = wait_for(lambda: holder(store), timeout=60, message="a leader")
        wait_for(lambda: all(b"reconciler starting" in d.text() for d in ds.values()), timeout=30)
        insert(store, *rows(*wanted))
        wait_for(lambda: sum(containers_by_name(engines).values()) >= 10, timeout=60)
        ds[leader].kill()
        created_before = sum(containers_by_name(engines).values())
        _new, took = takeover_from(store, leader, timeout=DURATION + RETRY + 5)
        assert created_before < len(wanted), "the kill came too late to prove anything"
        assert took <= DURATION + RETRY + 0.3, f"takeover took {took:.2f}s"
        wait_for(lambda: all_running(store, wanted), timeout=180, message="100 rows running")
        assert lease_row(store)["transitions"] == 2
    assert containers_by_name(engines) == Counter(wanted)
    print(f"SIGKILL takeover: {took:.2f}s ({created_before} of 100 created before the kill)")
    store.dispose()


def test_sigterm_of_the_leader_releases_the_lease_takeover_within_3s(
    engines, pg_url, tmp_path, clean
):
    store = register(pg_url, engines)
    first, later = names("term", 6), names("term-after", 4)
    with daemons(pg_url, tmp_path, "d1", "d2") as ds, sampling(engines):
        leader = wait_for(lambda: holder(store), timeout=60, message="a leader")
        insert(store, *rows(*first))
        wait_for(lambda: all_running(store, first), timeout=60)
        ds[leader].signal(signal.SIGTERM)
        _new, took = takeover_from(store, leader, timeout=10)
        assert ds[leader].proc.wait(timeout=15) == 0
        assert took < 3.0, f"takeover after SIGTERM took {took:.2f}s"
        assert b"released the lease" in ds[leader].text()
        assert lease_events(store)[-2:] == ["ReleasedLease", "BecameLeader"]
        insert(store, *rows(*later))
        wait_for(lambda: all_running(store, later), timeout=60, message="the new leader acts")
    assert containers_by_name(engines) == Counter(first + later)
    print(f"SIGTERM takeover: {took:.2f}s")
    store.dispose()


def test_sigstopped_leader_makes_no_docker_call_after_its_lease_expired(
    engines, pg_url, tmp_path, clean
):
    store = register(pg_url, engines)
    first, later = names("stop", 30), names("stop-late", 8)
    with daemons(pg_url, tmp_path, "d1", debug=["d1"]) as ds, sampling(engines):
        wait_for(lambda: holder(store) == "d1", timeout=60, message="d1 leads")
        ds["d2"] = Daemon(pg_url, tmp_path / "d2.log", "d2")  # stopped by `daemons` too
        wait_for(lambda: b"reconciler starting" in ds["d2"].text(), timeout=30)
        old = ds["d1"]
        insert(store, *rows(*first))
        wait_for(lambda: old.count(DOCKER_CALL) >= 6, timeout=60, message="d1 is acting")
        old.signal(signal.SIGSTOP)
        wait_for(lambda: _all_threads_stopped(old.proc.pid), timeout=5, interval=0.01)
        calls_before = old.count(DOCKER_CALL)
        lost_before = old.count(b"lost the lease")
        new, _ = takeover_from(store, "d1", timeout=DURATION + RETRY + 10)
        assert new == "d2"
        # While d1 is frozen: rows are inserted and deleted; the new leader converges them.
        insert(store, *rows(*later))
        gone = first[:5]
        execute(
            store,
            f"DELETE FROM desired_containers WHERE name IN ({', '.join(repr(n) for n in gone)})",
        )
        kept = first[5:] + later
        wait_for(
            lambda: all_running(store, kept) and not set(gone) & set(containers_by_name(engines)),
            timeout=120,
            message="d2 converged the changes made while d1 was frozen",
        )
        assert old.count(DOCKER_CALL) == calls_before, "the log is frozen with d1"
        resumed = datetime.datetime.now()
        old.signal(signal.SIGCONT)
        # d1 learns it lost (its deadline passed while frozen), writes LostLease, stands by.
        wait_for(lambda: old.count(b"lost the lease") > lost_before, timeout=10)
        wait_for(lambda: "LostLease" in lease_events(store), timeout=10)
        # No request left d1 after it resumed: each one is logged, with its time, right after
        # the last check before the socket (a call logged before the pause may finish logging
        # after it; the requests' own times tell).
        late = [t for t in _requests_sent(old.text()) if t >= resumed]
        assert late == [], f"d1 sent {len(late)} Docker request(s) after SIGCONT"
        assert _requests_sent(old.text()), "d1's requests are logged (-vv)"
        assert holder(store) == "d2"
    final = containers_by_name(engines)
    assert final == Counter(kept), "no duplicates and nothing left of the deleted rows"
    store.dispose()


def test_postgresql_restarted_under_running_daemons_one_leads_again(engines, tmp_path, clean):
    with sandbox_postgres.SandboxPostgres() as server:
        url = server.create_database("ha_restart")
        store = register(url, engines)
        first, later = names("pgr", 3), names("pgr-after", 1)
        with daemons(url, tmp_path, "d1", "d2") as ds, sampling(engines):
            leader = wait_for(lambda: holder(store), timeout=60, message="a leader")
            insert(store, *rows(*first))
            wait_for(lambda: all_running(store, first), timeout=60)
            led_before = sum(d.count(b"became leader") for d in ds.values())
            store.dispose()
            server.stop()
            wait_for(lambda: ds[leader].count(b"lost the lease") >= 1, timeout=DEADLINE + 5)
            server.start()
            # One leads again, and every daemon is listening again.
            wait_for(
                lambda: sum(d.count(b"became leader") for d in ds.values()) > led_before,
                timeout=30,
                message="a daemon leads again",
            )
            wait_for(lambda: _listeners(store) >= 2, timeout=30, message="LISTEN again")
            assert all(d.proc.poll() is None for d in ds.values()), "losing the database is fatal"
            started = time.monotonic()
            insert(store, *rows(*later))
            wait_for(lambda: all_running(store, later), timeout=10, interval=0.02)
            took = time.monotonic() - started
            assert took < 1.0, f"the INSERT after the restart took {took:.2f}s to run"
        store.dispose()
    print(f"INSERT after a PostgreSQL restart ran in {took:.2f}s")


def _requests_sent(log: bytes) -> list[datetime.datetime]:
    """When each POST/DELETE left for an engine (``docker request sent`` debug lines)."""
    found = re.findall(
        rb"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) DEBUG \S+: "
        rb"docker request sent: (?:POST|DELETE) ",
        log,
        re.MULTILINE,
    )
    return [datetime.datetime.strptime(t.decode(), "%Y-%m-%d %H:%M:%S,%f") for t in found]


def _all_threads_stopped(pid: int) -> bool:
    """Every thread of ``pid`` is in the stopped state (a SIGSTOP has taken effect)."""
    tasks = list(Path(f"/proc/{pid}/task").iterdir())
    return all((t / "stat").read_text().rsplit(")", 1)[1].split()[0] == "T" for t in tasks)


def _listeners(store: sa.Engine) -> int:
    with store.connect() as conn:
        return int(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND query LIKE 'LISTEN %'"
                )
            ).scalar()
            or 0
        )


def test_two_daemons_on_one_sqlite_file_take_over_after_sigkill_and_sigterm(
    engines, sqlite_url, tmp_path, clean
):
    store = register(sqlite_url, engines)
    batches = [names("lite", 6), names("lite-kill", 4), names("lite-term", 4)]
    with daemons(sqlite_url, tmp_path, "s1", "s2") as ds, sampling(engines):
        leader = wait_for(lambda: holder(store), timeout=60, message="a leader")
        standby = "s2" if leader == "s1" else "s1"
        insert(store, *rows(*batches[0]))
        wait_for(lambda: all_running(store, batches[0]), timeout=60)
        assert ds[standby].count(b"has been created") == 0, "the standby waits, it does not act"
        ds[leader].kill()
        new, killed_took = takeover_from(store, leader, timeout=DURATION + RETRY + 5)
        assert new == standby and killed_took <= DURATION + RETRY + 0.3
        insert(store, *rows(*batches[1]))
        wait_for(lambda: all_running(store, batches[1]), timeout=60)
        # The killed one comes back as a standby; then SIGTERM hands the lease back to it.
        ds[leader] = Daemon(sqlite_url, tmp_path / f"{leader}-again.log", leader)
        wait_for(lambda: b"reconciler starting" in ds[leader].text(), timeout=30)
        ds[new].signal(signal.SIGTERM)
        back, term_took = takeover_from(store, new, timeout=10)
        assert back == leader and term_took < 3.0
        assert ds[new].proc.wait(timeout=15) == 0
        insert(store, *rows(*batches[2]))
        wait_for(lambda: all_running(store, batches[2]), timeout=60)
    assert containers_by_name(engines) == Counter(functools.reduce(operator.iadd, batches, []))
    print(f"SQLite takeover: SIGKILL {killed_took:.2f}s, SIGTERM {term_took:.2f}s")
    store.dispose()


def test_plan_writes_nothing_and_once_acts_only_as_leader(engines, sqlite_url, tmp_path, clean):
    store = register(sqlite_url, engines)
    wanted = names("plan", 2)
    insert(store, *rows(*wanted))
    url_args = [*RECONCILER, "--database-url", sqlite_url]
    before = _table_counts(store)
    planned = subprocess.run([*url_args, "plan"], capture_output=True, timeout=120)
    assert planned.returncode == 0, planned.stderr
    assert b"create 2" in planned.stdout
    assert _table_counts(store) == before, "plan wrote to the database"
    assert holder(store) is None and containers_by_name(engines) == Counter()
    # run --once while another controller leads: nothing done, exit 1.
    execute(
        store,
        "UPDATE leases SET holder = 'other', renewed_at = CURRENT_TIMESTAMP, "
        "duration_seconds = 600 WHERE name = 'controller'",
    )
    refused = subprocess.run([*url_args, "run", "--once", *LEASE], capture_output=True, timeout=120)
    assert (
        refused.returncode == 1 and b"another controller holds the lease (other)" in refused.stderr
    )
    assert containers_by_name(engines) == Counter()
    execute(store, "UPDATE leases SET holder = NULL WHERE name = 'controller'")
    once = subprocess.run([*url_args, "run", "--once", *LEASE], capture_output=True, timeout=120)
    assert once.returncode == 0, once.stderr
    assert containers_by_name(engines) == Counter(wanted)
    assert holder(store) is None, "run --once releases the lease"
    assert lease_events(store) == ["BecameLeader", "ReleasedLease"]
    store.dispose()


def _table_counts(store: sa.Engine) -> dict[str, object]:
    tables = ["nodes", "container_status", "observed_containers", "events", "leases"]
    with store.connect() as conn:
        return {t: conn.execute(sa.text(f"SELECT * FROM {t}")).fetchall() for t in tables}
