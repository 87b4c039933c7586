"""A worker survives any message: over-deep payloads, messages that kill its processes."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import TEST_ENV, purge_queues, queue_key
from tests.support.paths import ROOT
from tests.support.processes import pool_processes, running_worker
from tests.support.raw_messages import foreign_app, nested, publish_raw, too_deep_to_decode
from tests.support.smtp_server import SmtpServer
from tests.support.waiting import wait_for_log

DEAD_LETTER_QUEUE = f"{TEST_ENV['QUEUE_NAME']}.dead-letter"


def log_lines(log: Path) -> list[dict[str, object]]:
    lines = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


@pytest.mark.slow
def test_an_over_deep_message_is_failed_and_the_email_behind_it_is_sent(
    smtp: SmtpServer,
    redis_client,
    celery_app,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    from email_worker.tasks import send_email

    purge_queues(redis_client)
    other_service = foreign_app()
    deep = other_service.send_task(
        "email_worker.send_email",
        kwargs={
            "to": "ann@example.com",
            "template_id": "welcome_email",
            "data": {"user_name": nested(480)},
        },
        queue=queue_key("default"),
    ).id
    publish_raw(
        other_service,
        queue_key("default"),
        too_deep_to_decode(5000, {"to": "ann@example.com", "template_id": "welcome_email"}),
    )
    ordinary = send_email.delay(to="ann@example.com", subject="After", text="x").id
    log = tmp_path / "worker.log"
    with running_worker(log) as worker:
        smtp.wait_for(1, timeout=60)
        assert worker.poll() is None
    assert [r.message["Message-ID"] for r in smtp.received] == [f"<{ordinary}@mail.example.com>"]
    failed = [line for line in log_lines(log) if line["message"] == "email failed"]
    assert failed == [
        {
            **failed[0],
            "task_id": deep,
            "kind": "email",
            "reason": "data: nested deeper than 32 levels",
        }
    ]
    assert "Can't decode message body" in log.read_text()
    assert not redis_client.exists(queue_key("default"))  # both were acknowledged


@pytest.mark.slow
def test_a_body_that_is_not_a_task_body_is_refused_and_the_email_behind_it_is_sent(
    smtp: SmtpServer,
    redis_client,
    celery_app,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    from email_worker.tasks import send_email

    purge_queues(redis_client)
    other_service = foreign_app()
    for body in ("42", "null", '{"to": "ann@example.com"}'):
        publish_raw(other_service, queue_key("default"), body)
    ordinary = send_email.delay(to="ann@example.com", subject="After", text="x").id
    log = tmp_path / "worker.log"
    with running_worker(log) as worker:
        smtp.wait_for(1, timeout=30)
        assert worker.poll() is None
    assert [r.message["Message-ID"] for r in smtp.received] == [f"<{ordinary}@mail.example.com>"]
    assert log.read_text().count("Received invalid task message: malformed task message") == 3


@pytest.mark.slow
@pytest.mark.usefixtures("clean_tables")
def test_a_foreign_message_the_template_cannot_render_is_one_failed_line_without_traceback(
    smtp: SmtpServer,
    redis_client,
    celery_app,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    from email_worker.kinds import get_kind

    purge_queues(redis_client)
    other_service = foreign_app()  # publishes what this package's producer would refuse

    def publish(task: str, queue: str, data: dict[str, object]) -> str:
        body = json.dumps([[], {"to": "ann@example.com", "data": data}, {}])
        return publish_raw(other_service, queue_key(queue), body, task=f"email_worker.{task}")

    lacking = publish("send_newsletter", "low", {})
    misshapen = publish(
        "send_newsletter", "low", {**get_kind("newsletter").sample_data, "events": 5}
    )
    tracked = publish("send_password_reset", "high", {"user_name": "Ann"})
    log = tmp_path / "worker.log"
    with running_worker(log):
        deadline = time.monotonic() + 30
        while len([line for line in log_lines(log) if line["message"] == "email failed"]) < 3:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
    failed = {line["task_id"]: line for line in log_lines(log) if line["message"] == "email failed"}
    assert set(failed) == {lacking, misshapen, tracked}
    assert failed[lacking]["reason"] == (
        "data: missing variables of template 'newsletter': "
        "events, headline, intro, product_name, user_name"
    )
    assert failed[misshapen]["error_type"] == "TemplateRenderError"
    assert "TypeError at body.html line" in str(failed[misshapen]["reason"])
    assert "expires_in_minutes, reset_url" in str(failed[tracked]["reason"])
    content = log.read_text()
    # One line per failed email: not Celery's "raised unexpected" with a traceback, nor its
    # "raised expected" beside ours.
    assert "raised unexpected" not in content and "Traceback" not in content
    assert "raised expected" not in content
    assert smtp.received == []


@pytest.mark.slow
def test_a_message_that_keeps_killing_pool_processes_is_set_aside(
    smtp: SmtpServer,
    redis_client,
    celery_app,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    from email_worker.tasks import send_email
    from email_worker.worker.poison_messages import MAX_WORKER_LOSSES

    purge_queues(redis_client)
    redis_client.delete(DEAD_LETTER_QUEUE)
    smtp.handler.data_delay = 60  # the send is in progress until the test kills its process
    poison = send_email.delay(to="ann@example.com", subject="Poison", text="x").id
    log = tmp_path / "worker.log"
    with running_worker(log) as worker:
        for attempt in range(1, MAX_WORKER_LOSSES + 1):
            deadline = time.monotonic() + 30
            while smtp.handler.data_attempts < attempt:
                assert time.monotonic() < deadline, "the send did not start again"
                time.sleep(0.05)
            for pid in pool_processes(worker.pid):
                os.kill(pid, signal.SIGKILL)
        wait_for_log(log, "email set aside", timeout=30)
        smtp.handler.data_delay = 0
        after = send_email.delay(to="ann@example.com", subject="After", text="x").id
        smtp.wait_for(1, timeout=30)
        time.sleep(1.0)  # a further delivery of the set-aside message would start now
        assert worker.poll() is None
    assert smtp.handler.data_attempts == MAX_WORKER_LOSSES + 1
    assert [r.message["Message-ID"] for r in smtp.received] == [f"<{after}@mail.example.com>"]
    set_aside = [line for line in log_lines(log) if line["message"] == "email set aside"]
    assert len(set_aside) == 1 and set_aside[0]["level"] == "error"
    assert set_aside[0]["task_id"] == poison and set_aside[0]["kind"] == "email"
    assert set_aside[0]["dead_letter_queue"] == DEAD_LETTER_QUEUE
    assert f"died {MAX_WORKER_LOSSES} times" in str(set_aside[0]["reason"])
    dead = [json.loads(m) for m in redis_client.lrange(DEAD_LETTER_QUEUE, 0, -1)]
    assert [m["headers"]["id"] for m in dead] == [poison]
    args, kwargs, _ = json.loads(base64.b64decode(dead[0]["body"]))
    assert kwargs["subject"] == "Poison"  # the message as it was received
    assert "ann@example.com" not in log.read_text()


def publish_slow_email(producer: str, process_timeout: float) -> str:
    """Publish from a producer whose own time limits would be PROCESS_TIMEOUT's."""
    if producer == "foreign":  # its limits travel in the message's timelimit header
        return str(
            foreign_app()
            .send_task(
                "email_worker.send_email",
                kwargs={"to": "ann@example.com", "subject": "Slow", "text": "x"},
                queue=queue_key("default"),
                soft_time_limit=process_timeout,
                time_limit=process_timeout + 15,
            )
            .id
        )
    published = subprocess.run(
        [
            sys.executable,
            "-c",
            "from email_worker.tasks import send_email\n"
            "print(send_email.delay(to='ann@example.com', subject='Slow', text='x').id)",
        ],
        cwd=ROOT,
        env={**os.environ, "PROCESS_TIMEOUT": str(process_timeout)},
        capture_output=True,
        check=True,
    )
    return published.stdout.decode().split()[-1]


