"""The Engine API routes of a simulated engine, answering with dockerd 20.10's JSON shapes.

Paths are accepted unversioned and with a ``/v1.xx`` prefix; a version above 1.41 is refused with
dockerd's 400. Each handler waits its latency (``Latencies``) and then acts on the ``Engine``
synchronously. Simulation-only routes live under ``/_sim/`` (pause, resume, make a process
exit); dockerd has nothing there, so a client of the Docker API never meets them.
"""

from __future__ import annotations

import asyncio
import collections
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from simengine import views
from simengine.engine import (
    SIGNALS,
    ApiError,
    Container,
    Engine,
    event_matches,
    image_key,
)
from simengine.http import ChunkWriter, Request, Response, http_date
from simengine.latency import Latencies

API_VERSION = "1.41"
MIN_API_VERSION = "1.12"
SERVER = "Docker/20.10.24+dfsg1 (linux)"
_VERSIONED = re.compile(r"^/v(\d+)\.(\d+)(/.*)$")
_CONTAINER_ID = re.compile(r"^/containers/(?!json$|create$)[^/]+(/|$)")
_CONTAINER = re.compile(r"^/containers/([^/]+)(?:/(json|start|stop|kill|restart|wait))?$")


def base_headers() -> dict[str, str]:
    return {
        "Api-Version": API_VERSION,
        "Docker-Experimental": "false",
        "Ostype": "linux",
        "Server": SERVER,
        "Date": http_date(),
    }


def _json(status: int, value: Any) -> Response:
    return Response(status, json.dumps(value, separators=(",", ":")).encode() + b"\n")


def _error(status: int, message: str) -> Response:
    return _json(status, {"message": message})


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


def _filters(text: str | None) -> dict[str, list[str]]:
    """Both filter encodings dockerd accepts: ``{"k": ["v"]}`` and ``{"k": {"v": true}}``."""
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise ApiError(400, f"invalid filter: {e}") from e
    if not isinstance(raw, dict):
        raise ApiError(400, "invalid filter")
    return {
        str(k): [str(x) for x in (v if isinstance(v, list) else [x for x, on in v.items() if on])]
        for k, v in raw.items()
    }


