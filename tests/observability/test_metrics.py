"""``/metrics`` of a prefork worker: counts that add up across pool processes and restarts."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TEST_ENV, purge_queues, queue_key
from tests.support.http import http_get
from tests.support.ports import free_port
from tests.support.processes import running, start_worker_process
from tests.support.smtp_server import SmtpServer
from tests.support.waiting import wait_for


def scrape(port: int) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of a ``/metrics`` page: name, labels, value."""
    status, body = http_get(port, "/metrics")
    assert status == 200
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    ]


def total(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels``."""
    return sum(
        value
        for sample, found, value in samples
        if sample == name and labels.items() <= found.items()
    )


@pytest.mark.slow
def test_counts_add_up_across_pool_processes_that_restart_mid_burst(
    smtp: SmtpServer, redis_client, celery_app, tmp_path: Path
) -> None:
    from email_worker.tasks import send_email, send_welcome_email

    purge_queues(redis_client)
    per_kind = 6
    for i in range(per_kind):
        send_email.delay(to="ann@example.com", subject=f"Plain {i}", text="Hello")
        send_welcome_email.delay(
            to="bob@example.com",
            data={"user_name": "Bob", "product_name": "Example", "login_url": "https://x.test/"},
        )
    port, directory = free_port(), tmp_path / "metrics"
    worker = start_worker_process(
        tmp_path / "worker.log",
        "--max-tasks-per-child=2",
        env={
            "SERVER_PORT": str(port),
            "SERVER_HOST": "127.0.0.1",
            "PROMETHEUS_MULTIPROC_DIR": str(directory),
        },
    )
    with running(worker):
        received = smtp.wait_for(2 * per_kind, timeout=60)
        sent = "email_jobs_processed_total"
        samples = wait_for(
            lambda: (s := scrape(port)) and total(s, sent, outcome="sent") >= 2 * per_kind and s,
            "every send counted",
        )
    subjects = Counter(
        "plain" if r.message["Subject"].startswith("Plain") else "welcome" for r in received
    )
    assert subjects == {"plain": per_kind, "welcome": per_kind}
    assert total(samples, sent, outcome="sent") == 2 * per_kind
    assert total(samples, sent, kind="email", outcome="sent") == subjects["plain"]
    assert total(samples, sent, kind="welcome_email", outcome="sent") == subjects["welcome"]
    assert (
        total(samples, sent, kind="email", provider="smtp", queue=queue_key("default")) == per_kind
    )
    assert total(samples, "email_job_processing_duration_seconds_count", outcome="sent") == 12
    assert total(samples, "email_provider_requests_total", provider="smtp", outcome="ok") == 12
    assert total(samples, "email_worker_up") == 1
    # Six pool processes at least wrote counts: each ran two tasks, then was replaced.
    assert len(list(directory.glob("counter_*.db"))) >= 6


@pytest.mark.slow
def test_queue_size_counts_waiting_messages_of_every_priority_queue(
    redis_client, celery_app, tmp_path: Path
) -> None:
    from email_worker.tasks import send_email

    purge_queues(redis_client)
    port = free_port()
    # A worker that consumes another queue: it serves /metrics and leaves the emails waiting.
    worker = start_worker_process(
        tmp_path / "worker.log",
        "-Q",
        f"{TEST_ENV['QUEUE_NAME']}.elsewhere",
        env={"SERVER_PORT": str(port), "SERVER_HOST": "127.0.0.1"},
    )
    try:
        for _ in range(2):
            send_email.delay(to="ann@example.com", subject="Soon", text="x", priority="high")
        send_email.delay(to="ann@example.com", subject="Later", text="x", priority="low")
        # A message priority puts it in one of kombu's sub-queues of the default queue.
        send_email.apply_async(
            kwargs={"to": "ann@example.com", "subject": "S", "text": "x"}, priority=6
        )
        assert redis_client.llen(f"{queue_key('default')}\x06\x166") == 1
        with running(worker):
            samples = wait_for(
                lambda: (s := scrape(port)) and total(s, "queue_size") == 4 and s, "queue sizes"
            )
        sizes = {labels["queue"]: value for name, labels, value in samples if name == "queue_size"}
        assert sizes == {
            queue_key("high"): 2,
            queue_key("default"): 1,
            queue_key("low"): 1,
            queue_key("periodic"): 0,
        }
    finally:
        purge_queues(redis_client)


# Every family of the metrics table in docs/operating.md, by the name its samples carry.
FAMILIES = {
    "email_jobs_processed_total",
    "email_jobs_queued_total",
    "email_jobs_tracked_total",
    "email_job_processing_duration_seconds_count",
    "email_provider_requests_total",
    "email_provider_errors_total",
    "email_job_retries_total",
    "email_replica_fallbacks_total",
    "email_jobs_stranded_total",
    "email_jobs_reaped_total",
    "email_jobs_oldest_due_age_seconds",
    "queue_size",
    "email_worker_up",
}


@pytest.mark.slow
@pytest.mark.parametrize(
    "pool",
    [
        pytest.param("prefork", id="prefork-multiprocess-files"),
        pytest.param("solo", id="solo-own-registry"),
    ],
)
def test_a_workers_first_scrape_has_every_family_at_zero(
    redis_client, celery_app, tmp_path: Path, pool: str
) -> None:
    port = free_port()
    worker = start_worker_process(
        tmp_path / "worker.log",
        f"--pool={pool}",
        env={"SERVER_PORT": str(port), "SERVER_HOST": "127.0.0.1"},
    )
    with running(worker):
        samples = wait_for(lambda: scrape(port), "a first scrape", log=tmp_path / "worker.log")
    assert {name for name, _, _ in samples} >= FAMILIES
    ours = [
        (name, labels, value)
        for name, labels, value in samples
        if name.startswith("email_") and name != "email_worker_up" and "_created" not in name
    ]
    assert ours and all(value == 0 for _, _, value in ours)

    def series(name: str, **labels: str) -> list[float]:
        return [v for n, found, v in ours if n == name and labels.items() <= found.items()]

    for queue in (queue_key("high"), queue_key("default"), queue_key("low")):
        for kind in ("email", "password_reset", "newsletter"):
            assert series("email_jobs_queued_total", kind=kind, queue=queue) == [0]
            for outcome in ("sent", "failed"):
                processed = series(
                    "email_jobs_processed_total",
                    kind=kind,
                    queue=queue,
                    provider="smtp",
                    outcome=outcome,
                )
                assert processed == [0]
    assert series("email_jobs_tracked_total", kind="email_verification") == [0]
    assert series("email_job_processing_duration_seconds_count", kind="email", outcome="sent")
    assert series("email_job_retries_total", kind="welcome_email", reason="transient") == [0]
    for outcome in ("ok", "transient", "permanent", "account", "rate_limited"):
        assert series("email_provider_requests_total", provider="smtp", outcome=outcome) == [0]
    for error in ("TransientProviderError", "PermanentProviderError", "AccountProviderError"):
        assert series("email_provider_errors_total", provider="smtp", kind_of_error=error) == [0]


@pytest.mark.slow
def test_each_outcome_of_an_attempt_is_counted_once_with_its_duration(
    smtp: SmtpServer, redis_client, celery_app, tmp_path: Path
) -> None:
    """Sent, failed and retried attempts, each in its series, each attempt timed once."""
    from email_worker.tasks import send_email

    purge_queues(redis_client)
    smtp.handler.refuse("later@example.com", "451 4.3.0 try again later")  # once, then taken
    smtp.handler.refuse("gone@example.com", "550 5.1.1 no such mailbox")
    for to in ("ann@example.com", "later@example.com", "gone@example.com"):
        send_email.delay(to=to, subject="Hello", text="Hello")
    port = free_port()
    worker = start_worker_process(
        tmp_path / "worker.log",
        env={
            "SERVER_PORT": str(port),
            "SERVER_HOST": "127.0.0.1",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        },
    )
    processed, duration = (
        "email_jobs_processed_total",
        "email_job_processing_duration_seconds_count",
    )
    with running(worker):
        received = smtp.wait_for(2, timeout=60)
        samples = wait_for(
            lambda: (
                (s := scrape(port))
                and total(s, processed, outcome="sent") >= 2
                and total(s, processed, outcome="failed") >= 1
                and s
            ),
            "the three emails counted",
        )
    assert sorted(r.recipients[0] for r in received) == ["ann@example.com", "later@example.com"]
    assert total(samples, processed, kind="email", provider="smtp", outcome="sent") == 2
    assert total(samples, processed, kind="email", provider="smtp", outcome="failed") == 1
    assert total(samples, "email_job_retries_total", kind="email", reason="transient") == 1
    # Four attempts: two sent, one retried, one failed; each timed once, under its outcome.
    assert total(samples, duration, kind="email", outcome="sent") == 2
    assert total(samples, duration, kind="email", outcome="retried") == 1
    assert total(samples, duration, kind="email", outcome="failed") == 1
    assert total(samples, duration) == 4
