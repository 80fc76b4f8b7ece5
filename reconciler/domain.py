"""Plain values that travel between the layers of a pass.

Nothing here does I/O. The store turns SQL rows into these; the Docker boundary
(``reconciler.docker_api``) turns SDK dicts into these; the planner reads only these.
All of them are frozen, so a snapshot handed to the planner cannot change under it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import NewType

NodeName = NewType("NodeName", str)
ContainerId = NewType("ContainerId", str)

#: Labels reconciler puts on every container it creates. A container without
#: ``MANAGED_LABEL=true`` is never touched.
MANAGED_LABEL = "reconciler.managed"
NAME_LABEL = "reconciler.name"
SPEC_HASH_LABEL = "reconciler.spec-hash"
NODE_LABEL = "reconciler.node"
#: The id of the reconciler database (``installation`` table) that created the container.
INSTALLATION_LABEL = "reconciler.installation"
#: On a service's containers: the service's name and the slot (1 … replicas).
SERVICE_LABEL = "reconciler.service"
SLOT_LABEL = "reconciler.slot"


class Health(enum.StrEnum):
    """A node's health, as written to ``nodes.health``."""

    #: Never reached since reconciler started following it.
    PENDING = "pending"
    #: The last call succeeded (or failed fewer times than the threshold).
    HEALTHY = "healthy"
    #: The failure threshold was crossed; reconnects are tried with capped backoff.
    UNHEALTHY = "unhealthy"


class Phase(enum.StrEnum):
    """A desired container's phase, as written to ``container_status.phase``."""

    PENDING = "pending"
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"
    UNSCHEDULABLE = "unschedulable"
    UNKNOWN = "unknown"
    #: Exited with code 0 and not restarted (``restart`` is ``never`` or ``on-failure``).
    COMPLETED = "completed"


class DesiredState(enum.StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"


class Reschedule(enum.StrEnum):
    """``desired_containers.reschedule``: what happens to a row whose node is lost."""

    #: Placed on another node that fits once its node has been lost for the grace period.
    ON_NODE_FAILURE = "on-node-failure"
    #: Stays where it was (phase ``unknown``) until its node comes back.
    NEVER = "never"


@dataclass(frozen=True)
class Constraint:
    """One placement constraint: ``KEY==VALUE`` (``equal``) or ``KEY!=VALUE``.

    ``key`` is ``node.name``, ``node.labels.<k>`` (the user-owned ``nodes.labels``) or
    ``engine.labels.<k>`` (the labels the engine reports).
    """

    key: str
    value: str
    equal: bool = True

    def __str__(self) -> str:
        return f"{self.key}{'==' if self.equal else '!='}{self.value}"


class RestartPolicy(enum.StrEnum):
    """``restart`` of a desired row or service: when an exited container is started again."""

    #: Always, after an exponential back-off (1 s doubling to 60 s): a crash loop waits.
    ALWAYS = "always"
    #: Only after a non-zero exit (with the same back-off); exit 0 is phase ``completed``.
    ON_FAILURE = "on-failure"
    #: Never: phase ``completed`` (exit 0) or ``failed`` with the exit code.
    NEVER = "never"


@dataclass(frozen=True)
class Healthcheck:
    """``healthcheck``: passed to Docker at create; durations in seconds (None: Docker's)."""

    test: tuple[str, ...]
    interval_seconds: float | None = None
    timeout_seconds: float | None = None
    retries: int | None = None
    start_period_seconds: float | None = None


@dataclass(frozen=True)
class PortBinding:
    """One published port: ``container_port/protocol`` → ``host_ip:host_port``."""

    container_port: int
    protocol: str = "tcp"
    host_port: int | None = None
    host_ip: str | None = None


@dataclass(frozen=True)
class Mount:
    """A volume (``type='volume'``) or bind mount (``type='bind'``)."""

    target: str
    source: str
    type: str = "volume"
    read_only: bool = False


class Env(Mapping[str, str]):
    """A container's environment: a read-only mapping whose ``repr``/``str`` show keys only.

    Env values often hold passwords and tokens. Whatever prints a spec or an action (a log
    line, ``log.exception("... %s", action)``, an assertion message) goes through this ``repr``,
    so values never reach a log by accident; code that needs them reads them explicitly
    (``env[key]``, ``dict(env)``).
    """

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        self._items: dict[str, str] = dict(items or {})

    def __getitem__(self, key: str) -> str:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return dict(self._items) == dict(other) if isinstance(other, Mapping) else NotImplemented

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __repr__(self) -> str:
        return "Env({" + ", ".join(f"{key!r}: '***'" for key in self._items) + "})"

    __str__ = __repr__


class PullPolicy(enum.StrEnum):
    """When the image of a row is pulled onto its node (``desired_containers.pull``)."""

    #: Pull when the node does not have the image (the default).
    MISSING = "missing"
    #: Pull before every create, even if the node has the image (a moving tag such as latest).
    ALWAYS = "always"
    #: Never pull: the image must already be on the node (placement requires it).
    NEVER = "never"


@dataclass(frozen=True)
class ContainerSpec:
    """Everything that shapes a container; its canonical hash decides drift.

    ``env`` is always an :class:`Env` (a plain mapping given here is wrapped), so printing a
    spec never prints env values.
    """

    name: str
    image: str
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default_factory=Env)
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[PortBinding, ...] = ()
    mounts: tuple[Mount, ...] = ()
    network: str | None = None
    cpus: float | None = None
    memory_bytes: int | None = None
    user: str | None = None
    workdir: str | None = None
    stop_timeout: int | None = None
    #: Reconciler's own restart policy (Docker's stays "no"); not part of the spec hash.
    restart: RestartPolicy = RestartPolicy.ALWAYS
    healthcheck: Healthcheck | None = None
    #: A service slot's service and slot number (labels; not part of the spec hash).
    service: str | None = None
    slot: int | None = None
    #: The Docker name to create the container under when it is not ``name`` (a start-first
    #: update's temporary name); ``reconciler.name`` stays ``name``. Not part of the hash.
    container_name: str | None = None
    #: When the image is pulled; not part of the spec hash (changing it recreates nothing).
    pull: PullPolicy = PullPolicy.MISSING

    def __post_init__(self) -> None:
        if not isinstance(self.env, Env):
            object.__setattr__(self, "env", Env(self.env))


