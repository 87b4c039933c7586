"""The broker database and the scratch PostgreSQL database of one benchmark run."""

from __future__ import annotations

import secrets
import time

import psycopg
import redis

HOST = "127.0.0.1"
LOCK_KEY = "email-worker-bench.lock"


def claim_redis_db() -> int:
    """An empty Redis database (1-15), marked as this run's so no other run takes it."""
    for number in range(15, 0, -1):
        client = redis.Redis(host=HOST, db=number)
        if client.dbsize() == 0 and client.set(LOCK_KEY, "1", nx=True):
            return number
    raise RuntimeError("no empty Redis database among 1-15 for the benchmark")


def purge_queues(number: int) -> None:
    """Drop every message (queued and unacknowledged), keeping the queues' bindings."""
    client = redis.Redis(host=HOST, db=number)
    keys = [
        key
        for key in client.scan_iter()
        if not key.startswith(b"_kombu.binding.") and key != LOCK_KEY.encode()
    ]
    if keys:
        client.delete(*keys)


def release_redis_db(number: int) -> None:
    """Empty the run's Redis database."""
    redis.Redis(host=HOST, db=number).flushdb()


def redis_commands() -> int:
    """Commands the Redis server has processed since it started (all clients, all dbs)."""
    return int(redis.Redis(host=HOST).info("stats")["total_commands_processed"])


def queued(number: int, queue: str) -> int:
    """Messages waiting in ``queue`` (every priority list of it)."""
    client = redis.Redis(host=HOST, db=number)
    names = [queue, *(f"{queue}\x06\x16{step}" for step in (1, 2, 3, 4, 5, 6, 7, 8, 9))]
    return sum(int(client.llen(name)) for name in names)


def unacknowledged(number: int) -> int:
    """Messages a worker holds and has not acknowledged."""
    return int(redis.Redis(host=HOST, db=number).hlen("unacked"))


def _admin(port: int = 5432, dbname: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(
        host=HOST, port=port, user="postgres", dbname=dbname, autocommit=True, connect_timeout=5
    )


def create_database() -> str:
    """Create an empty scratch database on the primary; return its name."""
    name = f"email_worker_bench_{secrets.token_hex(4)}"
    with _admin() as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(name: str) -> None:
    """Drop the scratch database, closing the connections still open to it."""
    with _admin() as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def replica_has(name: str, timeout: float = 30) -> bool:
    """Whether the streaming replica on 5433 is up and has replayed database ``name``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with _admin(5433, "postgres") as connection:
                row = connection.execute("SELECT pg_is_in_recovery()").fetchone()
                if not (row and row[0]):
                    return False
            with _admin(5433, name):
                return True
        except psycopg.OperationalError:
            time.sleep(0.2)
    return False


def transactions(name: str) -> int:
    """Transactions committed or rolled back in database ``name`` so far."""
    with _admin() as connection:
        connection.execute("SELECT pg_stat_clear_snapshot()")
        row = connection.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", (name,)
        ).fetchone()
    return int(row[0]) if row else 0


def clone_scheduled(name: str, job_id: str, copies: int) -> None:
    """Copy the scheduled job ``job_id`` ``copies`` times, each with an id of its own."""
    with _admin(dbname=name) as connection:
        columns = [
            row[0]
            for row in connection.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'email_jobs' AND column_name <> 'id'"
            )
        ]
        listed = ", ".join(f'"{c}"' for c in columns)
        connection.execute(
            f"INSERT INTO email_jobs (id, {listed}) "
            f"SELECT gen_random_uuid(), {listed} FROM email_jobs, generate_series(1, %s) "
            "WHERE id = %s",
            (copies, job_id),
        )


def scheduled_jobs(name: str) -> int:
    """Jobs waiting in the database for their time."""
    with _admin(dbname=name) as connection:
        row = connection.execute(
            "SELECT count(*) FROM email_jobs WHERE status = 'scheduled'"
        ).fetchone()
    return int(row[0]) if row else 0
