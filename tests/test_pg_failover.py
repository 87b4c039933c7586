"""The PostgreSQL primary crashes mid-burst and its standby is promoted.

The cluster is a private pair (tests/support/pg_cluster.py): the shared servers stay up.
The worker, beat and a producer process are given both hosts for the primary
(``DB_MASTER_HOST=a,b``, ``target_session_attrs=read-write``) and for the replica (the
other way round, ``prefer-standby``), as an operator with a standby would configure them.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from email_worker.db import migrate
from tests.conftest import purge_queues
from tests.support.http import http_get
from tests.support.pg_cluster import PgPair, private_pair
from tests.support.ports import free_port
from tests.support.processes import running, start_beat_process, start_python, start_worker_process
from tests.support.smtp_server import SmtpServer
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

DATABASE = "failover"
DOMAIN = "mail.example.com"
BURST = 240  # tracked emails
INTERVAL = 0.02  # seconds between them
CRASH_AFTER = 60  # emails at the SMTP server before the primary crashes
CONCURRENCY = 2
# From the crash to the promotion: a failover manager's time to notice the primary is gone.
DETECTION = 3.0


def failover_env(pair: PgPair) -> dict[str, str]:
    """Settings naming both hosts for each role, instead of the suite's shared database."""
    primary, standby = pair.primary.address, pair.standby.address
    return {
        "DATABASE_URL": "",
        "DATABASE_REPLICA_URL": "",
        "DB_MASTER_HOST": f"{primary},{standby}",
        "DB_MASTER_NAME": DATABASE,
        "DB_MASTER_USER": "postgres",
        "DB_SLAVE_HOST": f"{standby},{primary}",
        "DB_SLAVE_NAME": DATABASE,
        "DB_SLAVE_USER": "postgres",
        # The retry timing operators run with, so the figures measured are theirs.
        "RETRY_DELAY": "5s",
        "RETRY_BACKOFF_MAX": "10m",
        "SCHEDULE_THRESHOLD": "30s",
        "DISPATCH_INTERVAL": "1s",
        # The nets, shorter than their defaults so that the test need not wait minutes: a
        # job whose message was lost is published again after STRANDED_AFTER, and one lost
        # mid-send after its lease (PROCESS_TIMEOUT + 30 s).
        "STRANDED_AFTER": "10s",
        "PROCESS_TIMEOUT": "5",
    }


def attempts(out: Path) -> list[dict[str, Any]]:
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text().splitlines() if line.endswith("}")]


def job_statuses(pair: PgPair) -> dict[str, int]:
    """How many jobs the promoted server holds in each status."""
    with pair.standby.connect(DATABASE) as connection:
        rows = connection.execute("SELECT status, count(*) FROM email_jobs GROUP BY status")
        return {str(status): int(count) for status, count in rows}


def health(port: int) -> dict[str, Any]:
    """The worker's /health body; empty while it does not answer."""
    try:
        _, body = http_get(port, "/health")
    except OSError:
        return {}
    return dict(json.loads(body))


def promoted_named(body: dict[str, Any], address: str) -> dict[str, Any]:
    """``body`` when it names ``address`` as the primary; empty otherwise."""
    primary = body.get("database", {}).get("primary", {})
    return body if primary.get("host") == address else {}


