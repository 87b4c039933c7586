"""Running the project's commands the way an operator does: as processes."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.paths import ROOT


def email_worker(
    *args: str,
    check: bool = True,
    env: dict[str, str] | None = None,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``email-worker ARGS`` in the repository, ``input_text`` its standard input.

    With ``check``, it must succeed.
    """
    done = subprocess.run(
        [sys.executable, "-m", "email_worker.cli", *args],
        cwd=ROOT,
        input=input_text,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done
