"""Recovery from a worker killed with SIGKILL, on the default broker and lease settings."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from email_worker.kinds import get_kind
from tests.conftest import purge_queues
from tests.support.processes import running, start_beat_process, start_worker_process
from tests.support.smtp_server import SmtpServer

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("clean_tables")]

# The defaults operators run with, not the short times the rest of the suite uses.
DEFAULTS = {"STRANDED_AFTER": "5m", "DISPATCH_INTERVAL": "1s"}
RECOVERY_BOUND = 120.0  # seconds, from the kill to the last email


@pytest.mark.timeout(300)
def test_a_killed_workers_emails_go_out_within_two_minutes(
    smtp: SmtpServer,
    redis_client,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    from email_worker.tasks import send_email, send_email_verification

    purge_queues(redis_client)
    smtp.handler.data_delay = 0.2  # each send takes a while, so the kill finds some mid-send
    data = dict(get_kind("email_verification").sample_data)
    tracked = [
        send_email_verification.apply_async(kwargs={"to": f"user{i}@example.com", "data": data}).id
        for i in range(150)
    ]
    fast = [
        send_email.delay(to=f"user{i}@example.com", subject=f"Notice {i}", text="x").id
        for i in range(50)
    ]
    expected = {f"<{task_id}@mail.example.com>" for task_id in tracked + fast}

    doomed = start_worker_process(tmp_path / "doomed.log", env=DEFAULTS)
    smtp.wait_for(20, timeout=60)
    survivor = start_worker_process(tmp_path / "survivor.log", env=DEFAULTS)
    beat = start_beat_process(tmp_path / "beat", env=DEFAULTS)
    with running(survivor, beat):
        os.killpg(doomed.pid, signal.SIGKILL)  # the worker and its pool processes, at once
        doomed.wait(timeout=10)
        killed_at = time.monotonic()
        deadline = killed_at + RECOVERY_BOUND + 30
        while time.monotonic() < deadline:
            if expected <= {r.message["Message-ID"] for r in smtp.received}:
                break
            time.sleep(0.2)
        recovered_in = time.monotonic() - killed_at
        time.sleep(2.0)  # a late duplicate would arrive now
    seen = Counter(r.message["Message-ID"] for r in smtp.received)
    print(f"recovered in {recovered_in:.1f}s; duplicates: {sum(seen.values()) - len(seen)}")
    missing = expected - set(seen)
    assert not missing, f"{len(missing)} emails never arrived"
    assert recovered_in <= RECOVERY_BOUND, f"the last email arrived {recovered_in:.0f}s after"
    duplicates = sum(count - 1 for count in seen.values())
    # Only the sends the killed worker had in flight (two pool processes) may go out twice.
    assert duplicates <= 2
