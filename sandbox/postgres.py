"""A throwaway PostgreSQL cluster for tests and benchmarks.

`SandboxPostgres` runs initdb into a fresh folder under /tmp, starts the server on its own
loopback port and socket folder, hands out SQLAlchemy URLs (one database per test via
`create_database`) and stops the server by its data folder (falling back to the postmaster pid).
PostgreSQL refuses to run as root, so as root every server command runs as the `postgres` user.
Durability is switched off (fsync, synchronous_commit): the data is thrown away anyway.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time

from sandbox import processes

__all__ = ["PostgresError", "SandboxPostgres", "find_bin_dir"]

_LIB = pathlib.Path("/usr/lib/postgresql")
_POLL = 0.05
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresError(RuntimeError):
    """The throwaway PostgreSQL could not be created, started, stopped or queried."""


def find_bin_dir() -> pathlib.Path:
    """The newest `/usr/lib/postgresql/<version>/bin` holding initdb; PostgresError if none."""
    versions = sorted(
        (p for p in _LIB.glob("*/bin/initdb") if p.parent.parent.name.isdigit()),
        key=lambda p: int(p.parent.parent.name),
    )
    if not versions:
        raise PostgresError(f"no initdb under {_LIB} (run scripts/install-deps.sh)")
    return versions[-1].parent


class SandboxPostgres:
    """One throwaway PostgreSQL cluster; a context manager that stops and deletes it."""

    def __init__(
        self,
        base_dir: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        cleanup_at_exit: bool = True,
    ) -> None:
        self.bin_dir = find_bin_dir()
        self.base_dir = pathlib.Path(
            tempfile.mkdtemp(prefix="rcl-pg-", dir="/tmp") if base_dir is None else base_dir
        ).absolute()
        self.port = port if port is not None else processes.free_port()
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir
        self.log_path = self.base_dir / "postgres.log"
        self._as_root = os.geteuid() == 0
        self.cleanup_at_exit = cleanup_at_exit

    # -- names ----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """SQLAlchemy URL of the `postgres` database (psycopg 3 driver, trust auth)."""
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    @property
    def pid(self) -> int | None:
        """The postmaster pid from `postmaster.pid`, None when the server is not running."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if processes.process_alive(pid) else None

    def __repr__(self) -> str:
        return f"SandboxPostgres({self.url}, pid={self.pid})"

    # -- running commands -----------------------------------------------------------------------
    def _server_command(self, program: str, *args: str) -> list[str]:
        argv = [str(self.bin_dir / program), *args]
        return ["runuser", "-u", "postgres", "--", *argv] if self._as_root else argv

    def _run(self, argv: list[str], *, timeout: float = 120) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGCONNECT_TIMEOUT"] = "10"
        try:
            proc = subprocess.run(
                argv,
                cwd=self.base_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise PostgresError(f"{' '.join(argv)} timed out after {timeout} s") from e
        if proc.returncode != 0:
            raise PostgresError(
                f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
                f"\n--- {self.log_path} ---\n{self.log_tail()}"
            )
        return proc.stdout

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def psql_args(self, database: str = "postgres") -> list[str]:
        """argv prefix for `psql` connected to `database` (add `-c SQL` or `-f FILE`)."""
        return [
            str(self.bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
            "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database,
        ]  # fmt: skip

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run `sql` with psql (unaligned, tuples only) and return its output."""
        return self._run([*self.psql_args(database), "-At", "-c", sql])

    # -- lifecycle ------------------------------------------------------------------------------
    def _initdb(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if self._as_root:
            user = pwd.getpwnam("postgres")
            os.chown(self.base_dir, user.pw_uid, user.pw_gid)
        os.chmod(self.base_dir, 0o700)
        self._run(
            self._server_command(
                "initdb", "-D", str(self.data_dir), "-A", "trust", "-U", "postgres",
                "-E", "UTF8", "--locale=C", "--no-sync",
            )
        )  # fmt: skip

    def start(self, timeout: float = 60) -> None:
        """initdb on first use, then start and wait until the server accepts connections.

        Raises PostgresError with the server log if it does not come up within `timeout`.
        """
        if self.pid is not None:
            return
        if self.cleanup_at_exit:
            processes.on_exit(self, self.remove)  # also on SIGTERM: never leave a server behind
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        options = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            " -c max_connections=200"
        )
        self._run(
            self._server_command(
                "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path), "-o", options,
                "-w", "-t", str(int(timeout)), "start",
            ),
            timeout=timeout + 10,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.psql("select 1")
                return
            except PostgresError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(_POLL)

    def stop(self, timeout: float = 30) -> None:
        """`pg_ctl stop -m fast`; if that fails, SIGQUIT then SIGKILL the postmaster by pid."""
        pid = self.pid
        if pid is None:
            return
        with contextlib.suppress(PostgresError):
            self._run(
                self._server_command(
                    "pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t",
                    str(int(timeout)), "stop",
                ),
                timeout=timeout + 10,
            )  # fmt: skip
        for sig in (None, signal.SIGQUIT, signal.SIGKILL):
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 10
            while processes.process_alive(pid) and time.monotonic() < deadline:
                time.sleep(_POLL)
            if not processes.process_alive(pid):
                return
        raise PostgresError(f"postmaster {pid} survived SIGKILL")

    def remove(self) -> None:
        """Stop the server and delete its folder."""
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)
        processes.forget(self)

    def create_database(self, name: str) -> str:
        """Create database `name` (lower-case identifier) and return its SQLAlchemy URL."""
        if not _NAME.match(name):
            raise ValueError(f"not a plain lower-case database name: {name!r}")
        # FILE_COPY (PostgreSQL 15+) skips WAL-logging the template: much faster here
        strategy = " STRATEGY FILE_COPY" if int(self.bin_dir.parent.name) >= 15 else ""
        self.psql(f'CREATE DATABASE "{name}"{strategy}')
        return self.database_url(name)

    def drop_database(self, name: str) -> None:
        """Drop database `name`, disconnecting whoever still uses it."""
        if not _NAME.match(name):
            raise ValueError(f"not a plain lower-case database name: {name!r}")
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def __enter__(self) -> SandboxPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
