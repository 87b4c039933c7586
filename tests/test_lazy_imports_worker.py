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
send: the send path (the delivery code, Jinja2, the database driver) is imported by each
pool process with its first message. A fast-path send reads the database only to look
for stored templates and suppressed recipients, through psycopg alone: SQLAlchemy (a
dozen MB in each process) comes to a pool process with its first tracked send, which
claims and records a row. Anything the main process imports before it forks is counted
in every process of the worker (docs/PERFORMANCE.md, "Worker memory").
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

from email_worker.kinds import get_kind
from tests.conftest import TEST_ENV
from tests.support.http import http_get
from tests.support.ports import free_port
from tests.support.processes import pool_processes, start_python, stop
from tests.support.smtp_server import Received, SmtpServer
from tests.support.waiting import wait_for, wait_for_log

# What a worker configured for SMTP without DKIM never needs: the other providers' SDKs
# and DKIM's library, and the web app's stack.
SDKS = ("boto3", "botocore", "sendgrid", "dkim")
WEB_STACK = ("fastapi", "starlette", "pydantic", "uvicorn", "httpx")
# A fast-path send seals nothing: it looks addresses up by their keyed hash only.
CIPHERS = "cryptography.hazmat.primitives.ciphers.aead"
# What only a send needs: never in the main process, in a pool process from its first send.
SEND_PATH = ("email_worker.worker.delivery", "jinja2", "psycopg")
# What only a tracked send needs: in the pool process that sends one, from then on.
TRACKED_PATH = ("email_worker.worker.tracked_delivery", "sqlalchemy", "sqlalchemy.orm")

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


def maps_sqlalchemy(pid: int) -> bool:
    """Whether process ``pid`` has imported SQLAlchemy (its compiled modules are mapped)."""
    return "/sqlalchemy/" in Path(f"/proc/{pid}/maps").read_text()


def family(pid: int) -> list[int]:
    """The worker's main process and its pool processes."""
    return [pid, *pool_processes(pid)]


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


def suppress(address: str) -> None:
    """Put ``address`` on the suppression list for every kind (a hard bounce)."""
    from email_worker.db import suppressions
    from email_worker.db.session import primary_session

    with primary_session() as session:
        suppressions.add_suppression(session, address, "hard_bounce", "all", "test")


def welcome_template(folder: Path) -> Path:
    """A TEMPLATES_DIR holding a ``welcome_email`` of its own (it needs only ``user_name``)."""
    (folder / "welcome_email").mkdir(parents=True)
    (folder / "welcome_email" / "subject.txt").write_text(
        "Hello from the templates folder, {{ user_name }}"
    )
    (folder / "welcome_email" / "body.txt").write_text("Welcome, {{ user_name }}.")
    return folder


def received(smtp: SmtpServer, recipient: str) -> list[Received]:
    """The emails the SMTP server took for ``recipient``, in order."""
    return [r for r in smtp.received if recipient in r.recipients]


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
    from email_worker.tasks import task_for

    queue = f"{TEST_ENV['QUEUE_NAME']}-smtp-{uuid.uuid4().hex[:6]}"
    recipient, gone, tracked = (f"{who}-{uuid.uuid4().hex[:8]}@example.com" for who in "abc")
    suppress(gone)
    log = tmp_path / "worker.log"
    port = free_port()
    worker = start_traced_worker(
        log,
        queue,
        SERVER_PORT=str(port),
        SERVER_HOST="127.0.0.1",
        TEMPLATES_DIR=str(welcome_template(tmp_path / "templates")),
    )
    try:
        wait_for_log(log, "ready", timeout=60)
        # Idle: neither the main process nor its pool processes have the send path, and
        # /health has not probed the database before the pool processes forked.
        idle = imported(log)
        send_to(queue, recipient)
        wait_for(lambda: received(smtp, recipient), f"the email to {recipient}", 60, log=log)
        first_send = log.read_text(errors="replace")
        # A file template, looked for among the stored ones first; and an address on the
        # suppression list, skipped: both read the database through psycopg alone.
        welcome = dict(get_kind("welcome_email").sample_data)
        task_for("welcome_email").apply_async(
            kwargs={"to": recipient, "data": welcome}, queue=f"{queue}.default"
        )
        send_to(queue, gone)
        wait_for_log(log, "every recipient is on the suppression list", timeout=60)
        (sent,) = wait_for(lambda: received(smtp, recipient)[1:], "the welcome email", 60, log=log)
        fast_path_log = log.read_text(errors="replace")
        main_had_the_driver = maps_the_driver(worker.pid)
        no_process_had_sqlalchemy = not any(maps_sqlalchemy(pid) for pid in family(worker.pid))
        # The database layer comes to the main process with the first /health request.
        status, body = http_get(port, "/health")
        health = json.loads(body)
        main_has_the_driver = maps_the_driver(worker.pid)
        # A tracked send: the pool process that sends it loads SQLAlchemy then.
        reset = dict(get_kind("password_reset").sample_data)
        task_for("password_reset").apply_async(
            kwargs={"to": tracked, "data": reset}, queue=f"{queue}.high"
        )
        wait_for(lambda: received(smtp, tracked), f"the tracked email to {tracked}", 60, log=log)
        pool_with_sqlalchemy = [pid for pid in pool_processes(worker.pid) if maps_sqlalchemy(pid)]
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    finally:
        stop(worker)
    loaded = packages(log)
    assert "celery" in loaded and "email_worker" in loaded  # the log does list the imports
    assert sorted(loaded & {*SDKS, *WEB_STACK}) == []
    assert sorted(idle & {*SEND_PATH, *TRACKED_PATH}) == []
    # After the first send, once each: by the pool process that sent it, not the main one.
    first = {module: _IMPORTED.findall(first_send).count(module) for module in SEND_PATH}
    assert first == dict.fromkeys(SEND_PATH, 1)
    assert sent.message["Subject"] == "Hello from the templates folder, Ann Lee"
    # Fast-path sends, the suppression list and a file template: no SQLAlchemy anywhere,
    # and no cipher (a tracked send opens its sealed row).
    fast_path = set(_IMPORTED.findall(fast_path_log))
    assert sorted(fast_path & {*TRACKED_PATH, CIPHERS}) == []
    assert no_process_had_sqlalchemy
    assert [r for r in smtp.received if gone in r.recipients] == []
    assert not main_had_the_driver
    assert (status, health["database"]["primary"]["status"]) == (200, "up")
    assert main_has_the_driver
    # The tracked send: its pool process, and it alone, imported the tracked path.
    assert {module: times_imported(log, module) for module in TRACKED_PATH} == dict.fromkeys(
        TRACKED_PATH, 1
    )
    assert len(pool_with_sqlalchemy) == 1


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
