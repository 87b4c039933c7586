"""A worker imports what its settings use, and nothing of the web app.

Every process of a prefork worker pays for each module it imports: boto3 and botocore
alone are tens of MB. A worker sending through SMTP must not load the other providers'
SDKs, DKIM's library or the web stack, neither in its main process nor in its pool
processes, before or after it sends. The workers here run under ``python -X importtime``,
which writes a line to standard error for every module each process imports (pool
processes included, forked with the flag set), so the log is the list of what the real
processes loaded. A fast-path send seals nothing either, so it does not load the cipher
library that sealing personal data needs.

The worker's main process receives, hands out and acknowledges messages and runs no
send: the send path (the delivery code, SQLAlchemy's ORM, Jinja2, the database driver)
is imported by each pool process with its first message. Anything the main process
imports before it forks is counted in every process of the worker (docs/PERFORMANCE.md,
"Worker memory").
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import TEST_ENV
from tests.support.http import http_get
from tests.support.ports import free_port
from tests.support.processes import start_python, stop
from tests.support.smtp_server import SmtpServer
from tests.support.waiting import wait_for, wait_for_log

# What a worker configured for SMTP without DKIM never needs: the other providers' SDKs
# and DKIM's library, and the web app's stack.
SDKS = ("boto3", "botocore", "sendgrid", "dkim")
WEB_STACK = ("fastapi", "starlette", "pydantic", "uvicorn", "httpx")
# A fast-path send seals nothing: it looks addresses up by their keyed hash only.
CIPHERS = "cryptography.hazmat.primitives.ciphers.aead"
# What only a send needs: never in the main process, in a pool process from its first send.
SEND_PATH = ("email_worker.worker.delivery", "sqlalchemy.orm", "jinja2", "psycopg")

# The session's Redis fixture empties the keys of queues named after QUEUE_NAME at the end.
pytestmark = pytest.mark.usefixtures("redis_client")

_IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)\s*$", re.MULTILINE)


def imported(log: Path) -> set[str]:
    """The modules any process of the worker imported, read from its log."""
    return set(_IMPORTED.findall(log.read_text(errors="replace")))


def times_imported(log: Path, module: str) -> int:
    """How many of the worker's processes imported ``module``."""
    return _IMPORTED.findall(log.read_text(errors="replace")).count(module)


def maps_the_driver(pid: int) -> bool:
    """Whether process ``pid`` has loaded psycopg's compiled module (its libpq with it)."""
    return "psycopg_binary" in Path(f"/proc/{pid}/maps").read_text()


def packages(log: Path) -> set[str]:
    """The top-level packages any process of the worker imported."""
    return {name.split(".")[0] for name in imported(log)}


def start_traced_worker(log: Path, queue: str, **env: str) -> subprocess.Popen[bytes]:
    """``python -X importtime -m celery -A email_worker worker -c 2`` on queues of its own."""
    return start_python(
        *("-X", "importtime", "-m", "celery", "-A", "email_worker", "worker"),
        *("--concurrency=2", "--without-gossip", "--without-mingle", "--loglevel=INFO"),
        f"--hostname=imports-{uuid.uuid4().hex[:8]}@%h",
        log=log,
        env={"QUEUE_NAME": queue, "LOG_FORMAT": "json", **env},
    )


def send_to(queue: str, recipient: str) -> None:
    """Publish one fast-path email on the worker's own default queue."""
    from email_worker.tasks import send_email

    send_email.apply_async(
        kwargs={"to": recipient, "subject": "Lazy imports", "text": "Hello"},
        queue=f"{queue}.default",
    )


@pytest.mark.slow
def test_an_smtp_worker_imports_no_other_sdk_nor_the_web_stack_also_after_a_send(
    smtp: SmtpServer,
    celery_app,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    queue = f"{TEST_ENV['QUEUE_NAME']}-smtp-{uuid.uuid4().hex[:6]}"
    recipient = f"lazy-{uuid.uuid4().hex[:8]}@example.com"
    log = tmp_path / "worker.log"
    port = free_port()
    worker = start_traced_worker(log, queue, SERVER_PORT=str(port), SERVER_HOST="127.0.0.1")
    try:
        wait_for_log(log, "ready", timeout=60)
        # Idle: neither the main process nor its pool processes have the send path, and
        # /health has not probed the database before the pool processes forked.
        idle = imported(log)
        send_to(queue, recipient)
        wait_for(
            lambda: [r for r in smtp.received if recipient in r.recipients],
            f"the email to {recipient}",
            timeout=60,
            log=log,
        )
        main_had_the_driver = maps_the_driver(worker.pid)
        sent_log = log.read_text(errors="replace")
        # The database layer comes to the main process with the first /health request.
        status, body = http_get(port, "/health")
        health = json.loads(body)
        main_has_the_driver = maps_the_driver(worker.pid)
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    finally:
        stop(worker)
    loaded = packages(log)
    assert "celery" in loaded and "email_worker" in loaded  # the log does list the imports
    assert sorted(loaded & {*SDKS, *WEB_STACK}) == []
    assert CIPHERS not in imported(log)
    assert sorted(idle & set(SEND_PATH)) == []
    # After the send, once each: by the pool process that sent it, not the main process.
    sent = {module: _IMPORTED.findall(sent_log).count(module) for module in SEND_PATH}
    assert sent == dict.fromkeys(SEND_PATH, 1)
    assert not main_had_the_driver
    assert (status, health["database"]["primary"]["status"]) == (200, "up")
    assert main_has_the_driver
    assert times_imported(log, "sqlalchemy.orm") == 1  # /health needs no ORM


@pytest.mark.slow
def test_a_worker_configured_for_ses_imports_boto3_when_it_sends(
    celery_app,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    queue = f"{TEST_ENV['QUEUE_NAME']}-ses-{uuid.uuid4().hex[:6]}"
    log = tmp_path / "worker.log"
    worker = start_traced_worker(
        log,
        queue,
        EMAIL_PROVIDER="ses",
        AWS_SES_REGION="eu-west-1",
        AWS_ACCESS_KEY_ID="AKIAEXAMPLEEXAMPLE00",
        AWS_SECRET_ACCESS_KEY="not-a-real-secret",
        # Nothing listens there: the send fails as transient, after boto3 is loaded.
        AWS_ENDPOINT_URL_SESV2=f"http://127.0.0.1:{free_port()}",
    )
    try:
        wait_for_log(log, "ready", timeout=60)
        send_to(queue, "ses-lazy@example.com")
        wait_for(lambda: "boto3" in packages(log), "boto3 among the imports", 60, log=log)
    finally:
        stop(worker)
    assert "botocore" in packages(log)
