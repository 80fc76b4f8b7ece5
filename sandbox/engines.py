"""Sandboxed dockerd engines for tests, benchmarks and `make run`.

A `SandboxEngine` is one dockerd with its own folder (roots, unix socket, pidfile, config, log),
its own loopback TCP port and its own engine ID; it runs in its own session so it is stopped by
its pid, never by name. An `EngineFleet` starts several in parallel, imports `busybox:local` into
each and always stops and removes them (context manager, plus atexit and SIGTERM hooks for
interrupted runs). See /work/shared/ENGINES.md for what dockerd does on this machine.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from sandbox import images, processes
from sandbox.tls import TlsFiles

__all__ = [
    "EngineError",
    "EngineFleet",
    "SandboxEngine",
    "start_engines",
]

_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 20.0
_POLL = 0.05
_HELPERS = ("dockerd", "containerd", "runc", "docker-")  # programs a dockerd leaves behind
_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class EngineError(RuntimeError):
    """A sandboxed engine could not be started, stopped or removed."""


#: A sandbox engine reaches registries on loopback only. Any other registry request (a pull of
#: `no-such-image`, which dockerd would look up on Docker Hub) goes to a proxy address that
#: nothing listens on and fails at once, so no test ever resolves or contacts a host off this
#: machine, whatever image name a row holds.
OFFLINE_PROXY = {
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "localhost,127.0.0.0/8,::1",
}


class SandboxEngine:
    """One sandboxed dockerd. Name, folder and port are fixed; the pid changes on restart.

    `url` (loopback TCP, TLS if `tls` is given) is what a node row should hold; `unix_url` always
    works without certificates and is what the harness itself uses.
    """

    def __init__(
        self,
        name: str,
        base_dir: str | os.PathLike[str],
        *,
        port: int | None = None,
        tls: TlsFiles | None = None,
        cleanup_at_exit: bool = True,
        extra_args: tuple[str, ...] = (),
        pid: int | None = None,
        tcp: bool = True,
    ) -> None:
        self.name = name
        self.tcp = tcp
        """Listen on loopback TCP too. Without TLS that port is root on this machine for any
        local user, so ``make run`` starts its engine with ``tcp=False`` (unix socket only)."""
        self.base_dir = pathlib.Path(base_dir).absolute()
        self._port_chosen = port is not None
        self.port = port if port is not None else processes.free_port()
        self.tls = tls
        self.cleanup_at_exit = cleanup_at_exit
        self.extra_args = extra_args
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid = pid  # given: attach to a running engine (checked against its cmdline)
        if len(str(self.socket_path)) > 100:
            raise EngineError(f"socket path too long for a unix socket: {self.socket_path}")

    # -- names ----------------------------------------------------------------------------------
    @property
    def socket_path(self) -> pathlib.Path:
        return self.base_dir / "docker.sock"

    @property
    def data_root(self) -> pathlib.Path:
        return self.base_dir / "data"

    @property
    def exec_root(self) -> pathlib.Path:
        return self.base_dir / "exec"

    @property
    def pidfile(self) -> pathlib.Path:
        return self.base_dir / "docker.pid"

    @property
    def config_path(self) -> pathlib.Path:
        return self.base_dir / "daemon.json"

    @property
    def log_path(self) -> pathlib.Path:
        return self.base_dir / "dockerd.log"

    @property
    def tcp_url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The URL clients (and node rows) use: the TCP port, TLS-protected if configured; the
        unix socket for an engine started without TCP."""
        return self.tcp_url if self.tcp else self.unix_url

    @property
    def unix_url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def pid(self) -> int | None:
        """The pid of the running dockerd, None when it is not running."""
        return self._pid if self._pid is not None and self._is_ours(self._pid) else None

    def __repr__(self) -> str:
        return f"SandboxEngine({self.name!r}, {self.url}, pid={self.pid})"

    def _is_ours(self, pid: int) -> bool:
        """True if `pid` is alive and is this engine's dockerd (guards against pid reuse)."""
        if self._proc is not None and self._proc.pid == pid and self._proc.poll() is not None:
            return False  # reaped: our own child has exited
        return (
            processes.process_alive(pid)
            and f"unix://{self.socket_path} " in processes.cmdline(pid) + " "
        )

    # -- queries --------------------------------------------------------------------------------
    def is_running(self) -> bool:
        return self.pid is not None

    def is_paused(self) -> bool:
        pid = self.pid
        return pid is not None and processes.process_state(pid) in ("T", "t")

    def ping(self, timeout: float = 1.0) -> bool:
        """True if the daemon answers `GET /_ping` on its unix socket within `timeout`."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect(str(self.socket_path))
                s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                reply = s.recv(4096)
        except OSError:
            return False
        return reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n", 1)[0]

    def docker(
        self, *args: str, timeout: float = 60, check: bool = True, input: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI against this engine's unix socket (see `images.run_docker`)."""
        return images.run_docker(self.unix_url, *args, timeout=timeout, check=check, input=input)

    def info(self) -> dict[str, Any]:
        """`docker info` as a dict (engine `ID`, `Name`, `Labels`, ...)."""
        return dict(json.loads(self.docker("info", "--format", "{{json .}}").stdout))

    def engine_id(self) -> str:
        return str(self.info()["ID"])

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- lifecycle ------------------------------------------------------------------------------
    def _argv(self) -> list[str]:
        dockerd = shutil.which("dockerd", path=os.environ.get("PATH", "") + ":" + _SYSTEM_PATH)
        if dockerd is None:
            raise EngineError("dockerd is not installed (run scripts/install-deps.sh)")
        return [
            dockerd,
            f"--host=unix://{self.socket_path}",
            *([f"--host=tcp://127.0.0.1:{self.port}"] if self.tcp else []),
            f"--data-root={self.data_root}",
            f"--exec-root={self.exec_root}",
            f"--pidfile={self.pidfile}",
            f"--config-file={self.config_path}",
            "--bridge=none",
            "--iptables=false",
            "--ip-masq=false",
            f"--label=node={self.name}",
            *(self.tls.dockerd_args() if self.tls else []),
            *self.extra_args,
        ]

    def start(self, timeout: float = _START_TIMEOUT) -> None:
        """Start dockerd and wait until it answers on both sockets.

        Raises EngineError with the tail of its log if it exits or does not answer in time.
        A port taken in the meantime by someone else is replaced by a fresh one (first start).
        """
        if self.is_running():
            return
        if self.cleanup_at_exit:
            processes.on_exit(self, self.remove)
        for attempt in range(3):
            try:
                self._spawn_and_wait(timeout)
                return
            except EngineError as e:
                port_lost = "address already in use" in self.log_tail(5)
                if self._port_chosen or not port_lost or attempt == 2:
                    raise EngineError(f"{e}\n--- {self.log_path} ---\n{self.log_tail()}") from e
                self.port = processes.free_port()

    def _spawn_and_wait(self, timeout: float) -> None:
        for folder in (self.base_dir, self.data_root, self.exec_root):
            folder.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            json.dumps({"deprecated-key-path": str(self.base_dir / "key.json")}) + "\n"
        )
        self.pidfile.unlink(missing_ok=True)  # a stale pidfile from a killed run blocks dockerd
        self._clear_stale_containerd()
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["PATH"] = env.get("PATH", "") + ":" + _SYSTEM_PATH
        env.update(OFFLINE_PROXY)
        with self.log_path.open("ab") as log:
            log.write(f"--- starting {self.name} on port {self.port} ---\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self._argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self._pid = self._proc.pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise EngineError(f"dockerd {self.name} exited with {self._proc.returncode}")
            if self.ping(timeout=1.0) and (not self.tcp or self._tcp_accepts()):
                return
            time.sleep(_POLL)
        self.stop()
        raise EngineError(f"dockerd {self.name} did not answer within {timeout:.0f} s")

    def _clear_stale_containerd(self) -> None:
        """Forget the containerd of a killed dockerd before starting a new one.

        dockerd reuses the containerd named in its pidfile if `kill(pid, 0)` succeeds, which it
        does for an unreaped zombie too; it then waits ~15 s and fails. A containerd that is
        really still alive (ours: its command line names our exec root) is killed by pid.
        """
        pidfile = self.exec_root / "containerd" / "containerd.pid"
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        if processes.process_alive(pid) and str(self.exec_root) in processes.cmdline(pid):
            processes.send_signal(pid, signal.SIGKILL)
            processes.wait_gone(pid, 10)
        pidfile.unlink(missing_ok=True)

    def _tcp_accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                return True
        except OSError:
            return False

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._is_ours(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(_POLL)
        return True

    def stop(self, timeout: float = _STOP_TIMEOUT) -> None:
        """SIGTERM dockerd (it stops its containers), wait, then SIGKILL. No-op if not running."""
        pid = self.pid
        if pid is None:
            return
        processes.send_signal(pid, signal.SIGCONT)  # a paused daemon cannot handle SIGTERM
        processes.send_signal(pid, signal.SIGTERM)
        if not self._wait_gone(pid, timeout):
            processes.send_signal(pid, signal.SIGKILL)
            if not self._wait_gone(pid, 10):
                raise EngineError(f"dockerd {self.name} (pid {pid}) survived SIGKILL")
        self._pid = None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to dockerd only (its containers and shims stay). Waits for exit on SIGKILL."""
        pid = self.pid
        if pid is None:
            raise EngineError(f"dockerd {self.name} is not running")
        processes.send_signal(pid, sig)
        if sig == signal.SIGKILL:
            self._wait_gone(pid, 10)

    def pause(self) -> None:
        """SIGSTOP dockerd and wait until it is stopped: every API call hangs until `resume()`."""
        self.kill(signal.SIGSTOP)
        self._wait_paused(True)

    def resume(self) -> None:
        """SIGCONT dockerd and wait until it runs again."""
        self.kill(signal.SIGCONT)
        self._wait_paused(False)

    def _wait_paused(self, paused: bool, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while self.is_paused() != paused:  # signal delivery is asynchronous
            if time.monotonic() > deadline:
                raise EngineError(f"dockerd {self.name} did not {'stop' if paused else 'continue'}")
            time.sleep(0.01)

    def restart(self, timeout: float = _START_TIMEOUT) -> None:
        """Stop (if running) and start again on the same roots and port; the pid changes."""
        self.stop()
        self._port_chosen = True  # clients know this port now: keep it
        self.start(timeout)

    def remove_all_containers(self, timeout: float = 120) -> None:
        """Force-remove every container (SIGKILL, fast) so that a later stop is quick."""
        ids = self.docker("ps", "-aq", timeout=timeout).stdout.split()
        if ids:
            self.docker("rm", "-f", "-v", *ids, timeout=timeout, check=False)

    def remove(self) -> None:
        """Stop dockerd (removing its containers first), kill what it left, unmount, delete."""
        if self.is_running():
            if self.is_paused():
                self.resume()
            with contextlib.suppress(Exception):
                self.remove_all_containers(timeout=60)
            self.stop()
        # shims (and their containers) outlive a killed dockerd; they name our folder
        leftovers = processes.processes_under(str(self.base_dir) + "/", _HELPERS)
        for pid in leftovers:
            processes.send_signal(pid, signal.SIGKILL)
        for pid in leftovers:
            processes.wait_gone(pid, 10)
        processes.unmount_all(self.base_dir)
        shutil.rmtree(self.base_dir, ignore_errors=True)
        if self.base_dir.exists():
            processes.unmount_all(self.base_dir)
            shutil.rmtree(self.base_dir)
        processes.forget(self)


# -- fleets ---------------------------------------------------------------------------------------
class EngineFleet:
    """Several sandboxed engines under one base folder, started and removed in parallel.

    A context manager: leaving it (also by an exception or KeyboardInterrupt) removes every
    engine and, if the fleet made it, the base folder.
    """

    def __init__(
        self,
        count: int = 3,
        base_dir: str | os.PathLike[str] | None = None,
        *,
        image: bool = True,
        tls: TlsFiles | None = None,
        prefix: str = "n",
    ) -> None:
        self._own_base = base_dir is None
        self.base_dir = pathlib.Path(
            tempfile.mkdtemp(prefix="rcl-", dir="/tmp") if base_dir is None else base_dir
        )
        self.image = image
        self.engines = [
            SandboxEngine(f"{prefix}{i}", self.base_dir / f"{prefix}{i}", tls=tls)
            for i in range(1, count + 1)
        ]

    def __iter__(self) -> Iterator[SandboxEngine]:
        return iter(self.engines)

    def __len__(self) -> int:
        return len(self.engines)

    def __getitem__(self, index: int) -> SandboxEngine:
        return self.engines[index]

    def _start_one(self, engine: SandboxEngine) -> None:
        try:
            engine.start()
            if self.image:
                images.import_busybox(engine.unix_url)
        except Exception as e:
            raise EngineError(f"engine {engine.name} ({engine.base_dir}): {e}") from e

    def start(self) -> EngineFleet:
        """Start all engines in parallel; on any failure remove them all and raise EngineError."""
        if self.image:
            images.busybox_tarball()  # build once before the threads race for it
        try:
            processes.on_exit(self, self.close)  # also installs the SIGTERM hook (threads cannot)
            errors = processes.parallel(functools.partial(self._start_one, e) for e in self.engines)
            if errors:
                raise EngineError("\n\n".join(errors))
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Remove every engine (in parallel) and the base folder if the fleet created it."""
        errors = processes.parallel(e.remove for e in self.engines)
        if self._own_base:
            processes.unmount_all(self.base_dir)
            shutil.rmtree(self.base_dir, ignore_errors=True)
        processes.forget(self)
        if errors:
            raise EngineError("\n".join(errors))

    def __enter__(self) -> EngineFleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_engines(
    count: int = 3,
    base_dir: str | os.PathLike[str] | None = None,
    *,
    image: bool = True,
    tls: TlsFiles | None = None,
) -> EngineFleet:
    """Start `count` engines in parallel (with `busybox:local` if `image`); use with `with`."""
    return EngineFleet(count, base_dir, image=image, tls=tls).start()
