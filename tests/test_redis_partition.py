"""A network partition between a worker and its Redis, during a burst of tracked sends.

The worker reaches a private redis-server through a TCP proxy the test black-holes: its
connections stay open and no byte gets through either way, so the worker learns of the
loss only from its own timeouts. The producer and beat reach Redis directly (they are on
the other side of the partition). The test counts what reached the SMTP server and
prints how long sending took to resume once the partition healed.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from tests.support.processes import running, start_beat_process, start_worker_process
from tests.support.redis_server import private_redis
from tests.support.smtp_server import SmtpServer
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_for
from tests.test_full_redis import DOMAIN, message_ids, send_tracked

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("clean_tables")]
PARTITION_SECONDS = 8.0
# A message whose BRPOP answer the partition swallowed is out of Redis with no copy:
# its tracked job is published again by beat's relay after this long.
STRANDED_AFTER = "10"
# What docs/reliability.md promises: every email out this soon after the partition heals.
RESUME_BOUND = 20.0


def test_a_partition_between_worker_and_redis_loses_no_tracked_email(
    smtp: SmtpServer, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    with private_redis(tmp_path / "redis") as broker:
        proxy = TcpProxy(target=broker.port).open()
        try:
            worker = start_worker_process(
                log,
                env={
                    "BROKER_URL": f"redis://127.0.0.1:{proxy.port}/0",
                    "STRANDED_AFTER": STRANDED_AFTER,
                },
            )
            beat = start_beat_process(
                tmp_path / "beat", env={"BROKER_URL": broker.url, "STRANDED_AFTER": STRANDED_AFTER}
            )
            with running(worker, beat):
                wait_for(lambda: "ready" in log.read_text(), "the worker to be ready", timeout=60)
                smtp.handler.data_delay = 0.2  # the partition finds sends in flight
                first = send_tracked(broker, 10, "first")
                smtp.wait_for(3, timeout=30)
                proxy.black_hole()
                cut = time.monotonic()
                second = send_tracked(broker, 10, "second")  # queued on Redis's side
                time.sleep(PARTITION_SECONDS)
                during = len(smtp.received)
                smtp.handler.data_delay = 0
                proxy.heal()
                healed = time.monotonic()
                smtp.wait_for(20, timeout=75)
                after = [r.at for r in smtp.received[during:]]
                resumed = min(after) - healed
                done = max(after) - healed
                print(
                    f"partition of {healed - cut:.1f}s: {during} emails reached the server "
                    f"before it healed; sending resumed {resumed:.1f}s after it healed, "
                    f"the last of 20 arrived {done:.1f}s after"
                )
                assert done < RESUME_BOUND
                time.sleep(2.0)  # a duplicate would arrive now
                assert worker.poll() is None
        finally:
            proxy.close()
    counts = Counter(message_ids(smtp))
    assert set(counts) == {f"<{job_id}@{DOMAIN}>" for job_id in first + second}
    assert max(counts.values()) == 1  # tracked: a redelivered message loses the claim
