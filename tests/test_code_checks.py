"""The package stays typed and lint-clean: mypy and ruff, as configured in pyproject.toml."""

from __future__ import annotations

import subprocess
import sys

from tests.support.paths import ROOT


def test_ruff() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "email_worker",
            "tests",
            "alembic",
            "bench",
            "celeryconfig.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
