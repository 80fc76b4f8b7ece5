"""The nodes' worker pool: many jobs on few threads, each job's steps one at a time, wakes."""

from __future__ import annotations

import threading
import time

from waiting import wait_for

from reconciler.nodes import workers


class _Job:
    def __init__(self, name: str, *, period: float, work: float = 0.0) -> None:
        self.name = name
        self.period = period
        self.work = work
        self.steps = 0
        self.overlaps = 0
        self._inside = False
        self._lock = threading.Lock()

    @property
    def inside(self) -> bool:
        return self._inside

    def step(self) -> float:
        with self._lock:
            if self._inside:
                self.overlaps += 1
            self._inside = True
        time.sleep(self.work)
        self.steps += 1
        with self._lock:
            self._inside = False
        return time.monotonic() + self.period


def test_many_jobs_run_at_their_deadlines_on_a_bounded_number_of_threads() -> None:
    pool = workers.WorkerPool(max_threads=8, name="test-pool")
    jobs = [_Job(f"j{i}", period=0.1, work=0.001) for i in range(300)]
    for job in jobs:
        pool.add(job)
    try:
        wait_for(lambda: min(j.steps for j in jobs) >= 5, timeout=10, message="5 steps each")
        assert pool.peak_threads <= 8
        assert all(j.overlaps == 0 for j in jobs), "a job's steps never overlap"
    finally:
        for job in jobs:
            pool.remove(job)


def test_a_wake_brings_a_step_forward_and_a_wake_during_a_step_runs_it_again() -> None:
    pool = workers.WorkerPool(max_threads=2, name="test-pool")
    job = _Job("slow", period=3600, work=0.2)
    pool.add(job)
    try:
        wait_for(lambda: job.steps == 1, timeout=5, message="first step")
        started = time.monotonic()
        pool.wake(job)
        wait_for(lambda: job.steps == 2, timeout=2, message="woken step")
        assert time.monotonic() - started < 1.0
        pool.wake(job)
        wait_for(lambda: job.inside, timeout=2, message="the third step under way")
        pool.wake(job)  # …and this wake is kept for after it
        wait_for(lambda: job.steps == 4, timeout=3, message="the kept wake")
        assert job.overlaps == 0
    finally:
        pool.remove(job)


def test_a_removed_job_is_not_called_again() -> None:
    pool = workers.WorkerPool(max_threads=2, name="test-pool")
    job = _Job("gone", period=0.02)
    pool.add(job)
    wait_for(lambda: job.steps >= 2, timeout=5, message="running")
    pool.remove(job)
    wait_for(lambda: not job.inside, timeout=2, message="a step under way finished")
    steps = job.steps
    time.sleep(0.3)  # an absence: ten periods in which nothing may happen
    assert job.steps == steps
