"""The `email-worker` command and Alembic, as an operator runs them."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from email_worker.db import migrate
from email_worker.db.models import EmailJob
from email_worker.db.session import primary_session
from tests.conftest import DATABASE
from tests.support.commands import email_worker
from tests.support.jobs import stored_verification_job
from tests.support.paths import ROOT
from tests.support.pg import wait_for_replay


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
    assert f"database at revision {migrate.head()}" in done.stdout
    assert {"email_jobs", "email_templates", "email_tracking"} <= tables(url)

    down = run([sys.executable, "-m", "email_worker.cli", "migrate", "--downgrade", "base"], env)
    assert down.returncode == 0, down.stderr
    assert not {"email_jobs", "email_templates", "email_tracking"} & tables(url)

    alembic = run([sys.executable, "-m", "alembic", "upgrade", "head"], env)
    assert alembic.returncode == 0, alembic.stderr
    current = run([sys.executable, "-m", "email_worker.cli", "migrate", "--current"], env)
    assert current.stdout.strip().startswith(str(migrate.head()))


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


def test_templates_sync_of_a_missing_folder_or_a_file_says_so(tmp_path: Path) -> None:
    missing = email_worker("templates", "sync", str(tmp_path / "nowhere"), check=False)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert f"{tmp_path / 'nowhere'}: no such folder" in missing.stderr
    (tmp_path / "subject.txt").write_text("Hello")
    a_file = email_worker("templates", "sync", str(tmp_path / "subject.txt"), check=False)
    assert a_file.returncode == 2 and "Traceback" not in a_file.stderr
    assert f"{tmp_path / 'subject.txt'}: is not a folder" in a_file.stderr


BROKEN_TEMPLATES = {
    "bad UTF-8": ("promo", "body.html", b"<p>Hello</p>\n<p>caf\xe9</p>", "promo/body.html line 2"),
    "NUL byte": ("promo", "body.txt", b"Hello\x00", "promo/body.txt line 1"),
    "empty subject": ("promo", "subject.txt", b"  \n\t", "promo/subject.txt: the subject is empty"),
    "id too long": ("p" * 101, "body.txt", b"Hi", f"{'p' * 101}: the template id"),
    "invalid id": ("spring sale!", "body.txt", b"Hi", "spring sale!: the folder name is not"),
}


@pytest.mark.usefixtures("clean_tables")
@pytest.mark.parametrize("problem", BROKEN_TEMPLATES, ids=list(BROKEN_TEMPLATES))
def test_templates_sync_names_the_broken_file_and_writes_nothing(
    tmp_path: Path, problem: str
) -> None:
    template_id, name, content, expected = BROKEN_TEMPLATES[problem]
    for folder in ("aaa_good", template_id):
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / "subject.txt").write_text("Hello {{ user_name }}")
        (tmp_path / folder / "body.txt").write_text("Hello")
    (tmp_path / template_id / name).write_bytes(content)
    done = email_worker("templates", "sync", str(tmp_path), check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert expected in done.stderr
    wait_for_replay(DATABASE)
    assert email_worker("templates", "list").stdout.strip() == ""


@pytest.mark.parametrize("limit", ["-1", "0", "10001", str(10**30), "many"])
def test_jobs_list_refuses_a_bad_limit_itself(limit: str) -> None:
    done = email_worker("jobs", "list", "--limit", limit, check=False)
    assert done.returncode == 2
    assert f"--limit: must be a whole number from 1 to 10000, got '{limit}'" in done.stderr
    assert "database" not in done.stderr


@pytest.mark.usefixtures("clean_tables")
def test_jobs_list_takes_times_with_an_offset_as_utc() -> None:
    early, late = stored_verification_job(), stored_verification_job()
    with primary_session() as session:  # the tables hold naive UTC
        for job_id, created in ((early, "2026-11-28 07:30"), (late, "2026-11-28 08:30")):
            session.execute(
                sa.update(EmailJob)
                .where(EmailJob.id == job_id)
                .values(created_at=dt.datetime.fromisoformat(created))
            )
    wait_for_replay(DATABASE)
    # A database session in another zone must not change what the times mean.
    env = {"PGTZ": "Asia/Tokyo"}

    def listed(*args: str) -> str:
        return email_worker("jobs", "list", *args, env=env).stdout

    since = listed("--since", "2026-11-28T10:00:00+02:00")  # 08:00 UTC
    assert str(late) in since and str(early) not in since
    until = listed("--until", "2026-11-28T03:00:00-05:00")  # 08:00 UTC
    assert str(early) in until and str(late) not in until
    naive = listed("--since", "2026-11-28T08:00")
    assert str(late) in naive and str(early) not in naive
