"""Simulated Docker engines that reconciler cannot tell from dockerd 20.10 (dev tooling).

One asyncio process serves many engines, each on its own loopback TCP port or unix socket,
speaking the part of the Engine API (v1.41; unversioned and ``/v1.xx/`` paths) that reconciler
and its tests use, over plain HTTP/1.1 as the docker SDK speaks it: ``/_ping`` (GET, HEAD),
``/version``, ``/info``, ``GET /containers/json`` (``all``, ``limit``, filters ``label``,
``name``, ``id``, ``status``), create (409 name conflicts in dockerd's words, 404 for a missing
image), start (304 when running), stop (304 when not running), kill, restart, remove (409 for a
running container without ``force``), inspect, ``GET /images/json``, ``POST /images/create``
(pull succeeds for images the engine knows), and the streaming ``GET /events`` with ``since``,
``until`` and filters (``type``, ``label``, ``event``, ``container``) as chunked JSON lines.

Containers are records; nothing runs. Each call waits a configurable latency first
(``simengine.latency.Latencies``: defaults and the dockerd figures they come from).

Modules: ``http`` (the HTTP/1.1 server), ``engine`` (state and events), ``views`` (dockerd's JSON
shapes), ``api`` (routes), ``server`` (many engines in one loop), ``fleet`` (``SimFleet``: a
server subprocess for tests and benchmarks), ``__main__`` (``python -m simengine serve``).

Not part of the reconciler wheel; a sibling of ``sandbox/``.
"""

from simengine.fleet import SimEngineHandle, SimFleet
from simengine.latency import Latencies

__all__ = ["Latencies", "SimEngineHandle", "SimFleet"]
