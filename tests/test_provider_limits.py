"""The global rate limit held by two worker processes together, counted at the SMTP server."""

from __future__ import annotations

from pathlib import Path

import redis

from tests.conftest import purge_queues
from tests.support.processes import running, start_worker_process
from tests.support.smtp_server import SmtpServer
from tests.support.waiting import wait_for_log

RATE = 20.0
EMAILS = 320


def test_two_workers_together_send_no_faster_than_the_rate_limit(
    smtp: SmtpServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    from email_worker.tasks import send_email

    purge_queues(redis_client)
    for key in redis_client.scan_iter("email-worker:ratelimit:*test-email-jobs*"):
        redis_client.delete(key)
    env = {
        "SMTP_RATE_LIMIT": str(RATE),
        # Bookings up to ~16 s ahead stay with the broker rather than in the database.
        "SCHEDULE_THRESHOLD": "30",
    }
    workers = [
        start_worker_process(
            tmp_path / f"worker{i}.log", f"--hostname=limited{i}@%h", env=env, concurrency=1
        )
        for i in range(2)
    ]
    with running(*workers):
        for i in range(2):
            wait_for_log(tmp_path / f"worker{i}.log", "ready")
        for i in range(EMAILS):
            send_email.apply_async(
                kwargs={"to": f"reader{i}@example.com", "subject": "News", "text": f"Issue {i}"}
            )
        received = smtp.wait_for(EMAILS, timeout=90)
    # The bucket holds one second's tokens, which go out at once; every later email has
    # a token of its own, one interval after the one before, taken or booked in Redis.
    # A worker slowed down by a busy machine sends a late email as soon as it can, so a
    # short window may see more than the rate; but the first email leaves once the first
    # token is taken and the last cannot leave before its token's time, so between the
    # two the rate holds.
    times = sorted(r.at for r in received)
    rate = (EMAILS - RATE) / (times[-1] - times[0])
    assert rate <= RATE * 1.1, f"{rate:.1f} emails/s with a limit of {RATE:g}/s"
    assert rate >= RATE * 0.8, f"only {rate:.1f} emails/s with a limit of {RATE:g}/s"
    subjects = sorted(r.message["Subject"] for r in received)
    assert len(received) == EMAILS and len(set(r.raw for r in received)) == EMAILS
    assert subjects == ["News"] * EMAILS
