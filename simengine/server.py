"""Serve many simulated engines from one asyncio loop, each on its own port or unix socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pathlib
import resource
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from simengine import api, http
from simengine.engine import DEFAULT_IMAGE, Engine
from simengine.latency import Latencies

log = logging.getLogger(__name__)


@dataclass
class ServeOptions:
    count: int
    host: str = "127.0.0.1"
    #: First TCP port (engine i gets base_port + i); 0 picks a free port for each engine.
    base_port: int = 0
    #: When set, engines listen on ``socket_dir/simN.sock`` instead of TCP.
    socket_dir: str | None = None
    latencies: Latencies = field(default_factory=Latencies)
    images: Sequence[str] = (DEFAULT_IMAGE,)
    pullable: Sequence[str] = ()
    #: Running containers created on each engine before the URLs are printed (benchmarks).
    seed_containers: int = 0


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def seed_config(name: str) -> dict[str, object]:
    """A create body like the one reconciler sends (its labels, sleep command, host config)."""
    return {
        "Image": DEFAULT_IMAGE,
        "Cmd": ["sleep", "3600"],
        "Labels": {
            "reconciler.managed": "true",
            "reconciler.name": name,
            "reconciler.spec-hash": os.urandom(32).hex(),
            "reconciler.generation": "1",
        },
        "HostConfig": {"NetworkMode": "default"},
        "NetworkingConfig": {},
    }


async def serve(options: ServeOptions, *, ready: asyncio.Future[list[str]] | None = None) -> None:
    """Run until cancelled; prints (or hands to ``ready``) one URL per engine, in order."""
    _raise_fd_limit()
    hostname = socket.gethostname()
    servers: list[asyncio.AbstractServer] = []
    urls: list[str] = []
    engines: list[Engine] = []
    for index in range(1, options.count + 1):
        engine = Engine(
            index=index, images=options.images, pullable=options.pullable, hostname=hostname
        )
        for n in range(options.seed_containers):
            c = engine.create(f"seed-{index}-{n}", seed_config(f"seed-{index}-{n}"))
            engine.start(c)
        engines.append(engine)
        router = api.EngineApi(engine, options.latencies)

        async def on_connect(
            reader: asyncio.StreamReader,
            writer: asyncio.StreamWriter,
            router: api.EngineApi = router,
        ) -> None:
            await http.serve_connection(reader, writer, router, api.base_headers)

        server: asyncio.AbstractServer
        if options.socket_dir:
            path = pathlib.Path(options.socket_dir) / f"{engine.name}.sock"
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            server = await asyncio.start_unix_server(on_connect, path=str(path), backlog=512)
            urls.append(f"unix://{path}")
        else:
            port = options.base_port + index - 1 if options.base_port else 0
            server = await asyncio.start_server(
                on_connect, options.host, port, backlog=512, reuse_address=True
            )
            bound = server.sockets[0].getsockname()[1]
            urls.append(f"tcp://{options.host}:{bound}")
        servers.append(server)
    if ready is not None:
        ready.set_result(urls)
    try:
        await asyncio.Event().wait()  # until cancelled
    finally:
        for server in servers:
            server.close()


def run(options: ServeOptions) -> int:
    """The CLI's ``serve``: print the URLs, serve until SIGTERM or SIGINT, exit 0."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[list[str]] = loop.create_future()
        task = asyncio.ensure_future(serve(options, ready=ready))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        waiting: set[asyncio.Future[Any]] = {ready, task}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            task.result()  # setup failed (a port in use…): raise its error
        urls = ready.result()
        sys.stdout.write("".join(f"{u}\n" for u in urls))
        sys.stdout.flush()
        log.info("serving %d simulated engines: %s", len(urls), json.dumps(urls[:3]))
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    return 0
