"""Each role runs from an install with only its extra, and names the extra it lacks.

Producers install the plain package; workers, beat, Flower, the web app and the operator
commands install ``email-worker[server]``. The wheel is built once and installed into one
venv per install; every command runs from its venv's own ``bin`` in a folder outside the
source tree, with only the test settings and what the role needs in its environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dkim
import pytest
import redis
import sqlalchemy as sa

from tests.conftest import TEST_ENV
from tests.support.http import http_get
from tests.support.paths import ROOT
from tests.support.pg import scratch_database
from tests.support.ports import free_port
from tests.support.processes import running
from tests.support.smtp_server import SmtpServer
from tests.support.waiting import wait_for
from tests.test_signing import DOMAIN, SELECTOR, dkim_dns, rsa_key_pem

# The first test's set-up builds the wheel and both venvs: minutes on a busy machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "*.egg-info", "__pycache__", ".*_cache", "build", "dist", "outbox"
)
INSTALLS = {"plain": "", "server": "[server]"}
SERVER_EXTRA = "pip install 'email-worker[server]'"
PRODUCE = """
import sys
import email_worker
from email_worker.kinds import get_kind
from email_worker.tasks import task_for

assert email_worker.__file__.startswith(sys.prefix), email_worker.__file__
for kind in ("welcome_email", "email_verification"):  # the fast path, then a tracked send
    data = dict(get_kind(kind).sample_data)
    print(task_for(kind).apply_async(kwargs={"to": "ann.lee@example.com", "data": data}).id)
"""


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package's wheel, built once from a copy of the source tree."""
    source = tmp_path_factory.mktemp("source") / "email-worker"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES)
    wheels = tmp_path_factory.mktemp("wheels")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", wheels, source],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (found,) = wheels.glob("email_worker-*.whl")
    return found


