"""A worker's log: one line per outcome with what identifies it, and nothing secret or personal.

The worker runs as operators run it, with every secret setting configured, and sends
that succeed, retry and fail, tracked and not, with template data holding a marker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import TEST_ENV, purge_queues, queue_key
from tests.support.commands import email_worker
from tests.support.paths import ROOT
from tests.support.processes import running
from tests.support.smtp_server import SmtpServer
from tests.support.waiting import wait_for_log

MARKER = f"template-marker-{uuid.uuid4().hex[:10]}"
DKIM_KEY = (
    rsa.generate_private_key(public_exponent=65537, key_size=2048)
    .private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    .decode()
)
SECRETS = {
    "smtp": "smtp-pass-5f1c9e",
    "sendgrid": "SG.sendgrid-key-77ab01",
    "aws_id": "AKIAEXAMPLEKEY93X",
    "aws_secret": "aws-secret-c0ffee42",
    "primary": "primary-db-pass-a1b2",
    "replica": "replica-db-pass-c3d4",
    "master": "master-pass-e5f6",
    "slave": "slave-pass-0a0b",
    "legacy": "legacy-db-pass-9e8d",
    "redis": "redis-pass-4242ab",
    "flower": "flower-pass-31337",
    "dkim": DKIM_KEY.splitlines()[5],  # a line from the middle of the key
}
DATABASE = TEST_ENV["DATABASE_URL"].rsplit("/", 1)[1]
SECRET_ENV = {
    "SMTP_PASSWORD": SECRETS["smtp"],  # no SMTP_USERNAME: never sent to the test server
    "SENDGRID_API_KEY": SECRETS["sendgrid"],
    "AWS_ACCESS_KEY_ID": SECRETS["aws_id"],
    "AWS_SECRET_ACCESS_KEY": SECRETS["aws_secret"],
    # Trust authentication: the server does not ask for the password the URL carries.
    "DATABASE_URL": f"postgresql+psycopg://postgres:{SECRETS['primary']}@127.0.0.1:5432/{DATABASE}",
    "DATABASE_REPLICA_URL": (
        f"postgresql+psycopg://postgres:{SECRETS['replica']}@127.0.0.1:5433/{DATABASE}"
    ),
    "DB_MASTER_PASSWORD": SECRETS["master"],
    "DB_SLAVE_PASSWORD": SECRETS["slave"],
    "DB_PASSWORD": SECRETS["legacy"],
    "REDIS_PASSWORD": SECRETS["redis"],
    "BROKER_URL": f"redis://:{SECRETS['redis']}@127.0.0.1:6379/0",
    "DKIM_DOMAIN": "mail.example.com",
    "DKIM_SELECTOR": "s1",
    "DKIM_PRIVATE_KEY": DKIM_KEY,
    "FLOWER_BASIC_AUTH": f"admin:{SECRETS['flower']}",
}
# Recipients that must appear only masked.
ANN, BOB, CARL, DAVE, ERIN, FRANK = (
    f"{name}.{uuid.uuid4().hex[:6]}@example.com"
    for name in ("ann", "bob", "carl", "dave", "erin", "frank")
)
OUTCOMES = ("email sent", "email failed", "email send failed, retrying")


def data(kind_data: dict[str, Any]) -> dict[str, Any]:
    return {**kind_data, "user_name": MARKER}


def send_every_outcome(smtp: SmtpServer) -> dict[str, str]:
    """Publish sends that succeed, retry then succeed, and fail; return their ids."""
    from email_worker.kinds import get_kind
    from email_worker.tasks import send_email_verification, send_welcome_email

    welcome = dict(get_kind("welcome_email").sample_data)
    verification = dict(get_kind("email_verification").sample_data)
    smtp.handler.refuse(DAVE, "451 4.2.0 try again later")
    smtp.handler.refuse(CARL, "550 5.1.1 no such user")
    smtp.handler.refuse(ERIN, "550 5.1.1 no such user")
    return {
        "sent": send_welcome_email.delay(to=[ANN, BOB], data=data(welcome)).id,
        "retried": send_welcome_email.delay(to=DAVE, data=data(welcome)).id,
        "failed": send_welcome_email.delay(to=CARL, data=data(welcome)).id,
        "tracked_sent": send_email_verification.delay(to=FRANK, data=data(verification)).id,
        "tracked_failed": send_email_verification.delay(to=ERIN, data=data(verification)).id,
    }


def run_worker(
    tmp_path: Path, log_format: str, smtp: SmtpServer, redis_client
) -> tuple[str, dict[str, str]]:  # type: ignore[no-untyped-def]
    """Run a worker with every secret set through all outcomes; return its log and the ids."""
    purge_queues(redis_client)
    ids = send_every_outcome(smtp)
    log = tmp_path / "worker.log"
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "email_worker",
            "worker",
            "--concurrency=1",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=ROOT,
        env={
            **os.environ,
            **SECRET_ENV,
            "LOG_FORMAT": log_format,
            "LOG_LEVEL": "info",
            "SERVER_PORT": "0",
        },
        stdout=subprocess.DEVNULL,  # the start-up banner; the log is on stderr
        stderr=log.open("wb"),
        start_new_session=True,
    )
    with running(worker):
        smtp.wait_for(3, timeout=60)
        wait_for_log(log, ids["tracked_failed"], timeout=60)
        wait_for_log(log, ids["failed"], timeout=60)
    return log.read_text(), ids


def assert_nothing_secret(text: str) -> None:
    for name, secret in SECRETS.items():
        assert secret not in text, f"the {name} secret was logged"
    assert MARKER not in text, "template data was logged"
    for address in (ANN, BOB, CARL, DAVE, ERIN, FRANK):
        assert address not in text and address.split("@")[0] not in text


@pytest.mark.slow
def test_json_log_has_one_line_per_outcome_and_nothing_secret(
    smtp: SmtpServer,
    redis_client,
    tmp_path: Path,
    clean_tables: None,  # type: ignore[no-untyped-def]
) -> None:
    text, ids = run_worker(tmp_path, "json", smtp, redis_client)
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line JSON
    assert_nothing_secret(text)
    outcomes = [line for line in lines if line["message"] in OUTCOMES]
    for line in outcomes:
        assert {
            "level",
            "time",
            "task_id",
            "kind",
            "queue",
            "provider",
            "duration_ms",
            "retries",
            "tracked",
            "to",
        } <= set(line)
        assert line["duration_ms"] >= 0

    def outcome(task_id: str, message: str) -> dict[str, Any]:
        found = [
            line for line in outcomes if line["task_id"] == task_id and line["message"] == message
        ]
        assert len(found) == 1, (task_id, message, outcomes)
        return found[0]

    default, high = queue_key("default"), queue_key("high")
    assert outcome(ids["sent"], "email sent") | {"duration_ms": 0} == outcome(
        ids["sent"], "email sent"
    ) | {
        "level": "info",
        "kind": "welcome_email",
        "queue": default,
        "provider": "smtp",
        "retries": 0,
        "tracked": False,
        "to": "a***@example.com (+1 more)",
        "duration_ms": 0,
    }
    retry = outcome(ids["retried"], "email send failed, retrying")
    assert (retry["level"], retry["retries"], retry["to"]) == ("warning", 0, "d***@example.com")
    again = outcome(ids["retried"], "email sent")
    assert (again["retries"], again["provider"]) == (1, "smtp")
    failed = outcome(ids["failed"], "email failed")
    assert (failed["level"], failed["provider"], failed["to"]) == (
        "error",
        "smtp",
        "c***@example.com",
    )
    tracked = outcome(ids["tracked_sent"], "email sent")
    assert (tracked["job_id"], tracked["tracked"], tracked["queue"]) == (
        ids["tracked_sent"],
        True,
        high,
    )
    tracked_failed = outcome(ids["tracked_failed"], "email failed")
    assert (tracked_failed["job_id"], tracked_failed["tracked"]) == (ids["tracked_failed"], True)
    assert len(outcomes) == 6


@pytest.mark.slow
def test_text_log_has_one_line_per_outcome_and_nothing_secret(
    smtp: SmtpServer,
    redis_client,
    tmp_path: Path,
    clean_tables: None,  # type: ignore[no-untyped-def]
) -> None:
    text, ids = run_worker(tmp_path, "text", smtp, redis_client)
    assert_nothing_secret(text)
    for key, message in (
        ("sent", "email sent"),
        ("retried", "email send failed, retrying"),
        ("retried", "email sent"),
        ("failed", "email failed"),
        ("tracked_sent", "email sent"),
        ("tracked_failed", "email failed"),
    ):
        matching = [
            line for line in text.splitlines() if f": {message} " in line and ids[key] in line
        ]
        assert len(matching) == 1, (message, text)
        assert "provider=smtp" in matching[0] and "kind=" in matching[0]


def test_settings_dumps_show_no_secret() -> None:
    env = {**SECRET_ENV, "CONFIG_FILE": ""}
    shown = email_worker("config", env=env).stdout
    report = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "email_worker", "report"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )
    assert report.returncode == 0, report.stderr
    assert "broker_url" in report.stdout and "smtp_host" in shown
    for name, secret in SECRETS.items():
        assert secret not in shown + report.stdout + report.stderr, f"the {name} secret was shown"
