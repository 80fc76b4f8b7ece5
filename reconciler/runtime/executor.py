"""Apply a ``Plan`` to the engines: the only place in a pass that changes Docker.

Where this sits in a pass: ``controller`` hands over the actions of a ``planning.Plan``; each
node gets its own small set of worker threads (``max_per_node`` actions in flight, default 4)
and all nodes work in parallel. Every action ends in an ``Outcome`` that says, in words for the
status row, what happened: "container web has been created", or why it failed.

One slow node never holds up the others, nor the pass: :meth:`Executor.execute` waits for every
action on nodes that answer, and stops waiting for a node once it is *suspect* (a call has gone
unanswered for longer than the probe timeout, or its last call failed). Those actions go on in
the background until they complete or time out; their outcomes are handed over by the next
``execute`` call, which meanwhile skips any action on the same container or name.

After an action the node's in-memory picture is refreshed for the containers it touched, so the
next pass plans from what is really there instead of repeating the action.

Recovery rules (from ``../shared/ENGINES.md`` and swarmkit's controller):

* a name conflict on create means "look at what is there": a container that carries our labels
  for the same name is adopted; anything else is reported and never touched;
* a stale task on start ("task … already exists", or "id already in use" after a dockerd
  restart) means remove and create again;
* only a 404 naming the container itself means it is gone; a 404 for a missing network (or a
  ``container:`` network target on another node) is the row's failure, and the container stays
  known.

:meth:`Executor.close` drops queued actions at once and waits a bounded time for those in flight;
nothing is ever left waiting on an action that will not run.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent import futures
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, assert_never

from reconciler import docker_api, errors, planning, spec
from reconciler.docker_api import EngineAPI
from reconciler.docker_api import registry as docker_registry
from reconciler.domain import (
    ContainerId,
    ContainerSpec,
    NodeName,
    ObservedContainer,
    Phase,
    PullPolicy,
)

log = logging.getLogger(__name__)

#: Grace period for stopping a container whose row names none (Docker's own default).
DEFAULT_STOP_TIMEOUT = 10


class NodeHandle(Protocol):
    """What the executor needs of a node: its engine, a way to re-read containers, and whether
    it still answers."""

    @property
    def client(self) -> EngineAPI: ...

    @property
    def installation(self) -> str | None:
        """This reconciler database's id, labelled on what is created here (None: unlabelled,
        as in tests that run without a database)."""
        ...

    @property
    def suspect(self) -> bool:
        """The node may have stopped answering (a call overdue, or the last one failed): the
        executor does not hold a pass for its actions."""
        ...

    def acting_on(
        self, *, ids: Iterable[str] = (), names: Iterable[str] = ()
    ) -> AbstractContextManager[None]: ...

    def refresh_containers(self, ids: Iterable[str]) -> None: ...

    def record_failure(self, error: errors.EngineError) -> None: ...

    def forget_containers(self, ids: Iterable[str]) -> None: ...


@dataclass(frozen=True)
class Outcome:
    """What became of one action."""

    action: planning.Action
    ok: bool
    #: The phase the row is in now, for ``container_status``; None for removals.
    phase: Phase | None
    node: NodeName | None
    container_id: ContainerId | None
    message: str
    #: On failure: would trying again later help (engine busy, timeout) or not (bad spec)?
    temporary: bool = False

    @property
    def name(self) -> str | None:
        return self.action.name


_Key = tuple[NodeName, str]
#: The actions that are carried out (``Blocked`` ones only describe a row).
_Executable = (
    planning.Create
    | planning.Start
    | planning.Stop
    | planning.Remove
    | planning.Recreate
    | planning.Rename
)


class Executor:
    """Runs actions with bounded concurrency per node; reusable across passes."""

    def __init__(
        self,
        *,
        max_per_node: int = 4,
        close_timeout: float = 5.0,
        poll_interval: float = 0.05,
        pulls: PullSettings | None = None,
    ) -> None:
        self._max_per_node = max_per_node
        self._pulls = pulls or PullSettings()
        self._close_timeout = close_timeout
        self._poll = poll_interval
        self._workers: dict[NodeName, _Workers] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._close_deadline = float("inf")
        #: Actions a pass stopped waiting for, by the container or name they act on.
        self._detached: dict[_Key, futures.Future[Outcome]] = {}
        #: Outcomes of detached actions that have completed since, for the next ``execute``.
        self._late: list[Outcome] = []

    def execute(
        self,
        actions: Sequence[planning.Action],
        nodes: Mapping[NodeName, NodeHandle],
        *,
        on_outcome: Callable[[Outcome], None] | None = None,
        may_act: Callable[[], bool] | None = None,
    ) -> list[Outcome]:
        """Apply every non-blocked action; return their outcomes (in completion order).

        ``may_act`` (the lease's fence) is asked right before each Docker call that changes a
        container; once it says no, the action stops there and fails as temporary ("not the
        leader"), without another call.

        Outcomes of actions an earlier call stopped waiting for come first. Returns once every
        action has an outcome, except those on suspect nodes (and, after :meth:`close`, those
        still running when its timeout ran out), which go on in the background. An action on a
        container or name that such a background action still works on is skipped. Never raises
        for a failed action: a failure is an ``Outcome`` with ``ok=False``.
        """
        outcomes: list[Outcome] = []

        def report(outcome: Outcome) -> None:
            if on_outcome is not None:
                on_outcome(outcome)
            outcomes.append(outcome)

        for outcome in self._take_late():
            report(outcome)
        pending: dict[futures.Future[Outcome], _Key] = {}
        for action in actions:
            if isinstance(action, planning.Blocked):
                continue
            handle = nodes.get(action.node)
            if handle is None:
                report(_failed(action, f"node {action.node} is no longer registered"))
                continue
            key = _key(action)
            if self._still_running(key):
                log.debug("skipped %s: an earlier action on it is still running", action)
                continue
            pending[self._submit(action, handle, may_act)] = key
        while pending:
            futures.wait(pending, timeout=self._poll, return_when=futures.FIRST_COMPLETED)
            # A future cancelled by close() is done() but never reported by wait(): poll.
            for done in [f for f in pending if f.done()]:
                del pending[done]
                if done.cancelled():
                    continue  # closing: the action never started, so nothing to record
                outcome = done.result()
                _log(outcome)
                report(outcome)
            if pending and self._may_leave(pending, nodes):
                self._detach(pending)
                break
        return outcomes

    def close(self, *, timeout: float | None = None) -> None:
        """Drop queued actions, wait up to ``timeout`` s (default ``close_timeout``) for those in
        flight, and let every ``execute`` return. The worker threads are daemons: a call to a
        hung engine does not keep the process alive."""
        wait = self._close_timeout if timeout is None else timeout
        with self._lock:
            self._closed.set()
            self._close_deadline = time.monotonic() + wait
            workers, self._workers = list(self._workers.values()), {}
        running: list[futures.Future[Outcome]] = []
        for w in workers:
            running += w.close()
        futures.wait(running, timeout=wait)

    # -- internals -------------------------------------------------------------------------

    def _submit(
        self, action: _Executable, handle: NodeHandle, may_act: Callable[[], bool] | None
    ) -> futures.Future[Outcome]:
        with self._lock:
            if self._closed.is_set():
                cancelled: futures.Future[Outcome] = futures.Future()
                cancelled.cancel()
                return cancelled
            workers = self._workers.get(action.node)
            if workers is None:
                workers = _Workers(action.node, size=self._max_per_node)
                self._workers[action.node] = workers
            pulls = self._pulls
            return workers.submit(lambda: _apply(action, handle, may_act, pulls))

    def _may_leave(
        self, pending: Mapping[futures.Future[Outcome], _Key], nodes: Mapping[NodeName, NodeHandle]
    ) -> bool:
        """May the pass stop waiting for the rest? Yes when every remaining action is on a
        suspect node, or when closing and the close timeout has run out."""
        if self._closed.is_set() and time.monotonic() >= self._close_deadline:
            return True
        waiting_on = {node for node, _ in pending.values()}
        return all(nodes[node].suspect for node in waiting_on)

    def _detach(self, pending: Mapping[futures.Future[Outcome], _Key]) -> None:
        names = sorted({node for node, _ in pending.values()})
        log.warning(
            "not waiting for %d action(s) on %s, which do(es) not answer; their outcome is "
            "recorded when they complete",
            len(pending),
            ", ".join(names),
        )
        with self._lock:
            for future, key in pending.items():
                self._detached[key] = future
        for future, key in pending.items():
            future.add_done_callback(functools.partial(self._finished_late, key))

    def _finished_late(self, key: _Key, future: futures.Future[Outcome]) -> None:
        with self._lock:
            if self._detached.get(key) is future:
                del self._detached[key]
            if future.cancelled():
                return
            outcome = future.result()
            self._late.append(outcome)
        _log(outcome)

    def _take_late(self) -> list[Outcome]:
        with self._lock:
            late, self._late = self._late, []
        return late

    def _still_running(self, key: _Key) -> bool:
        with self._lock:
            return key in self._detached


class _Workers:
    """Daemon threads that run one node's actions, at most ``size`` at a time.

    Not a ``ThreadPoolExecutor``: its threads are joined at interpreter exit (a call to a hung
    engine would hold the process), and futures it cancels on shutdown are never reported done
    to ``wait``/``as_completed``.
    """

    def __init__(self, node: NodeName, *, size: int) -> None:
        self._node = node
        self._size = size
        self._queue: queue.SimpleQueue[tuple[futures.Future[Outcome], Callable[[], Outcome]]]
        self._queue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._running: set[futures.Future[Outcome]] = set()
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[[], Outcome]) -> futures.Future[Outcome]:
        future: futures.Future[Outcome] = futures.Future()
        with self._lock:
            self._queue.put((future, fn))
            if len(self._threads) < self._size:
                thread = threading.Thread(
                    target=self._work, name=f"exec-{self._node}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
        return future

    def close(self) -> list[futures.Future[Outcome]]:
        """Cancel what has not started; return what is running."""
        with self._lock:
            self._closed = True
            running = list(self._running)
        while True:
            try:
                future, _ = self._queue.get_nowait()
            except queue.Empty:
                break
            future.cancel()
        for _ in self._threads:
            self._queue.put(_STOP)
        return running

    def _work(self) -> None:
        while True:
            try:
                future, fn = self._queue.get(timeout=_IDLE_EXIT)
            except queue.Empty:
                with self._lock:  # submit() queues under this lock: nothing can slip past
                    if self._queue.empty():
                        self._threads.remove(threading.current_thread())
                        return  # idle: a thousand nodes keep no thousands of threads
                continue
            if future is _STOP[0]:
                return
            with self._lock:
                if self._closed:
                    future.cancel()
                    continue
                if not future.set_running_or_notify_cancel():
                    continue
                self._running.add(future)
            try:
                future.set_result(fn())
            except BaseException as e:  # _apply turns failures into outcomes; a bug still ends
                future.set_exception(e)
            finally:
                with self._lock:
                    self._running.discard(future)


def _no_outcome() -> Outcome:
    raise AssertionError("the stop marker is never run")


_STOP: tuple[futures.Future[Outcome], Callable[[], Outcome]] = (futures.Future(), _no_outcome)
#: Seconds after which an idle worker thread of a node exits (the next action starts another).
_IDLE_EXIT = 30.0


def _key(action: _Executable) -> _Key:
    """What an action works on: its row's name, or the container of a removal without one."""
    return (action.node, action.name or getattr(action, "container_id", None) or repr(action))


def _apply(
    action: planning.Action,
    handle: NodeHandle,
    may_act: Callable[[], bool] | None = None,
    pulls: PullSettings | None = None,
) -> Outcome:
    """Carry out one action; every failure becomes an ``Outcome``."""
    try:
        with handle.acting_on(ids=_ids(action), names=_names(action)):
            return _dispatch(action, handle, may_act, pulls or PullSettings())
    except NotActing as e:
        return _failed(action, str(e), temporary=True)
    except docker_api.FenceClosed as e:  # stopped at the socket: paused right after the check
        return _failed(action, f"not acting: this controller no longer leads ({e})", temporary=True)
    except errors.EngineError as e:
        handle.record_failure(e)  # a timeout here counts towards the node's health too
        return _failed(action, str(e), temporary=e.temporary)
    except Exception as e:  # a bug must cost one row, never the loop
        log.exception("unexpected failure applying %s", action)
        return _failed(action, f"internal error: {e!r}", temporary=True)


def _dispatch(
    action: planning.Action,
    handle: NodeHandle,
    may_act: Callable[[], bool] | None,
    pulls: PullSettings,
) -> Outcome:
    client = handle.client if may_act is None else _Fenced(handle.client, may_act)
    match action:
        case planning.Create(name=name, node=node, spec=wanted, spec_hash=hash_, start=start):
            cid, message = _create(
                client, wanted, hash_, start=start, installation=handle.installation, pulls=pulls
            )
            _refresh(handle, [cid])
            if action.note:  # "rescheduled from n3 (unhealthy for 30 s)"
                message = f"{message}: {action.note}"
            return _ok(action, _phase(start), node, cid, message)
        case planning.Recreate(node=node, container_id=old, spec=wanted, spec_hash=hash_):
            _stop_and_remove(client, old, timeout=wanted.stop_timeout)
            cid, _ = _create(
                client,
                wanted,
                hash_,
                start=action.start,
                installation=handle.installation,
                pulls=pulls,
            )
            handle.forget_containers([old])
            _refresh(handle, [cid])
            message = f"container {action.name} has been recreated ({action.reason})"
            return _ok(action, _phase(action.start), node, cid, message)
        case planning.Start(name=name, node=node, container_id=cid):
            try:
                client.start(cid)
            except errors.StaleTask:
                # The container cannot be started again; removing it lets the next pass create
                # it afresh (the planner sees the row without a container).
                client.remove(cid, force=True)
                handle.forget_containers([cid])
                return _ok(
                    action,
                    Phase.PENDING,
                    node,
                    None,
                    f"container {name} had a stale task; removed to be created again",
                )
            except errors.ContainerNotFound:
                # Removed behind our back after the picture was taken (docker rm -f): not a
                # failure of the row; the next pass, woken by the destroy event, creates it.
                # Any other 404 (a missing network) fails the row and the container stays.
                handle.forget_containers([cid])
                return _ok(
                    action,
                    Phase.PENDING,
                    node,
                    None,
                    f"container {name} disappeared; creating it again",
                )
            _refresh(handle, [cid])
            return _ok(action, Phase.RUNNING, node, cid, f"container {name} has been started")
        case planning.Stop(name=name, node=node, container_id=cid, timeout=timeout):
            client.stop(cid, timeout=DEFAULT_STOP_TIMEOUT if timeout is None else timeout)
            _refresh(handle, [cid])
            return _ok(action, Phase.STOPPED, node, cid, f"container {name} has been stopped")
        case planning.Rename(name=name, node=node, container_id=cid, to=to):
            client.rename(cid, to)
            _refresh(handle, [cid])
            return _ok(action, Phase.RUNNING, node, cid, f"container {name} has been renamed")
        case planning.Remove(node=node, container_id=cid, reason=reason):
            with contextlib.suppress(errors.ContainerNotFound):  # already gone: goal reached
                client.remove(cid, force=True)
            handle.forget_containers([cid])  # a successful remove needs no inspect to confirm
            return _ok(action, None, node, cid, f"container {cid[:12]} has been removed ({reason})")
        case planning.Blocked():
            raise AssertionError("blocked actions are not executed")
        case _:
            assert_never(action)


def _ids(action: planning.Action) -> list[str]:
    """The existing container an action works on (none for a create)."""
    cid = getattr(action, "container_id", None)
    return [cid] if cid else []


def _names(action: planning.Action) -> list[str]:
    """The name a new container gets (creates only: its id is not known before the call)."""
    if isinstance(action, planning.Create | planning.Recreate):
        return [action.spec.container_name or action.spec.name]
    if isinstance(action, planning.Rename):
        return [action.to]
    return []


def _refresh(handle: NodeHandle, ids: list[ContainerId]) -> None:
    """Re-read what an action touched, so the next pass plans from the result.

    A failed re-read does not undo the action: the node has recorded the failure against its
    health, and its next refresh (event-driven or forced) brings the picture up to date.
    """
    try:
        handle.refresh_containers(ids)
    except errors.EngineError:
        log.debug("could not re-read %s after an action", ids, exc_info=True)


def _create(
    client: EngineAPI,
    wanted: ContainerSpec,
    spec_hash: str,
    *,
    start: bool,
    installation: str | None = None,
    pulls: PullSettings | None = None,
) -> tuple[ContainerId, str]:
    """Create (and start) ``wanted``, pulling its image first if the row's pull policy says so;
    adopt a container of ours that already holds the name (labelled managed, with this desired
    name, and not by another installation)."""
    labels = spec.container_labels(wanted, spec_hash, installation=installation)
    try:
        cid, pulled = _create_pulling(client, wanted, labels, pulls or PullSettings())
        message = f"container {wanted.name} has been created{pulled}"
    except errors.NameConflict:
        docker_name = wanted.container_name or wanted.name
        existing = client.inspect_container(docker_name).seen_by(installation)
        if existing.desired_name != wanted.name:
            raise errors.NameConflict(
                f"the name {wanted.name} is taken by container {existing.id[:12]}, "
                "which reconciler does not manage; rename or remove it",
                node=client.node,
                status=409,  # the row's problem, not the engine's
            ) from None
        # Ours, from a pass that was interrupted after create: adopt it. If its spec is stale,
        # the next pass sees the hash differ and recreates it.
        cid = existing.id
        message = f"container {wanted.name} has been adopted"
        if not start or existing.running:
            return cid, message
    if start:
        try:
            client.start(cid)
        except errors.StaleTask:
            client.remove(cid, force=True)
            cid = client.create_container(wanted, labels=labels)
            client.start(cid)
    return cid, message


@dataclass(frozen=True)
class PullSettings:
    """How images are pulled: registry credentials (a Docker config.json; empty: Docker's
    default file) and how long one pull may take."""

    docker_config: str = ""
    timeout: float = 300.0


def _create_pulling(
    client: EngineAPI, wanted: ContainerSpec, labels: Mapping[str, str], pulls: PullSettings
) -> tuple[ContainerId, str]:
    """Create ``wanted``; with ``pull: always`` pull first, with ``pull: missing`` pull when the
    engine says the image is not there. Returns the id and a note on the pull (or "")."""
    note = ""
    if wanted.pull is PullPolicy.ALWAYS:
        note = _pull(client, wanted.image, pulls)
    try:
        return client.create_container(wanted, labels=labels), note
    except errors.ImageNotFound:
        if wanted.pull is not PullPolicy.MISSING:
            raise  # never: the image must be there; always: it was just pulled
    # The engine decides, not the picture: no extra call on the common path, and a picture
    # that is a moment old cannot make us skip a needed pull.
    note = _pull(client, wanted.image, pulls)
    return client.create_container(wanted, labels=labels), note


def _pull(client: EngineAPI, image: str, pulls: PullSettings) -> str:
    """Pull ``image`` onto ``client``'s engine; a note for the status message."""
    log.info("pulling image %s on %s", image, client.node)
    started = time.monotonic()
    auth = docker_registry.auth_for(image, config_path=pulls.docker_config)
    layers = client.pull_image(image, auth=auth, timeout=pulls.timeout)
    took = time.monotonic() - started
    log.info("pulled image %s on %s (%d layers, %.1fs)", image, client.node, layers, took)
    return f" (image {image} pulled in {took:.1f}s)"


def _stop_and_remove(client: EngineAPI, cid: ContainerId, *, timeout: int | None) -> None:
    try:
        client.stop(cid, timeout=DEFAULT_STOP_TIMEOUT if timeout is None else timeout)
        client.remove(cid, force=True)
    except errors.ContainerNotFound:
        pass  # already gone


class NotActing(Exception):
    """The fence said no before a Docker call: this controller no longer leads."""


class _Fenced:
    """An ``EngineAPI`` that asks ``may_act`` right before each call that changes a container
    (and logs each such call at debug level: ``docker call: start web-1 on n1``)."""

    def __init__(self, client: EngineAPI, may_act: Callable[[], bool]) -> None:
        self._client = client
        self._may_act = may_act

    @property
    def node(self) -> NodeName:
        return self._client.node

    def _check(self, verb: str, target: str) -> None:
        if not self._may_act():
            raise NotActing(f"not acting: this controller no longer leads ({verb} {target})")
        log.debug("docker call: %s %s on %s", verb, target, self._client.node)

    def create_container(self, spec: ContainerSpec, *, labels: Mapping[str, str]) -> ContainerId:
        self._check("create", spec.name)
        with docker_api.fenced(self._may_act):  # asked again as the request leaves
            return self._client.create_container(spec, labels=labels)

    def inspect_container(self, container_id: str) -> ObservedContainer:
        return self._client.inspect_container(container_id)  # a read: harmless after a loss

    def start(self, container_id: str) -> None:
        self._check("start", container_id[:12])
        with docker_api.fenced(self._may_act):
            self._client.start(container_id)

    def stop(self, container_id: str, *, timeout: int = 10) -> None:
        self._check("stop", container_id[:12])
        with docker_api.fenced(self._may_act):
            self._client.stop(container_id, timeout=timeout)

    def remove(self, container_id: str, *, force: bool = True) -> None:
        self._check("remove", container_id[:12])
        with docker_api.fenced(self._may_act):
            self._client.remove(container_id, force=force)

    def rename(self, container_id: str, name: str) -> None:
        self._check("rename", container_id[:12])
        with docker_api.fenced(self._may_act):
            self._client.rename(container_id, name)

    def pull_image(self, image: str, *, auth: Mapping[str, Any] | None, timeout: float) -> int:
        self._check("pull", image)
        with docker_api.fenced(self._may_act):
            return self._client.pull_image(image, auth=auth, timeout=timeout)


def _phase(start: bool) -> Phase:
    return Phase.RUNNING if start else Phase.STOPPED


def _ok(
    action: planning.Action, phase: Phase | None, node: NodeName, cid: ContainerId | None, msg: str
) -> Outcome:
    return Outcome(action, True, phase, node, cid, msg)


def _failed(action: planning.Action, message: str, *, temporary: bool = False) -> Outcome:
    node = getattr(action, "node", None)
    cid = getattr(action, "container_id", None)
    return Outcome(action, False, Phase.FAILED, node, cid, message, temporary=temporary)


def _log(outcome: Outcome) -> None:
    where = f" on {outcome.node}" if outcome.node else ""
    if outcome.ok:
        log.info("%s%s", outcome.message, where)
    else:
        log.warning(
            "%s %s failed%s: %s",
            type(outcome.action).__name__.lower(),
            outcome.name or outcome.container_id,
            where,
            outcome.message,
        )
