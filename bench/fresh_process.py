"""What a producer pays in a fresh interpreter: importing the tasks, and its first tracked call.

A producer imports ``email_worker.tasks`` inside its own service (a web process), so the
import is timed as a whole process, start-up included, against ``import celery, kombu,
redis`` in turn with it; the first tracked call is timed inside a process that has just
imported the tasks, so it includes what the call imports on first use (the database
layer, Jinja2, the broker's transport) and its first connections.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_IMPORT = "import celery, kombu, redis"
PRODUCER_IMPORT = "import email_worker.tasks"
# The process's own peak, read by itself as it ends: the operating system's maximum RSS
# of a child counts the parent's memory, which the child had until it started Python.
PRINT_PEAK = (
    "\nprint(next(int(line.split()[1]) * 1024 for line in open('/proc/self/status')"
    " if line.startswith('VmHWM:')))"
)


@dataclass(frozen=True)
class Run:
    """One finished process: wall seconds, CPU seconds and its peak resident memory."""

    wall: float
    cpu: float
    peak_rss: int  # bytes (VmHWM)


def run_python(code: str, env: dict[str, str]) -> Run:
    """Run ``python -c code`` to its end: its time, as the operating system counts it, and peak."""
    with tempfile.TemporaryFile() as output, tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-c", code + PRINT_PEAK],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=errors,
        )
        # Reaped here, not by Popen, to read this one child's own resource usage.
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode:
            errors.seek(0)
            tail = errors.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"python -c {code!r} exited with {process.returncode}:\n{tail}")
        output.seek(0)
        peak = int(output.read().decode().split()[-1])
    return Run(wall, usage.ru_utime + usage.ru_stime, peak)


@dataclass(frozen=True)
class ImportFigures:
    """Medians over fresh processes of the producer's import and the reference's."""

    seconds: float
    reference_seconds: float
    ratio: float  # the median of the ratios of runs taken in turn
    peak_rss: float
    reference_peak_rss: float


def import_figures(rounds: int, env: dict[str, str]) -> ImportFigures:
    """Time both imports in turn, ``rounds`` times each, after one of each not counted.

    Taken in turn, pair by pair, the ratio holds when the machine's speed moves during
    the run.
    """
    run_python(REFERENCE_IMPORT, env)
    run_python(PRODUCER_IMPORT, env)  # a first run compiles nothing, but fills the page cache
    pairs = [
        (run_python(PRODUCER_IMPORT, env), run_python(REFERENCE_IMPORT, env)) for _ in range(rounds)
    ]
    return ImportFigures(
        seconds=statistics.median(a.wall for a, _ in pairs),
        reference_seconds=statistics.median(b.wall for _, b in pairs),
        ratio=statistics.median(a.wall / b.wall for a, b in pairs),
        peak_rss=statistics.median(a.peak_rss for a, _ in pairs),
        reference_peak_rss=statistics.median(b.peak_rss for _, b in pairs),
    )


FIRST_TRACKED_CALL = textwrap.dedent(
    """
    import time

    from email_worker.tasks import send_email

    kwargs = {{"to": {to!r}, "template_id": {template!r}, "data": {data!r}, "tracked": True}}
    started = time.perf_counter()
    send_email.apply_async(kwargs=kwargs)
    print(time.perf_counter() - started)
    """
)


def first_tracked_call(
    rounds: int, env: dict[str, str], *, to: str, template: str, data: dict[str, str]
) -> float:
    """Median seconds of the first tracked ``send_email`` call, each in a fresh process."""
    code = FIRST_TRACKED_CALL.format(to=to, template=template, data=data)
    seconds = []
    for _ in range(rounds):
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode:
            raise RuntimeError(f"the first tracked call failed:\n{done.stderr[-2000:]}")
        seconds.append(float(done.stdout.strip().splitlines()[-1]))
    return statistics.median(seconds)