@dataclass(frozen=True)
class DesiredContainer:
    """One row of ``desired_containers``, validated.

    ``spec`` is None exactly when the row is malformed; ``error`` then says which field is wrong
    and why, in words meant for the person who wrote the row.
    """

    name: str
    state: DesiredState
    node: NodeName | None
    spec: ContainerSpec | None
    spec_hash: str | None
    error: str | None = None
    #: Placement constraints; every one must hold on the node the row is placed on.
    constraints: tuple[Constraint, ...] = ()
    reschedule: Reschedule = Reschedule.ON_NODE_FAILURE


@dataclass(frozen=True)
class ObservedContainer:
    """A container as a node's last refresh saw it."""

    node: NodeName
    id: ContainerId
    name: str
    image: str
    state: str
    labels: Mapping[str, str] = field(default_factory=dict)
    image_id: str | None = None
    status: str | None = None
    exit_code: int | None = None
    created: float | None = None
    #: The health check's verdict (``starting``, ``healthy``, ``unhealthy``); None without one.
    health: str | None = None
    #: Host ports the container holds while running (its port bindings).
    ports: tuple[PortBinding, ...] = ()
    #: Labelled managed, but by another installation (another reconciler database): to this
    #: one it is unmanaged, like any container it did not create. Set by :meth:`seen_by`.
    foreign: bool = False

    @property
    def managed(self) -> bool:
        return self.labels.get(MANAGED_LABEL) == "true" and not self.foreign

    def seen_by(self, installation: str | None) -> ObservedContainer:
        """This container as installation ``installation`` sees it: ``foreign`` when its
        ``reconciler.installation`` label names another one. A managed container without the
        label predates installation ids and is adopted by whichever installation sees it."""
        owner = self.labels.get(INSTALLATION_LABEL)
        foreign = installation is not None and owner is not None and owner != installation
        return self if foreign == self.foreign else replace(self, foreign=foreign)

    @property
    def desired_name(self) -> str | None:
        return self.labels.get(NAME_LABEL) if self.managed else None

    @property
    def spec_hash(self) -> str | None:
        return self.labels.get(SPEC_HASH_LABEL) if self.managed else None

    @property
    def running(self) -> bool:
        return self.state in ("running", "restarting")


@dataclass(frozen=True)
class ObservedImage:
    node: NodeName
    id: str
    tags: tuple[str, ...] = ()
    size_bytes: int | None = None


