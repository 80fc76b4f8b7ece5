"""``reconciler run``: the long-running process that keeps the fleet converged.

APScheduler drives one reconcile job (every ``--interval`` seconds, ``max_instances=1``,
``coalesce=True``) and a housekeeping job that trims the events log. Between ticks, three kinds
of hint bring the next pass forward through ``wake()``:

* an event monitor saw a container or image change on a node (``Cluster``'s ``on_change``),
* a node changed health,
* somebody changed the desired rows (``watch``: ``PRAGMA data_version`` or ``LISTEN``),
* a backing-off row or a rolling update's next step falls due (noted after each pass; the main
  thread wakes the loop then),
* this daemon became the leader (``runtime.lease``; a standby runs no pass).

A wake that arrives while a pass runs is not lost: the job runs another pass straight after.

SIGTERM and SIGINT stop taking work: no new pass starts, queued actions are dropped, in-flight
Docker calls get the executor's close timeout (5 s) to finish and are then left behind, the
lease is released at once (a standby takes over within one retry period), monitors close, exit
status 0.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler

from reconciler import planning
from reconciler.db import store as store_mod
from reconciler.nodes import cluster as cluster_mod
from reconciler.runtime import controller, endpoints, lease, metrics
from reconciler.settings import Settings, parse_duration

log = logging.getLogger(__name__)
# APScheduler warns each time an interval tick finds the previous pass still running; with
# max_instances=1 that is the intended behaviour, not news.
logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)

RECONCILE_JOB = "reconcile"


class Daemon:
    def __init__(self, *, store: store_mod.Store, settings: Settings) -> None:
        self.store = store
        store.outage.announce = True  # a daemon says once that the database went and came back
        """The daemon's store (tests read it; nothing else should need it)."""
        self._settings = settings
        self._stopping = threading.Event()
        self._dirty = threading.Event()
        self._in_pass = threading.Event()
        self.cluster = cluster_mod.Cluster(
            store=store, settings=settings, on_change=lambda: self.wake("node")
        )
        self.controller = controller.Controller(
            store=store, cluster=self.cluster, settings=settings
        )
        self.cluster.set_writing(False)  # until this process holds the lease
        self.elector = lease.Elector(
            store=store,
            identity=settings.identity or lease.default_identity(),
            duration=settings.lease_duration,
            renew_deadline=settings.renew_deadline,
            retry_period=settings.retry_period,
            on_elected=self._elected,
            on_lost=self._lost,
        )
        store.fence = self.elector.token  # controller-owned writes need the lease
        store.end_idle_transactions_after(settings.renew_deadline)  # a frozen leader's locks
        self._term: lease.Term | None = None  # the term the last pass ran under
        self._retry_due: float | None = None  # epoch seconds: wake then (set after a pass)
        self._scheduler = BackgroundScheduler(timezone=dt.UTC)
        self._watcher = store.watcher(
            on_change=lambda: self.wake("desired"), interval=settings.watch_interval
        )
        self.passes = 0
        self.metrics = metrics.Metrics(
            metrics.Sources(nodes=self.cluster.handles, leader=lambda: self._leads())
        )
        self._endpoints: endpoints.Server | None = None
        self._last_pass_at = time.monotonic()  # the start counts as a tick for /healthz
        self._last_pass_error: str | None = "no pass has finished yet"

    # -- lifecycle ------------------------------------------------------------------------

    def run(self) -> None:
        """Run until SIGTERM/SIGINT (or ``stop()``); return once everything is closed."""
        self.store.require_head()
        self._install_signal_handlers()
        log.info("reconciler starting (interval %.1fs)", self._settings.reconcile_interval)
        self._last_pass_at = time.monotonic()
        self._serve_endpoints()
        self.cluster.start()
        # Give every node one chance to be refreshed before the first pass, so a batch of rows
        # waiting at start-up spreads over all nodes instead of the first one to answer.
        self.cluster.wait_ready(timeout=self._settings.docker_timeout)
        self._watcher.start()
        self._scheduler.add_job(
            self._reconcile_job,
            "interval",
            seconds=self._settings.reconcile_interval,
            id=RECONCILE_JOB,
            max_instances=1,
            coalesce=True,
            next_run_time=dt.datetime.now(dt.UTC),
        )
        self._scheduler.add_job(
            self._trim_events,
            "interval",
            seconds=60,
            id="trim-events",
            next_run_time=dt.datetime.now(dt.UTC),
        )
        self._scheduler.start()
        # Leads at once if the lease is free, else stands by with its nodes warm. Started after
        # the scheduler, so the wake of an election always finds the reconcile job in place.
        self.elector.start()
        try:
            while not self._stopping.wait(self._until_retry(limit=0.5)):
                due = self._retry_due
                if due is not None and time.time() >= due:
                    self._retry_due = None
                    self.wake()
        finally:
            self._shutdown()

    def run_once(self, *, ready_timeout: float = 30.0) -> controller.PassResult:
        """Connect to every node, wait for their first refresh, take the lease, run one pass,
        release the lease, close. Raises ``NotLeader`` (nothing done) when another controller
        holds the lease."""
        with self._connected(ready_timeout=ready_timeout):
            if not self.elector.attempt():
                raise store_mod.NotLeader(
                    f"another controller holds the lease ({self.elector.holder}); "
                    "run --once acts only as leader: nothing was done"
                )
            try:
                term = self.elector.term()
                if term is None:
                    raise store_mod.NotLeader("the lease was lost before the pass began")
                return self.controller.reconcile(
                    may_act=functools.partial(self.elector.may_act, term)
                )
            finally:
                self.cluster.stop()  # the last pictures are written while still leader
                self.elector.stop(release=True)

    def plan(self, *, ready_timeout: float = 30.0) -> planning.Plan:
        """Connect to every node, wait for their first refresh, and plan; write nothing at all
        to the database (no lease, no node health, no observed rows)."""
        self.store.fence = lambda: None  # every controller-owned write is refused
        with self._connected(ready_timeout=ready_timeout):
            return self.controller.plan()

    @property
    def is_leader(self) -> bool:
        """This process holds the lease and may act now (for metrics and tests)."""
        return self.elector.is_leader

    def _elected(self) -> None:
        self.cluster.set_writing(True)
        self.wake()
        # Trimming is a controller-owned write: a new leader trims now rather than at the
        # next tick of the 60 s job (whose first run, at start, came before the election).
        with contextlib.suppress(JobLookupError, RuntimeError):
            self._scheduler.modify_job("trim-events", next_run_time=dt.datetime.now(dt.UTC))

    def _lost(self) -> None:
        self.cluster.set_writing(False)

    @contextlib.contextmanager
    def _connected(self, *, ready_timeout: float) -> Iterator[None]:
        """Nodes connected and refreshed (or given up on) for one piece of work, then closed."""
        self.store.require_head()
        self.cluster.start()
        try:
            self.cluster.wait_ready(timeout=ready_timeout)
            yield
        finally:
            self.controller.close()
            self.cluster.stop()

    def stop(self) -> None:
        self._stopping.set()

    def wake(self, source: str = "other") -> None:
        """Bring the next pass forward (called from monitor and watcher threads); ``source``
        (``node``, ``desired``) labels ``reconciler_wakeups_total``."""
        self.metrics.woke(source)
        self._dirty.set()
        if self._stopping.is_set() or self._in_pass.is_set():
            return  # the running pass sees _dirty and runs again
        # Not scheduled yet, or shut down already: the first pass reads everything anyway.
        with contextlib.suppress(JobLookupError, RuntimeError):
            self._scheduler.modify_job(RECONCILE_JOB, next_run_time=dt.datetime.now(dt.UTC))

    # -- jobs -------------------------------------------------------------------------------

    def _reconcile_job(self) -> None:
        # Loop while wakes arrived during the pass: APScheduler skips a run that would overlap.
        # ``_in_pass`` is cleared *before* ``_dirty`` is read, and ``wake`` sets ``_dirty``
        # *before* reading ``_in_pass``, so a wake is never lost between the two.
        while not self._stopping.is_set():
            term = self.elector.term()
            if term is None:
                self._last_pass_at = time.monotonic()  # a standby ticks too (/healthz)
                return  # a standby: the leader acts; _elected wakes us when that changes
            if term != self._term:
                self.controller.reset()  # another controller wrote the tables meanwhile
                self._term = term
            may_act = functools.partial(self.elector.may_act, term)
            self._in_pass.set()
            self._dirty.clear()
            try:
                result = self.controller.reconcile(may_act=may_act)
            except store_mod.NotLeader as e:
                log.info("pass not recorded: %s", e)  # the new leader records what it finds
                self._last_pass_error = None
            except store_mod.DatabaseError as e:
                # The store logged "database unreachable" once; the next pass retries.
                log.debug("reconcile pass failed on the database", exc_info=True)
                self._last_pass_error = f"the last pass failed: {store_mod.reason(e)}"
            except Exception as e:
                log.exception("reconcile pass failed; the next one retries")
                self._last_pass_error = f"the last pass failed: {type(e).__name__}: {e}"
            else:
                self._last_pass_error = None
                self.metrics.observe_pass(
                    seconds=result.seconds,
                    outcomes=result.outcomes,
                    phases=self.controller.phase_counts(),
                )
            finally:
                self.passes += 1
                self._last_pass_at = time.monotonic()
                self._in_pass.clear()
            if not self._dirty.is_set():
                self._wake_for_retries()
                return

    def _wake_for_retries(self) -> None:
        """Note when the next backing-off row may be retried, if that comes before the next
        interval tick; the main thread wakes the loop then. (Not a scheduler job: the pass runs
        in a scheduler thread, and adding a job from there deadlocks with a shutdown that holds
        the scheduler's lock while it waits for that very thread.)"""
        due = self.controller.next_retry_at()
        if due is not None and due - time.time() < self._settings.reconcile_interval:
            self._retry_due = due + 0.05

    def _until_retry(self, *, limit: float) -> float:
        due = self._retry_due
        return limit if due is None else max(0.0, min(limit, due - time.time()))

    def _trim_events(self) -> None:
        try:
            trimmed = self.store.trim_events(
                keep=self._settings.events_kept,
                older_than=parse_duration(self._settings.events_retention) or None,
            )
        except (store_mod.DatabaseError, store_mod.NotLeader):
            return  # reported by the store (or a standby: the leader trims); the next run trims
        if trimmed:
            log.debug("trimmed %d old events", trimmed)

    # -- HTTP endpoints ---------------------------------------------------------------------

    def _leads(self) -> bool:
        return self.is_leader

    @property
    def http_address(self) -> str | None:
        """``host:port`` serving /metrics, /healthz and /readyz, or None."""
        return self._endpoints.address if self._endpoints is not None else None

    def _serve_endpoints(self) -> None:
        if not self._settings.http:
            return
        server = endpoints.Server(
            address=self._settings.http, metrics=self.metrics, live=self._live, ready=self._ready
        )
        try:
            server.start()
        except OSError as e:
            # Metrics are not worth refusing to converge the fleet: say so and go on.
            log.warning("cannot serve /metrics on %s: %s; going on without", self._settings.http, e)
            return
        self._endpoints = server
        log.info("serving /metrics, /healthz and /readyz on http://%s", server.address)

    def _live(self) -> tuple[bool, str]:
        """/healthz: a pass finished (or the daemon started) within 3 intervals."""
        limit = 3 * self._settings.reconcile_interval
        age = time.monotonic() - self._last_pass_at
        if age > limit:
            return False, f"no pass has finished for {age:.1f}s (more than 3 intervals, {limit:g}s)"
        return True, f"ok: the last pass finished {age:.1f}s ago"

    def _ready(self) -> tuple[bool, str]:
        """/readyz: the database answers and the last pass succeeded."""
        try:
            self.store.ping()
        except store_mod.DatabaseError as e:
            return False, f"database unreachable: {store_mod.reason(e)}"
        if not self._leads():
            return True, "ok: standing by (another controller holds the lease)"
        if self._last_pass_error is not None:
            return False, self._last_pass_error
        return True, "ok"

    # -- shutdown ---------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # tests run the daemon in a thread and call stop()

        def handle(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s: finishing in-flight work", signal.Signals(signum).name)
            self._stopping.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def _shutdown(self) -> None:
        started = time.monotonic()
        self.controller.close()  # drops queued actions, waits for in-flight Docker calls
        self._scheduler.shutdown(wait=True)  # the running pass records what it did
        # Nothing acts any more: release the lease now (a standby takes over within one retry
        # period), before the slower closing of the watcher and the nodes.
        self.elector.stop(release=True)
        self._watcher.stop()
        self.cluster.stop()
        if self._endpoints is not None:
            self._endpoints.stop()
        log.info("reconciler stopped in %.1fs", time.monotonic() - started)
