"""What a process loads by importing the package: the figures of docs/PERFORMANCE.md rely on it.

A producer imports ``email_worker.tasks`` inside its own service (a web process, a
script). The import costs little only while it leaves out what a producer's call does
not need yet: the database layer's ORM, Jinja2, the provider SDKs, the web stack and the
worker's delivery code. Each check runs in a fresh interpreter with the tests'
environment, as a producer would start.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid

import redis

from email_worker.kinds import get_kind
from tests.support.paths import ROOT

# Loaded by none of a producer's imports: each is hundreds of modules or megabytes.
NOT_ON_IMPORT = (
    "sqlalchemy.orm",
    "jinja2",
    "boto3",
    "botocore",
    "sendgrid",
    "fastapi",
    "uvicorn",
    "dkim",
    "email_worker.worker.delivery",
)
# Not even after a send: the providers and the web app are the worker's and the web's.
NEVER_IN_A_PRODUCER = ("boto3", "botocore", "sendgrid", "fastapi")
# Not after a tracked send on PostgreSQL either: the row goes through psycopg alone, and
# plain addresses are checked without email_validator's tables.
NOT_FOR_A_TRACKED_SEND = ("sqlalchemy", "email_validator", *NEVER_IN_A_PRODUCER)


def loaded_after(code: str, watched: tuple[str, ...] = NOT_ON_IMPORT) -> list[str]:
    """The modules of ``watched`` loaded once ``code`` ran in a fresh interpreter."""
    script = textwrap.dedent(code) + textwrap.dedent(
        f"""
        import json, sys
        print(json.dumps([m for m in {watched!r} if m in sys.modules]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


def test_importing_the_tasks_loads_no_orm_templates_sdk_web_stack_or_delivery_code() -> None:
    assert loaded_after("import email_worker.tasks") == []


def test_a_first_send_loads_no_provider_sdk_or_web_stack(redis_client: redis.Redis) -> None:
    queue = f"lazy-imports-{uuid.uuid4().hex[:8]}"
    data = dict(get_kind("welcome_email").sample_data)
    try:
        loaded = loaded_after(
            f"""
            from email_worker.tasks import send_welcome_email

            send_welcome_email.apply_async(
                kwargs={{"to": "ann@example.com", "data": {data!r}}}, queue={queue!r}
            )
            """
        )
        queued = sum(redis_client.llen(key) for key in redis_client.keys(f"{queue}*"))
    finally:
        for key in redis_client.scan_iter(f"*{queue}*"):
            redis_client.delete(key)
    assert queued == 1  # the send went out, without them
    assert [m for m in loaded if m in NEVER_IN_A_PRODUCER] == []


def test_a_first_tracked_send_on_postgresql_loads_no_sqlalchemy(
    redis_client: redis.Redis, test_database: str
) -> None:
    queue = f"lazy-imports-{uuid.uuid4().hex[:8]}"
    data = dict(get_kind("welcome_email").sample_data)
    try:
        loaded = loaded_after(
            f"""
            from email_worker.tasks import send_welcome_email

            sent = send_welcome_email.apply_async(
                kwargs={{"to": "ann@example.com", "data": {data!r}, "tracked": True}},
                queue={queue!r},
            )
            print(sent.id)
            """,
            NOT_FOR_A_TRACKED_SEND,
        )
        queued = sum(redis_client.llen(key) for key in redis_client.keys(f"{queue}*"))
    finally:
        for key in redis_client.scan_iter(f"*{queue}*"):
            redis_client.delete(key)
    assert queued == 1  # the job was stored and its message published, without them
    assert loaded == []


def test_a_worker_starts_knowing_every_task_without_loading_the_send_path() -> None:
    # What Celery's worker does as it starts, before the pool processes fork (its
    # WorkController calls the loader's init_worker first). The main process receives,
    # hands out and acknowledges messages and runs no send: it must know every task by
    # name (an unknown one is discarded), but the delivery code, the ORM and Jinja2 are
    # each pool process's, imported with its first message. Imported here, every page of
    # them would be counted in each process of the worker (docs/PERFORMANCE.md).
    loaded = loaded_after(
        """
        from email_worker.celeryapp.app import app
        from email_worker.kinds import all_kinds
        from email_worker.producer.bulk_requests import BATCH_TASK, BULK_TASK

        app.loader.init_worker()
        expected = {entry["task"] for entry in app.conf.beat_schedule.values()}
        expected |= {kind.task_name for kind in all_kinds()} | {BULK_TASK, BATCH_TASK}
        missing = expected - set(app.tasks)
        assert not missing, f"tasks a worker would not know: {sorted(missing)}"
        """
    )
    assert loaded == []
