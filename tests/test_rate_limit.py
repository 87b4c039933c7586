"""The per-provider rate limit: a token bucket in the real Redis, shared by processes."""

from __future__ import annotations

import logging
import multiprocessing
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

import pytest
import redis

from email_worker.config import Secret, Settings
from email_worker.policy.rate_limit import (
    RateLimiter,
    limiter_for,
    redis_client_from_settings,
    shared_redis_client,
)
from tests.support.ports import free_port

LOCAL_REDIS = Settings(redis_host="127.0.0.1", redis_port=6379)


@pytest.fixture
def bucket(redis_client: redis.Redis) -> Iterator[str]:
    """A bucket name no other test uses; its key is removed afterwards."""
    name = f"test-{uuid.uuid4().hex}"
    yield name
    redis_client.delete(f"email-worker:ratelimit:{name}")


def limiter(name: str, rate: float, burst: float | None = None) -> RateLimiter:
    return RateLimiter(shared_redis_client(LOCAL_REDIS), name, rate, burst)


def take_all(limiter: RateLimiter, priority: str = "default") -> int:
    """Take tokens until the bucket refuses one; return how many were taken."""
    taken = 0
    while limiter.acquire(priority) == 0.0:
        taken += 1
    return taken


def send_until(limiter: RateLimiter, deadline: float) -> int:
    """Act as a worker: take a token, or wait as long as the limiter says; count the sends."""
    sent = 0
    while (now := time.time()) < deadline:
        wait = limiter.acquire()
        if wait == 0.0:
            sent += 1
        else:
            time.sleep(min(wait, deadline - now))
    return sent


def hammer(name: str, rate: float, start: float, seconds: float) -> int:
    """Run in a child process: wait for the common start, then send as fast as allowed."""
    time.sleep(max(0.0, start - time.time()))
    return send_until(limiter(name, rate), start + seconds)


def test_a_full_bucket_gives_one_seconds_worth_then_the_rate(bucket: str) -> None:
    bucket_of_50 = limiter(bucket, 50)
    # A tenth of the bucket (5 tokens) is kept for high priority; a few refill meanwhile.
    assert 45 <= take_all(bucket_of_50) <= 47
    assert 5 <= take_all(bucket_of_50, "high") <= 7
    assert 90 <= send_until(bucket_of_50, time.time() + 2) <= 110


def test_two_processes_together_stay_within_the_rate(bucket: str) -> None:
    start, seconds = time.time() + 1.0, 10
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(2, mp_context=context) as pool:
        futures = [pool.submit(hammer, bucket, 40, start, seconds) for _ in range(2)]
        counts = [future.result(timeout=seconds + 20) for future in futures]
    burst = 36  # a full bucket of 40, less the 4 kept for high priority
    assert 0.9 * 40 * seconds <= sum(counts) - burst <= 1.1 * 40 * seconds
    assert min(counts) > 100  # both processes got their share


def test_an_empty_bucket_says_how_long_to_wait(bucket: str) -> None:
    four_a_second = limiter(bucket, 4)
    assert take_all(four_a_second, "high") == 4
    wait = four_a_second.acquire("high")
    assert 0.2 < wait <= 0.25
    assert four_a_second.acquire("high") == pytest.approx(wait, abs=0.02)  # took nothing
    time.sleep(wait)
    assert four_a_second.acquire("high") == 0.0


def test_high_priority_still_gets_tokens_when_low_has_drained_the_bucket(bucket: str) -> None:
    bucket_of_20 = limiter(bucket, 20)
    assert 18 <= take_all(bucket_of_20, "low") <= 19
    assert bucket_of_20.acquire("low") > 0
    assert bucket_of_20.acquire("default") > 0
    assert bucket_of_20.acquire("high") == 0.0
    assert bucket_of_20.acquire("low") > 0
    assert bucket_of_20.acquire("high") == 0.0


def test_a_burst_can_be_set_apart_from_the_rate(bucket: str) -> None:
    slow_with_burst = limiter(bucket, 0.5, burst=10)
    assert take_all(slow_with_burst, "high") == 10
    assert 1.9 < slow_with_burst.acquire("high") <= 2.0


def test_an_idle_bucket_expires(bucket: str, redis_client: redis.Redis) -> None:
    limiter(bucket, 10).acquire()
    ttl = redis_client.pttl(f"email-worker:ratelimit:{bucket}")
    assert 1000 < ttl <= 2000  # refilled in one second; gone a second after that