@dataclass(frozen=True)
class NodeSnapshot:
    """What the planner knows of one node: its health and its last refreshed picture."""

    name: NodeName
    health: Health
    schedulable: bool = True
    containers: tuple[ObservedContainer, ...] = ()
    images: tuple[ObservedImage, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    #: False until the first full refresh since (re)connecting succeeded; the planner does not
    #: act on a node whose picture it cannot trust.
    refreshed: bool = False
    #: The engine may have stopped answering (a call overdue, or the last call failed), though
    #: it is not unhealthy yet: no new row is placed here.
    suspect: bool = False
    #: The registered node this one duplicates (the same engine reached under a second name:
    #: the same container ids show up under both); the planner then ignores this node.
    duplicate_of: NodeName | None = None
    #: What the engine reports: its CPUs and memory (None until its info was read) and labels.
    cpus: int | None = None
    memory_bytes: int | None = None
    engine_labels: Mapping[str, str] = field(default_factory=dict)
    #: ``nodes.drain``: the rows on it are moved to other nodes.
    drain: bool = False
    #: Epoch seconds since when the node has been unhealthy (None while it is not).
    unhealthy_since: float | None = None

    def has_image(self, ref: str) -> bool:
        """True when ``ref`` (``repo:tag``, ``repo`` meaning ``repo:latest``, or an id) is here."""
        tagged = ":" in ref.rsplit("/", 1)[-1] or ref.startswith("sha256:")
        wanted = ref if tagged else f"{ref}:latest"
        for image in self.images:
            if wanted in image.tags or image.id == ref or image.id == f"sha256:{ref}":
                return True
        return False


@dataclass(frozen=True)
class EngineInfo:
    """Facts an engine reports about itself (``docker info`` / ``docker version``)."""

    engine_id: str
    name: str
    version: str
    api_version: str
    os: str
    cpus: int
    memory_bytes: int
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeRow:
    """The user-owned part of one ``nodes`` row: what the cluster follows."""

    name: NodeName
    url: str
    labels: Mapping[str, str] = field(default_factory=dict)
    schedulable: bool = True
    drain: bool = False
    tls_ca_cert: str | None = None
    tls_client_cert: str | None = None
    tls_client_key: str | None = None
    allow_insecure_tcp: bool = False
    #: ``nodes.id``: of two rows that reach one engine, the later (higher id) is set aside.
    #: Not part of the row's value (two reads of one row compare equal, whatever the id).
    row_id: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class StatusRow:
    """One ``container_status`` row: where a desired row stands, and its retry state.

    ``planning.statuses`` decides these for a pass; ``db.status`` stores them. ``failures`` is
    the row's failure streak (failed actions, or exits of a crash-looping container: its
    restart count); ``next_attempt_at`` (epoch seconds) is when the streak lets it try again,
    and stays set, in the past, while the streak is remembered.
    """

    name: str
    phase: Phase
    node: NodeName | None = None
    container_id: ContainerId | None = None
    message: str = ""
    spec_hash: str | None = None
    failures: int = 0
    #: Epoch seconds before which the row is not retried; None when it is not backing off.
    next_attempt_at: float | None = None
    #: The service of a slot row (None for a plain row).
    service: str | None = None
    #: The container's health check verdict, if it has one.
    health: str | None = None
    #: Restarts of a crash-looping (or unhealthy) container since the spec last changed.
    restarts: int = 0


class UpdateFailureAction(enum.StrEnum):
    PAUSE = "pause"
    CONTINUE = "continue"
    ROLLBACK = "rollback"


class UpdateOrder(enum.StrEnum):
    STOP_FIRST = "stop-first"
    START_FIRST = "start-first"


class UpdateState(enum.StrEnum):
    """``service_status.update_state``."""

    COMPLETED = "completed"  #: also before any update
    UPDATING = "updating"
    PAUSED = "paused"
    ROLLBACK_STARTED = "rollback_started"
    ROLLBACK_COMPLETED = "rollback_completed"
    ROLLBACK_PAUSED = "rollback_paused"


@dataclass(frozen=True)
class UpdateConfig:
    """How a service rolls to a new spec (swarm mode's defaults)."""

    parallelism: int = 1  #: slots at a time; 0 = all at once
    delay_seconds: float = 0.0
    monitor_seconds: float = 5.0
    failure_action: UpdateFailureAction = UpdateFailureAction.PAUSE
    order: UpdateOrder = UpdateOrder.STOP_FIRST


@dataclass(frozen=True)
class ServiceDef:
    """One ``services`` row, validated; ``spec`` is None exactly when it is malformed.

    ``spec.name`` is the service's name; ``source`` is the validated row as JSON-ready values
    (what ``service_status.spec`` keeps to rebuild it after a restart).
    """

    name: str
    spec: ContainerSpec | None
    spec_hash: str | None
    replicas: int = 1
    update: UpdateConfig = field(default_factory=UpdateConfig)
    source: Mapping[str, object] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class ServiceState:
    """One ``service_status`` row: where a service stands and which specs it rolls between."""

    name: str
    update_state: UpdateState = UpdateState.COMPLETED
    replicas_desired: int = 0
    replicas_running: int = 0
    replicas_updated: int = 0
    message: str = ""
    #: The spec the slots converge to (a rollback's target is the old spec).
    spec: ServiceDef | None = None
    #: The spec before it: what a rollback returns to (or, in a rollback, what it left).
    previous: ServiceDef | None = None