class EngineApi:
    """Routes one engine's requests."""

    def __init__(self, engine: Engine, latencies: Latencies) -> None:
        self.engine = engine
        self.latencies = latencies
        #: Docker API requests answered, by operation key as ``docker_api.operation_path``
        #: spells it (``"GET /containers/{id}/json"``); read with ``GET /_sim/stats``.
        self.calls: collections.Counter[str] = collections.Counter()
        #: Docker API requests answered per wall-clock second (epoch second → count), the last
        #: 600 seconds; read with ``GET /_sim/stats`` (bench-fleet's histograms).
        self.per_second: collections.OrderedDict[int, int] = collections.OrderedDict()

    async def __call__(self, request: Request) -> Response:
        path = request.path
        if path.startswith("/_sim/"):
            return await self._sim(request, path)
        if m := _VERSIONED.match(path):
            major, minor, path = int(m.group(1)), int(m.group(2)), m.group(3)
        operation = _CONTAINER_ID.sub(r"/containers/{id}\1", path)
        self.calls[f"{request.method} {operation}"] += 1
        second = int(time.time())
        self.per_second[second] = self.per_second.get(second, 0) + 1
        if len(self.per_second) > 600:
            self.per_second.popitem(last=False)
        if m and (major, minor) > (1, 41):
            return _error(
                400,
                f"client version {major}.{minor} is too new. Maximum supported API version "
                f"is {API_VERSION}",
            )
        await self.engine.resumed.wait()
        try:
            return await self._route(request, path.rstrip("/") or "/")
        except ApiError as e:
            return _error(e.status, e.message)

    async def _wait(self, seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds)
        await self.engine.resumed.wait()

    async def _route(self, request: Request, path: str) -> Response:
        method, q, engine, lat = request.method, request.query, self.engine, self.latencies
        if path == "/_ping" and method in ("GET", "HEAD"):
            await self._wait(lat.ping)
            body = b"" if method == "HEAD" else b"OK"
            cache = {"Cache-Control": "no-cache, no-store, must-revalidate", "Pragma": "no-cache"}
            return Response(200, body, "text/plain; charset=utf-8", cache)
        if method == "GET" and path == "/version":
            await self._wait(lat.version)
            return _json(200, views.version())
        if method == "GET" and path == "/info":
            await self._wait(lat.info)
            return _json(200, views.info(engine))
        if method == "GET" and path == "/containers/json":
            filters = _filters(q.get("filters"))
            for key in filters:
                if key not in ("label", "name", "id", "status"):
                    raise ApiError(400, f"invalid filter '{key}'")
            for value in filters.get("status", []):
                if value not in views.STATES:
                    raise ApiError(400, f"invalid filter 'status={value}'")
            await self._wait(lat.list_base + lat.list_per_container * len(engine.containers))
            found = engine.matching(all_=_flag(q.get("all")), filters=filters)
            if (limit := int(q.get("limit") or -1)) > 0:
                found = found[:limit]
            now = time.time_ns()
            return _json(200, [views.summary(c, now) for c in found])
        if method == "POST" and path == "/containers/create":
            try:
                config = json.loads(request.body or b"{}")
            except ValueError as e:
                raise ApiError(400, f"invalid character in request body: {e}") from e
            await self._wait(lat.create)
            stripped = {k: v for k, v in config.items() if v is not None}
            created = engine.create(q.get("name"), stripped)
            return _json(201, {"Id": created.id, "Warnings": []})
        if method == "GET" and path == "/images/json":
            await self._wait(lat.list_images)
            return _json(200, [views.image(i, engine) for i in _unique(engine.images.values())])
        if method == "POST" and path == "/images/create":
            return await self._pull(q)
        if method == "GET" and path == "/events":
            return await self._events(q)
        if m := _CONTAINER.match(path):
            return await self._container(method, m.group(1), m.group(2), q)
        return _error(404, "page not found")

    async def _container(
        self, method: str, ref: str, verb: str | None, q: dict[str, str]
    ) -> Response:
        engine, lat = self.engine, self.latencies
        if method == "GET" and verb == "json":
            await self._wait(lat.inspect)
            return _json(200, views.inspect(engine.get(ref)))
        if method == "POST" and verb == "start":
            c = engine.get(ref)
            if c.running:
                return Response(304, content_type=None)
            await self._wait(lat.start)
            engine.get(c.id)  # removed meanwhile: 404
            return Response(204 if engine.start(c) else 304, content_type=None)
        if method == "POST" and verb == "stop":
            c = engine.get(ref)
            if not c.running:
                return Response(304, content_type=None)
            grace = float(q["t"]) if q.get("t") else float(c.config.get("StopTimeout") or 10)
            await self._stop(c, grace)
            return Response(204, content_type=None)
        if method == "POST" and verb == "kill":
            c = engine.get(ref)
            signal = _signal(q.get("signal") or "SIGKILL")
            if not c.running:
                raise ApiError(
                    409, f"Cannot kill container: {ref}: Container {c.id} is not running"
                )
            await self._wait(lat.kill)
            engine.signal(c, signal)
            return Response(204, content_type=None)
        if method == "POST" and verb == "restart":
            c = engine.get(ref)
            if c.running:
                await self._stop(c, float(q.get("t") or c.config.get("StopTimeout") or 10))
            await self._wait(lat.start)
            engine.start(c)
            return Response(204, content_type=None)
        if method == "DELETE" and verb is None:
            c = engine.get(ref)
            if c.running and not _flag(q.get("force")):
                raise ApiError(
                    409,
                    f"You cannot remove a running container {c.id}. Stop the container before "
                    "attempting removal or force remove",
                )
            await self._wait(lat.remove_running if c.running else lat.remove)
            if engine.containers.get(c.id) is c:
                engine.remove(c)
            return Response(204, content_type=None)
        return _error(404, "page not found")

    async def _stop(self, c: Container, grace: float) -> None:
        """SIGTERM (ignored), wait the grace period, SIGKILL, then the ``stop`` event."""
        engine = self.engine
        run = c.run
        engine.signal(c, 15)
        await self._wait(max(grace, 0) + self.latencies.stop)
        if c.running and c.run == run and engine.containers.get(c.id) is c:
            engine.signal(c, 9)
        if engine.containers.get(c.id) is c:
            engine.stopped(c)

    async def _pull(self, q: dict[str, str]) -> Response:
        reference = q.get("fromImage") or ""
        if tag := q.get("tag"):
            reference = f"{reference}:{tag}" if "@" not in tag else f"{reference}@{tag}"
        key = image_key(reference)
        await self._wait(self.latencies.pull)
        image = self.engine.pull(key)
        repository, _, tag = key.rpartition(":")
        lines = [
            {"status": f"Pulling from {repository}", "id": tag},
            {"status": f"Digest: {image.id}"},
            {"status": f"Status: Downloaded newer image for {key}"},
        ]

        async def stream(out: ChunkWriter, hangup: asyncio.Future[bytes]) -> None:
            for line in lines:  # one chunk per progress message, as dockerd flushes them
                await out.write(json.dumps(line).encode() + b"\r\n")

        return Response(200, stream=stream)

    async def _events(self, q: dict[str, str]) -> Response:
        filters = _filters(q.get("filters"))
        since_ns = _timestamp_ns(q.get("since"))
        until_ns = _timestamp_ns(q.get("until"))
        await self._wait(self.latencies.events_subscribe)
        engine = self.engine
        queue: asyncio.Queue[Any] = asyncio.Queue()
        # Subscribe and take the backlog in one synchronous step: nothing falls in between.
        engine.subscribers.add(queue)
        backlog = [e for e in engine.events if e[0] >= since_ns] if since_ns is not None else []

        async def stream(out: ChunkWriter, hangup: asyncio.Future[bytes]) -> None:
            try:
                for entry in backlog:
                    if until_ns is not None and entry[0] > until_ns:
                        return
                    if event_matches(entry, filters):
                        await out.write(entry[2])
                while True:
                    if until_ns is not None:
                        left = (until_ns - time.time_ns()) / 1e9
                        if left <= 0:
                            return
                    else:
                        left = None
                    getter = asyncio.ensure_future(queue.get())
                    done, _ = await asyncio.wait(
                        {getter, hangup}, timeout=left, return_when=asyncio.FIRST_COMPLETED
                    )
                    if getter not in done:
                        getter.cancel()
                        return  # the client hung up, or ``until`` passed
                    entry = getter.result()
                    if until_ns is not None and entry[0] > until_ns:
                        return
                    if event_matches(entry, filters):
                        await engine.resumed.wait()
                        await out.write(entry[2])
            finally:
                engine.subscribers.discard(queue)

        return Response(200, stream=stream)

    async def _sim(self, request: Request, path: str) -> Response:
        """Simulation controls: ``stats``, ``pause``/``resume`` every API call, a process that
        exits (``containers/{id}/exit?code=N``)."""
        engine = self.engine
        if path == "/_sim/stats" and request.method == "GET":
            running = sum(1 for c in engine.containers.values() if c.running)
            return _json(
                200,
                {
                    "calls": dict(self.calls),
                    "containers": len(engine.containers),
                    "running": running,
                    "event_streams": len(engine.subscribers),
                    "per_second": {str(k): v for k, v in self.per_second.items()},
                },
            )
        if path == "/_sim/pause":
            engine.resumed.clear()
        elif path == "/_sim/resume":
            engine.resumed.set()
        elif m := re.match(r"^/_sim/containers/([^/]+)/exit$", path):
            try:
                c = engine.get(m.group(1))
            except ApiError as e:
                return _error(e.status, e.message)
            engine.exit(c, int(request.query.get("code") or 0))
        else:
            return _error(404, "no such simulation control")
        return Response(204, content_type=None)


def _signal(text: str) -> int:
    if text.isdigit():
        return int(text)
    number = SIGNALS.get(text.upper())
    if number is None:
        raise ApiError(400, f"Invalid signal: {text}")
    return number


def _timestamp_ns(text: str | None) -> int | None:
    """dockerd's ``since``/``until``: epoch seconds with an optional fraction (or RFC 3339)."""
    if not text:
        return None
    seconds, _, fraction = text.partition(".")
    if seconds.lstrip("-").isdigit():
        return int(seconds) * 1_000_000_000 + int((fraction + "000000000")[:9] or 0)
    from datetime import datetime

    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1e9)
    except ValueError as e:
        raise ApiError(400, f"failed to parse value as time or duration: {text!r}") from e


def _unique(images: Any) -> list[Any]:
    seen: dict[str, Any] = {}
    for i in images:
        seen.setdefault(i.id, i)
    return list(seen.values())


Route = Callable[[Request], Awaitable[Response]]
