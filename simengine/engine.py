"""One simulated engine's state: containers as records, images, and the event log.

Every mutation is synchronous (no ``await`` between checking and changing state), so concurrent
requests see dockerd's outcomes: two creates of one name give one 201 and one 409. The HTTP layer
(``api``) waits the configured latency first, then calls these methods.

What a simulated process does is decided from its command, as busybox would run it: ``sleep N``
exits 0 after N s; ``true``/``false`` exit 0/1 at once; ``sh -c "exit N"`` exits N at once;
anything else runs until killed. SIGTERM is ignored (busybox as PID 1), so a stop waits its
timeout and then kills with exit code 137.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any

#: dockerd 20.10 keeps this many past events for ``since=`` (``eventsLimit`` in moby's
#: daemon/events/events.go).
EVENTS_KEPT = 256
#: busybox:local as ``sandbox.images`` imports it (same id on every sandbox engine).
DEFAULT_IMAGE = "busybox:local"
DEFAULT_IMAGE_ID = "sha256:ce6738bb4631aed932961ba11d40e957818224260d98191f09950ecb1249e6e6"
DEFAULT_CMD = ("sleep", "3600")
_VALID_NAME = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
_EXIT = re.compile(r"^\s*exit\s+(\d+)\s*$")
SIGNALS = {"SIGKILL": 9, "KILL": 9, "SIGTERM": 15, "TERM": 15, "SIGINT": 2, "INT": 2, "SIGHUP": 1}
SIGNALS |= {"HUP": 1, "SIGUSR1": 10, "USR1": 10, "SIGUSR2": 12, "USR2": 12}


class ApiError(Exception):
    """An answer other than success: HTTP status and dockerd's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def new_id() -> str:
    return secrets.token_hex(32)


def engine_id() -> str:
    """dockerd's engine ID shape: 12 groups of 4 base32 characters."""
    text = base64.b32encode(secrets.token_bytes(30)).decode()[:48]
    return ":".join(text[i : i + 4] for i in range(0, 48, 4))


def image_key(reference: str) -> str:
    """``busybox`` → ``busybox:latest``; a reference with a tag or digest is kept."""
    last = reference.rsplit("/", 1)[-1]
    if "@" in reference or ":" in last:
        return reference
    return reference + ":latest"


class Image:
    __slots__ = ("cmd", "created", "id", "size", "tags")

    def __init__(self, tags: list[str], *, image_id: str | None = None) -> None:
        self.id = image_id or "sha256:" + secrets.token_hex(32)
        self.tags = tags
        self.created = int(time.time())
        self.size = 1982541
        self.cmd = DEFAULT_CMD


class Container:
    """A container record; ``config``/``host_config`` are the create request's own dicts."""

    __slots__ = (
        "config",
        "created_ns",
        "exit_code",
        "exit_timer",
        "finished_ns",
        "host_config",
        "id",
        "image_id",
        "name",
        "pid",
        "run",
        "started_ns",
        "state",
    )

    def __init__(self, *, cid: str, name: str, config: dict[str, Any], image_id: str) -> None:
        self.id = cid
        self.name = name
        self.config = config
        self.host_config: dict[str, Any] = config.pop("HostConfig", None) or {}
        self.image_id = image_id
        self.created_ns = time.time_ns()
        self.started_ns = 0
        self.finished_ns = 0
        self.state = "created"
        self.exit_code = 0
        self.pid = 0
        self.run = 0  # counts starts, so a stale exit timer of an earlier run does nothing
        self.exit_timer: asyncio.TimerHandle | None = None

    @property
    def labels(self) -> dict[str, str]:
        return self.config.get("Labels") or {}

    @property
    def image(self) -> str:
        return str(self.config.get("Image") or "")

    @property
    def argv(self) -> list[str]:
        entry = self.config.get("Entrypoint") or []
        cmd = self.config.get("Cmd")
        if cmd is None and not entry:
            cmd = list(DEFAULT_CMD)
        return [*entry, *(cmd or [])]

    @property
    def running(self) -> bool:
        return self.state == "running"


