"""Leader election: one ``reconciler run`` among several acts; the others stand by.

Where this sits: the daemon starts one :class:`Elector` on its own thread. Every
``retry_period`` it renews the ``controller`` lease (leader) or tries to take it (standby), each
time in one database transaction on the database's clock (``db.leases``). Modelled on client-go's
``tools/leaderelection`` (lease 15 s, renew deadline 10 s, retry 2 s).

Fencing, so that a leader that stalls can never act beside the next one:

* **a term**: each time this process starts to lead it opens a new local term, tied to the
  lease generation it holds (``leases.transitions``). A pass plans under one :class:`Term`, and
  the executor asks :meth:`Elector.may_act` with that term before *each* Docker call;
* **a local deadline**: the term ends ``renew_deadline`` after the start of the last successful
  renewal, measured on this machine's monotonic clock (``CLOCK_BOOTTIME`` on Linux, which also
  counts a suspended VM). The database lets another controller take the lease only
  ``lease_duration`` after that renewal was stamped, later still: a leader that was paused
  (SIGSTOP, a long GC, a VM freeze) finds its term over when it resumes and does not make one
  more call planned before the pause, whether or not its elector thread has run yet;
* **the database**: controller-owned writes check the lease inside their own transaction
  (``Store.fence``), so a former leader cannot commit a status row after the takeover.

Losing the database is not fatal: renewals fail, the term ends at the deadline, and the
elector keeps trying every retry period; when the database is back, whoever gets the lease leads.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from reconciler.db import store as store_mod

log = logging.getLogger(__name__)


def _boottime() -> float:
    """Seconds on a clock that never goes back and keeps counting through a suspend."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


CLOCK: Callable[[], float] = _boottime if hasattr(time, "CLOCK_BOOTTIME") else time.monotonic


def default_identity() -> str:
    """``<hostname>:<pid>``: unique among the controllers of one database."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Term:
    """One stretch of leadership of this process: what a pass plans and acts under."""

    number: int
    generation: int


class Elector:
    """Acquires, renews and releases the lease; says whether this process may act now."""

    def __init__(
        self,
        *,
        store: store_mod.Store,
        identity: str,
        duration: float,
        renew_deadline: float,
        retry_period: float,
        on_elected: Callable[[], None] = lambda: None,
        on_lost: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = CLOCK,
    ) -> None:
        self._store = store
        self.identity = identity
        self._duration = duration
        self._renew_deadline = renew_deadline
        self._retry = retry_period
        self._on_elected = on_elected
        self._on_lost = on_lost
        self._clock = clock
        self._lock = threading.Lock()
        self._token: store_mod.LeaseToken | None = None  # the generation held, or last held
        self._leading = False
        self._term = 0
        self._deadline = -math.inf
        self._pending: list[store_mod.Event] = []  # "lost the lease" events not written yet
        self.holder: str | None = None
        """Who held the lease at the last attempt (this identity when leading)."""
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-elector", daemon=True)

    # -- what the daemon asks ------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        """This process holds the lease and may act now (its local deadline has not passed)."""
        with self._lock:
            return self._leading and self._clock() < self._deadline

    def term(self) -> Term | None:
        """The current term, or None when this process must not act."""
        with self._lock:
            if not (self._leading and self._clock() < self._deadline) or self._token is None:
                return None
            return Term(self._term, self._token.generation)

    def may_act(self, term: Term) -> bool:
        """May an action planned under ``term`` run now? Checked right before each Docker call."""
        with self._lock:
            return self._leading and self._term == term.number and self._clock() < self._deadline

    def token(self) -> store_mod.LeaseToken | None:
        """The lease token controller-owned writes are fenced with (``Store.fence``)."""
        with self._lock:
            if self._leading and self._clock() < self._deadline:
                return self._token
            return None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, *, release: bool = True) -> None:
        """Stop the elector; with ``release``, give the lease up (holder NULL) so a standby takes
        over within one retry period instead of a whole lease duration."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._retry + 15)
        with self._lock:
            token, was_leading = self._token, self._leading
            self._leading = False
            self._deadline = -math.inf
        if not release or token is None:
            return
        try:
            released = self._store.release_lease(token)
        except store_mod.DatabaseError:
            log.warning("could not release the lease: the database is unreachable")
            return
        if released:
            log.info("released the lease (generation %d)", token.generation)
        if was_leading:
            self._on_lost()

    def attempt(self) -> bool:
        """One acquire-or-renew now; True if this process leads afterwards."""
        started = self._clock()
        self._expire(started)
        with self._lock:
            generation = self._token.generation if self._token is not None else None
            pending, self._pending = self._pending, []
        try:
            state = self._store.acquire_lease(
                identity=self.identity,
                duration=self._duration,
                generation=generation,
                events=pending,
            )
        except store_mod.DatabaseError:
            # The store logged the outage once; the term ends at its deadline.
            with self._lock:
                self._pending = pending + self._pending
            return self.is_leader
        self._apply(state, started)
        return self.is_leader

    # -- internals -----------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.attempt()
            except Exception:
                log.exception("lease attempt failed; trying again")
            with self._lock:
                leading, deadline = self._leading, self._deadline
            wait = self._retry
            if leading:  # wake at the deadline too, so the loss is logged when it happens
                wait = max(0.0, min(wait, deadline - self._clock()))
            if self._stopping.wait(wait):
                return
            self._expire(self._clock())

    def _expire(self, now: float) -> None:
        with self._lock:
            if not self._leading or now < self._deadline:
                return
        self._lose(f"not renewed within {self._renew_deadline:g}s")

    def _apply(self, state: store_mod.LeaseState, started: float) -> None:
        held = state.held
        self.holder = state.holder
        if held is None:
            with self._lock:
                leading, self._token = self._leading, None
            if leading:
                self._lose(f"the lease is held by {state.holder or 'nobody'}")
            return
        with self._lock:
            previous = self._token
            new_term = not self._leading or previous is None or previous != held
            if new_term and self._leading:
                # Taken again under a new generation after it lapsed: the old term is over.
                self._leading = False
            if new_term:
                self._term += 1
            self._token = held
            self._leading = True
            self._deadline = started + self._renew_deadline
            term = self._term
        if new_term:
            how = "" if state.acquired else " again (the lease had not lapsed)"
            log.info(
                "became leader%s as %s (lease generation %d, term %d)",
                how,
                self.identity,
                held.generation,
                term,
            )
            self._on_elected()

    def _lose(self, why: str) -> None:
        with self._lock:
            if not self._leading:
                return
            self._leading = False
            self._deadline = -math.inf
            generation = self._token.generation if self._token is not None else None
            message = f"{self.identity} lost the lease (generation {generation}): {why}"
            self._pending.append(
                store_mod.Event("lease/controller", "LostLease", message, "Warning")
            )
        log.warning("lost the lease (generation %s): %s; acting stops now", generation, why)
        self._on_lost()
