"""Settings: every knob of the daemon and the CLI in one frozen value.

The CLI builds one ``Settings`` from its options and environment variables and hands it down;
nothing below the CLI reads the environment. Each field carries its default and a docstring that
says what it governs, so ``Settings`` is also the reference of what can be tuned. Stdlib only, so
every layer may import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LogFormat = Literal["text", "json"]


@dataclass(frozen=True, kw_only=True)
class Settings:
    database_url: str = "sqlite:///reconciler.db"
    """Where the desired rows and the status live (SQLAlchemy URL). ``postgresql://`` means
    psycopg 3. Set by ``--database-url`` / ``RECONCILER_DATABASE_URL``."""

    reconcile_interval: float = 10.0
    """Seconds between two reconcile passes when nothing wakes the loop earlier."""

    refresh_interval: float = 30.0
    """Seconds between two forced full refreshes of one node (randomised a little per node)."""

    failure_threshold: int = 3
    """Consecutive failed calls after which a node is marked ``unhealthy``."""

    backoff_cap: float = 10.0
    """Upper bound, in seconds, of the exponential backoff between reconnects to an unhealthy
    node and between retries of a failing container."""

    max_actions_per_node: int = 4
    """How many Docker actions (create, start, stop, remove) run at once on one node."""

    docker_timeout: float = 10.0
    """Seconds any single Docker API call may take before it counts as a failure."""

    events_kept: int = 10_000
    """How many rows the ``events`` table keeps; older ones are trimmed."""

    log_format: LogFormat = "text"
    """``text`` for people, ``json`` (one object per line) for log collectors."""

    watch_interval: float = 0.05
    """Seconds between two looks at SQLite's ``PRAGMA data_version`` (PostgreSQL uses
    ``LISTEN`` and is told at once)."""

    row_backoff_cap: float = 60.0
    """Upper bound, in seconds, of the backoff between retries of one failing row."""

    retries_per_second: float = 5.0
    """Global budget for retrying failing rows, so a storm of bad rows cannot hammer the
    engines; first attempts are never limited."""

    retry_burst: float = 20.0
    """How many retries may go at once before ``retries_per_second`` applies."""

    def __post_init__(self) -> None:
        for name in ("reconcile_interval", "refresh_interval", "backoff_cap", "docker_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("failure_threshold", "max_actions_per_node", "events_kept"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.log_format not in ("text", "json"):
            raise ValueError(f"log_format must be 'text' or 'json', got {self.log_format!r}")