@pytest.fixture(scope="session")
def installs(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The ``bin`` folder of a venv per install: the plain package, and the server extra."""
    root = tmp_path_factory.mktemp("venvs")
    with ThreadPoolExecutor(len(INSTALLS)) as pool:
        done = {
            name: pool.submit(_venv_with, root / name, f"{wheel}{extra}")
            for name, extra in INSTALLS.items()
        }
        return {name: future.result() for name, future in done.items()}


def _venv_with(folder: Path, requirement: str) -> Path:
    subprocess.run([sys.executable, "-m", "venv", folder], check=True, timeout=120)
    # uv resolves the extra from the same metadata as pip, in seconds rather than a minute;
    # pip when this venv has no uv.
    uv = Path(sys.executable).parent / "uv"
    install = (
        [
            uv,
            "pip",
            "install",
            "--quiet",
            "--compile-bytecode",
            "--python",
            folder / "bin" / "python",
        ]
        if uv.exists()
        else [folder / "bin" / "python", "-m", "pip", "install", "--quiet"]
    )
    installed = subprocess.run(
        [*install, requirement],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stderr
    return folder / "bin"


def role_env(**role: str) -> dict[str, str]:
    """The test settings and what the role needs; nothing else of this process's environment."""
    return {"PATH": os.defpath, **TEST_ENV, **role}


def run(
    command: list[str | Path], folder: Path, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run a command of an install to its end, in ``folder``."""
    return subprocess.run(
        command, cwd=folder, env=env, capture_output=True, text=True, timeout=timeout
    )


def start(
    command: list[str | Path], folder: Path, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start a long-running command of an install; its output goes to a log in ``folder``."""
    log = folder / f"{Path(command[0]).name}-{uuid.uuid4().hex[:6]}.log"
    process = subprocess.Popen(
        command,
        cwd=folder,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return process, log


def answering(port: int, path: str, process: subprocess.Popen[bytes], log: Path) -> bytes:
    """Wait until ``path`` answers 200 on ``port``; fail at once if the process ends."""

    def answer() -> bytes | None:
        assert process.poll() is None, log.read_text(errors="replace")
        status, body = http_get(port, path)
        return body if status == 200 else None

    return bytes(wait_for(answer, f"200 from {path}", log=log))


def queued_task_ids(client: redis.Redis, queue_name: str) -> set[str]:
    """The ids of the messages waiting in any of the queues named after ``queue_name``."""
    ids = set()
    for key in client.keys(f"{queue_name}.*"):
        if client.type(key) == b"list":
            ids |= {json.loads(raw)["headers"]["id"] for raw in client.lrange(key, 0, -1)}
    return ids


@pytest.fixture
def queue_name(redis_client: redis.Redis) -> Iterator[str]:
    """Queues of the test's own, so no other test's messages reach its worker."""
    name = f"{TEST_ENV['QUEUE_NAME']}-{uuid.uuid4().hex[:6]}"
    yield name
    for key in redis_client.keys(f"{name}.*"):
        redis_client.delete(key)


def produce(installs: dict[str, Path], folder: Path, env: dict[str, str]) -> list[str]:
    """Send a fast-path and a tracked email from the plain install; their task ids."""
    done = run([installs["plain"] / "python", "-c", textwrap.dedent(PRODUCE)], folder, env)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_a_producer_sends_from_the_plain_package(
    installs: dict[str, Path], queue_name: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    from email_worker.ops import operations

    fast, tracked = produce(installs, tmp_path, role_env(QUEUE_NAME=queue_name))
    assert queued_task_ids(redis_client, queue_name) == {fast, tracked}
    assert operations.get_job(uuid.UUID(tracked)).recipient_email == "ann.lee@example.com"


def test_the_web_app_without_the_server_extra_names_it_in_one_line(
    installs: dict[str, Path], tmp_path: Path
) -> None:
    done = run([installs["plain"] / "email-worker", "web"], tmp_path, role_env())
    assert done.returncode != 0
    assert done.stderr == f"email-worker: the web app needs the server extra: {SERVER_EXTRA}\n"


@pytest.mark.parametrize(
    ("needed_by", "settings"),
    [
        ("the sendgrid provider", {"EMAIL_PROVIDER": "sendgrid", "SENDGRID_API_KEY": "SG.key"}),
        ("the ses provider", {"EMAIL_PROVIDER": "smtp", "EMAIL_PROVIDER_FALLBACKS": "ses"}),
        (
            "DKIM signing",
            {
                "DKIM_DOMAIN": DOMAIN,
                "DKIM_SELECTOR": SELECTOR,
                "DKIM_PRIVATE_KEY": rsa_key_pem().decode(),
            },
        ),
    ],
)
def test_a_worker_without_the_server_extra_refuses_to_start_naming_it(
    installs: dict[str, Path], tmp_path: Path, needed_by: str, settings: dict[str, str]
) -> None:
    worker = [installs["plain"] / "celery", "-A", "email_worker", "worker"]
    done = run(worker, tmp_path, role_env(**settings))
    assert done.returncode != 0
    assert (
        done.stderr.splitlines()[-1]
        == f"email-worker: {needed_by} needs the server extra: {SERVER_EXTRA}"
    )
    assert "Traceback" not in done.stderr


def test_flower_without_the_server_extra_is_not_a_command(
    installs: dict[str, Path], tmp_path: Path
) -> None:
    done = run([installs["plain"] / "celery", "-A", "email_worker", "flower"], tmp_path, role_env())
    assert done.returncode != 0
    assert "No such command 'flower'" in done.stderr and "Traceback" not in done.stderr


def test_every_module_imports_with_the_server_extra(
    installs: dict[str, Path], tmp_path: Path
) -> None:
    code = """
    import importlib, pkgutil, email_worker
    for module in pkgutil.walk_packages(email_worker.__path__, "email_worker."):
        if ".migrations." not in module.name:
            importlib.import_module(module.name)
    """
    done = run([installs["server"] / "python", "-c", textwrap.dedent(code)], tmp_path, role_env())
    assert done.returncode == 0, done.stderr


def test_a_server_worker_signs_and_delivers_what_a_plain_producer_sends(
    installs: dict[str, Path],
    queue_name: str,
    smtp: SmtpServer,
    clean_tables: None,
    tmp_path: Path,
) -> None:
    from email_worker.ops import operations

    key = tmp_path / "dkim.pem"
    key.write_bytes(rsa_key_pem())
    signing = {"DKIM_DOMAIN": DOMAIN, "DKIM_SELECTOR": SELECTOR, "DKIM_PRIVATE_KEY_FILE": str(key)}
    env = role_env(QUEUE_NAME=queue_name, **signing)
    worker, log = start(
        [installs["server"] / "celery", "-A", "email_worker", "worker", "--concurrency=1"],
        tmp_path,
        env,
    )
    with running(worker):
        fast, tracked = produce(installs, tmp_path, role_env(QUEUE_NAME=queue_name))
        received = smtp.wait_for(2, timeout=30)
        wait_for(lambda: operations.get_job(uuid.UUID(tracked)).status == "sent", "sent", log=log)
    assert {r.message["Message-ID"] for r in received} == {
        f"<{fast}@mail.example.com>",
        f"<{tracked}@mail.example.com>",
    }
    for message in received:
        assert dkim.verify(message.raw, dnsfunc=dkim_dns(rsa_key_pem()))


def test_beat_runs_from_the_server_extra(installs: dict[str, Path], tmp_path: Path) -> None:
    port = free_port()  # beat serves on SERVER_PORT + 1
    beat, log = start(
        [installs["server"] / "celery", "-A", "email_worker", "beat", "-s", tmp_path / "schedule"],
        tmp_path,
        role_env(SERVER_PORT=str(port - 1), SERVER_HOST="127.0.0.1"),
    )
    with running(beat):
        assert "beat" in json.loads(answering(port, "/health", beat, log))


def test_flower_answers_from_the_server_extra(installs: dict[str, Path], tmp_path: Path) -> None:
    port = free_port()
    flower, log = start(
        [
            *(installs["server"] / "celery", "-A", "email_worker", "flower"),
            *("--address=127.0.0.1", f"--port={port}"),
        ],
        tmp_path,
        role_env(),
    )
    with running(flower):
        assert answering(port, "/healthcheck", flower, log) == b"OK"
        assert b"Flower" in answering(port, "/", flower, log)


def test_the_web_app_answers_from_the_server_extra(
    installs: dict[str, Path], tmp_path: Path
) -> None:
    port = free_port()
    web, log = start(
        [installs["server"] / "email-worker", "web", "--host", "127.0.0.1", "--port", str(port)],
        tmp_path,
        role_env(),
    )
    with running(web):
        health = json.loads(answering(port, "/health", web, log))
    assert health["database"]["primary"]["status"] == "up"


def test_check_runs_from_the_server_extra(
    installs: dict[str, Path], smtp: SmtpServer, tmp_path: Path
) -> None:
    done = run([installs["server"] / "email-worker", "check"], tmp_path, role_env())
    assert done.returncode == 0, done.stdout + done.stderr
    statuses = {line.split()[1]: line.split()[0] for line in done.stdout.splitlines()}
    assert statuses["primary"] == statuses["smtp"] == statuses["templates"] == "ok"


def test_migrate_runs_from_the_server_extra(installs: dict[str, Path], tmp_path: Path) -> None:
    with scratch_database("roles_migrate") as url:
        env = role_env(DATABASE_URL=url.render_as_string(hide_password=False))
        done = run([installs["server"] / "email-worker", "migrate"], tmp_path, env)
        assert done.returncode == 0, done.stderr
        engine = sa.create_engine(url)
        try:
            tables = set(sa.inspect(engine).get_table_names())
        finally:
            engine.dispose()
    assert done.stdout.startswith("database at revision ")
    assert {"email_jobs", "email_templates", "email_tracking"} <= tables
