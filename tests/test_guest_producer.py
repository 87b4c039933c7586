"""The producer is a guest in another service: it reads only this package's own settings.

A service that imports the package has its own ``celeryconfig.py``, ``config.yaml`` and
``CELERY_*`` variables; none of them may change where or how our messages are published.
The ``celery`` commands of this service, on the other hand, read ``./config.yaml``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import TEST_ENV, queue_key
from tests.support.paths import ROOT
from tests.support.processes import running, start_python
from tests.support.smtp_server import SmtpServer

WELCOME = {
    "to": "ann@example.com",
    "data": {
        "user_name": "Ann",
        "product_name": "Example Bookings",
        "login_url": "https://app.example.com/login",
    },
}
HOSTILE_CELERYCONFIG = """
broker_url = "redis://127.0.0.1:6379/9"
task_serializer = "pickle"
accept_content = ["pickle", "json"]
task_default_queue = "host-jobs"
"""
HOSTILE_CONFIG_YAML = """
queue: {redis: {db: 9}, queue_name: host-jobs}
database: {master_host: host-db.invalid, master_name: host_app}
"""


def _producer(folder: Path, code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as a producer service would: its own folder, the package imported."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=folder,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _envelope(client: redis.Redis, priority: str, task_id: str) -> dict[str, Any]:
    """Take the message of ``task_id`` off our queue and return kombu's envelope."""
    base = queue_key(priority)
    for key in client.keys(f"{base}*"):
        if key.decode().split("\x06\x16")[0] != base:
            continue
        for raw in client.lrange(key, 0, -1):
            envelope = json.loads(raw)
            if envelope["headers"]["id"] == task_id:
                client.lrem(key, 1, raw)
                return envelope  # type: ignore[no-any-return]
    raise AssertionError(f"no message for {task_id} in {base}")


def _publish_and_read_settings(folder: Path, env: dict[str, str]) -> tuple[str, str, str]:
    done = _producer(
        folder,
        f"""
        from email_worker.config import get_settings
        from email_worker.tasks import send_welcome_email
        result = send_welcome_email.apply_async(kwargs={WELCOME!r})
        settings = get_settings()
        print(result.id, settings.db_master_host, settings.redis_db, result.backend.as_uri())
        """,
        env,
    )
    assert done.returncode == 0, done.stderr
    task_id, db_master_host, redis_db, backend = done.stdout.split()
    assert backend == "redis://127.0.0.1:6379/0"
    return task_id, db_master_host, redis_db


def test_a_producer_ignores_the_celeryconfig_and_celery_variables_of_its_host(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    (tmp_path / "celeryconfig.py").write_text(HOSTILE_CELERYCONFIG)
    host_environment = {
        "CELERY_CONFIG_MODULE": "celeryconfig",
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/9",
        "CELERY_RESULT_BACKEND": "redis://127.0.0.1:6379/9",
    }
    task_id, _, _ = _publish_and_read_settings(tmp_path, host_environment)
    envelope = _envelope(redis_client, "default", task_id)  # our Redis, our queue
    assert envelope["content-type"] == "application/json"
    body = json.loads(base64.b64decode(envelope["body"]))
    assert body[1]["to"] == ["ann@example.com"]


def test_a_producer_ignores_the_config_yaml_of_its_host(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    (tmp_path / "config.yaml").write_text(HOSTILE_CONFIG_YAML)
    task_id, db_master_host, redis_db = _publish_and_read_settings(tmp_path, {})
    assert (db_master_host, redis_db) == ("localhost", "0")  # our defaults, not the host's
    assert _envelope(redis_client, "default", task_id)


def test_a_producer_needs_none_of_the_worker_settings(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    done = _producer(
        tmp_path,
        f"""
        from email_worker.tasks import send_welcome_email
        print(send_welcome_email.apply_async(kwargs={WELCOME!r}).id)
        """,
        {"EMAIL_PROVIDER": "smtp", "SMTP_HOST": ""},
    )
    assert done.returncode == 0, done.stderr
    assert _envelope(redis_client, "default", done.stdout.strip())


@pytest.mark.slow
def test_a_worker_without_the_settings_it_sends_with_refuses_to_start(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "email_worker", "worker", "--pool=solo"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), "EMAIL_PROVIDER": "smtp", "SMTP_HOST": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "SMTP_HOST is required when EMAIL_PROVIDER is smtp" in done.stderr


@pytest.mark.slow
def test_the_worker_reads_the_config_yaml_of_its_folder(
    tmp_path: Path, smtp: SmtpServer, redis_client: redis.Redis
) -> None:
    queue_name = f"yaml-jobs-{uuid.uuid4().hex[:8]}"
    config = f"queue: {{queue_name: {queue_name}}}\nemail: {{from_name: Sent By Yaml}}\n"
    (tmp_path / "config.yaml").write_text(config)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "QUEUE_NAME": "", "EMAIL_FROM_NAME": ""}
    worker = start_python(
        *("-m", "celery", "-A", "email_worker", "worker", "--pool=solo"),
        *("--without-gossip", "--without-mingle", "--without-heartbeat"),
        log=None,
        cwd=tmp_path,
        env=env,
    )
    try:
        with running(worker):
            # The same file given by CONFIG_FILE, which a producer honours anywhere.
            done = _producer(
                ROOT,
                f"""
                from email_worker.tasks import send_welcome_email
                print(send_welcome_email.apply_async(kwargs={WELCOME!r}).id)
                """,
                {"QUEUE_NAME": "", "CONFIG_FILE": str(tmp_path / "config.yaml")},
            )
            assert done.returncode == 0, done.stderr
            (received,) = smtp.wait_for(1, timeout=30)
    finally:
        for key in redis_client.keys(f"{queue_name}*"):
            redis_client.delete(key)
    assert received.message["From"] == f"Sent By Yaml <{TEST_ENV['EMAIL_FROM']}>"
    assert received.message["Message-ID"] == f"<{done.stdout.strip()}@mail.example.com>"


@pytest.mark.slow
def test_the_package_installs_no_top_level_module_but_its_own(tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "*.egg-info", "__pycache__"))
    built = subprocess.run(
        [
            *(sys.executable, "-c", "import setuptools; setuptools.setup()"),
            *("-q", "build_py", "--build-lib", str(tmp_path / "lib")),
        ],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr
    assert sorted(p.name for p in (tmp_path / "lib").iterdir()) == ["email_worker"]
