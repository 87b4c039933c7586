"""Worker subprocesses and foreign producers for tests of what a worker does with a message."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from celery import Celery

from tests.processes import running, start_worker_process

ROOT = Path(__file__).resolve().parents[1]


def start_worker(log: Path, *extra: str, **env: str) -> subprocess.Popen[bytes]:
    """``celery -A email_worker worker`` with one pool process, so messages run in order."""
    return start_worker_process(log, *extra, env=env, concurrency=1)


@contextmanager
def running_worker(log: Path, *extra: str, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """A worker for the length of a block, stopped with SIGTERM after it."""
    worker = start_worker(log, *extra, **env)
    with running(worker):
        yield worker


def wait_for_log(log: Path, text: str, timeout: float = 30.0) -> str:
    """Wait until ``text`` appears in the log; return the whole log."""
    deadline = time.monotonic() + timeout
    while True:
        content = log.read_text(errors="replace")
        if text in content:
            return content
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not logged in {timeout}s:\n{content[-3000:]}")
        time.sleep(0.1)


def pool_processes(worker_pid: int) -> list[int]:
    """The pids of a worker's pool processes (its children), read from /proc."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == worker_pid:
            children.append(int(stat.parent.name))
    return children


def foreign_app() -> Celery:
    """A plain Celery app on the same broker: a producer that does not use this package."""
    return Celery("another-service", broker="redis://127.0.0.1:6379/0", set_as_current=False)


def publish_raw(
    app: Celery,
    queue: str,
    body: str,
    *,
    task: str = "email_worker.send_email",
    content_type: str = "application/json",
    **headers: Any,
) -> str:
    """Publish a Celery protocol-2 message whose body is given as already serialised."""
    task_id = str(uuid.uuid4())
    declared = app.amqp.queues[queue]
    with app.producer_or_acquire() as producer:
        producer.publish(
            body,
            exchange=declared.exchange,
            routing_key=declared.routing_key,
            declare=[declared],
            content_type=content_type,
            content_encoding="utf-8",
            headers={"lang": "py", "task": task, "id": task_id, "root_id": task_id, **headers},
        )
    return task_id


def nested(depth: int, leaf: Any = "x") -> Any:
    """A value nested ``depth`` lists deep."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def too_deep_to_decode(depth: int, kwargs: dict[str, Any]) -> str:
    """A task body whose ``data`` is nested deeper than a JSON decoder can follow."""
    data = '{"value": ' + "[" * depth + "]" * depth + "}"
    return "[[], " + json.dumps(kwargs)[:-1] + f', "data": {data}}}, {{}}]'
