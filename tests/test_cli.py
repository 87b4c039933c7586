"""The `email-worker` command and Alembic, as an operator runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, **env}
    )


def tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migrate_and_alembic_upgrade_a_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {"DATABASE_URL": url, "DATABASE_REPLICA_URL": ""}
    done = run([sys.executable, "-m", "email_worker.cli", "migrate"], env)
    assert done.returncode == 0, done.stderr
    assert "database at revision 0002" in done.stdout
    assert {"email_jobs", "email_templates", "email_tracking"} <= tables(url)

    down = run([sys.executable, "-m", "email_worker.cli", "migrate", "--downgrade", "base"], env)
    assert down.returncode == 0, down.stderr
    assert not {"email_jobs", "email_templates", "email_tracking"} & tables(url)

    alembic = run([sys.executable, "-m", "alembic", "upgrade", "head"], env)
    assert alembic.returncode == 0, alembic.stderr
    current = run([sys.executable, "-m", "email_worker.cli", "migrate", "--current"], env)
    assert current.stdout.strip().startswith("0002")


def test_a_bad_setting_stops_the_command_naming_it() -> None:
    done = run([sys.executable, "-m", "email_worker.cli", "config"], {"WORKER_COUNT": "lots"})
    assert done.returncode == 2
    assert "WORKER_COUNT: expected a whole number, got 'lots'" in done.stderr


def test_config_masks_secrets() -> None:
    done = run(
        [sys.executable, "-m", "email_worker.cli", "config"],
        {"SMTP_PASSWORD": "hunter2-secret", "REDIS_PASSWORD": "redis-secret"},
    )
    assert done.returncode == 0
    assert "hunter2-secret" not in done.stdout and "redis-secret" not in done.stdout
    assert "smtp_password = Secret('**********')" in done.stdout


def test_a_bad_setting_stops_the_worker_at_start_up() -> None:
    done = run(
        [sys.executable, "-m", "celery", "-A", "email_worker", "worker"], {"SMTP_PORT": "smtp"}
    )
    assert done.returncode != 0
    assert "SMTP_PORT: expected a whole number, got 'smtp'" in done.stdout + done.stderr
