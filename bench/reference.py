"""The references email-worker is measured against, as a plain Celery app of their own.

``celery -A bench.reference worker --concurrency=2 -Q <BENCH_QUEUE>.noop`` (or ``.naive``)
runs them on the broker in ``BENCH_BROKER_URL`` with the settings email-worker ships:
prefork, acknowledged late, one message prefetched. ``noop`` is the ceiling of the task
layer; ``naive_email`` is an email task as tutorials write it: a ``str.format`` body,
``email.mime``, and a new SMTP connection for every email (to ``BENCH_SMTP_PORT``).
"""

from __future__ import annotations

import os
import smtplib
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from typing import Any

from celery import Celery

from bench import content

QUEUE = os.environ.get("BENCH_QUEUE", "bench-reference")
NOOP_QUEUE = f"{QUEUE}.noop"
NAIVE_QUEUE = f"{QUEUE}.naive"

app = Celery("bench-reference", broker=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1"))
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    broker_transport_options={"queue_order_strategy": "priority"},
    task_routes={
        "bench.noop": {"queue": NOOP_QUEUE},
        "bench.naive_email": {"queue": NAIVE_QUEUE},
    },
)


@app.task(name="bench.noop")
def noop(**kwargs: Any) -> None:
    """Do nothing: what a task costs the broker and the pool alone."""


@app.task(name="bench.naive_email")
def naive_email(to: str, data: dict[str, Any]) -> None:
    """Send the benchmark email the way tutorials do: new connection, email.mime."""
    message = MIMEMultipart("alternative")
    message["Subject"] = content.SUBJECT.format(**data)
    message["From"] = content.SENDER
    message["To"] = to
    message.attach(MIMEText(content.TEXT.format(**data), "plain"))
    message.attach(MIMEText(content.HTML.format(**data), "html"))
    with smtplib.SMTP("127.0.0.1", int(os.environ["BENCH_SMTP_PORT"]), timeout=30) as smtp:
        smtp.sendmail(content.SENDER, [to], message.as_string())
