"""Per-call latencies of a simulated engine, defaulting to what dockerd 20.10 took here.

Measured on a sandbox engine of this machine (``sandbox.engines``, dockerd 20.10.24, busybox:local,
network mode unset, loopback TCP, the docker SDK, sequential calls, medians; December 2026, with
the machine shared by other work (load 3), so slower than the ENGINES.md figures of a quiet
machine; a second sample at load 1.3 gave create 18 ms, start 130 ms, inspect 2.1 ms, kill 86 ms,
forced remove 75 ms; see simengine/README.md):

=================================  ==========  =========================================
call                               measured    default here
=================================  ==========  =========================================
``GET /_ping``                     2.4 ms      1 ms
``GET /version``, ``GET /info``    12 ms       2 ms (mostly dockerd gathering facts)
``GET /images/json`` (1 image)     2.2 ms      1 ms
``GET /containers/json`` (0; 40)   1.7; 10 ms  0.3 ms + 0.05 ms per container
                                               (ENGINES.md: 5 ms at 100, 29 ms at 500)
``GET /containers/{id}/json``      3.8 ms      0.8 ms (ENGINES.md, quiet machine: 0.7-0.8)
``POST /containers/create``        43 ms       40 ms
``POST /containers/{id}/start``    208 ms      120 ms (ENGINES.md: create+start ≈ 27/s
                                               with 8 threads on 2 cores)
``POST /containers/{id}/kill``     70 ms       30 ms
``DELETE`` exited container        12 ms       12 ms
``DELETE ?force=1`` running one    117 ms      60 ms
=================================  ==========  =========================================

A graceful stop is simulated like busybox ``sleep`` as PID 1: SIGTERM is ignored, so the stop
waits its whole timeout and then kills (exit code 137), as dockerd does with such a container.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Latencies:
    """Seconds each call waits before it answers (its effects happen after the wait)."""

    ping: float = 0.001
    version: float = 0.002
    info: float = 0.002
    list_images: float = 0.001
    list_base: float = 0.0003
    """``GET /containers/json``: fixed part."""
    list_per_container: float = 0.00005
    """``GET /containers/json``: per container on the engine (listed or filtered out)."""
    inspect: float = 0.0008
    create: float = 0.040
    start: float = 0.120
    stop: float = 0.010
    """A stop's own cost, on top of the grace period it waits for a SIGTERM-ignoring process."""
    kill: float = 0.030
    remove: float = 0.012
    remove_running: float = 0.060
    """``DELETE ?force=1`` of a running container (kill + wait + remove)."""
    pull: float = 0.300
    events_subscribe: float = 0.0005

    def scaled(self, factor: float) -> Latencies:
        """Every latency times ``factor`` (0: answer at once)."""
        return dataclasses.replace(
            self, **{f.name: getattr(self, f.name) * factor for f in dataclasses.fields(self)}
        )

    def with_overrides(self, overrides: dict[str, float]) -> Latencies:
        """Replace named latencies; raises ``ValueError`` for an unknown name."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = set(overrides) - names
        if unknown:
            raise ValueError(f"unknown latency {sorted(unknown)}; known: {sorted(names)}")
        return dataclasses.replace(self, **overrides)
