"""``SimFleet``: simulated engines in a subprocess, for tests and benchmarks.

    with SimFleet(3).start() as fleet:
        fleet.urls      # ['tcp://127.0.0.1:40001', ...]
        fleet.pid       # the server process (stopped by this pid on close)

The server runs ``python -m simengine serve`` in its own session; ``close()`` sends SIGTERM to
that pid, waits, and kills it if it does not exit. Its log goes to ``log_path``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import pathlib
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

_ROOT = pathlib.Path(__file__).resolve().parents[1]


class SimEngineHandle:
    """One simulated engine: ``url``, ``name`` (sim1…), and its simulation controls."""

    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.name = name

    def __repr__(self) -> str:
        return f"SimEngineHandle({self.name}, {self.url})"

    def control(self, path: str, *, method: str = "POST") -> bytes:
        """Send a simulation control (``pause``, ``resume``, ``containers/ID/exit?code=N``)."""
        if not self.url.startswith("tcp://"):
            raise NotImplementedError("controls are only sent over TCP")
        request = urllib.request.Request(
            f"http://{self.url.removeprefix('tcp://')}/_sim/{path}", method=method
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return bytes(answer.read())

    def stats(self) -> dict[str, Any]:
        """``calls`` (Docker API requests by operation key, as ``docker_api`` counts them),
        ``containers``, ``running`` and ``event_streams`` (open ``/events`` streams)."""
        return dict(json.loads(self.control("stats", method="GET")))

    def pause(self) -> None:
        """Every API call hangs until ``resume()`` (like dockerd under SIGSTOP)."""
        self.control("pause")

    def resume(self) -> None:
        self.control("resume")

    def exit_container(self, container_id: str, code: int) -> None:
        """The container's process exits on its own with ``code`` (a ``die`` event)."""
        self.control(f"containers/{container_id}/exit?code={code}")


class SimFleet:
    """``count`` simulated engines served by one subprocess."""

    def __init__(
        self,
        count: int,
        *,
        latency_scale: float = 1.0,
        latencies: Mapping[str, float] | None = None,
        base_port: int = 0,
        socket_dir: str | None = None,
        seed_containers: int = 0,
        pullable: Sequence[str] = (),
        start_timeout: float = 120.0,
    ) -> None:
        self.count = count
        self.urls: list[str] = []
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._timeout = start_timeout
        self.log_path = pathlib.Path(tempfile.mkstemp(prefix="simengine-", suffix=".log")[1])
        self._argv = [
            sys.executable,
            "-m",
            "simengine",
            "serve",
            "--count",
            str(count),
            "--latency-scale",
            str(latency_scale),
            "--seed-containers",
            str(seed_containers),
        ]
        self._argv += (
            ["--socket-dir", socket_dir] if socket_dir else ["--base-port", str(base_port)]
        )
        for name, seconds in (latencies or {}).items():
            self._argv += ["--latency", f"{name}={seconds}"]
        for image in pullable:
            self._argv += ["--pullable", image]

    @property
    def engines(self) -> list[SimEngineHandle]:
        return [SimEngineHandle(url, f"sim{i}") for i, url in enumerate(self.urls, 1)]

    def __iter__(self) -> Iterator[SimEngineHandle]:
        return iter(self.engines)

    def __len__(self) -> int:
        return len(self.urls)

    def start(self) -> SimFleet:
        """Start the server and wait for its URLs; raises ``RuntimeError`` with its log."""
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")])),
        }
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                self._argv, stdout=subprocess.PIPE, stderr=log, env=env, start_new_session=True
            )
        self.pid = self._proc.pid
        atexit.register(self.close)  # an interrupted test run leaves no server behind
        assert self._proc.stdout is not None
        deadline = time.monotonic() + self._timeout
        buffer = b""
        with selectors.DefaultSelector() as selector:
            selector.register(self._proc.stdout, selectors.EVENT_READ)
            while buffer.count(b"\n") < self.count:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(timeout=left):
                    tail = self.log_tail()
                    self.close()
                    raise RuntimeError(f"simulated engines not ready: {tail}")
                chunk = os.read(self._proc.stdout.fileno(), 65536)
                if not chunk:
                    self._proc.wait(timeout=5)
                    tail = self.log_tail()
                    self.close()
                    raise RuntimeError(f"simulated engine server exited: {tail}")
                buffer += chunk
        self.urls = buffer.decode().split()
        return self

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def close(self, timeout: float = 10.0) -> None:
        """SIGTERM the server by its pid, wait, SIGKILL if needed. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout)
        if proc.stdout is not None:
            proc.stdout.close()
        with contextlib.suppress(OSError):
            self.log_path.unlink()

    def __enter__(self) -> SimFleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
