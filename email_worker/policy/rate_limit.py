"""A per-provider send rate shared by every worker process on every host, kept in Redis.

Each provider with a rate limit (``SENDGRID_RATE_LIMIT``, ``SES_RATE_LIMIT``,
``SMTP_RATE_LIMIT``, in emails per second) has one token bucket in Redis under
``email-worker:ratelimit:<provider>``.  One Lua script refills and takes a token
atomically, with the time of the Redis server, so neither a prefork pool nor many
hosts with drifting clocks can send faster than the limit.  The bucket holds one
second's worth of tokens (at least one): after a quiet spell that many go out at
once, then the rate holds.  An idle bucket expires once it would be full again.

:meth:`RateLimiter.acquire` never waits: it takes a token and returns ``0.0``, or
returns the seconds until a token will be free, and the caller schedules the send
again that much later.

Priorities: the last tenth of the bucket (at least one token) is kept for ``high``.
``default`` and ``low`` take a token only while more than that reserve remains,
``high`` may take the last ones, so a flood of newsletters cannot make a password
reset wait for the whole backlog.  A bucket of a single token (a rate of one per
second or less) keeps no reserve.

Redis unreachable: the limit is not enforced (``acquire`` returns ``0.0``) and a
warning is logged at most once a minute.  A Redis that is down must not stop email;
the broker is usually that same Redis, so the worker has bigger problems to report.
After a failed call this process leaves that Redis alone for a few seconds, so a
Redis that hangs costs one timeout, not one per email.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import weakref

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from email_worker.config import Settings
from email_worker.privacy import redact_text
from email_worker.redis_client import redis_client, redis_url

log = logging.getLogger(__name__)

KEY_PREFIX = "email-worker:ratelimit:"
SOCKET_TIMEOUT = 1.0
"""Seconds a call to Redis may take: the limiter sits on every send's path."""
PAUSE_AFTER_FAILURE = 5.0
"""Seconds this process skips a Redis that just failed (sending without it meanwhile)."""
WARN_EVERY = 60.0
BOOKING_GRACE_MS = 600_000
"""How long a booked token is kept past its time for the email that booked it."""
PRIORITIES = ("high", "default", "low")

# A generic cell rate algorithm (GCRA): the bucket is a "theoretical arrival time"
# counting every token taken or booked (tat), and one counting only those taken at
# once (tat_now): high priority is measured against the latter, so it is not queued
# behind tokens that default and low sends have booked ahead.  KEYS[1]: the bucket; KEYS[2]: the
# caller's booking.  ARGV: interval (1/rate), tolerance (burst), reserve (seconds of
# tolerance kept for high), high (0/1), book (0/1), bucket expiry (ms), booking grace (ms).
# Returns the seconds to wait as a string (Lua numbers reach the client as integers).
_TAKE_TOKEN = """
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local reserve = tonumber(ARGV[3])
local high = ARGV[4] == '1'
local book = ARGV[5] == '1'
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
if book then
  local due = tonumber(redis.call('GET', KEYS[2]))
  if due then
    if due <= now + 0.002 then
      redis.call('DEL', KEYS[2])
      return '0'
    end
    return string.format('%.6f', due - now)
  end
end
local state = redis.call('HMGET', KEYS[1], 'tat', 'tat_now')
local tat = math.max(tonumber(state[1]) or now, now)
local tat_now = math.max(tonumber(state[2]) or now, now)
local mine = tat
local slack = tolerance - reserve
if high then
  mine = tat_now
  slack = tolerance
end
local wait = math.max(0, mine - slack - now)
if wait > 0 and not book then
  return string.format('%.6f', wait)
end
if wait == 0 or high then
  tat_now = math.max(tat_now, mine) + interval
end
tat = tat + interval
redis.call('HSET', KEYS[1], 'tat', string.format('%.6f', tat),
           'tat_now', string.format('%.6f', tat_now))
redis.call('PEXPIRE', KEYS[1], math.ceil((tat - now) * 1000) + tonumber(ARGV[6]))
if wait > 0 then
  redis.call('SET', KEYS[2], string.format('%.6f', now + wait), 'PX',
             math.ceil(wait * 1000) + tonumber(ARGV[7]))
end
return string.format('%.6f', wait)
"""


def redis_client_from_settings(settings: Settings) -> redis.Redis:
    """A new Redis client for BROKER_URL when it is Redis, else for the REDIS_* settings.

    Through Sentinel, the retry after a connection error asks the Sentinels for the master,
    so a failover costs the calls made while no master answers (see :class:`RedisOutage`).
    """
    return redis_client(
        redis_url(settings),
        timeout=SOCKET_TIMEOUT,
        # One immediate retry replaces a connection the server closed while idle;
        # redis-py's default of ten with backoff would hold a send for seconds.
        retry=Retry(NoBackoff(), 1),
        settings=settings,
    )


