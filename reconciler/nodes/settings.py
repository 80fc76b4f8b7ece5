"""The timing knobs of one node, as a frozen value with one docstring per field.

Where this sits: ``nodes.cluster`` hands one :class:`NodeSettings` to every ``nodes.node.Node``;
the daemon builds it from ``Settings`` with :meth:`NodeSettings.from_config`; tests pass
short intervals. With the defaults a hung engine is ``unhealthy`` within about 20 s: a heartbeat
ping within ``heartbeat_interval`` (5 s), then three failed calls of at most ``probe_timeout``
(3 s; a refresh in flight may take ``call_timeout``) separated by the 1 s and 2 s backoff.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler import settings as settings_mod
from reconciler.nodes import health


@dataclass(frozen=True, kw_only=True)
class NodeSettings:
    """Timing knobs of one node; the defaults detect a hung engine in about 20 s."""

    call_timeout: float = settings_mod.DEFAULTS.docker_timeout
    """Seconds any Docker call (list, inspect, info, create…) may take before it fails."""

    probe_timeout: float = 3.0
    """Seconds a health ping or a connect (version negotiation) may take."""

    failure_threshold: int = settings_mod.DEFAULTS.failure_threshold
    """Consecutive failed calls after which the node is ``unhealthy``."""

    backoff_initial: float = 1.0
    """Seconds before the first retry after a failure; doubled per further failure."""

    backoff_cap: float = settings_mod.DEFAULTS.backoff_cap
    """Upper bound of the delay between reconnect attempts (and between probes). Small enough
    that an engine that comes back is healthy again within ~15 s however long it was away."""

    refresh_interval: float = settings_mod.DEFAULTS.refresh_interval
    """Seconds between forced full refreshes, even when events say nothing changed."""

    refresh_jitter: float = 0.2
    """Each interval is drawn from ``refresh_interval * (1 +- refresh_jitter)``, per node."""

    image_refresh_interval: float = 300.0
    """Seconds between image lists that no image event asked for. Image changes (pull, tag,
    untag, delete, import, load) come with events, which trigger a list at once, and a reconnect
    lists images too; this is the safety net. 0 lists images in every forced refresh (as does
    running without events)."""

    heartbeat_interval: float = 5.0
    """Ping when no call and no event has proved the engine alive for this many seconds."""

    spec_interval: float = 300.0
    """Seconds between two reads of the engine's facts (also read on every reconnect)."""

    stream_idle_timeout: float = 60.0
    """Seconds of silence after which the event monitor pings and resubscribes."""

    events: bool = True
    """Follow the engine's event stream; without it only forced refreshes see changes."""

    @classmethod
    def from_config(cls, settings: settings_mod.Settings, **overrides: object) -> NodeSettings:
        """The node knobs that ``settings_mod.Settings`` exposes, the rest at their defaults."""
        values: dict[str, object] = {
            "call_timeout": settings.docker_timeout,
            "failure_threshold": settings.failure_threshold,
            "backoff_cap": settings.backoff_cap,
            "refresh_interval": settings.refresh_interval,
            "probe_timeout": min(cls.probe_timeout, settings.docker_timeout),
        }
        return cls(**{**values, **overrides})  # type: ignore[arg-type]

    @property
    def policy(self) -> health.HealthPolicy:
        return health.HealthPolicy(
            failure_threshold=self.failure_threshold,
            backoff_initial=self.backoff_initial,
            backoff_cap=self.backoff_cap,
        )
