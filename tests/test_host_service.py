"""The package inside a host service's own Celery worker and beat: a guest that changes nothing.

The host has its own Celery app on its own broker database and queues; its module imports
``email_worker.tasks`` so that its tasks can send emails. Its worker runs with whatever pool
it likes, logs as Celery does at the level it asks for, keeps its ports, environment and
metrics files, and lists only its own tasks; the emails go to this package's queues and are
delivered by this package's worker.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import RUN_ID
from tests.support.ports import free_port_pair
from tests.support.processes import running
from tests.support.smtp_server import SmtpServer

HOST_DB = 5
HOST_BROKER = f"redis://127.0.0.1:6379/{HOST_DB}"
HOST_QUEUE = f"host-jobs-{RUN_ID}"
HOSTAPP = f"""
    import gc
    import logging
    import os

    from celery import Celery

    app = Celery("hostapp", broker={HOST_BROKER!r})
    app.conf.update(
        task_default_queue="{HOST_QUEUE}.default",
        broker_connection_retry_on_startup=True,
        beat_schedule={{
            "welcome-from-beat": {{
                "task": "hostapp.welcome",
                "schedule": 1.0,
                "args": ("beat@example.com",),
                "options": {{"queue": "{HOST_QUEUE}.prefork"}},
            }},
        }},
    )

    import email_worker.tasks  # noqa: E402  the host's tasks send emails

    log = logging.getLogger("hostapp")


    @app.task(name="hostapp.welcome")
    def welcome(address):
        frozen, metrics = gc.get_freeze_count(), os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        log.warning("welcoming %s (gc frozen: %d, metrics: %s)", address, frozen, metrics)
        data = {{"user_name": "Ann", "product_name": "Host", "login_url": "https://host.example"}}
        sent = email_worker.tasks.send_welcome_email.apply_async(
            kwargs={{"to": address, "data": data}}
        )
        return sent.id
"""
# name -> (pool, log level, whether the host sets its own PROMETHEUS_MULTIPROC_DIR)
HOST_WORKERS = {
    "prefork": ("prefork", "info", False),
    "prefork-metrics": ("prefork", "warning", True),
    "threads": ("threads", "warning", False),
    "gevent": ("gevent", "warning", False),
}
BANNER_POOL = {"prefork": "prefork", "threads": "thread", "gevent": "gevent"}
CELERY_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}: (\w+)/[\w-]+\] ")


@pytest.fixture
def host_folder(tmp_path: Path) -> Iterator[Path]:
    """The host service's folder with its ``hostapp.py``; its broker database emptied after."""
    (tmp_path / "hostapp.py").write_text(textwrap.dedent(HOSTAPP))
    yield tmp_path
    client = redis.Redis(host="127.0.0.1", port=6379, db=HOST_DB)
    for key in client.scan_iter(f"*{HOST_QUEUE}*"):
        client.delete(key)


def host_environment(folder: Path, server_port: int, **extra: str) -> dict[str, str]:
    """What the host's processes see: its own values where a worker of ours reads settings."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    return {
        **env,
        "PYTHONPATH": str(folder),
        "SERVER_PORT": str(server_port),
        # A producer needs no SMTP server; a worker of ours would refuse to start without it.
        "EMAIL_PROVIDER": "smtp",
        "SMTP_HOST": "",
        **extra,
    }


def start_host(
    folder: Path, name: str, args: list[str], env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """``celery -A hostapp ...`` as the host starts it, logging to ``<name>.log``."""
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "hostapp", *args],
        cwd=folder,
        env=env,
        stdout=(folder / f"{name}.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def listening(port: int) -> bool:
    """Whether anything accepts connections on ``port`` of this machine."""
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def banner_tasks(log: str) -> list[str]:
    """The task names a worker's start-up banner lists."""
    listed = log.split("[tasks]", 1)[1].split("\n\n", 1)[0]
    return [line.strip(" .") for line in listed.splitlines() if line.strip()]