_clients: dict[str, redis.Redis] = {}
_limiters: dict[tuple[str, float, str, str], RateLimiter] = {}
_lock = threading.Lock()


def shared_redis_client(settings: Settings) -> redis.Redis:
    """This process's one client for the Redis the settings name, created on first use."""
    url = redis_url(settings)
    with _lock:
        if url not in _clients:
            _clients[url] = redis_client_from_settings(settings)
        return _clients[url]


class RedisOutage:
    """What this process knows of one Redis failing: when to try it again, when to warn."""

    def __init__(self) -> None:
        self._retry_at = 0.0
        self._warned_at = -math.inf
        self._lock = threading.Lock()

    def skipping(self) -> bool:
        """Whether a recent failure says not to call this Redis yet."""
        return time.monotonic() < self._retry_at

    def failed(self, consequence: str, error: Exception) -> None:
        """Note a failed call; warn, at most once a minute, saying what goes unchecked."""
        now = time.monotonic()
        with self._lock:
            self._retry_at = now + PAUSE_AFTER_FAILURE
            if now - self._warned_at < WARN_EVERY:
                return
            self._warned_at = now
        log.warning(
            "Redis unreachable (%s: %s); %s until it answers",
            type(error).__name__,
            redact_text(str(error)),
            consequence,
        )


_outages: weakref.WeakKeyDictionary[redis.Redis, RedisOutage] = weakref.WeakKeyDictionary()


def outage_of(client: redis.Redis) -> RedisOutage:
    """The failure record of a Redis client, shared by every limiter and circuit using it."""
    with _lock:
        return _outages.setdefault(client, RedisOutage())


class RateLimiter:
    """A token bucket in Redis: ``rate`` tokens a second, up to ``burst`` stored."""

    def __init__(
        self, client: redis.Redis, name: str, rate: float, burst: float | None = None
    ) -> None:
        if not name:
            raise ValueError("a rate limiter needs a name")
        if not rate > 0 or math.isinf(rate):
            raise ValueError(f"rate must be a positive number of tokens a second, got {rate!r}")
        capacity = max(1.0, rate) if burst is None else burst
        if not capacity >= 1 or math.isinf(capacity):
            raise ValueError(f"burst must be at least 1 token, got {burst!r}")
        self.name, self.rate, self.capacity = name, float(rate), float(capacity)
        self.reserve = min(max(1.0, capacity / 10), capacity - 1)
        self.key = KEY_PREFIX + name
        # Once its arrival time has passed the bucket is full again: Redis may forget it
        # a second later.
        self._expiry_ms = 1000
        self._client = client
        self._outage = outage_of(client)
        self._take = client.register_script(_TAKE_TOKEN)

    def acquire(self, priority: str = "default", booking: str | None = None) -> float:
        """Take a token and return 0.0, or return the seconds until one will be free.

        With ``booking`` (the task or job id) a caller that must wait books the token it
        will get, and the same call after the wait takes it at once: an email waiting
        for a token is scheduled again once, not once per try.
        """
        if priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}, got {priority!r}")
        if self._outage.skipping():
            return 0.0
        high = priority == "high"
        args = [
            1.0 / self.rate,
            (self.capacity - 1) / self.rate,
            0.0 if high else self.reserve / self.rate,
            int(high),
            int(booking is not None),
            self._expiry_ms,
            BOOKING_GRACE_MS,
        ]
        try:
            wait = self._take(keys=[self.key, f"{self.key}:booked:{booking}"], args=args)
        except redis.RedisError as exc:
            self._outage.failed(f"rate limit {self.name!r} is not enforced", exc)
            return 0.0
        return float(wait)


def limiter_for(provider: str, settings: Settings) -> RateLimiter | None:
    """This process's limiter for a provider, or None when the provider has no limit."""
    rate = settings.rate_limit(provider)
    if rate <= 0:
        return None
    key = (provider, rate, redis_url(settings), settings.queue_name)
    with _lock:
        limiter = _limiters.get(key)
    if limiter is None:
        # Named after QUEUE_NAME too: deployments sharing one Redis keep their own limits.
        name = f"{settings.queue_name}:{provider}"
        limiter = RateLimiter(shared_redis_client(settings), name, rate)
        with _lock:
            limiter = _limiters.setdefault(key, limiter)
    return limiter


def _forget_after_fork() -> None:
    # A forked child must not share the parent's sockets: it opens its own.
    global _lock
    _clients.clear()
    _limiters.clear()
    _outages.clear()
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
