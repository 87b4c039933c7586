"""A broker that refuses writes (Redis at ``maxmemory`` under ``noeviction``), and a broker
lost before a worker's first acknowledgement: real workers, beat, and a private redis-server.

Each test counts what reached the SMTP server and prints how long sending took to resume.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_ENV
from tests.support.http import http_get
from tests.support.jobs import stored
from tests.support.ports import free_port_pair
from tests.support.processes import running, start_beat_process, start_worker_process
from tests.support.redis_server import RedisServer, private_redis
from tests.support.smtp_server import SmtpServer
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("clean_tables")]
DOMAIN = "mail.example.com"
# Beat's relay of stranded jobs must not be what publishes them here.
NO_RELAY = "300"


def health(port: int) -> tuple[int, dict[str, Any]]:
    status, body = http_get(port, "/health")
    return status, json.loads(body)


@pytest.fixture
def full_redis(tmp_path: Path) -> Iterator[RedisServer]:
    with private_redis(tmp_path / "redis", maxmemory="8mb") as server:
        yield server


def send_tracked(broker: RedisServer, count: int, tag: str) -> list[str]:
    """Tracked sends from this process's producer, published to ``broker``; their job ids."""
    from email_worker.celeryapp.app import app
    from email_worker.tasks import send_email

    ids = []
    with app.connection_for_write(broker.url) as connection:
        for index in range(count):
            result = send_email.apply_async(
                kwargs={
                    "to": f"{tag}{index}@example.com",
                    "subject": f"{tag} {index}",
                    "text": "x",
                    "tracked": True,
                },
                connection=connection,
            )
            ids.append(result.id)
    return ids


def fast_connection(broker: RedisServer) -> Any:
    from email_worker.celeryapp.app import app

    return app.connection_for_write(broker.url)


def unhealthy(port: int) -> dict[str, Any] | None:
    status, body = health(port)
    return body if status == 503 else None


def queued(client: Any) -> int:
    return sum(int(client.llen(key)) for key in client.keys(f"{TEST_ENV['QUEUE_NAME']}*"))


def message_ids(smtp: SmtpServer) -> list[str]:
    return [r.message["Message-ID"] for r in smtp.received]


def test_a_full_redis_pauses_the_worker_and_loses_nothing(
    smtp: SmtpServer, full_redis: RedisServer, tmp_path: Path
) -> None:
    from kombu.exceptions import OperationalError

    from email_worker.db.housekeeping import UNPUBLISHED
    from email_worker.tasks import send_email

    port = free_port_pair()
    env = {
        "BROKER_URL": full_redis.url,
        "SERVER_PORT": str(port),
        "SERVER_HOST": "127.0.0.1",
        "STRANDED_AFTER": NO_RELAY,
        "DISPATCH_INTERVAL": "1",
    }
    worker = start_worker_process(tmp_path / "worker.log", env=env)
    beat = start_beat_process(tmp_path / "beat", env=env)
    with running(worker, beat):
        # Sent before /health is asked: a probe's import running while the pool forks
        # could leave a pool process holding the import lock.
        before = send_tracked(full_redis, 2, "before")
        smtp.wait_for(2, timeout=30)
        wait_for(lambda: health(port)[0] == 200, "a healthy worker")

        smtp.handler.data_delay = 1.5  # the worker holds messages when Redis fills up
        held = send_tracked(full_redis, 4, "held")
        wait_for(lambda: smtp.handler.in_progress, "the worker to be sending")
        full_redis.fill()
        filled = time.monotonic()
        body = wait_for(lambda: unhealthy(port), "the worker reported unhealthy")
        assert body["queue"]["error"].startswith("BrokerOutOfMemory: broker out of memory")
        print("queue while full:", body["queue"])

        during = send_tracked(full_redis, 5, "during")  # stored; their publish is refused
        assert all(stored(job_id).last_error == UNPUBLISHED for job_id in during)
        # The fast path has no row to fall back on: its producer gets the error.
        with fast_connection(full_redis) as connection, pytest.raises(OperationalError):
            send_email.apply_async(
                kwargs={"to": "fast@example.com", "subject": "Fast", "text": "x"},
                connection=connection,
            )
        time.sleep(8)  # longer than kombu's timers, which logged every 1 and 5 s
        assert worker.poll() is None and beat.poll() is None
        # What the worker held when Redis filled is still in Redis, unacknowledged or
        # waiting in the queue: the worker takes nothing new while writes are refused.
        client = full_redis.client()
        assert client.hlen("unacked") + queued(client) >= 1
        smtp.handler.data_delay = 0
        taken = len(smtp.received)

        full_redis.make_room()
        room = time.monotonic()
        smtp.wait_for(2 + 4 + 5, timeout=60)
        resumed = min(r.at for r in smtp.received[taken:]) - room
        done = smtp.received[-1].at - room
        print(
            f"full for {room - filled:.1f}s; sending resumed {resumed:.1f}s after Redis had "
            f"room, the {len(during)} jobs stored meanwhile were all sent {done:.1f}s after"
        )
        assert done < 15  # beat's dispatcher, not the relay after STRANDED_AFTER
        wait_for(lambda: health(port)[0] == 200, "a healthy worker again")
        time.sleep(1.0)  # a duplicate would arrive now
    expected = {f"<{job_id}@{DOMAIN}>" for job_id in before + held + during}
    assert sorted(message_ids(smtp)) == sorted(expected)  # none lost, none twice
    log = (tmp_path / "worker.log").read_text()
    assert log.count("broker out of memory: Redis refuses writes") == 1
    assert log.count("broker accepts writes again") == 1
    for noise in ("Error in timer", "maybe_refresh_binding_expiry", "Unrecoverable error"):
        assert noise not in log
    assert (tmp_path / "beat" / "log").read_text().count("Message Error") <= 1


def test_a_worker_that_loses_redis_while_holding_a_message_reconnects(
    smtp: SmtpServer, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    with private_redis(tmp_path / "redis") as broker:
        worker = start_worker_process(log, env={"BROKER_URL": broker.url})
        with running(worker):
            wait_for(lambda: "ready" in log.read_text(), "the worker to be ready", timeout=60)
            smtp.handler.data_delay = 2.0
            first = send_tracked(broker, 1, "first")
            wait_for(lambda: smtp.handler.in_progress, "the worker to be sending")
            broker.kill()  # before the worker has acknowledged anything
            time.sleep(1.0)
            broker.start()
            back = time.monotonic()
            smtp.handler.data_delay = 0
            smtp.wait_for(1)
            wait_for(
                lambda: log.read_text().count("Connected to redis") >= 2,
                "the worker to reconnect",
                log=log,
            )
            after = send_tracked(broker, 2, "after")
            smtp.wait_for(3)
            resumed = smtp.received[-1].at - back
            print(f"sending resumed {resumed:.1f}s after Redis was back")
            assert resumed < 15
            assert worker.poll() is None
            time.sleep(1.0)
    assert sorted(message_ids(smtp)) == sorted(f"<{j}@{DOMAIN}>" for j in first + after)
    assert "Unrecoverable error" not in log.read_text()
