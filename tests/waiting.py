"""Polling helper for tests: wait for a condition instead of sleeping a fixed time.

Import it as `from waiting import wait_for` or `from tests.waiting import wait_for` (conftest puts
both the repository root and `tests/` on sys.path), then for example
`wait_for(lambda: engine.ping(), timeout=10, message="engine answers")`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["wait_for"]

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str | None = None,
    *,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call `predicate` every `interval` seconds until it returns a truthy value; return it.

    Exceptions of the types in `ignore` count as a falsy result (and are shown as the last
    value). Raises AssertionError naming `message` and the last value after `timeout` seconds;
    the predicate is always called at least once, and once more at the deadline.
    """
    deadline = time.monotonic() + timeout
    what = message or getattr(predicate, "__qualname__", repr(predicate))
    while True:
        last_try = time.monotonic() >= deadline
        last: object
        try:
            result = predicate()
        except ignore as e:
            last = e
        else:
            if result:
                return result
            last = result
        if last_try:
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {what}; last value: {last!r}"
            )
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
