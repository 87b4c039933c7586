"""The provider circuit breaker in the real Redis, shared by processes and threads."""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import redis

from email_worker.config import Settings
from email_worker.policy.rate_limit import redis_client_from_settings, shared_redis_client
from email_worker.providers.circuit import Circuit, circuit_for
from tests.support.ports import free_port

LOCAL_REDIS = Settings(redis_host="127.0.0.1", redis_port=6379)
RESET = 0.5


@pytest.fixture
def provider(redis_client: redis.Redis) -> Iterator[str]:
    """A provider name no other test uses; its keys are removed afterwards."""
    name = f"test-{uuid.uuid4().hex}"
    yield name
    for key in redis_client.scan_iter(f"email-worker:circuit:{name}:*"):
        redis_client.delete(key)


def circuit(provider: str, failures: int = 3) -> Circuit:
    return Circuit(shared_redis_client(LOCAL_REDIS), provider, failures, RESET)


def fail(provider: str, failures: int, times: int) -> None:
    """Run in a child process: record transient failures of the provider."""
    for _ in range(times):
        circuit(provider, failures).record_failure("SMTP DATA refused: 421 try later")


def in_processes(*calls: tuple[str, int, int]) -> None:
    with ProcessPoolExecutor(len(calls), mp_context=multiprocessing.get_context("fork")) as pool:
        for future in [pool.submit(fail, *call) for call in calls]:
            future.result(timeout=20)


def open_circuit(provider: str) -> Circuit:
    opened = circuit(provider)
    for _ in range(3):
        opened.record_failure("SendGrid answered 503")
    assert not opened.allows()
    return opened


def test_failures_from_several_processes_open_the_circuit(provider: str) -> None:
    in_processes((provider, 4, 2), (provider, 4, 1))
    shared = circuit(provider, 4)
    assert shared.allows()
    assert shared.state()["state"] == "closed"
    assert shared.state()["consecutive_failures"] == 3
    in_processes((provider, 4, 1))
    assert shared.state()["state"] == "open"
    assert not any(shared.allows() for _ in range(20))


def test_a_success_between_failures_resets_the_count(provider: str) -> None:
    flaky = circuit(provider)
    for _ in range(2):
        flaky.record_failure("timeout")
    flaky.record_success()
    for _ in range(2):
        flaky.record_failure("timeout")
    assert flaky.allows()
    assert flaky.state()["consecutive_failures"] == 2


def test_after_the_reset_time_exactly_one_trial_goes_through(provider: str) -> None:
    opened = open_circuit(provider)
    time.sleep(RESET)
    assert opened.state()["state"] == "half_open"
    askers = 12
    together = threading.Barrier(askers)

    def ask() -> bool:
        together.wait()
        return circuit(provider).allows()

    with ThreadPoolExecutor(askers) as pool:
        answers = list(pool.map(lambda _: ask(), range(askers)))
    assert answers.count(True) == 1


def test_a_successful_trial_closes_the_circuit(provider: str) -> None:
    opened = open_circuit(provider)
    time.sleep(RESET)
    assert opened.allows()
    opened.record_success()
    assert all(opened.allows() for _ in range(5))
    state = opened.state()
    assert state["state"] == "closed" and state["consecutive_failures"] == 0
    assert state["opens_until"] is None


def test_a_failed_trial_opens_the_circuit_again(provider: str) -> None:
    opened = open_circuit(provider)
    first_until = opened.state()["opens_until"]
    time.sleep(RESET)
    assert opened.allows()
    opened.record_failure("SendGrid answered 503")
    state = opened.state()
    assert state["state"] == "open" and state["consecutive_failures"] == 4
    assert state["opens_until"] > first_until
    assert not opened.allows()


def test_a_trial_never_reported_is_handed_on(provider: str) -> None:
    opened = open_circuit(provider)
    time.sleep(RESET)
    assert opened.allows()  # its worker then dies without a word
    assert not opened.allows()
    time.sleep(RESET + 0.05)  # Redis expires keys to the millisecond of its cached clock
    assert opened.allows()


def test_late_failures_do_not_prolong_an_open_circuit(provider: str) -> None:
    opened = open_circuit(provider)
    until = opened.state()["opens_until"]
    time.sleep(0.1)
    opened.record_failure("a send that began before the circuit opened")
    assert opened.state()["opens_until"] == until


def test_state_shows_the_last_error_and_until_when_it_is_open(provider: str) -> None:
    opened = circuit(provider)
    opened.record_failure("SMTP RCPT refused: 451 greylisted ann.lee@example.com " + "x" * 400)
    before = datetime.now(UTC)
    opened.record_failure("SMTP RCPT refused: 451 greylisted ann.lee@example.com " + "x" * 400)
    opened.record_failure("SendGrid answered 503 " + "y" * 400)
    state = opened.state()
    assert set(state) == {
        "state",
        "consecutive_failures",
        "last_error",
        "last_error_at",
        "opens_until",
    }
    assert state["state"] == "open" and state["consecutive_failures"] == 3
    assert state["last_error"] == ("SendGrid answered 503 " + "y" * 400)[:300]
    last_error_at = datetime.fromisoformat(state["last_error_at"])
    assert before - timedelta(seconds=1) < last_error_at < datetime.now(UTC) + timedelta(seconds=1)
    opens_until = datetime.fromisoformat(state["opens_until"])
    assert opens_until - last_error_at == timedelta(seconds=RESET)


def test_an_address_in_the_error_text_is_masked(provider: str) -> None:
    masked = circuit(provider)
    masked.record_failure("SMTP RCPT refused: 451 greylisted ann.lee@example.com")
    assert masked.state()["last_error"] == "SMTP RCPT refused: 451 greylisted a***@example.com"


def test_a_closed_circuit_has_nothing_to_report(provider: str) -> None:
    assert circuit(provider).state() == {
        "state": "closed",
        "consecutive_failures": 0,
        "last_error": None,
        "last_error_at": None,
        "opens_until": None,
    }


def unreachable(provider: str = "smtp") -> Circuit:
    closed_port = Settings(redis_host="127.0.0.1", redis_port=free_port())
    return Circuit(redis_client_from_settings(closed_port), provider, 1, RESET)


def test_an_unreachable_redis_lets_sends_through() -> None:
    assert unreachable().allows()
    assert unreachable().state() == {"state": "unknown"}
    blind = unreachable()
    blind.record_failure("SMTP DATA refused: 421 try later")
    blind.record_success()
    assert blind.allows()


def test_circuit_for_follows_the_settings(provider: str) -> None:
    settings = Settings(redis_host="127.0.0.1", circuit_failures=2, circuit_reset=7.0)
    shared = circuit_for(provider, settings)
    assert circuit_for(provider, settings) is shared
    assert (shared.failures, shared.reset_after) == (2, 7.0)
    shared.record_failure("timeout")
    shared.record_failure("timeout")
    assert not shared.allows()


@pytest.mark.parametrize(
    ("failures", "reset_after", "problem"),
    [(0, 1.0, "failures must be at least 1"), (3, 0.0, "reset_after must be a positive")],
)
def test_bad_thresholds_are_refused(failures: int, reset_after: float, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Circuit(shared_redis_client(LOCAL_REDIS), "smtp", failures, reset_after)
