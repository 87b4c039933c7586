"""A broker that refuses writes: Redis at ``maxmemory`` under the ``noeviction`` policy.

Redis then answers every command that could grow it (LPUSH, SET, a MULTI that adds to a
set) with ``OOM command not allowed``, while reads, PING and BRPOP still work. kombu
treats that answer as a channel error: its timers log it every few seconds, and a
message taken by BRPOP whose unacknowledged copy cannot be written stops the worker.

:class:`Refusals` is what a process knows of it: since when writes are refused, and a
log line when that starts, once a minute while it lasts, and when it ends. The worker's
Redis transport (:mod:`email_worker.celeryapp.redis_transport`) stops taking messages
while it lasts; :class:`OncePerInterval` keeps beat's failed sends to one line a minute.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from email_worker.redis_client import OUT_OF_MEMORY

log = logging.getLogger(__name__)

# How often a refusal that goes on is logged again.
LOG_INTERVAL = 60.0


class Refusals:
    """Whether the broker refuses writes now, as this process last found."""

    def __init__(self, interval: float = LOG_INTERVAL) -> None:
        self.interval = interval
        self.since: float | None = None
        self._logged_at = 0.0
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        """Writes were refused and have not been accepted since."""
        return self.since is not None

    def refused(self, exc: BaseException, doing: str) -> None:
        """A write was refused while ``doing``: log it when new, and once an interval after."""
        with self._lock:
            now = time.monotonic()
            if self.since is None:
                self.since = now
                self._logged_at = now
                log.warning(
                    f"{OUT_OF_MEMORY}: Redis refuses writes (maxmemory); not taking new "
                    "messages, and what this worker holds stays unacknowledged in Redis",
                    extra={"while": doing, "error": str(exc)[:200]},
                )
            elif now - self._logged_at >= self.interval:
                self._logged_at = now
                log.warning(
                    f"{OUT_OF_MEMORY}: Redis still refuses writes",
                    extra={"seconds": round(now - self.since), "while": doing},
                )

    def accepted(self) -> None:
        """A write went through: log the end of a refusal."""
        with self._lock:
            if self.since is None:
                return
            seconds = time.monotonic() - self.since
            self.since = None
            log.warning(
                "broker accepts writes again; taking messages",
                extra={"seconds": round(seconds, 1)},
            )


class OncePerInterval(logging.Filter):
    """Lets one record starting with ``prefix`` through per interval; counts the others.

    Celery's beat logs "Message Error: Couldn't apply scheduled task ..." with a stack for
    every send the broker refuses: every second for the dispatcher while Redis is full.
    """

    def __init__(self, prefix: str, interval: float = LOG_INTERVAL) -> None:
        super().__init__()
        self.prefix = prefix
        self.interval = interval
        self._last = -interval
        self._dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether ``record`` is logged."""
        if not str(record.msg).startswith(self.prefix):
            return True
        now = time.monotonic()
        if now - self._last < self.interval:
            self._dropped += 1
            return False
        if self._dropped:
            record.msg = f"{record.msg}\n({self._dropped} more like it not logged)"
        self._last, self._dropped = now, 0
        return True


def quiet_beat_send_errors(beat_logger: Any = None) -> OncePerInterval:
    """Log beat's refused sends once a minute (installed when beat starts)."""
    target = beat_logger or logging.getLogger("celery.beat")
    for existing in target.filters:
        if isinstance(existing, OncePerInterval):
            return existing
    once = OncePerInterval("Message Error")
    target.addFilter(once)
    return once
