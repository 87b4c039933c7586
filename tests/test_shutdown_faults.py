"""Graceful shutdown and outages around running workers, on Redis and RabbitMQ, each counted at
the SMTP server. SIGTERM on Redis is shown in test_worker_process.py, a killed worker in
test_recovery.py and test_rabbitmq.py."""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from email_worker.kinds import get_kind
from tests import test_rabbitmq
from tests.conftest import TEST_ENV, purge_queues
from tests.support.jobs import stored
from tests.support.ports import free_port
from tests.support.processes import running, start_beat_process, start_worker_process
from tests.support.smtp_server import SmtpServer
from tests.support.waiting import wait_for
from tests.test_rabbitmq import message_id, showing_log

pytestmark = pytest.mark.slow
# Fixtures: a producer process, and the settings of a worker or producer on RabbitMQ.
producer = test_rabbitmq.producer
rabbitmq = test_rabbitmq.rabbitmq


class RedisServer:
    """A Redis of this test alone, without persistence: a restart empties it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port)]
            + ["--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        wait_for(lambda: _answers(client), "Redis to answer", timeout=10)
        client.close()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.kill()


def test_sigterm_on_rabbitmq_finishes_sends_in_progress_and_loses_none(
    smtp: SmtpServer, rabbitmq: dict[str, str], producer: Any, tmp_path: Path
) -> None:
    smtp.handler.data_delay = 0.4  # each delivery takes a while, so some are mid-send at SIGTERM
    sender = producer(**rabbitmq)
    burst = [
        sender.send(to="ann@example.com", subject=f"Burst {i}", text=f"Message {i}")
        for i in range(12)
    ]
    first = start_worker_process(tmp_path / "first.log", env=rabbitmq)
    with running(first):
        smtp.wait_for(2, timeout=30)
        wait_for(lambda: smtp.handler.in_progress, "a send in progress")
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 0
    assert smtp.handler.in_progress == 0  # nothing was cut off mid-transaction
    assert len(smtp.received) < len(burst)  # the shutdown really interrupted the burst

    second = start_worker_process(tmp_path / "second.log", env=rabbitmq)
    with running(second):
        smtp.wait_for(len(burst), timeout=30)
        time.sleep(1.0)  # a duplicate would arrive now
    delivered = Counter(r.message["Message-ID"] for r in smtp.received)
    assert delivered == Counter({message_id(task_id): 1 for task_id in burst})


@pytest.mark.usefixtures("clean_tables")
def test_producer_and_worker_reconnect_when_redis_restarts_and_no_tracked_job_is_lost(
    smtp: SmtpServer, private_redis: RedisServer, producer: Any, tmp_path: Path
) -> None:
    on_private_redis = {"REDIS_PORT": str(private_redis.port), "BROKER_TIMEOUT": "1"}
    smtp.handler.data_delay = 0.3  # a backlog waits in Redis when it goes away
    sender = producer(**on_private_redis)
    data = dict(get_kind("email_verification").sample_data)

    def send_tracked(count: int) -> list[str]:
        return [
            sender.send("send_email_verification", to=f"user{i}@example.com", data=data)
            for i in range(count)
        ]

    worker_log = tmp_path / "worker.log"
    worker = start_worker_process(worker_log, env=on_private_redis)
    beat = start_beat_process(tmp_path / "beat", env=on_private_redis)  # relays stranded jobs
    with running(worker, beat), showing_log(worker_log):
        jobs = send_tracked(20)
        # Not before the worker has acknowledged a message: kombu 5.7 cannot close a Redis
        # channel that never acknowledged one, and the worker dies (a supervisor restarts it).
        wait_for(lambda: worker_log.read_text().count("succeeded in") >= 2, "two emails sent")
        private_redis.kill()  # the messages still queued are gone with it
        jobs += send_tracked(5)  # committed; their publish fails
        time.sleep(2)
        private_redis.start()
        jobs += send_tracked(10)
        after_restart = sender.send(to="ann@example.com", subject="Back", text="x")
        expected = set(map(message_id, [*jobs, after_restart]))
        wait_for(
            lambda: expected <= {r.message["Message-ID"] for r in smtp.received},
            "every email",
            timeout=60,
        )
        time.sleep(1.0)  # a duplicate would arrive now
    delivered = Counter(r.message["Message-ID"] for r in smtp.received)
    assert delivered == Counter(dict.fromkeys(expected, 1))
    assert {stored(job_id).status for job_id in jobs} == {"sent"}


OUTAGE = 60.0  # seconds without an SMTP server


def test_emails_wait_out_a_minute_without_smtp_server_on_both_brokers(
    rabbitmq: dict[str, str], producer: Any, redis_client: redis.Redis, tmp_path: Path
) -> None:
    purge_queues(redis_client)
    server = SmtpServer().start()
    # Retries every 0.75 to 1.5 s, held by the broker (under SCHEDULE_THRESHOLD), for longer
    # than the outage.
    retrying = {"SMTP_PORT": str(server.port), "RETRY_BACKOFF_MAX": "1.5", "MAX_RETRIES": "500"}
    brokers = {"redis": {"QUEUE_NAME": TEST_ENV["QUEUE_NAME"]}, "rabbitmq": rabbitmq}
    workers = {
        name: start_worker_process(tmp_path / f"{name}.log", env={**env, **retrying})
        for name, env in brokers.items()
    }
    senders = {name: producer(**env) for name, env in brokers.items()}
    sent: dict[str, list[str]] = {name: [] for name in brokers}
    try:
        with running(*workers.values()):
            for name, sender in senders.items():
                sent[name].append(sender.send(to="ann@example.com", subject="Before", text="x"))
            server.wait_for(2, timeout=30)
            server.stop()
            down_at = time.monotonic()
            for name, sender in senders.items():
                sent[name] += [
                    sender.send(to=f"user{i}@example.com", subject=f"During {i}", text="x")
                    for i in range(5)
                ]
            time.sleep(OUTAGE - (time.monotonic() - down_at))
            server.start()
            back_at = time.monotonic()
            server.wait_for(12, timeout=15)
            print(f"all delivered {time.monotonic() - back_at:.1f}s after the server came back")
            time.sleep(1.0)  # a duplicate would arrive now
    finally:
        server.stop()
    delivered = Counter(r.message["Message-ID"] for r in server.received)
    assert delivered == Counter({message_id(t): 1 for ids in sent.values() for t in ids})
    for name in brokers:  # each worker kept retrying through the outage, not given up
        log = (tmp_path / f"{name}.log").read_text()
        assert log.count('"message": "email send failed, retrying"') >= 5 * 20, name
