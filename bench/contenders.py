"""The tools reconciler is compared with, driven on the same sandbox engines.

* ``RawSdk``: the docker SDK's low-level client, create+start from one pool of 8 threads (the
  rows spread round-robin over the engines); removal is one list per engine and force-removes
  from the same pool. This is the limit of the Engine API path that reconciler also takes.
* ``Swarm``: swarm mode on one engine, ``service create --replicas N`` through the same API
  (``stop_grace_period`` 0, so removal kills like the others do), done when N tasks run. The
  image is named by its ID: by tag, every task first tries a registry pull, which fails here (no
  registry) and costs about 0.2 s per task on this machine (40 replicas: 11.2 s by tag against
  3.2 s by ID), a cost of this sandbox rather than of swarm mode.
* ``Compose``: docker-compose 1.x ``up -d --scale app=N`` (one process per engine, in parallel,
  N split over the engines) and ``down -t 0``. ``network_mode: default`` is what an unset
  network mode becomes inside dockerd, so compose creates no project network and runs the same
  network setup as the others.

Every contender exposes ``converge(n, network=...) -> seconds`` and ``remove() -> seconds``.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import time
from collections.abc import Sequence
from concurrent import futures

import docker
import docker.types

from bench import fleet as fleet_mod
from sandbox import SandboxEngine

RAW_LABEL = "bench.contender=raw"
SERVICE = "bench-svc"
SWARM_SERVICE_LABEL = "com.docker.swarm.service.name"


class RawSdk:
    name = "raw-sdk"

    def __init__(
        self, fleet: fleet_mod.BenchFleet, engines: Sequence[SandboxEngine], threads: int = 8
    ) -> None:
        self._fleet = fleet
        self._apis = [fleet.api(e) for e in engines]
        self._threads = threads

    def converge(self, n: int, *, network: str | None = None) -> float:
        started = time.monotonic()
        with futures.ThreadPoolExecutor(self._threads) as pool:
            jobs = [
                pool.submit(self._create_start, self._apis[i % len(self._apis)], i, network)
                for i in range(n)
            ]
            for job in jobs:
                job.result()
        return time.monotonic() - started

    @staticmethod
    def _create_start(api: docker.APIClient, i: int, network: str | None) -> None:
        host_config = api.create_host_config(network_mode=network) if network else None
        created = api.create_container(
            fleet_mod.IMAGE,
            list(fleet_mod.COMMAND),
            name=f"raw-{i:04}",
            labels={"bench.contender": "raw"},
            host_config=host_config,
        )
        api.start(created["Id"])

    def remove(self) -> float:
        started = time.monotonic()
        with futures.ThreadPoolExecutor(self._threads) as pool:
            jobs = [
                pool.submit(api.remove_container, c["Id"], force=True)
                for api in self._apis
                for c in api.containers(all=True, filters={"label": RAW_LABEL})
            ]
            for job in jobs:
                job.result()
        return time.monotonic() - started


class Swarm:
    """Swarm mode on one engine (inside ``BenchFleet.swarm_mode``)."""

    name = "swarm"

    def __init__(self, api: docker.APIClient, *, poll: float = 0.1) -> None:
        self._api = api
        self._poll = poll
        self._image = api.inspect_image(fleet_mod.IMAGE)["Id"]  # by ID: no pull attempt

    def running_tasks(self, service: str = SERVICE) -> list[dict[str, object]]:
        tasks = self._api.tasks(filters={"service": service, "desired-state": "running"})
        return [t for t in tasks if t["Status"]["State"] == "running"]

    def create_service(
        self, n: int, *, name: str = SERVICE, restart_delay: float | None = None
    ) -> None:
        spec = docker.types.ContainerSpec(
            self._image, command=list(fleet_mod.COMMAND), stop_grace_period=0
        )
        policy = None
        if restart_delay is not None:
            policy = docker.types.RestartPolicy(condition="any", delay=int(restart_delay * 1e9))
        template = docker.types.TaskTemplate(spec, restart_policy=policy)
        mode = docker.types.ServiceMode("replicated", replicas=n)
        self._api.create_service(template, name=name, mode=mode)

    def converge(self, n: int, *, network: str | None = None) -> float:
        if network is not None:
            raise ValueError("the swarm contender runs with the network mode unset only")
        started = time.monotonic()
        self.create_service(n)
        done = fleet_mod.wait_until(
            lambda: len(self.running_tasks()) == n,
            timeout=600,
            interval=self._poll,
            what=f"{n} running swarm tasks",
        )
        return done - started

    def remove(self, name: str = SERVICE) -> float:
        started = time.monotonic()
        self._api.remove_service(name)
        filters = {"label": f"{SWARM_SERVICE_LABEL}={name}"}
        done = fleet_mod.wait_until(
            lambda: not self._api.containers(all=True, filters=filters),
            timeout=600,
            interval=self._poll,
            what="swarm containers to go",
        )
        return done - started


# -- docker-compose -------------------------------------------------------------------------------
_COMPOSE_FILE = """version: "2.4"
services:
  app:
    image: {image}
    command: ["sleep", "3600"]
    network_mode: {network}