@pytest.mark.timeout(150)
def test_a_burst_goes_out_through_a_crash_of_the_primary_and_a_promoted_standby(
    smtp: SmtpServer,
    redis_client,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    purge_queues(redis_client)
    smtp.handler.data_delay = 0.02
    with private_pair(synchronous=True) as pair:
        pair.create_database(DATABASE)
        migrate.upgrade(pair.primary.url(DATABASE))
        env = failover_env(pair)
        health_port = free_port()
        worker = start_worker_process(
            tmp_path / "worker.log", env={**env, "SERVER_PORT": str(health_port)}
        )
        beat = start_beat_process(tmp_path / "beat", env=env)
        out = tmp_path / "producer.jsonl"
        producer = start_python(
            *("-m", "tests.support.tracked_burst", str(BURST), str(INTERVAL), str(out)),
            log=tmp_path / "producer.log",
            env=env,
        )
        with running(producer, worker, beat):
            # /health is asked only once the pool processes are up: a probe thread importing
            # the database driver while the pool forks would leave them its import lock.
            smtp.wait_for(1, timeout=60)
            before = wait_for(
                lambda: health(health_port), "the worker's /health", log=tmp_path / "worker.log"
            )
            assert before["database"]["primary"]["host"] == pair.primary.address
            assert before["database"]["replica"]["host"] == pair.standby.address

            smtp.wait_for(CRASH_AFTER, timeout=60)
            pair.primary.crash()
            crashed_at = time.monotonic()
            time.sleep(DETECTION)
            pair.standby.promote()
            promoted_at = time.monotonic()

            producer.wait(timeout=60)
            accepted = {a["task_id"] for a in attempts(out) if a["ok"]}
            expected = {f"<{task_id}@{DOMAIN}>" for task_id in accepted}
            wait_for(
                lambda: expected <= {r.message["Message-ID"] for r in smtp.received},
                "every accepted email at the SMTP server",
                timeout=75,
                interval=0.2,
                log=tmp_path / "worker.log",
            )
            all_out_at = time.monotonic()
            # Every job is recorded as sent on the promoted server: none is left pending or
            # in `sending` for the nets to pick up later.
            wait_for(
                lambda: job_statuses(pair) == {"sent": BURST},
                "every job recorded as sent",
                timeout=20,
            )
            after: dict[str, Any] = wait_for(
                lambda: promoted_named(health(health_port), pair.standby.address),
                "/health to name the promoted standby as the primary",
                timeout=20,
            )
            time.sleep(1.0)  # a late duplicate would arrive now

    records = attempts(out)
    refused = [a for a in records if not a["ok"]]
    stored_again_at = min(a["at"] for a in records if a["ok"] and a["at"] > crashed_at)
    arrivals = sorted(r.at for r in smtp.received)
    resumed_at = min(at for at in arrivals if at > promoted_at)
    gap = max(later - earlier for earlier, later in zip(arrivals, arrivals[1:], strict=False))
    seen = Counter(r.message["Message-ID"] for r in smtp.received)
    duplicates = sum(count - 1 for count in seen.values())
    log = (tmp_path / "worker.log").read_text()
    print(
        f"no primary for {promoted_at - crashed_at:.2f}s (crash to promotion); producers refused"
        f" {len(refused)} times, storing again {stored_again_at - promoted_at:.2f}s after the"
        f" promotion; sending resumed {resumed_at - promoted_at:.2f}s after the promotion"
        f" (longest pause at the SMTP server {gap:.2f}s); all {len(accepted)} out"
        f" {all_out_at - crashed_at:.1f}s after the crash; duplicates: {duplicates};"
        f" claims retried: {log.count('cannot claim the job')};"
        f" stranded relays: {log.count('stranded jobs published again')};"
        f" leases reaped: {log.count('expired send leases reaped')}"
    )
    assert len(accepted) == BURST
    assert not expected - set(seen), "tracked emails lost"
    # Only sends in flight at the crash may go out twice (docs/reliability.md).
    assert duplicates <= CONCURRENCY
    # Producers are refused, with the reason, only while no server takes writes.
    assert refused, "the producer never saw the outage"
    for attempt in refused:
        assert crashed_at - 0.5 <= attempt["at"] <= promoted_at + 0.5, attempt
        assert "DatabaseUnavailable: cannot store the job on the primary" in attempt["error"]
    assert stored_again_at - promoted_at < 2.0
    assert resumed_at - promoted_at < 15.0
    # Reads too: no standby is left, so prefer-standby reads the promoted server.
    assert after["database"]["replica"]["host"] == pair.standby.address