@pytest.mark.slow
@pytest.mark.parametrize("producer", ["this-package", "foreign"])
@pytest.mark.parametrize(
    ("producer_timeout", "worker_timeout", "sent"),
    [(1, 30, True), (30, 1, False)],
    ids=["short-producer-limit-ignored", "short-worker-limit-applies"],
)
def test_a_send_is_limited_by_the_workers_process_timeout_not_the_producers(
    producer: str,
    producer_timeout: float,
    worker_timeout: float,
    sent: bool,
    smtp: SmtpServer,
    redis_client,
    celery_app,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    purge_queues(redis_client)
    smtp.handler.data_delay = 2.5
    task_id = publish_slow_email(producer, producer_timeout)
    log = tmp_path / "worker.log"
    with running_worker(log, PROCESS_TIMEOUT=str(worker_timeout)):
        if sent:
            content = wait_for_log(log, '"message": "email sent"', timeout=30)
        else:
            content = wait_for_log(log, "Soft time limit (1.0s) exceeded", timeout=30)
    assert task_id in content
    assert ("Soft time limit" in content) is not sent
    if sent:
        assert smtp.handler.data_attempts == 1


def test_a_worker_refuses_a_pool_under_which_time_limits_do_not_apply(tmp_path: Path) -> None:
    started = time.monotonic()
    worker = subprocess.run(
        [
            *(sys.executable, "-m", "celery", "-A", "email_worker", "worker", "--pool", "threads"),
            *("-Q", queue_key("unused")),  # should it start after all, it takes no email
        ],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        timeout=30,
    )
    output = (worker.stdout + worker.stderr).decode()
    assert worker.returncode != 0
    assert "'threads' pool" in output and "PROCESS_TIMEOUT" in output and "prefork" in output
    assert time.monotonic() - started < 30


@pytest.mark.slow
@pytest.mark.usefixtures("clean_tables")
def test_a_tracked_job_set_aside_is_failed_on_its_row(
    smtp: SmtpServer,
    redis_client,
    celery_app,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    from email_worker.db import job_queries
    from email_worker.db.session import primary_session
    from email_worker.worker.poison_messages import MAX_WORKER_LOSSES, loss_counter
    from tests.support.jobs import stored_verification_job

    purge_queues(redis_client)
    redis_client.delete(DEAD_LETTER_QUEUE)
    job_id = stored_verification_job()
    task_id = str(uuid.uuid4())
    # As if three worker processes had died sending it: on its first delivery, and on
    # two redeliveries, which were counted.
    for _ in range(MAX_WORKER_LOSSES - 1):
        loss_counter(celery_app).add(task_id)
    foreign_app().send_task(
        "email_worker.send_email_verification",
        kwargs={"job_id": str(job_id)},
        queue=queue_key("high"),
        task_id=task_id,
        headers={"redelivered": True},
    )
    log = tmp_path / "worker.log"
    with running_worker(log):
        wait_for_log(log, "email set aside", timeout=30)
    with primary_session() as session:
        job = job_queries.get_job(session, job_id)
        assert job is not None and job.status == "failed"
        assert f"died {MAX_WORKER_LOSSES} times" in (job.last_error or "")
    assert redis_client.llen(DEAD_LETTER_QUEUE) == 1
    assert loss_counter(celery_app).count(task_id) == 0
    assert smtp.handler.data_attempts == 0
