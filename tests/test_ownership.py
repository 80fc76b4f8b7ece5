"""Who owns a container (issue 10, item 3): two reconciler databases on one engine.

Each database has an installation id (``reconciler db current`` prints it) and labels every
container it creates with ``reconciler.installation``; a container of another installation is
unmanaged to this one. Before, a second database pointed at the same engine removed the first
one's containers as orphans within seconds.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from daemons import insert, managed, running_daemon, status
from waiting import wait_for

from reconciler.db import migrate
from reconciler.domain import INSTALLATION_LABEL
from sandbox import postgres as sandbox_postgres
from sandbox.engines import SandboxEngine

ROWS = 5


@pytest.mark.engine
def test_two_databases_on_one_engine_leave_each_other_alone(
    sqlite_url: str, pg: sandbox_postgres.SandboxPostgres, engines: list[SandboxEngine]
) -> None:
    other_url = pg.create_database("second_installation")
    engine = engines[:1]
    with (
        running_daemon(sqlite_url, engine, reconcile_interval=0.5) as first,
        running_daemon(other_url, engine, clean=False, reconcile_interval=0.5) as second,
    ):
        first_id = migrate.installation(sqlite_url)
        second_id = migrate.installation(other_url)
        assert first_id and second_id and first_id != second_id

        insert(first.store.sql, *[{"name": f"a{i}", "image": "busybox:local"} for i in range(ROWS)])
        insert(
            second.store.sql, *[{"name": f"b{i}", "image": "busybox:local"} for i in range(ROWS)]
        )
        wait_for(lambda: _running(first.store.sql, "a", ROWS), timeout=60, message="a* running")
        wait_for(lambda: _running(second.store.sql, "b", ROWS), timeout=60, message="b* running")
        before = {c["Id"]: c["Labels"] for c in managed(engines[0])}
        assert len(before) == 2 * ROWS

        # Several passes of both: neither removes, recreates or adopts the other's containers.
        passes = (first.passes, second.passes)
        wait_for(
            lambda: first.passes >= passes[0] + 4 and second.passes >= passes[1] + 4,
            timeout=30,
            message="four more passes of each daemon",
        )
        after = {c["Id"]: c["Labels"] for c in managed(engines[0])}
        assert after.keys() == before.keys()
        owners = {
            labels["reconciler.name"][0]: labels[INSTALLATION_LABEL] for labels in after.values()
        }
        assert owners == {"a": first_id, "b": second_id}
        assert "a0" not in status(second.store.sql) and "b0" not in status(first.store.sql)


@pytest.mark.engine
def test_one_engine_registered_twice_sets_the_later_row_aside_and_loses_nothing(
    sqlite_url: str, engines: list[SandboxEngine]
) -> None:
    """Issue 10, item 4: a unix socket and a TCP alias of one dockerd, as two node rows. Before,
    every container showed up under both nodes and was "removed (duplicate)" and created again
    every few seconds. Now the later row is set aside with a last_error naming the other."""
    engine = engines[0]
    twins = [SimpleNamespace(url=engine.unix_url), SimpleNamespace(url=engine.tcp_url)]
    with running_daemon(sqlite_url, twins, reconcile_interval=0.5) as d:  # type: ignore[arg-type]
        insert(d.store.sql, *[{"name": f"w{i}", "image": "busybox:local"} for i in range(6)])
        wait_for(lambda: _running(d.store.sql, "w", 6), timeout=60, message="w* running")
        wait_for(
            lambda: "same engine as node n1" in (_last_error(d.store.sql, "n2") or ""),
            timeout=15,
            message="n2 set aside as a duplicate of n1",
        )
        before = sorted(c["Id"] for c in managed(engine))
        passes = d.passes
        wait_for(lambda: d.passes >= passes + 6, timeout=30, message="six more passes")
        assert sorted(c["Id"] for c in managed(engine)) == before
        assert len(before) == 6  # exactly one container per row
        with d.store.sql.connect() as conn:
            removed = conn.execute(
                sa.text("SELECT count(*) FROM events WHERE reason IN ('Removed', 'Recreated')")
            ).scalar_one()
        assert removed == 0


def _running(store: sa.Engine, prefix: str, count: int) -> bool:
    rows = status(store)
    return all(rows.get(f"{prefix}{i}", {}).get("phase") == "running" for i in range(count))


def _last_error(store: sa.Engine, node: str) -> str | None:
    with store.connect() as conn:
        return conn.execute(
            sa.text("SELECT last_error FROM nodes WHERE name = :n"), {"n": node}
        ).scalar_one()
