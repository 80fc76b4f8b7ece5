"""Session fixtures: real sandboxed dockerd engines and a throwaway PostgreSQL.

- `engines`: three started `SandboxEngine`s (n1..n3), each with `busybox:local`; started lazily
  (only if a selected test asks for it), once per session, removed at the end (by pid).
  After each test that used them, a paused engine is resumed and a stopped one started again,
  so a test may pause, kill or restart an engine without breaking the next one.
- `tls_engine` / `other_tls`: one engine that requires client certificates (`engine.tls`), and
  the files of an unrelated CA (for "wrong CA" tests).
- `pg`: a started `SandboxPostgres`; `pg_url`: a fresh database per test; `sqlite_url`: a fresh
  SQLite file per test.

Tests that use engines are marked `engine`, PostgreSQL tests `postgres` (automatically, from the
fixtures they use). Nothing skips for lack of an engine: a harness that cannot start its engines
fails the tests with the engine's log.
"""

from __future__ import annotations

import contextlib
import pathlib
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

# Property tests assert properties, not speed. On a 2-core machine shared with sandbox engines
# the first draw of a strategy (building Unicode tables) took 2.4 s once and failed a CI run on
# Hypothesis's too_slow health check; per-example deadlines are just as machine-dependent.
settings.register_profile("reconciler", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("reconciler")

_ROOT = pathlib.Path(__file__).resolve().parents[1]
for _path in (str(_ROOT), str(_ROOT / "tests")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from sandbox import engines as sandbox_engines  # noqa: E402
from sandbox import postgres as sandbox_postgres  # noqa: E402
from sandbox import tls as sandbox_tls  # noqa: E402

_ENGINE_FIXTURES = {"engines", "engine_fleet", "tls_engine"}
_POSTGRES_FIXTURES = {"pg", "pg_url"}
_GROUPS = {"engine": "real-engine", "postgres": "PostgreSQL"}


# -- engines ---------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def engine_fleet() -> Iterator[sandbox_engines.EngineFleet]:
    """Three sandboxed engines with `busybox:local`, for the whole session."""
    fleet = sandbox_engines.EngineFleet(3, image=True)
    fleet.start()  # raises EngineError with the daemons' logs: the tests error, never skip
    try:
        yield fleet
    finally:
        fleet.close()


@pytest.fixture(scope="session")
def engines(engine_fleet: sandbox_engines.EngineFleet) -> list[sandbox_engines.SandboxEngine]:
    """The three session engines, n1..n3 (`engine.url` for clients, `engine.docker(...)`)."""
    return list(engine_fleet)


@pytest.fixture(autouse=True)
def _engines_healthy_after_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Give the next test running engines even if this one paused, killed or stopped one."""
    yield
    if "engines" not in request.fixturenames:
        return
    for engine in request.getfixturevalue("engines"):
        if engine.is_paused():
            engine.resume()
        if not engine.is_running():
            engine.start()


@pytest.fixture(scope="session")
def other_tls() -> Iterator[sandbox_tls.TlsFiles]:
    """CA, server and client files of a CA that no sandbox engine trusts."""
    with _temporary_dir("rcl-ca-") as directory:
        yield sandbox_tls.make_tls_files(directory)


@pytest.fixture(scope="session")
def tls_engine() -> Iterator[sandbox_engines.SandboxEngine]:
    """One engine whose TCP port requires TLS client certificates (`tls_engine.tls`)."""
    with _temporary_dir("rcl-tls-") as directory:
        files = sandbox_tls.make_tls_files(directory / "ca")
        engine = sandbox_engines.SandboxEngine("tls1", directory / "tls1", tls=files)
        try:
            engine.start()
            yield engine
        finally:
            engine.remove()


@contextlib.contextmanager
def _temporary_dir(prefix: str) -> Iterator[pathlib.Path]:
    """A short folder under /tmp (unix socket paths must stay short), deleted afterwards."""
    directory = pathlib.Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# -- databases -------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pg() -> Iterator[sandbox_postgres.SandboxPostgres]:
    """A throwaway PostgreSQL cluster for the session (`pg.url`, `pg.psql_args()`)."""
    with sandbox_postgres.SandboxPostgres() as server:
        yield server


@pytest.fixture
def pg_url(pg: sandbox_postgres.SandboxPostgres) -> Iterator[str]:
    """`postgresql+psycopg://…` URL of a fresh, empty database for this test."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    url = pg.create_database(name)
    yield url
    with contextlib.suppress(sandbox_postgres.PostgresError):
        pg.drop_database(name)


@pytest.fixture
def sqlite_url(tmp_path: pathlib.Path) -> str:
    """`sqlite:///…` URL of a fresh database file for this test."""
    return f"sqlite:///{tmp_path / 'reconciler.db'}"


# -- markers and summary ---------------------------------------------------------------------------
_executed = dict.fromkeys(_GROUPS, 0)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "engine: needs real sandboxed dockerd engines")
    config.addinivalue_line("markers", "postgres: needs a real PostgreSQL server")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & _ENGINE_FIXTURES:
            item.add_marker(pytest.mark.engine)
        if names & _POSTGRES_FIXTURES:
            item.add_marker(pytest.mark.postgres)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Count tests whose body ran (passed or failed; not skipped, xfailed or setup errors)."""
    if report.when != "call" or report.outcome not in ("passed", "failed"):
        return
    if hasattr(report, "wasxfail"):
        return
    for marker in _GROUPS:
        if marker in report.keywords:
            _executed[marker] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for marker, label in _GROUPS.items():
        terminalreporter.write_line(f"{label} tests executed: {_executed[marker]}")