class Engine:
    """One engine: containers by id, names, images, the event log and its subscribers."""

    def __init__(
        self,
        *,
        index: int,
        images: Iterable[str] = (DEFAULT_IMAGE,),
        pullable: Iterable[str] = (),
        hostname: str = "sim",
    ) -> None:
        self.index = index
        self.name = f"sim{index}"
        self.hostname = hostname
        self.id = engine_id()
        self.containers: dict[str, Container] = {}
        self.names: dict[str, str] = {}  # name (no slash) → id
        self.images: dict[str, Image] = {}
        self.pullable = {image_key(r) for r in pullable}
        self.events: collections.deque[tuple[int, str, bytes, dict[str, str]]] = collections.deque(
            maxlen=EVENTS_KEPT
        )
        self.subscribers: set[asyncio.Queue[tuple[int, str, bytes, dict[str, str]] | None]] = set()
        self.resumed = asyncio.Event()  # cleared while "paused" (like dockerd under SIGSTOP)
        self.resumed.set()
        for reference in images:
            self.add_image(image_key(reference), event="import")

    # -- events ------------------------------------------------------------------------------
    def emit(
        self,
        kind: str,
        action: str,
        actor: str,
        attributes: dict[str, str],
        *,
        status_id: str | None = None,
        origin: str | None = None,
    ) -> None:
        """Record one event (dockerd's JSON shape) and hand it to every live subscriber."""
        now = time.time_ns()
        raw: dict[str, Any] = {"status": action, "id": status_id or actor}
        if origin is not None:
            raw["from"] = origin
        raw |= {
            "Type": kind,
            "Action": action,
            "Actor": {"ID": actor, "Attributes": dict(sorted(attributes.items()))},
            "scope": "local",
            "time": now // 1_000_000_000,
            "timeNano": now,
        }
        line = json.dumps(raw, separators=(",", ":")).encode() + b"\n"
        entry = (now, kind, line, attributes)
        self.events.append(entry)
        for queue in self.subscribers:
            queue.put_nowait(entry)

    def _container_event(self, c: Container, action: str, **extra: str) -> None:
        attributes = {**c.labels, "image": c.image, "name": c.name, **extra}
        self.emit("container", action, c.id, attributes, origin=c.image)

    # -- images ------------------------------------------------------------------------------
    def add_image(self, key: str, *, event: str) -> Image:
        image_id = DEFAULT_IMAGE_ID if key == DEFAULT_IMAGE else None
        found = self.images.get(key) or Image([key], image_id=image_id)
        self.images[key] = found
        if event == "import":  # what `docker import -c ... busybox:local` leaves in the log
            self.emit("image", "tag", found.id, {"name": key})
            self.emit("image", "import", found.id, {"name": found.id})
        else:
            self.emit("image", event, key, {"name": key.rsplit(":", 1)[0]})
        return found

    def find_image(self, reference: str) -> Image | None:
        found = self.images.get(image_key(reference))
        if found is not None:
            return found
        for image in self.images.values():
            if image.id == reference or image.id.removeprefix("sha256:").startswith(reference):
                return image
        return None

    def pull(self, reference: str) -> Image:
        key = image_key(reference)
        if key not in self.pullable and key not in self.images:
            repository = key.rsplit(":", 1)[0]
            raise ApiError(
                404,
                f"pull access denied for {repository}, repository does not exist or may require "
                "'docker login': denied: requested access to the resource is denied",
            )
        return self.add_image(key, event="pull")

    # -- containers --------------------------------------------------------------------------
    def get(self, ref: str) -> Container:
        """By full id, name (with or without ``/``) or unique id prefix, like dockerd."""
        found = self.containers.get(ref)
        if found is not None:
            return found
        cid = self.names.get(ref.lstrip("/"))
        if cid is not None:
            return self.containers[cid]
        matches = [c for i, c in self.containers.items() if i.startswith(ref)] if ref else []
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ApiError(400, f"Multiple IDs found with provided prefix: {ref}")
        raise ApiError(404, f"No such container: {ref}")

    def create(self, name: str | None, config: dict[str, Any]) -> Container:
        if name:
            if not _VALID_NAME.match(name):
                raise ApiError(
                    400,
                    f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed",
                )
            name = name.lstrip("/")
            if (holder := self.names.get(name)) is not None:
                raise ApiError(
                    409,
                    f'Conflict. The container name "/{name}" is already in use by container '
                    f'"{holder}". You have to remove (or rename) that container to be able to '
                    "reuse that name.",
                )
        reference = str(config.get("Image") or "")
        if not reference:
            raise ApiError(400, "No command specified")
        image = self.find_image(reference)
        if image is None:
            raise ApiError(404, f"No such image: {image_key(reference)}")
        cid = new_id()
        name = name or f"sim_{cid[:12]}"
        if config.get("Labels") is None:
            config["Labels"] = {}
        container = Container(cid=cid, name=name, config=config, image_id=image.id)
        self.containers[cid] = container
        self.names[name] = cid
        self._container_event(container, "create")
        return container

    def start(self, c: Container) -> bool:
        """False when it was already running (dockerd answers 304)."""
        if c.running:
            return False
        c.state = "running"
        c.started_ns = time.time_ns()
        c.exit_code = 0
        c.pid = 10000 + secrets.randbelow(50000)
        c.run += 1
        self._container_event(c, "start")
        self._schedule_exit(c)
        return True

    def _schedule_exit(self, c: Container) -> None:
        argv = c.argv
        program = argv[0].rsplit("/", 1)[-1] if argv else ""
        after: float | None = None
        code = 0
        if program == "sleep" and len(argv) > 1:
            try:
                after = float(argv[1])
            except ValueError:
                after = None
        elif program in ("true", "false"):
            after, code = 0.0, int(program == "false")
        elif program == "sh" and len(argv) == 3 and argv[1] == "-c" and (m := _EXIT.match(argv[2])):
            after, code = 0.0, int(m.group(1))
        if after is not None:
            run = c.run
            loop = asyncio.get_running_loop()
            c.exit_timer = loop.call_later(after + 0.001, self._exit_if_run, c, run, code)

    def _exit_if_run(self, c: Container, run: int, code: int) -> None:
        if c.running and c.run == run and self.containers.get(c.id) is c:
            self.exit(c, code)

    def exit(self, c: Container, code: int) -> None:
        """The process ended on its own (or was killed): ``die`` with its exit code."""
        if not c.running:
            return
        if c.exit_timer is not None:
            c.exit_timer.cancel()
            c.exit_timer = None
        c.state = "exited"
        c.exit_code = code
        c.pid = 0
        c.finished_ns = time.time_ns()
        self._container_event(c, "die", exitCode=str(code))

    def signal(self, c: Container, number: int) -> None:
        """Deliver a signal: SIGKILL ends the process (137); others are ignored by busybox."""
        self._container_event(c, "kill", signal=str(number))
        if number == 9:
            self.exit(c, 137)

    def stopped(self, c: Container) -> None:
        self._container_event(c, "stop")

    def remove(self, c: Container) -> None:
        if c.running:
            self.signal(c, 9)
        if c.exit_timer is not None:
            c.exit_timer.cancel()
        del self.containers[c.id]
        self.names.pop(c.name, None)
        self._container_event(c, "destroy")

    # -- views -------------------------------------------------------------------------------
    def matching(self, *, all_: bool, filters: Mapping[str, list[str]]) -> list[Container]:
        """``GET /containers/json``: newest first, filtered as dockerd does."""
        found = []
        statuses = filters.get("status") or []
        labels = [_label_test(v) for v in filters.get("label") or []]
        names = [re.compile(v) for v in filters.get("name") or []]
        ids = [re.compile(v) for v in filters.get("id") or []]
        for c in self.containers.values():
            if not (all_ or statuses or c.running):
                continue
            if statuses and c.state not in statuses:
                continue
            if names and not any(p.search("/" + c.name) for p in names):
                continue
            if ids and not any(p.search(c.id) for p in ids):
                continue
            if labels and not all(test(c.labels) for test in labels):
                continue
            found.append(c)
        found.sort(key=lambda c: c.created_ns, reverse=True)
        return found


def _label_test(value: str) -> Any:
    key, has_value, wanted = value.partition("=")
    if has_value:
        return lambda labels: labels.get(key) == wanted
    return lambda labels: key in labels


def event_matches(
    entry: tuple[int, str, bytes, dict[str, str]], filters: Mapping[str, list[str]]
) -> bool:
    """dockerd's event filters that reconciler or its tests use: type, label, container, event."""
    _, kind, line, attributes = entry
    if (types := filters.get("type")) and kind not in types:
        return False
    for value in filters.get("label") or []:
        key, has_value, wanted = value.partition("=")
        if key not in attributes or (has_value and attributes[key] != wanted):
            return False
    if actions := filters.get("event"):
        action = json.loads(line)["Action"]
        if action not in actions and action.split(":")[0] not in actions:
            return False
    if containers := filters.get("container"):
        if kind != "container":
            return False
        raw = json.loads(line)
        if raw["Actor"]["ID"] not in containers and attributes.get("name") not in containers:
            return False
    return True
