"""Keys rotate without downtime: ``rotate-keys`` re-seals while a worker sends, and ``check`` says
where a rotation stands.

This test process is a producer with the old key only (the suite's ``ENCRYPTION_KEYS``);
the worker and the commands run with the keys each step of a rotation gives them.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from email_worker.db.key_rotation import count_by_key, totals_by_key
from email_worker.db.sealing import key_id, new_key
from email_worker.db.session import primary_session
from email_worker.kinds import get_kind
from tests.conftest import DATABASE, TEST_ENV, purge_queues
from tests.support.commands import email_worker
from tests.support.paths import ROOT
from tests.support.pg import admin_url, wait_for_replay
from tests.support.processes import running, start_worker_process
from tests.support.smtp_server import SmtpServer
from tests.support.waiting import wait_for

pytestmark = pytest.mark.usefixtures("clean_tables")

OLD = TEST_ENV["ENCRYPTION_KEYS"]
NEW = new_key()
VERIFICATION = dict(get_kind("email_verification").sample_data)


def kid(key: str) -> str:
    """The id a value sealed with ``key`` (as ENCRYPTION_KEYS gives it) starts with."""
    return key_id(base64.urlsafe_b64decode(key))


def values_by_key() -> dict[str, int]:
    """How many stored values each key id sealed, over every sealed column."""
    with primary_session() as session:
        return totals_by_key(count_by_key(session))


def counted(output: str) -> dict[str, int]:
    """``rotate-keys``'s lines as numbers by ``table.column`` (and ``total``)."""
    return {line.split()[0]: int(line.split()[1]) for line in output.splitlines()}


def sent_jobs() -> int:
    engine = sa.create_engine(admin_url(database=DATABASE))
    try:
        with engine.connect() as connection:
            query = "SELECT count(*) FROM email_jobs WHERE status = 'sent'"
            return int(connection.exec_driver_sql(query).scalar_one())
    finally:
        engine.dispose()


def send_verifications(tag: str, count: int) -> list[str]:
    """Tracked sends stored (sealed with the old key) and published by this process."""
    from email_worker.tasks import send_email_verification

    return [
        send_email_verification.apply_async(
            kwargs={"to": f"rot{i}-{tag}@example.com", "data": VERIFICATION}
        ).id
        for i in range(count)
    ]