"""


def ensure_compose() -> tuple[str | None, str]:
    """The docker-compose binary, installing Debian's package if missing: (path, note)."""
    found = shutil.which("docker-compose")
    if found:
        return found, "found"
    if not shutil.which("apt-get"):
        return None, "docker-compose is not installed and apt-get is not available"
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    install = ["apt-get", "install", "-y", "-qq", "docker-compose"]
    result = subprocess.run(install, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:  # perhaps a stale package list: update once and try again
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env, check=False)
        result = subprocess.run(install, capture_output=True, text=True, env=env, check=False)
    found = shutil.which("docker-compose")
    if result.returncode == 0 and found:
        return found, "installed with apt-get"
    return None, f"apt-get install docker-compose failed: {result.stderr.strip()[-300:]}"


class Compose:
    name = "compose"

    def __init__(
        self, binary: str, engines: Sequence[SandboxEngine], workdir: pathlib.Path
    ) -> None:
        self._binary = binary
        self._engines = list(engines)
        self._workdir = workdir
        self._file: pathlib.Path | None = None

    def _compose_file(self, network: str | None) -> pathlib.Path:
        path = self._workdir / f"compose-{network or 'default'}.yml"
        path.write_text(_COMPOSE_FILE.format(image=fleet_mod.IMAGE, network=network or "default"))
        return path

    def _run_all(self, per_engine: list[list[str]]) -> None:
        """Run one compose command per engine, all at once; raise if any fails."""
        procs = []
        for engine, args in zip(self._engines, per_engine, strict=True):
            if not args:
                continue
            assert self._file is not None
            argv = [
                self._binary,
                "-H",
                engine.unix_url,
                "-p",
                "bench",
                "-f",
                str(self._file),
                "--ansi",
                "never",
                *args,
            ]
            procs.append(
                subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            )
        failures = []
        for proc in procs:
            _out, err = proc.communicate(timeout=900)
            if proc.returncode != 0:
                failures.append(f"{' '.join(proc.args)}: {err.strip()[-400:]}")  # type: ignore[arg-type]
        if failures:
            raise RuntimeError("docker-compose failed:\n" + "\n".join(failures))

    def converge(self, n: int, *, network: str | None = None) -> float:
        self._file = self._compose_file(network)
        k = len(self._engines)
        shares = [n // k + (1 if i < n % k else 0) for i in range(k)]
        started = time.monotonic()
        self._run_all([["up", "-d", "--scale", f"app={s}"] if s else [] for s in shares])
        return time.monotonic() - started

    def remove(self) -> float:
        started = time.monotonic()
        self._run_all([["down", "-t", "0"] for _ in self._engines])
        return time.monotonic() - started
