"""The processes a benchmark run starts, each in a process group of its own, all stopped at
the end however the run ends."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class BenchError(RuntimeError):
    """A run cannot go on: a process died or a wait timed out."""


def wait_for(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Poll ``condition`` every 10 ms; raise :class:`BenchError` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.01)


class Processes:
    """Start processes and stop every one of them: SIGTERM, then SIGKILL to the group."""

    def __init__(self) -> None:
        self.running: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}

    def start(
        self, name: str, command: list[str], *, log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``command`` from the repository root, output to ``log``."""
        with log.open("ab") as output:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env if env is not None else dict(os.environ),
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.running[name] = (process, log)
        return process

    def check(self, name: str) -> None:
        """Raise with the end of its log if process ``name`` has exited."""
        process, log = self.running[name]
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:]
            raise BenchError(f"{name} exited with {process.returncode}:\n{tail}")

    def wait_for_port(self, port: int, timeout: float = 30) -> None:
        """Wait until something accepts connections on 127.0.0.1:``port``."""

        def listening() -> bool:
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0

        wait_for(listening, timeout=timeout, what=f"a listener on port {port}")

    def stop(self, name: str, timeout: float = 30) -> None:
        """Stop process ``name`` and everything in its group."""
        process, _ = self.running.pop(name)
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=timeout)
        # Pool processes may outlive a main process that was killed.
        _signal_group(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)

    def stop_all(self) -> None:
        """Stop every process still running, newest first."""
        for name in reversed(list(self.running)):
            self.stop(name)


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def tree_rss(pid: int, *, proportional: bool = False) -> int:
    """Resident memory in bytes of ``pid`` and all its descendants: VmRSS summed, or with
    ``proportional`` the PSS (shared pages divided among the processes sharing them)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    family, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        family.update(children)
        frontier.extend(children)
    source, key = ("smaps_rollup", "Pss:") if proportional else ("status", "VmRSS:")
    total = 0
    for member in family:
        try:
            status = Path(f"/proc/{member}/{source}").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith(key):
                total += int(line.split()[1]) * 1024
    return total
