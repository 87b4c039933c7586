"""``celery -A email_worker flower``: workers, tasks (redacted) and queues, behind auth."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from tests.conftest import purge_queues, queue_key
from tests.support.ports import free_port
from tests.support.processes import running, start_beat_process, start_python, start_worker
from tests.support.smtp_server import SmtpServer
from tests.support.waiting import wait_for, wait_for_log

AUTH = ("admin", "flower-pass-2718")
RECIPIENT = "flower.watcher@example.com"
PRIVATE_REDIS_DB = "11"
SEND_THREE = f"""
from email_worker.tasks import send_email
for i in range(3):
    print(send_email.delay(to={RECIPIENT!r}, subject=f"Receipt {{i}}", text="Thanks.").id)
"""
MARKER = "flower-marker-4471"
HOUSEKEEPING = {
    "email_worker.dispatch_due_jobs",
    "email_worker.relay_stranded_jobs",
    "email_worker.reap_expired_leases",
    "email_worker.cleanup_old_jobs",
    "email_worker.clear_personal_data",
}


def start_flower(log: Path, *options: str, **env: str) -> subprocess.Popen[bytes]:
    """``celery -A email_worker flower`` as an operator starts it."""
    return start_python(
        *("-m", "celery", "-A", "email_worker", "flower", *options),
        log=log,
        env={"LOG_FORMAT": "json", **env},
    )


def poll(url: str, ready: Any, timeout: float = 30.0) -> Any:
    """GET ``url`` with the credentials until ``ready(json)`` holds; return the JSON."""

    def answer() -> tuple[Any] | None:
        response = requests.get(url, auth=AUTH, timeout=5)
        if response.status_code == 200 and ready(found := response.json()):
            return (found,)
        return None

    return wait_for(answer, f"{url} to be ready", timeout, interval=0.3)[0]


@pytest.mark.slow
def test_flower_shows_workers_tasks_and_queues_to_authenticated_users_only(
    smtp: SmtpServer,
    redis_client,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    from email_worker.tasks import send_welcome_email

    purge_queues(redis_client)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    flower = start_flower(
        tmp_path / "flower.log",
        "--address=127.0.0.1",
        f"--port={port}",
        FLOWER_BASIC_AUTH=f"{AUTH[0]}:{AUTH[1]}",
        FLOWER_MAX_TASKS="321",
    )
    worker = start_worker(tmp_path / "worker.log", SERVER_PORT="0")
    with running(flower, worker):
        poll(f"{base}/api/workers?refresh=1", lambda found: len(found) > 0)
        assert requests.get(f"{base}/api/workers", timeout=5).status_code == 401
        assert (
            requests.get(f"{base}/workers", auth=("admin", "wrong"), timeout=5).status_code == 401
        )
        assert requests.get(f"{base}/workers", auth=AUTH, timeout=5).status_code == 200
        # Task events are off until Flower turns them on (every 5 s); a send then shows.
        wait_for_log(tmp_path / "worker.log", "enabled by remote")
        sent = send_welcome_email.delay(
            to=RECIPIENT,
            data={"user_name": MARKER, "product_name": "P", "login_url": "https://x.example"},
        )
        smtp.wait_for(1, timeout=30)
        tasks = poll(f"{base}/api/tasks", lambda found: sent.id in found)
        task = tasks[sent.id]
        assert task["name"] == "email_worker.send_welcome_email"
        shown = json.dumps(task)
        assert RECIPIENT not in shown and MARKER not in shown
        assert "f***@example.com" in task["kwargs"]

        # Flower learns the queues from the workers' replies to its inspection. Every worker
        # on the broker replies, and a reply later than Flower's inspect timeout is missed
        # until it asks again, as an operator's refresh does.
        def lists_our_queue(found: dict[str, Any]) -> bool:
            if queue_key("default") in {q["name"] for q in found["active_queues"]}:
                return True
            requests.get(f"{base}/api/workers?refresh=1", auth=AUTH, timeout=10)
            return False

        poll(f"{base}/api/queues/length", lists_our_queue)
        # The queues each worker consumes; other test processes' workers may answer first.
        poll(
            f"{base}/api/workers?refresh=1",
            lambda found: queue_key("high") in json.dumps(found),
        )
    options = [
        json.loads(line)
        for line in (tmp_path / "flower.log").read_text().splitlines()
        if line.startswith("{") and '"flower options"' in line
    ]
    assert options and options[0]["max_tasks"] == 321 and options[0]["basic_auth_users"] == 1
    assert AUTH[1] not in (tmp_path / "flower.log").read_text()


def test_flower_refuses_a_public_address_without_authentication(tmp_path: Path) -> None:
    log = tmp_path / "flower.log"
    flower = start_flower(log, "--address=0.0.0.0", f"--port={free_port()}", FLOWER_BASIC_AUTH="")
    with running(flower):
        assert flower.wait(timeout=30) != 0
    assert "refuses to listen on 0.0.0.0 without authentication" in log.read_text()
    assert "FLOWER_BASIC_AUTH" in log.read_text()


def test_flower_without_authentication_listens_on_this_machine_only(tmp_path: Path) -> None:
    log = tmp_path / "flower.log"
    flower = start_flower(log, f"--port={free_port()}", FLOWER_BASIC_AUTH="")
    with running(flower):
        wait_for_log(log, '"flower options"')
    line = next(x for x in log.read_text().splitlines() if '"flower options"' in x)
    assert json.loads(line)["address"] == "127.0.0.1"


@pytest.mark.slow
def test_flower_beside_beat_keeps_showing_the_emails_sent(
    smtp: SmtpServer,
    redis_client,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    # A Redis database of this test's own: every worker on a broker sends its task events to
    # every Flower on it, and other tests' workers send emails meanwhile.
    private = {"REDIS_DB": PRIVATE_REDIS_DB}
    flush = redis.Redis(host="127.0.0.1", port=6379, db=int(PRIVATE_REDIS_DB))
    flush.flushdb()
    port, max_tasks = free_port(), 10
    base = f"http://127.0.0.1:{port}"
    flower = start_flower(
        tmp_path / "flower.log",
        f"--port={port}",
        FLOWER_BASIC_AUTH=f"{AUTH[0]}:{AUTH[1]}",
        FLOWER_MAX_TASKS=str(max_tasks),
        **private,
    )
    worker = start_worker(tmp_path / "worker.log", SERVER_PORT="0", **private)
    # Beat dispatches due jobs every DISPATCH_INTERVAL (0.3 s in the tests, 1 s by default).
    beat = start_beat_process(tmp_path / "beat", env=private)
    with running(flower, worker, beat):
        wait_for_log(tmp_path / "worker.log", "enabled by remote")
        sent = subprocess.run(
            [sys.executable, "-c", SEND_THREE],
            env={**os.environ, **private},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        smtp.wait_for(3, timeout=30)
        poll(f"{base}/api/tasks", lambda found: set(sent) <= set(found))
        # Beat goes on: the worker runs three times as many dispatches as Flower keeps tasks.
        worker_log = tmp_path / "worker.log"
        dispatch = "email_worker.dispatch_due_jobs["
        done = worker_log.read_text().count(dispatch)
        wait_for(
            lambda: worker_log.read_text().count(dispatch) >= done + 3 * max_tasks,
            "beat's dispatches run by the worker",
            log=worker_log,
        )
        tasks = poll(f"{base}/api/tasks", lambda found: True)
    assert set(sent) <= set(tasks), "the emails scrolled out of Flower's task list"
    assert {task["name"] for task in tasks.values()} & HOUSEKEEPING == set()
    flush.flushdb()
