"""The producer's call: ``apply_async`` of an email against a plain Celery ``delay()``.

Run from the repository root with Redis and PostgreSQL up:

    .venv/bin/python bench/producer_call.py [--calls 200] [--rounds 25]

In one process, against the local Redis and a scratch PostgreSQL database (created,
migrated and dropped here), it times N calls of each of:

- ``noop.delay(...)``: a no-op task of a plain Celery app on the same broker, with the
  same keyword arguments as the welcome email (the reference), and with none;
- ``send_welcome_email.apply_async`` (a template, fast path);
- ``send_email.apply_async`` with inline content (fast path);
- ``send_password_reset.apply_async`` (a tracked kind: a row, then the publish).

Each figure is the best of ``--rounds`` short runs taken in turn (a machine shared with
other work slows some runs; the best one shows the cost of the call), printed as calls/s
and as ratios to both references measured in the same run. For the tracked kind it also
counts, per call, the SQL statements SQLAlchemy executes and the round trips to
PostgreSQL (each query, the connection pool's liveness ping included, plus BEGIN and
COMMIT). Nothing is consumed: the queues this run used are deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATABASE = f"email_worker_bench_{secrets.token_hex(3)}"
QUEUE = f"bench-producer-{secrets.token_hex(3)}"
os.environ.update(
    DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:5432/{DATABASE}",
    DATABASE_REPLICA_URL="",
    REDIS_HOST="127.0.0.1",
    QUEUE_NAME=QUEUE,
    LOG_LEVEL="warning",
)
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from celery import Celery  # noqa: E402

from email_worker.db import migrate  # noqa: E402
from email_worker.kinds import get_kind  # noqa: E402

TARGETS = {"fast": 0.8, "tracked": 0.35}


def admin() -> sa.Engine:
    url = sa.URL.create(
        "postgresql+psycopg", username="postgres", host="127.0.0.1", port=5432, database="postgres"
    )
    return sa.create_engine(url, isolation_level="AUTOCOMMIT")


def reference_app(email_app: Celery) -> Celery:
    """A plain Celery app on the email app's broker, with its transport options."""
    plain = Celery("bench_reference", set_as_current=False)
    plain.conf.update(
        broker_url=email_app.conf.broker_url,
        broker_transport_options=dict(email_app.conf.broker_transport_options),
        task_default_queue=f"{QUEUE}.reference",
        task_serializer="json",
        task_ignore_result=True,
    )
    return plain


def rates(paths: dict[str, Callable[[], Any]], calls: int, rounds: int) -> dict[str, float]:
    """Calls per second of each path: the best of ``rounds`` runs of ``calls`` calls.

    The rounds go through every path in turn, so a machine busy for a while slows all
    of them alike instead of one.
    """
    best = dict.fromkeys(paths, 0.0)
    for _ in range(rounds):
        for name, call in paths.items():
            started = time.perf_counter()
            for _ in range(calls):
                call()
            best[name] = max(best[name], calls / (time.perf_counter() - started))
    return best


class RoundTrips:
    """Counts SQL statements (SQLAlchemy) and round trips (psycopg) while installed."""

    def __init__(self, engine: sa.Engine) -> None:
        self.counts: Counter[str] = Counter()
        sa.event.listen(engine, "before_cursor_execute", self._statement)
        cursor_execute = psycopg.Cursor.execute
        exec_command = psycopg.Connection._exec_command
        counts = self.counts

        def counted_execute(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            counts["queries"] += 1
            if not cursor.connection.autocommit and cursor.connection.info.transaction_status == 0:
                counts["begin"] += 1  # psycopg sends BEGIN on its own first
            return cursor_execute(cursor, query, *args, **kwargs)

        def counted_command(connection: Any, command: Any, *args: Any, **kwargs: Any) -> Any:
            if not bytes(command).startswith(b"BEGIN"):
                counts["commands"] += 1  # COMMIT, ROLLBACK
            return exec_command(connection, command, *args, **kwargs)

        psycopg.Cursor.execute = counted_execute  # type: ignore[method-assign,assignment]
        psycopg.Connection._exec_command = counted_command  # type: ignore[method-assign,assignment]

    def _statement(self, *_: Any) -> None:
        self.counts["statements"] += 1

    @property
    def round_trips(self) -> int:
        """Every message psycopg waited on the server for."""
        return self.counts["queries"] + self.counts["begin"] + self.counts["commands"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=25)
    args = parser.parse_args()

    with admin().connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{DATABASE}"')
    try:
        migrate.upgrade()
        run(args.calls, args.rounds)
    finally:
        from email_worker.db.engines import dispose_engines

        dispose_engines()
        with admin().connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')


def run(calls: int, rounds: int) -> None:
    from email_worker.celeryapp.app import app
    from email_worker.db.engines import get_engines
    from email_worker.tasks import send_email, send_password_reset, send_welcome_email

    plain = reference_app(app)

    @plain.task(name="bench.noop")
    def noop(**_: Any) -> None:
        """Nothing."""

    welcome = {"to": "ann@example.com", "data": dict(get_kind("welcome_email").sample_data)}
    inline = {
        "to": ["ann@example.com"],
        "subject": "Your invoice",
        "html": "<p>Hello Ann,</p><p>your invoice INV-7 is ready.</p>",
        "metadata": {"invoice": "INV-7"},
    }
    reset = {"to": "ann@example.com", "data": dict(get_kind("password_reset").sample_data)}
    paths: dict[str, Callable[[], Any]] = {
        "noop.delay(to=..., data=...)": lambda: noop.delay(**welcome),
        "noop.delay()": lambda: noop.delay(),
        "send_welcome_email (fast)": lambda: send_welcome_email.apply_async(kwargs=welcome),
        "send_email inline (fast)": lambda: send_email.apply_async(kwargs=inline),
        "send_password_reset (tracked)": lambda: send_password_reset.apply_async(kwargs=reset),
    }
    for call in paths.values():  # connections, compiled templates, caches
        for _ in range(20):
            call()
    measured = rates(paths, calls, rounds)
    trips = RoundTrips(get_engines().primary)
    counted = 200
    for _ in range(counted):
        paths["send_password_reset (tracked)"]()

    reference = measured["noop.delay(to=..., data=...)"]
    bare = measured["noop.delay()"]
    print(f"\nproducer call, one process, best of {rounds} x {calls} calls:")
    print(f"  {'path':<32} {'calls/s':>8} {'vs delay(...)':>14} {'vs delay()':>11} {'target':>7}")
    for name, per_second in measured.items():
        target = TARGETS["tracked" if "tracked" in name else "fast"]
        shown = f">= {target}" if name.startswith("send_") else ""
        print(
            f"  {name:<32} {per_second:8.0f} {per_second / reference:13.2f}x "
            f"{per_second / bare:10.2f}x {shown:>7}"
        )
    print(f"\ntracked call, per send ({counted} sends, producer side):")
    print(f"  SQL statements  {trips.counts['statements'] / counted:.2f}  (through SQLAlchemy)")
    print(
        f"  round trips     {trips.round_trips / counted:.2f}  "
        f"(queries {trips.counts['queries'] / counted:.2f}, "
        f"BEGIN {trips.counts['begin'] / counted:.2f}, "
        f"COMMIT/ROLLBACK {trips.counts['commands'] / counted:.2f})"
    )
    purge(app)


def purge(app: Celery) -> None:
    """Delete the queues this run filled."""
    with app.connection_for_write() as connection:
        client = connection.default_channel.client
        for key in client.scan_iter(f"*{QUEUE}*"):
            client.delete(key)


if __name__ == "__main__":
    main()
