"""The benchmark's engines: one sandbox fleet per run, swarm mode on demand, cleanup between.

The engines come from ``sandbox`` (each its own dockerd, folder and port, with
``busybox:local`` imported) and are started once per benchmark run and reused by every
measurement. ``clean`` force-removes every container (and swarm service) so that each
measurement starts from empty engines. ``swarm_mode`` turns the first engine into a one-node
swarm for the swarm contender only, and leaves the swarm afterwards, so an idle swarm manager
never runs beside the other contenders.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures

import docker
import docker.errors

from sandbox import EngineFleet, SandboxEngine

IMAGE = "busybox:local"
COMMAND = ("sleep", "3600")
API_TIMEOUT = 120


class BenchFleet:
    """``count`` sandbox engines and one low-level SDK client per engine."""

    def __init__(self, count: int) -> None:
        self._fleet = EngineFleet(count)
        self._clients: dict[str, docker.APIClient] = {}

    def start(self) -> BenchFleet:
        self._fleet.start()
        return self

    def close(self) -> None:
        """Close the clients and remove every engine (also its containers and folders)."""
        for api in self._clients.values():
            api.close()
        self._clients.clear()
        self._fleet.close()

    @property
    def marker(self) -> str:
        """A string every process of these engines has in its command line (for ``machine``)."""
        return str(self._fleet.base_dir) + "/"

    def engines(self, count: int | None = None) -> list[SandboxEngine]:
        """The first ``count`` engines (all by default)."""
        return list(self._fleet.engines[: count or len(self._fleet)])

    def api(self, engine: SandboxEngine) -> docker.APIClient:
        """The shared low-level client of ``engine`` (thread-safe for plain requests)."""
        api = self._clients.get(engine.name)
        if api is None:
            api = docker.APIClient(base_url=engine.unix_url, version="auto", timeout=API_TIMEOUT)
            self._clients[engine.name] = api
        return api

    def clean(self, engines: Sequence[SandboxEngine] | None = None) -> None:
        """Remove every service and container on ``engines`` (default all), 8 at a time."""
        for engine in engines or self.engines():
            api = self.api(engine)
            with contextlib.suppress(docker.errors.APIError):
                for service in api.services():
                    api.remove_service(service["ID"])
            ids = [c["Id"] for c in api.containers(all=True)]
            with futures.ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda cid, a=api: _remove(a, cid), ids))

    def count(
        self, engines: Sequence[SandboxEngine], *, label: str | None = None, running: bool = False
    ) -> int:
        """How many containers (with ``label``, only running ones if ``running``) there are."""
        filters: dict[str, object] = {}
        if label:
            filters["label"] = label
        if running:
            filters["status"] = "running"
        return sum(len(self.api(e).containers(all=not running, filters=filters)) for e in engines)

    @contextlib.contextmanager
    def swarm_mode(self, engine: SandboxEngine) -> Iterator[docker.APIClient]:
        """``engine`` as a one-node swarm (``--advertise-addr 127.0.0.1``) for the block."""
        engine.docker("swarm", "init", "--advertise-addr", "127.0.0.1")
        try:
            yield self.api(engine)
        finally:
            with contextlib.suppress(Exception):
                self.clean([engine])
            engine.docker("swarm", "leave", "--force", check=False)


def _remove(api: docker.APIClient, container_id: str) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        api.remove_container(container_id, force=True, v=True)


def wait_until(
    condition: Callable[[], bool], *, timeout: float, interval: float, what: str
) -> float:
    """Poll ``condition()`` until true; return the monotonic time it first was. Raises
    TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
