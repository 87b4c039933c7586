"""The project's long-running commands as operators start them: real processes, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from tests.support.paths import ROOT


def start_python(
    *args: str, log: Path | None, cwd: Path = ROOT, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``python ARGS`` in a process group of its own, with ``env`` over this environment.

    Its output goes to ``log`` (standard error too), or nowhere without one.
    """
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=log.open("wb") if log is not None else subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its pool processes share its group, as under a supervisor
    )


def start_worker_process(
    log: Path, *extra: str, env: dict[str, str] | None = None, concurrency: int = 2
) -> subprocess.Popen[bytes]:
    """``celery -A email_worker worker``: prefork processes, in a process group of its own.

    Each has a node name of its own unless ``extra`` gives one: the workers of tests running
    in parallel share the broker, and Flower and ``celery inspect`` tell workers by name.
    """
    named = any(arg.startswith(("--hostname", "-n")) for arg in extra)
    name = () if named else (f"--hostname=test-{uuid.uuid4().hex[:8]}@%h",)
    return start_python(
        *("-m", "celery", "-A", "email_worker", "worker", "--loglevel=INFO"),
        *(f"--concurrency={concurrency}", "--without-gossip", "--without-mingle"),
        *name,
        *extra,
        log=log,
        env={"LOG_FORMAT": "json", **(env or {})},
    )


def start_worker(log: Path, *extra: str, **env: str) -> subprocess.Popen[bytes]:
    """``celery -A email_worker worker`` with one pool process, so messages run in order."""
    return start_worker_process(log, *extra, env=env, concurrency=1)


@contextmanager
def running_worker(log: Path, *extra: str, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """A worker for the length of a block, stopped with SIGTERM after it."""
    worker = start_worker(log, *extra, **env)
    with running(worker):
        yield worker


def start_beat_process(folder: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``celery -A email_worker beat`` with its schedule file and log in ``folder``."""
    folder.mkdir(exist_ok=True)
    return start_python(
        *("-m", "celery", "-A", "email_worker", "beat", "--loglevel=INFO"),
        *("-s", str(folder / "schedule")),
        log=folder / "log",
        env=env,
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


def pool_processes(worker_pid: int) -> list[int]:
    """The pids of a worker's pool processes (its children), read from /proc."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == worker_pid:
            children.append(int(stat.parent.name))
    return children