def wait_for_recipients(smtp: SmtpServer, addresses: set[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not addresses <= {r for m in smtp.received for r in m.recipients}:
        if time.monotonic() > deadline:
            got = sorted({r for m in smtp.received for r in m.recipients})
            raise AssertionError(f"expected emails to {sorted(addresses)}, got {got}")
        time.sleep(0.1)


def test_importing_the_package_leaves_the_hosts_app_current_and_its_tasks_its_own(
    host_folder: Path,
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import celery, hostapp\n"
            "print(celery.current_app.main)\n"
            "print(sorted(name for name in hostapp.app.tasks if name.startswith('email_worker.')))",
        ],
        cwd=host_folder,
        env=host_environment(host_folder, 0),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["hostapp", "[]"]


@pytest.mark.slow
def test_a_hosts_own_worker_and_beat_stay_the_hosts_and_its_emails_are_delivered(
    host_folder: Path, smtp: SmtpServer, worker: object
) -> None:
    port = free_port_pair()  # workers of ours would serve on it, beat on the next one
    host_metrics = host_folder / "host-metrics"
    host_metrics.mkdir()
    (host_metrics / "host_counter_123.db").write_bytes(b"host's own")
    processes = {
        name: start_host(
            host_folder,
            name,
            [
                *("worker", "-P", pool, "-c", "2", "--loglevel", level),
                *("-Q", f"{HOST_QUEUE}.{name}", "-n", f"{name}-{RUN_ID}@%h"),
                *("--without-gossip", "--without-mingle", "--without-heartbeat"),
            ],
            host_environment(
                host_folder,
                port,
                **({"PROMETHEUS_MULTIPROC_DIR": str(host_metrics)} if own_metrics else {}),
            ),
        )
        for name, (pool, level, own_metrics) in HOST_WORKERS.items()
    }
    processes["beat"] = start_host(
        host_folder,
        "beat",
        ["beat", "--loglevel", "info", "-s", str(host_folder / "schedule")],
        host_environment(host_folder, port),
    )
    from celery import Celery

    host_client = Celery("host-client", broker=HOST_BROKER, set_as_current=False)
    with running(*processes.values()):
        for name in HOST_WORKERS:
            host_client.send_task(
                "hostapp.welcome", args=(f"{name}@example.com",), queue=f"{HOST_QUEUE}.{name}"
            )
        expected = {f"{name}@example.com" for name in [*HOST_WORKERS, "beat"]}
        wait_for_recipients(smtp, expected, timeout=45)

        assert {name: p.poll() for name, p in processes.items()} == dict.fromkeys(processes)
        assert not listening(port) and not listening(port + 1)
        assert (host_metrics / "host_counter_123.db").read_bytes() == b"host's own"
        for process in processes.values():
            process.terminate()

    logs = {name: (host_folder / f"{name}.log").read_text() for name in processes}
    for name, (pool, level, own_metrics) in HOST_WORKERS.items():
        log = logs[name]
        assert f".> concurrency: 2 ({BANNER_POOL[pool]})" in log, log
        welcomed = [line for line in log.splitlines() if f"welcoming {name}@example.com" in line]
        assert len(welcomed) == 1, log
        # Its task ran with the host's environment, in a process whose gc was left alone.
        metrics = host_metrics if own_metrics else None
        assert CELERY_LINE.match(welcomed[0]), log
        assert welcomed[0].endswith(f"(gc frozen: 0, metrics: {metrics})"), log
        levels = {m.group(1) for line in log.splitlines() if (m := CELERY_LINE.match(line))}
        assert ("INFO" in levels) is (level == "info"), log
        assert not any(line.startswith("{") for line in log.splitlines()), log
    assert banner_tasks(logs["prefork"]) == ["hostapp.welcome"]
    assert re.search(r"^\[[^]]+: INFO/MainProcess\] beat: Starting\.\.\.$", logs["beat"], re.M)
    assert not any(line.startswith("{") for line in logs["beat"].splitlines())
