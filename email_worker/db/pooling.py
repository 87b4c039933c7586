"""What every pool of database connections keeps to, SQLAlchemy's engines and psycopg's own.

The engines (:mod:`email_worker.db.engines`) and the direct connections of
:mod:`email_worker.db.direct` size their pools by the same settings, and their reads fall
back from the replica to the primary by the same :class:`ReplicaHealth`: one per process,
so a replica found down by either is skipped by both for the retry interval, and every
fallback is counted once. Nothing here imports SQLAlchemy.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from email_worker.observability import metrics

if TYPE_CHECKING:
    from email_worker.config import Settings

# The routing session's logger, where operators have always found these lines.
log = logging.getLogger("email_worker.db.session")

DEFAULT_RETRY_INTERVAL = 30.0


def pool_size(settings: Settings) -> int:
    """How many connections stay pooled: DB_MAX_IDLE_CONNS, within DB_MAX_OPEN_CONNS, at least 1."""
    return max(1, min(settings.db_max_idle_conns, settings.db_max_open_conns))


def max_lifetime(settings: Settings) -> float | None:
    """Seconds a connection may live before it is replaced (DB_CONN_MAX_LIFETIME; 0: no maximum)."""
    lifetime = settings.db_conn_max_lifetime
    return lifetime if lifetime > 0 else None


def first_line(error: BaseException) -> str:
    """What a database error says, on one line (the driver's error when SQLAlchemy wraps one)."""
    cause = getattr(error, "orig", None) or error
    text = str(cause).strip()
    return text.splitlines()[0] if text else type(error).__name__


class ReplicaHealth:
    """Whether reads may try the replica, and how many reads fell back to the primary."""

    def __init__(
        self,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.retry_interval = retry_interval
        self.replica_fallbacks = 0
        self._clock = clock
        self._down_until: float | None = None
        self._lock = threading.Lock()

    @property
    def replica_available(self) -> bool:
        """False while reads skip a replica that could not be reached."""
        down_until = self._down_until
        return down_until is None or self._clock() >= down_until

    def record_fallback(self) -> None:
        """Count one read served by the primary because the replica was unavailable."""
        with self._lock:
            self.replica_fallbacks += 1
        metrics.count_replica_fallback()

    def mark_down(self, replica: str, error: BaseException) -> None:
        """Skip the replica (named with no password) for the retry interval; log once an outage."""
        with self._lock:
            newly_down = self._down_until is None
            self._down_until = self._clock() + self.retry_interval
        if newly_down:
            log.warning(
                "replica %s unreachable, reading from the primary; retrying in %gs: %s",
                replica,
                self.retry_interval,
                first_line(error),
            )

    def mark_up(self, replica: str) -> None:
        """Note that the replica answered again."""
        if self._down_until is None:
            return
        with self._lock:
            was_down, self._down_until = self._down_until is not None, None
        if was_down:
            log.info("replica %s reachable again", replica)


_process_health: ReplicaHealth | None = None


def process_replica_health() -> ReplicaHealth:
    """The replica health shared by this process's reads (DB_REPLICA_RETRY_INTERVAL)."""
    global _process_health
    if _process_health is None:
        from email_worker.config import get_settings

        _process_health = ReplicaHealth(get_settings().db_replica_retry_interval)
    return _process_health