@pytest.mark.slow
def test_keys_rotate_while_a_worker_sends_and_the_new_key_alone_then_reads_everything(
    smtp: SmtpServer,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    from email_worker.db import suppressions

    purge_queues(redis_client)
    tag = uuid.uuid4().hex[:8]
    count = 80
    smtp.handler.data_delay = 0.3  # the worker is still sending while the rotation runs,
    # even when the rotation's own process is slow to start on a busy host (80 × 0.3 s)
    with primary_session() as session:
        suppressions.add_suppression(session, f"gone-{tag}@example.com", "manual", "all", "cli")
    task_ids = send_verifications(tag, count)
    assert set(values_by_key()) == {kid(OLD)}

    log = tmp_path / "worker.log"
    worker = start_worker_process(log, env={"ENCRYPTION_KEYS": f"{NEW},{OLD}"})
    with running(worker):
        smtp.wait_for(5, timeout=60)
        rotation = subprocess.Popen(
            [sys.executable, "-m", "email_worker.cli", "rotate-keys", "--batch", "7"],
            cwd=ROOT,
            env={**os.environ, "ENCRYPTION_KEYS": f"{NEW},{OLD}"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        out, err = rotation.communicate(timeout=120)
        assert rotation.returncode == 0, err
        assert len(smtp.received) < count, "the rotation ran after every email was sent"
        smtp.wait_for(count, timeout=120)
        wait_for(lambda: sent_jobs() == count, "every job recorded sent", log=log)
        time.sleep(1.0)  # a second delivery of any of them would arrive by now

    ids = sorted(r.message["Message-ID"] for r in smtp.received)
    assert ids == sorted(f"<{task_id}@mail.example.com>" for task_id in task_ids)
    resealed = counted(out)
    assert resealed["email_suppressions.address"] == 1
    assert resealed["email_jobs.recipient_email"] >= 1  # the jobs not yet sent at least
    assert resealed["total"] == sum(n for name, n in resealed.items() if name != "total")
    assert f"with key {kid(NEW)}" in out.splitlines()[-1]
    assert kid(OLD) not in values_by_key() and values_by_key()[kid(NEW)] > count

    wait_for_replay(DATABASE)  # `jobs list` reads the replica
    new_only = {"ENCRYPTION_KEYS": NEW}
    listed = email_worker("jobs", "list", "--limit", "1000", env=new_only).stdout
    assert sorted(line.split()[-1] for line in listed.splitlines()) == sorted(
        f"rot{i}-{tag}@example.com" for i in range(count)
    )
    one = email_worker("jobs", "list", "--to", f"ROT7-{tag}@example.com", env=new_only).stdout
    assert one.split()[-1] == f"rot7-{tag}@example.com"
    shown = email_worker("jobs", "show", task_ids[0], env=new_only).stdout
    assert f"rot0-{tag}@example.com" in shown
    suppressed = email_worker("suppressions", "list", env=new_only).stdout
    assert f"gone-{tag}@example.com" in suppressed


def test_a_value_under_a_key_not_configured_fails_the_rotation_naming_it(
    redis_client: redis.Redis,
) -> None:
    purge_queues(redis_client)
    stranger = new_key()
    email_worker(
        "suppressions", "add", "odd@example.com", "--reason", "manual",
        env={"ENCRYPTION_KEYS": stranger},
    )  # fmt: skip
    send_verifications(uuid.uuid4().hex[:8], 2)  # under the old key, never sent here

    done = email_worker("rotate-keys", check=False, env={"ENCRYPTION_KEYS": f"{NEW},{OLD}"})

    assert done.returncode == 1
    assert f"1 value(s) under key {kid(stranger)}" in done.stderr
    assert "not in ENCRYPTION_KEYS" in done.stderr
    assert counted(done.stdout)["email_jobs.recipient_email"] == 2  # nothing else left behind
    after = values_by_key()
    assert after == {kid(stranger): 1, kid(NEW): after[kid(NEW)]}
    purge_queues(redis_client)


def test_a_dry_run_counts_and_changes_nothing(redis_client: redis.Redis) -> None:
    purge_queues(redis_client)
    send_verifications(uuid.uuid4().hex[:8], 3)
    before = values_by_key()

    done = email_worker("rotate-keys", "--dry-run", env={"ENCRYPTION_KEYS": f"{NEW},{OLD}"})

    assert "to reseal" in done.stdout
    assert counted(done.stdout)["email_jobs.recipient_email"] == 3
    assert counted(done.stdout)["total"] == before[kid(OLD)]
    assert values_by_key() == before
    purge_queues(redis_client)


def test_generate_key_prints_a_key_that_seals_and_says_how_to_add_it() -> None:
    done = email_worker("generate-key", "--lookup")
    key, lookup = done.stdout.split()
    assert len(base64.urlsafe_b64decode(key)) == 32 and len(lookup) >= 43
    assert "ENCRYPTION_KEYS" in done.stderr and len(done.stderr.splitlines()) == 1
    assert email_worker("generate-key").stdout.strip() not in (key, "")
    given = {"ENCRYPTION_KEYS": key, "ENCRYPTION_LOOKUP_KEY": lookup}
    email_worker("suppressions", "add", "kept@example.com", "--reason", "manual", env=given)
    assert "kept@example.com" in email_worker("suppressions", "list", env=given).stdout
    assert values_by_key() == {kid(key): 1}


def sealing_line(**env: str) -> dict[str, str]:
    done = email_worker("check", "--json", check=False, env=env)
    (line,) = (result for result in json.loads(done.stdout) if result["name"] == "sealing")
    return dict(line)


def test_check_says_which_key_seals_and_what_is_left_to_rotate(
    redis_client: redis.Redis,
) -> None:
    purge_queues(redis_client)
    empty = sealing_line(ENCRYPTION_KEYS=f"{NEW},{OLD}")
    assert empty["status"] == "ok"
    assert empty["detail"] == f"personal data sealed with key {kid(NEW)} (2 keys configured)"

    # Outside live mode (which refuses to start without keys): the published keys.
    development = sealing_line(ENCRYPTION_KEYS="", ENCRYPTION_LOOKUP_KEY="", DELIVERY_MODE="outbox")
    assert development["status"] == "warn"
    assert "development keys" in development["detail"]

    send_verifications(uuid.uuid4().hex[:8], 2)
    older = sealing_line(ENCRYPTION_KEYS=f"{NEW},{OLD}")
    assert older["status"] == "warn"
    assert older["detail"].endswith(
        f"sealed with an older key ({kid(OLD)}): run email-worker rotate-keys"
    )

    dropped = sealing_line(ENCRYPTION_KEYS=NEW)
    assert dropped["status"] == "FAIL"
    assert f"under key {kid(OLD)}: not in ENCRYPTION_KEYS" in dropped["detail"]
    purge_queues(redis_client)
