"""email-worker on RabbitMQ: real worker processes with ``BROKER_URL=amqp://...``, a
producer process of this package on the same broker, emails counted at the SMTP server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection

from email_worker.kinds import get_kind
from tests.support.jobs import stored
from tests.support.paths import ROOT
from tests.support.processes import running, start_worker_process
from tests.support.smtp_server import SmtpServer
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
DOMAIN = "mail.example.com"

PRODUCER = """
import json, sys
import email_worker.tasks
from email_worker.celeryapp.app import app

for line in sys.stdin:
    task, kwargs, options = json.loads(line)
    try:
        reply = {"id": app.tasks[task].apply_async(kwargs=kwargs, **options).id}
    except Exception as exc:
        reply = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(reply), flush=True)
"""


class Producer:
    """A service that uses this package to send email: its own process, settings and broker."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", PRODUCER],
            cwd=ROOT,
            env={**os.environ, **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def call(self, task: str = "send_email", options: dict[str, Any] | None = None, **kwargs: Any):  # type: ignore[no-untyped-def]
        """``apply_async`` in the producer's process: ``{"id": ...}`` or ``{"error": ...}``."""
        assert self.process.stdin is not None and self.process.stdout is not None
        line = json.dumps([f"email_worker.{task}", kwargs, options or {}])
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        reply = self.process.stdout.readline()
        assert reply, f"the producer exited ({self.process.wait()})"
        return json.loads(reply)

    def send(
        self, task: str = "send_email", options: dict[str, Any] | None = None, **kwargs: Any
    ) -> str:
        """Send one email; return its task (or job) id."""
        reply = self.call(task, options, **kwargs)
        assert "id" in reply, reply["error"]
        return str(reply["id"])

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.fixture
def producer() -> Iterator[Any]:
    """Make producers with given settings; each is closed after the test."""
    made: list[Producer] = []

    def make(**env: str) -> Producer:
        made.append(Producer(env))
        return made[-1]

    yield make
    for one in made:
        one.close()


@pytest.fixture
def rabbitmq() -> Iterator[dict[str, str]]:
    """Settings of a worker or producer on RabbitMQ, with queues of their own, deleted after."""
    queue_name = f"test-email-jobs-{uuid.uuid4().hex[:8]}"
    yield {"BROKER_URL": AMQP_URL, "QUEUE_NAME": queue_name}
    delete_rabbitmq_queues(queue_name)


def delete_rabbitmq_queues(queue_name: str) -> None:
    """Delete the queues and exchange a worker declared for ``queue_name``."""
    with Connection(AMQP_URL) as connection:
        channel = connection.channel()
        for suffix in ("periodic", "high", "default", "low", "dead-letter"):
            channel.queue_delete(f"{queue_name}.{suffix}")
        channel.exchange_delete(f"{queue_name}.default")


def message_id(task_id: str) -> str:
    return f"<{task_id}@{DOMAIN}>"


@contextmanager
def showing_log(log: Path) -> Iterator[None]:
    """Add the end of a process's log to an assertion that fails in the block."""
    try:
        yield
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- {log.name}:\n{log.read_text()[-3000:]}") from None


def test_a_high_email_overtakes_a_backlog_of_low_ones(
    smtp: SmtpServer, rabbitmq: dict[str, str], producer: Any, tmp_path: Path
) -> None:
    smtp.handler.data_delay = 0.02
    sender = producer(**rabbitmq)
    backlog = [
        sender.send(to="ann@example.com", subject=f"Digest {i}", text="x", priority="low")
        for i in range(60)
    ]
    worker = start_worker_process(tmp_path / "worker.log", env=rabbitmq, concurrency=1)
    with running(worker):
        smtp.wait_for(2, timeout=30)
        urgent = sender.send(to="ann@example.com", subject="Reset", text="x", priority="high")
        smtp.wait_for(len(backlog) + 1, timeout=30)
    arrived = [r.message["Message-ID"] for r in smtp.received]
    assert sorted(arrived) == sorted(map(message_id, [*backlog, urgent]))
    # RabbitMQ consumes the queues together: each time the worker can take a message it
    # hands out one from a queue picked among those with messages waiting. So the urgent
    # email waits a few messages, not for the backlog (on Redis: strictly next).
    assert arrived.index(message_id(urgent)) < len(backlog) // 2


def test_a_countdown_is_held_until_it_is_due(
    smtp: SmtpServer, rabbitmq: dict[str, str], producer: Any, tmp_path: Path
) -> None:
    sender = producer(**rabbitmq)
    worker = start_worker_process(tmp_path / "worker.log", env=rabbitmq)
    with running(worker):
        sender.send(to="ann@example.com", subject="Warm-up", text="x")
        smtp.wait_for(1, timeout=30)  # the worker is consuming
        published_at = time.monotonic()
        later = sender.send(
            options={"countdown": 2}, to="ann@example.com", subject="Later", text="x"
        )
        smtp.wait_for(2, timeout=15)
        waited = time.monotonic() - published_at
    assert smtp.received[-1].message["Message-ID"] == message_id(later)
    assert 2.0 <= waited < 5.0, waited


def test_a_killed_workers_emails_come_back_at_once_and_are_all_delivered(
    smtp: SmtpServer, rabbitmq: dict[str, str], producer: Any, tmp_path: Path
) -> None:
    smtp.handler.data_delay = 0.2  # each send takes a while, so the kill finds some mid-send
    sender = producer(**rabbitmq)
    burst = [
        sender.send(to=f"user{i}@example.com", subject=f"Notice {i}", text="x") for i in range(30)
    ]
    doomed = start_worker_process(tmp_path / "doomed.log", env=rabbitmq)
    with running(doomed):
        smtp.wait_for(6, timeout=30)
        os.killpg(doomed.pid, signal.SIGKILL)  # the worker and its pool processes, at once
        doomed.wait(timeout=10)
    killed_at = time.monotonic()
    survivor = start_worker_process(tmp_path / "survivor.log", env=rabbitmq)
    with running(survivor):
        wait_for(
            lambda: set(map(message_id, burst)) <= {r.message["Message-ID"] for r in smtp.received},
            "every email of the burst",
        )
        recovered_in = time.monotonic() - killed_at
        time.sleep(1.0)  # a late duplicate would arrive now
    seen = Counter(r.message["Message-ID"] for r in smtp.received)
    # No visibility timeout: what the killed worker held came back when its connection closed.
    assert recovered_in < 20, recovered_in
    # Only the sends the killed worker had in flight (two pool processes) may go out twice.
    assert sum(count - 1 for count in seen.values()) <= 2, seen


@pytest.mark.usefixtures("clean_tables")
def test_a_tracked_send(
    smtp: SmtpServer, rabbitmq: dict[str, str], producer: Any, tmp_path: Path
) -> None:
    sender = producer(**rabbitmq)
    data = dict(get_kind("email_verification").sample_data)
    job_id = sender.send("send_email_verification", to="ann@example.com", data=data)
    assert stored(job_id).status == "pending"  # committed before it was published
    worker = start_worker_process(tmp_path / "worker.log", env=rabbitmq)
    with running(worker), showing_log(tmp_path / "worker.log"):
        wait_for(lambda: stored(job_id).status == "sent", "the job to be sent")
    assert [r.message["Message-ID"] for r in smtp.received] == [message_id(job_id)]
    assert stored(job_id).provider == "smtp"


def test_a_worker_refuses_a_schedule_threshold_past_rabbitmqs_acknowledgement_timeout(
    rabbitmq: dict[str, str], tmp_path: Path
) -> None:
    too_long = {"SCHEDULE_THRESHOLD": "40m", "BROKER_VISIBILITY_TIMEOUT": "1h"}
    worker = start_worker_process(tmp_path / "worker.log", env={**rabbitmq, **too_long})
    with running(worker):
        assert worker.wait(timeout=30) != 0
    log = (tmp_path / "worker.log").read_text()
    assert "consumer_timeout" in log and "SCHEDULE_THRESHOLD" in log
    assert "ready." not in log
