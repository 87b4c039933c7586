"""email-worker on Redis through Sentinel: a master, its replica and three Sentinels, real
worker, beat and producer processes, and what a failover costs, counted at the SMTP server.

The figures each fault test prints (fast-path emails lost, duplicates, the pause in
sending) are the ones docs/reliability.md quotes; run with ``-s`` to see them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from email_worker.kinds import get_kind
from tests import test_rabbitmq
from tests.observability.test_health import health_is
from tests.support.commands import email_worker
from tests.support.paths import ROOT
from tests.support.ports import free_port
from tests.support.processes import running, start_beat_process, start_worker_process
from tests.support.redis_sentinel import RedisProcess, SentinelSet, sentinel_set
from tests.support.smtp_server import SmtpServer
from tests.support.waiting import wait_for
from tests.test_rabbitmq import message_id, showing_log

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("clean_tables")]
producer = test_rabbitmq.producer  # a service sending through this package, its own process

CONCURRENCY = 2
SENDS_PER_SECOND = 25  # fast-path and tracked sends alternate
AFTER_RECOVERY = 3.0  # seconds the burst goes on once a new master answers
RESUME_BOUND = 20.0  # seconds, from the fault to sending again (docs/reliability.md)


MASTER_SECRET = "master-secret-5b1e"
SENTINEL_SECRET = "sentinel-secret-90c2"


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    with sentinel_set(tmp_path / "redis") as servers:
        yield servers


@pytest.fixture
def guarded_sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    """Redis with a password, and Sentinels with one of their own."""
    folder = tmp_path / "redis"
    with sentinel_set(folder, password=MASTER_SECRET, sentinel_password=SENTINEL_SECRET) as s:
        yield s


def test_a_worker_on_sentinel_sends_both_paths_and_reports_the_master(
    smtp: SmtpServer, guarded_sentinels: SentinelSet, producer: Any, tmp_path: Path
) -> None:
    sentinels = guarded_sentinels
    http_port = free_port()
    env = {**sentinels.env, "SERVER_PORT": str(http_port), "SERVER_HOST": "127.0.0.1"}
    log = tmp_path / "worker.log"
    worker = start_worker_process(log, env=env, concurrency=1)
    sender = producer(**sentinels.env)
    fast = sender.send(to="ann@example.com", subject="Fast", text="x")
    tracked = sender.send(
        "send_email_verification",
        to="bob@example.com",
        data=dict(get_kind("email_verification").sample_data),
    )
    with running(worker), showing_log(log):
        smtp.wait_for(2, timeout=30)
        body = wait_for(health_is(http_port, 200), "a healthy worker", log=log)
    assert {r.message["Message-ID"] for r in smtp.received} == {
        message_id(fast),
        message_id(tracked),
    }
    assert body["queue"]["sentinel_master"] == sentinels.master.address

    done = email_worker("check", "--json", check=False, env=sentinels.env)
    broker = {r["name"]: r for r in json.loads(done.stdout)}["broker"]
    assert broker["status"] in ("ok", "warn"), broker  # warn: the queues are empty
    assert f"master {sentinels.master.address} (mymaster)" in broker["detail"]
    shown = log.read_text() + done.stdout + done.stderr + json.dumps(body)
    assert MASTER_SECRET not in shown and SENTINEL_SECRET not in shown

    # The result backend and the client of the rate limits and kill counts: the same master.
    code = """
        from email_worker.celeryapp.app import app
        from email_worker.config import get_settings
        from email_worker.redis_client import redis_client, redis_url
        app.backend.set("probe", "from the backend")
        client = redis_client(redis_url(get_settings()), timeout=2)
        value = client.get("probe").decode()
        print(type(app.backend).__name__, value, client.connection_pool.master_address)
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env={**os.environ, **sentinels.env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split(" ", 1) == [
        "SentinelBackend",
        f"from the backend ('127.0.0.1', {sentinels.master.port})\n",
    ]

    # An unknown master name is named, not a hang or a traceback.
    done = email_worker(
        "check", "--json", check=False, env={**sentinels.env, "REDIS_SENTINEL_MASTER": "other"}
    )
    broker = {r["name"]: r for r in json.loads(done.stdout)}["broker"]
    assert broker["status"] == "FAIL"
    assert "no master named 'other' (REDIS_SENTINEL_MASTER)" in broker["detail"]


def test_a_malformed_sentinel_url_is_refused_by_name() -> None:
    done = email_worker(
        "check", check=False, env={"BROKER_URL": "sentinel://:secret@h1:26379;redis://h2:6379"}
    )
    assert "BROKER_URL: Sentinel 2 of the URL must start with sentinel://" in done.stdout
    assert "secret" not in done.stdout + done.stderr


@dataclass
class Outcome:
    """What a burst through a fault sent, and what reached the SMTP server."""

    fault_at: float
    promoted_at: float = 0.0  # the Sentinels first name another master
    fast: dict[str, float] = field(default_factory=dict)  # id: when the producer had it
    tracked: dict[str, float] = field(default_factory=dict)
    refused: Counter[str] = field(default_factory=Counter)
    seen: Counter[str] = field(default_factory=Counter)
    pause: tuple[float, float] = (0.0, 0.0)  # (longest pause in arrivals, its end) after the fault
    # Sent already, but still unacknowledged on the new master: the broker gives them out
    # again after BROKER_VISIBILITY_TIMEOUT (longer than the test waits).
    held: list[str] = field(default_factory=list)

    def lost(self, ids: dict[str, float]) -> list[str]:
        return [i for i in ids if message_id(i) not in self.seen]

    def repeated(self, ids: dict[str, float]) -> list[str]:
        return [i for i in ids if self.seen[message_id(i)] > 1]

    def duplicates(self, ids: dict[str, float]) -> int:
        return sum(self.seen[message_id(i)] - 1 for i in self.repeated(ids))

    def held_fast(self) -> list[str]:
        return [i for i in self.held if i in self.fast and message_id(i) in self.seen]

    def report(self, fault: str) -> str:
        return (
            f"{fault}: fast path {len(self.fast)} accepted, {len(self.lost(self.fast))} lost, "
            f"{self.duplicates(self.fast)} duplicates, {len(self.held_fast())} more to come "
            f"after the visibility timeout; tracked {len(self.tracked)} accepted, "
            f"{len(self.lost(self.tracked))} lost, {self.duplicates(self.tracked)} duplicates; "
            f"refused to the producer: {sum(self.refused.values())} {dict(self.refused)}; "
            f"new master named {self.promoted_at - self.fault_at:.1f}s after the fault; "
            f"longest pause in sending {self.pause[0]:.1f}s, ending "
            f"{self.pause[1]:.1f}s after the fault"
        )


def burst_through(
    fault: Callable[[SentinelSet], RedisProcess],
    sentinels: SentinelSet,
    smtp: SmtpServer,
    producer: Any,
    tmp_path: Path,
) -> Outcome:
    """Send fast-path and tracked emails at a steady pace, inject ``fault`` a second in, go on
    until the old master is dead or demoted and the new one has answered for
    :data:`AFTER_RECOVERY` seconds, then wait for the mail."""
    data = dict(get_kind("email_verification").sample_data)
    log = tmp_path / "worker.log"
    worker = start_worker_process(log, env=sentinels.env, concurrency=CONCURRENCY)
    beat = start_beat_process(tmp_path / "beat", env=sentinels.env)
    sender = producer(**sentinels.env)
    with running(worker, beat), showing_log(log):
        sender.send(to="warm@example.com", subject="Warm-up", text="x")
        smtp.wait_for(1, timeout=30)  # the worker consumes
        started = time.monotonic()
        outcome = Outcome(fault_at=started + 1.0)
        old: RedisProcess | None = None
        recovered_at: float | None = None
        number = 0
        while recovered_at is None or time.monotonic() < recovered_at + AFTER_RECOVERY:
            number += 1
            if old is None and time.monotonic() >= outcome.fault_at:
                outcome.fault_at = time.monotonic()
                old = fault(sentinels)
            if old is not None and recovered_at is None:
                if not outcome.promoted_at and _master_port(sentinels) not in (None, old.port):
                    outcome.promoted_at = time.monotonic()
                if outcome.promoted_at and _replaced(sentinels, old):
                    recovered_at = time.monotonic()
            assert time.monotonic() - started < 60, "no new master within a minute"
            if number % 2:
                reply = sender.call(
                    to=f"fast{number}@example.com", subject=f"Fast {number}", text="x"
                )
                kind, ids = "fast", outcome.fast
            else:
                reply = sender.call(
                    "send_email_verification", to=f"tracked{number}@example.com", data=data
                )
                kind, ids = "tracked", outcome.tracked
            if "id" in reply:
                ids[reply["id"]] = time.monotonic()
            else:
                outcome.refused[f"{kind}: {reply['error'][:60]}"] += 1
            time.sleep(max(0.0, started + number / SENDS_PER_SECOND - time.monotonic()))
        # Every tracked email comes (or the test fails); fast-path ones may be lost, so the
        # wait ends once the tracked are in and nothing arrived for two seconds.
        tracked = {message_id(i) for i in outcome.tracked}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            arrived = smtp.received
            quiet = not arrived or time.monotonic() - arrived[-1].at > 2.0
            if quiet and tracked <= {r.message["Message-ID"] for r in arrived}:
                break
            time.sleep(0.2)
        outcome.held = _unacknowledged(sentinels)
    outcome.seen = Counter(r.message["Message-ID"] for r in smtp.received)
    arrivals = sorted(r.at for r in smtp.received if r.at >= outcome.fault_at)
    gaps = [(b - a, b) for a, b in zip([outcome.fault_at, *arrivals], arrivals, strict=False)]
    longest, ended = max(gaps, default=(0.0, outcome.fault_at))
    outcome.pause = (longest, ended - outcome.fault_at)
    return outcome


def _unacknowledged(sentinels: SentinelSet) -> list[str]:
    """The task ids in kombu's hash of delivered, unacknowledged messages on the master."""
    with sentinels.current_master().client() as client:
        entries = client.hvals("unacked")
    return [json.loads(entry)[0]["headers"]["id"] for entry in entries]


def _master_port(sentinels: SentinelSet) -> int | None:
    address = sentinels.master_address()
    return None if address is None else address[1]


def _replaced(sentinels: SentinelSet, old: RedisProcess) -> bool:
    """The Sentinels name a master other than ``old``, it answers as master, and ``old`` no
    longer does (dead, or made a replica: Sentinel demotes it some seconds after the switch)."""
    port = _master_port(sentinels)
    if port is None or port == old.port:
        return False
    new = next(s for s in sentinels.servers if s.port == port)
    return _role(new) == "master" and _role(old) != "master"


def _role(server: RedisProcess) -> str | None:
    with server.client() as client:
        try:
            return str(client.info("replication")["role"])
        except redis.RedisError:
            return None


def _demoted(sentinels: SentinelSet) -> RedisProcess:
    """SENTINEL FAILOVER"""
    old = sentinels.current_master()
    sentinels.failover()
    return old


def _killed(sentinels: SentinelSet) -> RedisProcess:
    """SIGKILL"""
    old = sentinels.current_master()
    old.kill()
    return old


@pytest.mark.parametrize("fault", [_demoted, _killed], ids=["SENTINEL FAILOVER", "SIGKILL"])
def test_a_failover_during_a_burst_loses_no_tracked_email(
    fault: Callable[[SentinelSet], RedisProcess],
    smtp: SmtpServer,
    sentinels: SentinelSet,
    producer: Any,
    tmp_path: Path,
) -> None:
    outcome = burst_through(fault, sentinels, smtp, producer, tmp_path)
    print(outcome.report(str(fault.__doc__)))
    assert outcome.tracked, "no tracked email was accepted"
    assert not outcome.lost(outcome.tracked), outcome.report("tracked emails lost")
    # A tracked job is claimed once: a message that comes back loses the claim.
    assert outcome.duplicates(outcome.tracked) == 0, outcome.report("tracked duplicates")
    # Fast-path repeats (docs/reliability.md): the sends in flight when the worker's connection
    # broke; after SENTINEL FAILOVER also what the new master still held as queued or in flight
    # when it was promoted, which the old master had meanwhile delivered.
    repeated = outcome.repeated(outcome.fast)
    repeats = outcome.duplicates(outcome.fast) + len(outcome.held_fast())
    if fault is _killed:
        assert repeats <= CONCURRENCY, outcome.report("duplicates")
    else:
        # Those in flight at the promotion stay unacknowledged on the new master.
        assert len(outcome.held_fast()) <= CONCURRENCY, outcome.report("held")
        # Repeats are what the new master held from before it was named; the test sees the
        # naming late by up to its poll, and connections to the old master close within the
        # Sentinel check's half second: one run of the full suite repeated one email
        # accepted in that window.
        late = [i for i in repeated if outcome.fast[i] > outcome.promoted_at]
        assert len(late) <= CONCURRENCY, outcome.report(
            f"{len(late)} accepted after the promotion repeated"
        )
        # What reached the old master after the replica stopped copying it, until the
        # producer and worker moved to the new one: about a second and a half of sends
        # (docs/reliability.md), three seconds' worth allowed on a busy machine.
        fast_per_second = SENDS_PER_SECOND / 2
        assert len(outcome.lost(outcome.fast)) <= 3 * fast_per_second, outcome.report("lost")
    assert outcome.pause[1] <= RESUME_BOUND, outcome.report("sending did not resume")
