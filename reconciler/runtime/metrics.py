"""What ``/metrics`` shows: the daemon's numbers in the Prometheus text format.

Where this sits: the daemon owns one :class:`Metrics` (a registry of its own, never
prometheus-client's global one, so two daemons in one process, as in tests, do not mix). The
daemon feeds it what only it sees (a pass's duration and outcomes, wake-ups by source); the rest is
read at scrape time from the objects that already hold it (:class:`Sources`): node health,
engine request counts and stream subscriptions from the cluster's nodes, leadership from the
daemon. Nothing is pushed from the threads that talk to Docker.

Every series exists from the first scrape: counters for the labels known in advance start at 0,
``reconciler_rows`` has every phase, ``reconciler_node_healthy`` every followed node.

A node reconnects with a new client and a new event monitor, each with counts of its own; the
collector keeps the last one it saw per node and, when it is replaced, adds what the old one
counted since the previous scrape, so the exported counters only go up.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from reconciler import domain, errors, planning
from reconciler.runtime import executor

CONTENT_TYPE = CONTENT_TYPE_LATEST

#: The ``action`` label of ``reconciler_actions_total``, by action class.
ACTIONS: Mapping[type, str] = {
    planning.Create: "create",
    planning.Recreate: "recreate",
    planning.Start: "start",
    planning.Stop: "stop",
    planning.Remove: "remove",
}
RESULTS = ("succeeded", "failed")
#: The ``source`` label of ``reconciler_wakeups_total``: an engine event or a node's health or
#: row changed (``node``), somebody changed the desired rows (``desired``), anything else.
WAKE_SOURCES = ("node", "desired", "other")
PHASES = tuple(p.value for p in domain.Phase)
PASS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


@dataclass(frozen=True)
class Sources:
    """Where the scrape-time numbers come from (the daemon passes bound methods)."""

    nodes: Callable[[], Mapping[domain.NodeName, Any]]
    """The followed nodes by name (``Cluster.handles``): ``snapshot()``, ``client`` (raises
    ``errors.EngineError`` while not connected) and ``event_monitor`` are read."""
    leader: Callable[[], bool]
    """Whether this daemon acts (1 without leases: a lone daemon always does)."""


@dataclass
class _Tracked:
    """The last client (or monitor) seen for one node, and what was exported for it."""

    current: object | None = None
    last: dict[str, float] = field(default_factory=dict)
    total: dict[str, float] = field(default_factory=dict)

    def update(self, obj: object | None, counts: Callable[[object], Mapping[str, float]]) -> None:
        if obj is not self.current and self.current is not None:
            self._add(counts(self.current))  # what the replaced one counted since last time
            self.last = {}
        self.current = obj
        if obj is not None:
            self._add(counts(obj))

    def _add(self, now: Mapping[str, float]) -> None:
        for key, value in now.items():
            delta = value - self.last.get(key, 0.0)
            if delta > 0:
                self.total[key] = self.total.get(key, 0.0) + delta
        self.last = dict(now)


def _client(node: Any) -> object | None:
    try:
        return node.client
    except errors.EngineError:
        return None  # not connected: the replaced client's last counts were taken


def _calls(client: object) -> Mapping[str, float]:
    return {k: float(v) for k, v in getattr(client, "calls", {}).items()}


def _subscriptions(monitor: object) -> Mapping[str, float]:
    return {"subscriptions": float(getattr(monitor, "subscriptions", 0))}


class _ScrapeCollector(Collector):
    """Node health, engine requests, stream reconnects and leadership."""

    def __init__(self, sources: Sources) -> None:
        self._sources = sources
        self._lock = threading.Lock()
        self._clients: dict[str, _Tracked] = {}
        self._monitors: dict[str, _Tracked] = {}

    def describe(self) -> Iterable[Any]:
        return []  # collected only at scrape time (the sources may not be running yet)

    def collect(self) -> Iterable[Any]:
        healthy = GaugeMetricFamily(
            "reconciler_node_healthy", "1 while the node is healthy, else 0.", labels=["node"]
        )
        requests = CounterMetricFamily(
            "reconciler_engine_requests",
            "HTTP requests sent to a node's Docker engine, by operation.",
            labels=["node", "call"],
        )
        reconnects = CounterMetricFamily(
            "reconciler_event_stream_reconnects",
            "Times a node's event stream was opened again after its first subscription.",
            labels=["node"],
        )
        nodes = dict(self._sources.nodes())
        with self._lock:
            for name in sorted(nodes):
                node = nodes[name]
                snapshot = node.snapshot()
                healthy.add_metric([name], 1.0 if snapshot.health is domain.Health.HEALTHY else 0.0)
                clients = self._clients.setdefault(name, _Tracked())
                clients.update(_client(node), _calls)
                for call, count in sorted(clients.total.items()):
                    requests.add_metric([name, call], count)
                monitors = self._monitors.setdefault(name, _Tracked())
                monitors.update(getattr(node, "event_monitor", None), _subscriptions)
                opened = monitors.total.get("subscriptions", 0.0)
                reconnects.add_metric([name], max(0.0, opened - 1.0))
        yield healthy
        yield requests
        yield reconnects
        yield GaugeMetricFamily(
            "reconciler_leader",
            "1 while this daemon may act on the engines (always 1 without leases), else 0.",
            value=1.0 if self._sources.leader() else 0.0,
        )


class Metrics:
    """The daemon's registry; :meth:`exposition` is the body of ``/metrics``."""

    def __init__(self, sources: Sources) -> None:
        # No ``*_created`` series beside each counter and histogram: a second series per label
        # set that no query here needs (a process-wide switch of prometheus-client).
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=False)
        self.pass_duration = Histogram(
            "reconciler_pass_duration_seconds",
            "Seconds one reconcile pass took (load, plan, execute, record).",
            buckets=PASS_BUCKETS,
            registry=self.registry,
        )
        self.actions = Counter(
            "reconciler_actions",
            "Docker actions carried out, by action and result.",
            ["action", "result"],
            registry=self.registry,
        )
        self.wakeups = Counter(
            "reconciler_wakeups",
            "Hints that brought the next pass forward, by source.",
            ["source"],
            registry=self.registry,
        )
        self.rows = Gauge(
            "reconciler_rows",
            "Desired rows by the phase the last pass recorded.",
            ["phase"],
            registry=self.registry,
        )
        for phase in PHASES:
            self.rows.labels(phase)
        for action in ACTIONS.values():
            for result in RESULTS:
                self.actions.labels(action, result)
        for source in WAKE_SOURCES:
            self.wakeups.labels(source)
        self.registry.register(_ScrapeCollector(sources))

    def observe_pass(
        self,
        *,
        seconds: float,
        outcomes: Iterable[executor.Outcome],
        phases: Mapping[str, int],
    ) -> None:
        """Record one finished pass: its duration, its actions, and the rows per phase."""
        self.pass_duration.observe(seconds)
        for phase in PHASES:
            self.rows.labels(phase).set(phases.get(phase, 0))
        for outcome in outcomes:
            action = ACTIONS.get(type(outcome.action))
            if action is not None:
                self.actions.labels(action, RESULTS[0] if outcome.ok else RESULTS[1]).inc()

    def woke(self, source: str) -> None:
        self.wakeups.labels(source if source in WAKE_SOURCES else "other").inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


__all__ = ["CONTENT_TYPE", "Metrics", "Sources"]
