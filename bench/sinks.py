"""SMTP sinks the benchmark delivers to: Postfix's smtp-sink, or the timing sink.

smtp-sink comes from the Debian ``postfix`` package, downloaded into ``bench/.cache`` and
unpacked there (never installed as a mail server). It answers with PIPELINING and, run
with ``-c``, prints ``sess=N quit=N mesg=N`` after each event: ``mesg`` counts the
messages it accepted, which is what every throughput figure counts.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.processes import Processes

CACHE = Path(__file__).resolve().parent / ".cache"
POSTFIX = CACHE / "postfix"
SMTP_SINK = POSTFIX / "usr" / "sbin" / "smtp-sink"
LIBRARIES = POSTFIX / "usr" / "lib" / "postfix"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def fetch_smtp_sink() -> str:
    """Download and unpack smtp-sink if needed; return '' when it runs, else why not."""
    CACHE.mkdir(exist_ok=True)
    if not SMTP_SINK.exists():
        if not list(CACHE.glob("postfix_*.deb")):
            download = ["apt-get", "download", "postfix"]
            if subprocess.run(download, cwd=CACHE, capture_output=True, timeout=120).returncode:
                subprocess.run(["apt-get", "update"], capture_output=True, timeout=300)
                result = subprocess.run(download, cwd=CACHE, capture_output=True, timeout=120)
                if result.returncode:
                    return f"apt-get download postfix failed: {result.stderr.decode()[-200:]}"
        package = sorted(CACHE.glob("postfix_*.deb"))[-1]
        result = subprocess.run(
            ["dpkg-deb", "-x", str(package), str(POSTFIX)], capture_output=True, timeout=120
        )
        if result.returncode:
            return f"dpkg-deb -x failed: {result.stderr.decode()[-200:]}"
    # Without arguments it prints its usage: proof that it loads with its libraries.
    result = subprocess.run(
        [str(SMTP_SINK)], capture_output=True, timeout=30, env=_sink_environment()
    )
    if b"usage" not in result.stderr:
        return f"smtp-sink does not run unpacked: {result.stderr.decode()[-200:]}"
    return ""


def _sink_environment() -> dict[str, str]:
    return {**os.environ, "LD_LIBRARY_PATH": str(LIBRARIES)}


@dataclass
class CountingSink:
    """smtp-sink on a port of its own; :meth:`count` is the messages it accepted."""

    port: int
    output: Path
    name: str = "Postfix smtp-sink (PIPELINING)"

    @classmethod
    def start(cls, processes: Processes, folder: Path) -> CountingSink:
        """Run ``smtp-sink -c`` with a backlog of 1000 connections."""
        sink = cls(free_port(), folder / "smtp-sink.out")
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        processes.start(
            "smtp-sink",
            [str(SMTP_SINK), "-c", *user, f"127.0.0.1:{sink.port}", "1000"],
            env=_sink_environment(),
            log=sink.output,
        )
        processes.wait_for_port(sink.port)
        return sink

    def count(self) -> int:
        """Messages accepted so far (the last ``mesg=`` the counter printed)."""
        try:
            with self.output.open("rb") as output:
                output.seek(max(output.seek(0, os.SEEK_END) - 200, 0))
                tail = output.read().decode(errors="replace")
        except FileNotFoundError:
            return 0
        for line in reversed(tail.split("\r")):
            if line.startswith("sess=") and " mesg=" in line:
                return int(line.rsplit("mesg=", 1)[1])
        return 0


@dataclass
class TimingSink:
    """The aiosmtpd timing sink in a process of its own: who arrived, and when."""

    port: int
    log: Path
    name: str = "aiosmtpd timing sink (no PIPELINING)"
    _arrivals: list[tuple[float, str]] = field(default_factory=list)
    _offset: int = 0

    @classmethod
    def start(cls, processes: Processes, folder: Path, tag: str = "timing-sink") -> TimingSink:
        """Run ``python -m bench.timing_sink`` and wait until it listens."""
        sink = cls(free_port(), folder / f"{tag}.arrivals")
        sink.log.touch()
        processes.start(
            tag,
            [sys.executable, "-m", "bench.timing_sink", str(sink.port), str(sink.log)],
            log=folder / f"{tag}.log",
        )
        processes.wait_for_port(sink.port)
        return sink

    def arrivals(self) -> list[tuple[float, str]]:
        """Every (unix time, recipients) so far, in arrival order."""
        with self.log.open("rb") as log:
            log.seek(self._offset)
            chunk = log.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._offset += len(complete)
        for line in complete.decode().splitlines():
            moment, recipients = line.split(" ", 1)
            self._arrivals.append((float(moment), recipients))
        return self._arrivals

    def count(self) -> int:
        """Messages accepted so far."""
        return len(self.arrivals())
