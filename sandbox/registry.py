"""A throwaway container registry on loopback (Debian's ``docker-registry``, distribution 2.8).

`SandboxRegistry` writes a minimal config into a fresh folder under /tmp, starts
``docker-registry serve`` in its own session on a free 127.0.0.1 port, waits for ``/v2/`` to
answer, and stops it by its pid. Options: basic auth (an htpasswd file made with ``htpasswd
-B``; `users`) and TLS (certificate and key from `sandbox.tls`). Engines pull from a registry on
127.0.0.0/8 without any `--insecure-registry` flag (loopback is trusted: plain HTTP, or TLS not
verified). `docker_config` writes the `config.json` that `docker login` would write.

    with SandboxRegistry(users={"alice": "s3cret"}) as reg:
        reg.push_from(engine, "busybox:local", "demo/busybox:1")   # 127.0.0.1:PORT/demo/busybox:1
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pathlib
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from sandbox import processes

__all__ = ["RegistryError", "SandboxRegistry", "write_docker_config"]

_START_TIMEOUT = 30.0


class RegistryError(RuntimeError):
    """The registry could not be started, reached or stopped."""


def write_docker_config(path: pathlib.Path, auths: Mapping[str, tuple[str, str]]) -> pathlib.Path:
    """Write a Docker ``config.json`` at ``path`` (a folder is created) holding ``auths``:
    registry host:port → (user, password), as ``docker login`` writes it. Returns the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = {
        host: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
        for host, (user, password) in auths.items()
    }
    path.write_text(json.dumps({"auths": entries}))
    os.chmod(path, 0o600)
    return path


class SandboxRegistry:
    """One registry process; a context manager that stops it and deletes its folder."""

    def __init__(
        self,
        *,
        users: Mapping[str, str] | None = None,
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
    ) -> None:
        binary = shutil.which("docker-registry")
        if binary is None:
            raise RegistryError("docker-registry is not installed (run scripts/install-deps.sh)")
        self._binary = binary
        self.base_dir = pathlib.Path(tempfile.mkdtemp(prefix="rcl-reg-", dir="/tmp"))
        self.port = processes.free_port()
        self.users = dict(users or {})
        self.tls = tls_cert is not None
        self._tls_files = (tls_cert, tls_key)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``: the registry part of an image reference."""
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> pathlib.Path:
        return self.base_dir / "registry.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def image(self, repository: str) -> str:
        """The full reference of ``repository`` (``demo/busybox:1``) in this registry."""
        return f"{self.host}/{repository}"

    def _config(self) -> str:
        lines = [
            "version: 0.1",
            "log:",
            "  level: info",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.base_dir / 'data'}",
            "  delete:",
            "    enabled: true",
            "http:",
            f"  addr: {self.host}",
            "  secret: sandbox-secret",
        ]
        cert, key = self._tls_files
        if cert is not None:
            lines += ["  tls:", f"    certificate: {cert}", f"    key: {key}"]
        if self.users:
            htpasswd = self.base_dir / "htpasswd"
            for user, password in self.users.items():
                flags = "-Bbc" if not htpasswd.exists() else "-Bb"
                subprocess.run(
                    ["htpasswd", flags, str(htpasswd), user, password],
                    check=True,
                    capture_output=True,
                    timeout=30,
                )
            lines += ["auth:", "  htpasswd:", "    realm: sandbox", f"    path: {htpasswd}"]
        return "\n".join(lines) + "\n"

    def start(self) -> SandboxRegistry:
        config = self.base_dir / "config.yml"
        config.write_text(self._config())
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [self._binary, "serve", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        processes.on_exit(self, self.stop)
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._answers():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                self.stop()
                raise RegistryError(f"docker-registry did not come up on {self.host}:\n{tail}")
            time.sleep(0.05)
        return self

    def _answers(self) -> bool:
        """True once ``/v2/`` answers at all (200, or 401 when auth is on)."""
        scheme = "https" if self.tls else "http"
        context = ssl._create_unverified_context() if self.tls else None
        try:
            with urllib.request.urlopen(f"{scheme}://{self.host}/v2/", timeout=1, context=context):
                return True
        except urllib.error.HTTPError as e:
            return e.code == 401
        except OSError:
            return False

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            processes.send_signal(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                processes.send_signal(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        processes.forget(self)
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> SandboxRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def push_from(self, engine: Any, local: str, repository: str) -> str:
        """Tag ``local`` on sandbox ``engine`` as ``repository`` here and push it (logging in
        first when the registry has users); return the full reference."""
        ref = self.image(repository)
        engine.docker("tag", local, ref)
        with contextlib.ExitStack() as stack:
            args: list[str] = []
            if self.users:
                user, password = next(iter(self.users.items()))
                folder = pathlib.Path(tempfile.mkdtemp(prefix="rcl-login-", dir="/tmp"))
                stack.callback(shutil.rmtree, folder, True)
                write_docker_config(folder / "config.json", {self.host: (user, password)})
                args = ["--config", str(folder)]
            engine.docker(*args, "push", ref, timeout=120)
        engine.docker("rmi", ref)  # the pushing engine must pull it like the others
        return ref
