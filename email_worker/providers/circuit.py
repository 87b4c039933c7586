"""A circuit breaker per provider, shared by every worker process through Redis.

Consecutive transient failures of a provider are counted across all processes and
hosts.  After ``PROVIDER_CIRCUIT_FAILURES`` of them in a row the circuit opens for
``PROVIDER_CIRCUIT_RESET`` seconds: sends skip the provider and go to the next one
in the failover chain.  Then it is half-open: one process (the one that wins a
``SET NX``) sends a trial message; its success closes the circuit and resets the
count, its failure opens it again.  A trial whose result never comes (its worker
died) is handed to another process after ``PROVIDER_CIRCUIT_RESET`` seconds.

Keys: ``email-worker:circuit:<provider>:failures``, ``:open_until``, ``:trial`` and
``:last_error``; they expire a day after the last failure.  Time is the Redis
server's, so hosts with drifting clocks agree.

Redis unreachable: the circuit lets every send through (the provider's own errors
still fail or retry each send) and :meth:`Circuit.state` reports ``unknown``.
"""

from __future__ import annotations

import math
import os
import threading
from datetime import UTC, datetime
from typing import Any

import redis

from email_worker.config import Settings
from email_worker.policy.rate_limit import outage_of, shared_redis_client
from email_worker.privacy import redact_text

KEY_PREFIX = "email-worker:circuit:"
KEEP_KEYS_FOR = 86400
ERROR_TEXT_LIMIT = 300

# KEYS: open_until, trial.  ARGV: trial lease (ms).  Returns 1 to let the send through.
_ALLOWS = """
local open_until = tonumber(redis.call('GET', KEYS[1]))
if not open_until then return 1 end
local clock = redis.call('TIME')
if tonumber(clock[1]) + tonumber(clock[2]) / 1000000 < open_until then return 0 end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then return 1 end
return 0
"""

# KEYS: failures, open_until, trial, last_error.
# ARGV: failures that open, seconds open, key expiry (s), error text.
_RECORD_FAILURE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local failures = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('HSET', KEYS[4], 'text', ARGV[4], 'at', string.format('%.6f', now))
redis.call('EXPIRE', KEYS[4], ARGV[3])
if failures >= tonumber(ARGV[1]) then
  local open_until = tonumber(redis.call('GET', KEYS[2]))
  -- Failures of sends begun before the circuit opened do not prolong it.
  if not open_until or open_until <= now then
    redis.call('SET', KEYS[2], string.format('%.6f', now + tonumber(ARGV[2])), 'EX', ARGV[3])
    redis.call('DEL', KEYS[3])
  end
end
return failures
"""


def _iso(timestamp: bytes | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(float(timestamp), UTC).isoformat(timespec="milliseconds")


class Circuit:
    """Whether a provider may be tried, from its recent failures in every process."""

    def __init__(
        self,
        client: redis.Redis,
        provider: str,
        failures: int,
        reset_after: float,
        namespace: str = "",
    ) -> None:
        if not provider:
            raise ValueError("a circuit needs a provider name")
        if failures < 1:
            raise ValueError(f"failures must be at least 1, got {failures!r}")
        if not reset_after > 0 or math.isinf(reset_after):
            raise ValueError(
                f"reset_after must be a positive number of seconds, got {reset_after!r}"
            )
        self.provider, self.failures, self.reset_after = provider, failures, reset_after
        # The namespace (QUEUE_NAME) keeps deployments sharing one Redis apart.
        prefix = f"{KEY_PREFIX}{namespace}:{provider}:" if namespace else f"{KEY_PREFIX}{provider}:"
        self._failures_key = prefix + "failures"
        self._open_until_key = prefix + "open_until"
        self._trial_key = prefix + "trial"
        self._last_error_key = prefix + "last_error"
        self._keep_for = math.ceil(reset_after) + KEEP_KEYS_FOR
        self._client = client
        self._outage = outage_of(client)
        self._allows = client.register_script(_ALLOWS)
        self._record_failure = client.register_script(_RECORD_FAILURE)

    def allows(self) -> bool:
        """Whether a send may go to this provider now (at most one trial when half-open)."""
        if self._outage.skipping():
            return True
        try:
            lease_ms = math.ceil(self.reset_after * 1000)
            return bool(self._allows(keys=[self._open_until_key, self._trial_key], args=[lease_ms]))
        except redis.RedisError as exc:
            self._outage.failed(f"circuit of {self.provider!r} is not checked", exc)
            return True

    def record_success(self) -> None:
        """Close the circuit and reset the count of consecutive failures."""
        if self._outage.skipping():
            return
        try:
            self._client.delete(self._failures_key, self._open_until_key, self._trial_key)
        except redis.RedisError as exc:
            self._outage.failed(f"circuit of {self.provider!r} is not updated", exc)

    def record_failure(self, error_text: str) -> None:
        """Count a transient failure (its text already masked); open after enough in a row."""
        if self._outage.skipping():
            return
        # The text is shown by the health endpoint: mask any address the caller missed.
        text = redact_text(error_text)[:ERROR_TEXT_LIMIT]
        keys = [self._failures_key, self._open_until_key, self._trial_key, self._last_error_key]
        try:
            self._record_failure(
                keys=keys, args=[self.failures, self.reset_after, self._keep_for, text]
            )
        except redis.RedisError as exc:
            self._outage.failed(f"circuit of {self.provider!r} is not updated", exc)

    def state(self) -> dict[str, Any]:
        """The circuit as the health endpoint shows it; reads Redis only."""
        if self._outage.skipping():
            return {"state": "unknown"}
        try:
            with self._client.pipeline(transaction=False) as pipe:
                pipe.time()
                pipe.get(self._failures_key)
                pipe.get(self._open_until_key)
                pipe.hmget(self._last_error_key, ["text", "at"])
                (seconds, micros), failures, open_until, (text, at) = pipe.execute()
        except redis.RedisError as exc:
            self._outage.failed(f"circuit of {self.provider!r} is not checked", exc)
            return {"state": "unknown"}
        if open_until is None:
            state = "closed"
        elif seconds + micros / 1_000_000 < float(open_until):
            state = "open"
        else:
            state = "half_open"
        return {
            "state": state,
            "consecutive_failures": int(failures or 0),
            "last_error": None if text is None else text.decode("utf-8", "replace"),
            "last_error_at": _iso(at),
            "opens_until": _iso(open_until),
        }


_circuits: dict[tuple[str, int, float, str, int], Circuit] = {}
_lock = threading.Lock()


def circuit_for(provider: str, settings: Settings) -> Circuit:
    """This process's circuit for a provider, per PROVIDER_CIRCUIT_FAILURES and _RESET."""
    client = shared_redis_client(settings)
    key = (
        provider,
        settings.circuit_failures,
        settings.circuit_reset,
        settings.queue_name,
        id(client),
    )
    with _lock:
        if key not in _circuits:
            _circuits[key] = Circuit(
                client,
                provider,
                settings.circuit_failures,
                settings.circuit_reset,
                namespace=settings.queue_name,
            )
        return _circuits[key]


def _forget_after_fork() -> None:
    # A forked child must not share the parent's sockets: it opens its own.
    global _lock
    _circuits.clear()
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
