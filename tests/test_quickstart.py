"""The README's first command works for a new user: a clean clone, only Python, no servers."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.support.paths import ROOT


def readme_commands() -> list[str]:
    """The shell commands of the README's quick start, in order."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("<!-- quickstart -->")[1].split("<!-- /quickstart -->")[0]
    return re.findall(r"```(?:bash|sh)\n(.*?)```", section, flags=re.S)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_first_readme_command_delivers_every_kind_from_a_clean_clone(tmp_path: Path) -> None:
    clone = tmp_path / "email-worker"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    first = readme_commands()[0]
    # Nothing else running: point every server setting at a closed port.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(
            (
                "REDIS_",
                "SMTP_",
                "EMAIL_",
                "QUEUE_",
                "OUTBOX_",
                "DB_",
                "DATABASE_",
                "BROKER_",
                "RESULT_",
                "LOG_",
                "RETRY_",
            )
        )
    }
    env.update(
        REDIS_HOST="127.0.0.1",
        REDIS_PORT="1",
        DB_MASTER_PORT="1",
        DB_SLAVE_PORT="1",
        VIRTUAL_ENV="",
        PYTHONPATH="",
    )
    done = subprocess.run(
        ["bash", "-ec", first], cwd=clone, env=env, capture_output=True, text=True, timeout=840
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = re.findall(r"^  (\w+)(?: \(\w+\))? +(/\S+\.eml)$", done.stdout, flags=re.M)
    landed = {kind: Path(path) for kind, path in rows}
    assert set(landed) >= {
        "email_verification",
        "password_reset",
        "welcome_email",
        "booking_confirmation",
        "booking_cancellation",
        "payment_receipt",
        "payment_failed",
        "email",
    }
    for path in landed.values():
        assert path.is_file() and path.parent == clone / "outbox"
        assert b"Subject: " in path.read_bytes()


def test_the_second_readme_command_is_what_ci_runs() -> None:
    second = readme_commands()[1].strip()
    assert second in (ROOT / ".ci" / "run").read_text()
