"""Throughput of email-worker: building messages, and sending through a real worker.

Run from the repository root with Redis and PostgreSQL up:

    .venv/bin/python bench/throughput.py [--emails 300]

It prints figures and the ratios that matter: the cost of the tracked path (a row
written before publishing and updated after sending) against the fast path, for the
producer's call and for end-to-end delivery by one worker process with two threads.
Absolute numbers depend on the machine; compare the ratios.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATABASE = f"email_worker_bench_{secrets.token_hex(3)}"
OUTBOX = Path(tempfile.mkdtemp(prefix="email-worker-bench-"))
os.environ.update(
    DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:5432/{DATABASE}",
    DATABASE_REPLICA_URL="",
    QUEUE_NAME=f"bench-{secrets.token_hex(3)}",
    EMAIL_PROVIDER="outbox",
    OUTBOX_DIR=str(OUTBOX),
    LOG_LEVEL="warning",
)
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from email_worker.db import migrate  # noqa: E402
from email_worker.kinds import KINDS, get_kind  # noqa: E402


def admin(database: str = "postgres") -> sa.Engine:
    url = sa.URL.create(
        "postgresql+psycopg", username="postgres", host="127.0.0.1", port=5432, database=database
    )
    return sa.create_engine(url, isolation_level="AUTOCOMMIT")


def bench_build(rounds: int) -> None:
    """Render and build one message of each kind, pure CPU."""
    from email_worker.messages import Sender, build_message
    from email_worker.rendering import Renderer
    from email_worker.validation import validate_request

    renderer = Renderer()
    sender = Sender("noreply@example.com", "Example")
    for kind in KINDS:
        request = validate_request(
            kind,
            {"to": "ann@example.com", "data": dict(kind.sample_data)},
            template_exists=renderer.exists,
        )
        timings = []
        for _ in range(rounds):
            started = time.perf_counter()
            content = renderer.render(kind.template, request.data)
            build_message(request, content, sender=sender).as_bytes()
            timings.append(time.perf_counter() - started)
        print(f"  build {kind.name:<22} median {statistics.median(timings) * 1e6:8.0f} us")


def send_all(count: int, tracked: bool) -> tuple[float, float]:
    """Publish ``count`` welcome emails; return (seconds per producer call, emails per second)."""
    from email_worker.tasks import send_welcome_email

    data = dict(get_kind("welcome_email").sample_data)
    before = len(list(OUTBOX.glob("*.eml")))
    started = time.perf_counter()
    for _ in range(count):
        send_welcome_email.apply_async(
            kwargs={"to": "ann@example.com", "data": data, "tracked": tracked}
        )
    published = time.perf_counter()
    while len(list(OUTBOX.glob("*.eml"))) < before + count:
        if time.perf_counter() - started > 300:
            raise SystemExit("the worker did not deliver everything within 300 s")
        time.sleep(0.02)
    finished = time.perf_counter()
    return (published - started) / count, count / (finished - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emails", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()

    print("message building (render + MIME), per email:")
    bench_build(args.rounds)

    with admin().connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{DATABASE}"')
    worker = None
    try:
        migrate.upgrade()
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "email_worker",
                "--quiet",
                "worker",
                "--concurrency=2",
                "--pool=threads",
                "--loglevel=WARNING",
            ],
            cwd=ROOT,
            env=os.environ.copy(),
        )
        send_all(20, tracked=False)  # warm up the worker and the connections
        fast_call, fast_rate = send_all(args.emails, tracked=False)
        tracked_call, tracked_rate = send_all(args.emails, tracked=True)
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=60)
        from email_worker.db.engines import dispose_engines

        dispose_engines()
        with admin().connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        shutil.rmtree(OUTBOX, ignore_errors=True)

    print(f"\nend to end, {args.emails} welcome emails, one worker (2 threads), outbox provider:")
    print(f"  fast path     producer call {fast_call * 1e3:6.2f} ms   delivery {fast_rate:7.1f}/s")
    print(
        f"  tracked path  producer call {tracked_call * 1e3:6.2f} ms   "
        f"delivery {tracked_rate:7.1f}/s"
    )
    print(
        f"  ratio tracked/fast: producer call x{tracked_call / fast_call:.2f}, "
        f"throughput x{tracked_rate / fast_rate:.2f}"
    )


if __name__ == "__main__":
    main()