def test_an_unreachable_redis_lets_sends_through_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed = Settings(redis_host="127.0.0.1", redis_port=free_port(), redis_password=Secret("pw-1"))
    unreachable = RateLimiter(redis_client_from_settings(closed), "sendgrid", 1)
    with caplog.at_level(logging.WARNING, logger="email_worker.policy.rate_limit"):
        started = time.monotonic()
        assert [unreachable.acquire() for _ in range(5)] == [0.0] * 5
    assert time.monotonic() - started < 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "Redis unreachable" in warnings[0] and "'sendgrid' is not enforced" in warnings[0]
    assert "pw-1" not in warnings[0]


def test_the_client_uses_a_redis_broker_url_else_the_redis_settings() -> None:
    from_broker = redis_client_from_settings(
        Settings(broker_url=Secret("redis://:p%40ss@127.0.0.1:6379/3"), redis_host="elsewhere")
    )
    kwargs = from_broker.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["password"]) == (
        "127.0.0.1",
        6379,
        3,
        "p@ss",
    )
    assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == 1.0
    from_settings = redis_client_from_settings(
        Settings(broker_url=Secret("amqp://guest@localhost//"), redis_host="127.0.0.1", redis_db=2)
    )
    assert from_settings.connection_pool.connection_kwargs["db"] == 2
    assert from_settings.ping()


def test_limiter_for_a_provider_follows_its_setting() -> None:
    settings = Settings(redis_host="127.0.0.1", sendgrid_rate_limit=12.5)
    sendgrid = limiter_for("sendgrid", settings)
    assert sendgrid is not None and sendgrid.rate == 12.5 and sendgrid.capacity == 12.5
    # Named after QUEUE_NAME too: the deployment.
    assert sendgrid.key == "email-worker:ratelimit:email-jobs:sendgrid"
    assert limiter_for("sendgrid", settings) is sendgrid
    assert limiter_for("ses", settings) is None  # SES_RATE_LIMIT 0: no limit
    assert limiter_for("outbox", settings) is None


@pytest.mark.parametrize(
    ("rate", "burst", "problem"),
    [(0, None, "rate must be"), (-1, None, "rate must be"), (5, 0.5, "burst must be")],
)
def test_a_bad_rate_or_burst_is_refused(rate: float, burst: float | None, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        limiter("never-used", rate, burst)


def test_an_unknown_priority_is_refused(bucket: str) -> None:
    with pytest.raises(
        ValueError, match="priority must be one of high, default, low, got 'urgent'"
    ):
        limiter(bucket, 5).acquire("urgent")


def test_a_waiting_send_books_its_token_and_takes_it_when_due(bucket: str) -> None:
    twenty_a_second = limiter(bucket, 20)
    dues = []
    for i in range(60):
        asked = time.monotonic()
        wait = twenty_a_second.acquire("default", booking=f"email-{i}")
        if wait > 0:
            dues.append(asked + wait)
    # Past the burst every email gets a slot of its own, 1/20 s after the one before:
    # none is told the same time, so none comes back to find its token taken.
    assert len(dues) >= 40
    assert all(b > a for a, b in zip(dues, dues[1:], strict=False))
    assert (dues[-1] - dues[0]) / (len(dues) - 1) == pytest.approx(0.05, abs=0.005)
    last = "email-59"
    left = dues[-1] - time.monotonic()
    assert twenty_a_second.acquire("default", booking=last) == pytest.approx(left, abs=0.1)
    time.sleep(max(0.0, dues[-1] - time.monotonic()) + 0.01)
    assert twenty_a_second.acquire("default", booking=last) == 0.0  # the booked token
    assert twenty_a_second.acquire("default", booking="a-new-email") > 0  # the rest are gone


def test_high_priority_is_not_queued_behind_booked_tokens(bucket: str) -> None:
    ten_a_second = limiter(bucket, 10)
    started = time.monotonic()
    for i in range(100):  # ten seconds of low-priority mail booked ahead
        ten_a_second.acquire("low", booking=f"newsletter-{i}")
    waited = ten_a_second.acquire("low", booking="one-more")
    # Its slot comes after the hundred booked from the first booking on: more than nine
    # seconds from then, less what booking them took on a busy machine.
    assert waited > 9 - (time.monotonic() - started)
    assert ten_a_second.acquire("high", booking="password-reset") == 0.0
