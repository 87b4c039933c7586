"""The project's long-running commands as operators start them: real processes, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start_worker_process(
    log: Path, *extra: str, env: dict[str, str] | None = None, concurrency: int = 2
) -> subprocess.Popen[bytes]:
    """``celery -A email_worker worker``: prefork processes, in a process group of its own.

    Each has a node name of its own unless ``extra`` gives one: the workers of tests running
    in parallel share the broker, and Flower and ``celery inspect`` tell workers by name.
    """
    named = any(arg.startswith(("--hostname", "-n")) for arg in extra)
    name = () if named else (f"--hostname=test-{uuid.uuid4().hex[:8]}@%h",)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "email_worker",
            "worker",
            "--loglevel=INFO",
            f"--concurrency={concurrency}",
            "--without-gossip",
            "--without-mingle",
            *name,
            *extra,
        ],
        cwd=ROOT,
        env={**os.environ, "LOG_FORMAT": "json", **(env or {})},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its pool processes share its group, as under a supervisor
    )


def start_beat_process(folder: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``celery -A email_worker beat`` with its schedule file and log in ``folder``."""
    folder.mkdir(exist_ok=True)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "email_worker",
            "beat",
            "--loglevel=INFO",
            "-s",
            str(folder / "schedule"),
        ],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=(folder / "log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """SIGTERM, then wait; SIGKILL the whole group if it does not go."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@contextmanager
def running(*processes: subprocess.Popen[bytes]) -> Iterator[None]:
    """Stop the processes however the block ends."""
    try:
        yield
    finally:
        for process in processes:
            stop(process)
