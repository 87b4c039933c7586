"""Settings of where the service connects: the broker, its queues and the databases."""

from __future__ import annotations

from dataclasses import dataclass

from email_worker.config.database_hosts import TARGET_SESSION_ATTRS, check_hosts
from email_worker.config.database_urls import check_database_url
from email_worker.config.fields import setting
from email_worker.config.sentinel import check_broker_url, check_sentinel_addresses
from email_worker.config.values import (
    Secret,
    check_not_blank,
    parse_duration,
    parse_int,
    parse_list,
    parse_port,
)


@dataclass(frozen=True, repr=False, eq=False)
class ConnectionSettings:
    """The broker, the queue names and the primary and replica databases."""

    # Broker (Redis) and queues.
    redis_host: str = setting(
        "localhost", "REDIS_HOST", "queue.redis.host", doc="Redis host (broker and results)"
    )
    redis_port: int = setting(
        6379, "REDIS_PORT", "queue.redis.port", parse_port, minimum=1, doc="Redis port"
    )
    redis_password: Secret = setting(
        "", "REDIS_PASSWORD", "queue.redis.password", secret=True, doc="Redis password"
    )
    redis_db: int = setting(
        0, "REDIS_DB", "queue.redis.db", parse_int, minimum=0, doc="Redis database number"
    )
    queue_name: str = setting(
        "email-jobs",
        "QUEUE_NAME",
        "queue.queue_name",
        check=check_not_blank,
        doc="queue prefix: `<name>.high`, `.default`, `.low` and `.periodic`",
    )
    broker_url: Secret = setting(
        "",
        "BROKER_URL",
        "queue.broker_url",
        check=check_broker_url,
        secret=True,
        doc=(
            "any Celery broker URL instead of the one built from `REDIS_*`; Redis, Redis "
            "through Sentinel (`sentinel://host1:26379;sentinel://host2:26379/0`) and RabbitMQ "
            "are the ones tested"
        ),
    )
    result_backend: Secret = setting(
        "",
        "RESULT_BACKEND",
        "queue.result_backend",
        secret=True,
        doc=(
            "where results go when a producer asks for them (`ignore_result=False`); empty: the "
            "Redis of `REDIS_*`"
        ),
    )
    visibility_timeout: float = setting(
        90.0,
        "BROKER_VISIBILITY_TIMEOUT",
        "queue.visibility_timeout",
        parse_duration,
        minimum=60,
        doc="Redis redelivers a message unacknowledged for this long (Redis only)",
    )
    broker_timeout: float = setting(
        5.0,
        "BROKER_TIMEOUT",
        "queue.timeout",
        parse_duration,
        minimum=0.1,
        doc=(
            "socket connect and read timeout towards the broker: a broker that does not answer "
            "fails a publish within seconds"
        ),
    )

    # Redis Sentinel: the broker and every other Redis client follow the master it names.
    redis_sentinels: tuple[str, ...] = setting(
        (),
        "REDIS_SENTINELS",
        "queue.redis.sentinels",
        parse_list,
        check=check_sentinel_addresses,
        doc=(
            "`host:port` of each Sentinel: Redis is the master they name instead of "
            "`REDIS_HOST`/`REDIS_PORT` (with `REDIS_PASSWORD` and `REDIS_DB`); a "
            "`sentinel://` `BROKER_URL` names them for the broker and the rest alike"
        ),
    )
    redis_sentinel_master: str = setting(
        "mymaster",
        "REDIS_SENTINEL_MASTER",
        "queue.redis.sentinel_master",
        check=check_not_blank,
        doc="the name the Sentinels monitor the Redis master by (`sentinel monitor <name> ...`)",
    )
    redis_sentinel_password: Secret = setting(
        "",
        "REDIS_SENTINEL_PASSWORD",
        "queue.redis.sentinel_password",
        secret=True,
        doc=(
            "password of the Sentinels themselves (their `requirepass`); the master's is "
            "`REDIS_PASSWORD` or the one in the URL"
        ),
    )

    # Database: primary ("master") and replica ("slave"), or the legacy single database.
    db_master_host: str = setting(
        "localhost",
        "DB_MASTER_HOST",
        "database.master_host",
        check=check_hosts,
        doc=(
            "primary database host; several for failover, `pg-a,pg-b` or `pg-a:5432,pg-b:5432`: "
            "the one that takes writes is used (see `DB_PRIMARY_TARGET_SESSION_ATTRS`)"
        ),
    )
    db_master_port: int = setting(
        5432,
        "DB_MASTER_PORT",
        "database.master_port",
        parse_port,
        minimum=1,
        doc="primary database port",
    )
    db_master_name: str = setting(
        "booking_system", "DB_MASTER_NAME", "database.master_name", doc="primary database name"
    )
    db_master_user: str = setting(
        "postgres", "DB_MASTER_USER", "database.master_user", doc="primary database user"
    )
    db_master_password: Secret = setting(
        "",
        "DB_MASTER_PASSWORD",
        "database.master_password",
        secret=True,
        doc="primary database password",
    )
    db_slave_host: str = setting(
        "localhost",
        "DB_SLAVE_HOST",
        "database.slave_host",
        check=check_hosts,
        doc="read replica host; several as for `DB_MASTER_HOST`, a standby preferred",
    )
    db_slave_port: int = setting(
        5433, "DB_SLAVE_PORT", "database.slave_port", parse_port, minimum=1, doc="read replica port"
    )
    db_slave_name: str = setting(
        "booking_system", "DB_SLAVE_NAME", "database.slave_name", doc="read replica database name"
    )
    db_slave_user: str = setting(
        "postgres", "DB_SLAVE_USER", "database.slave_user", doc="read replica user"
    )
    db_slave_password: Secret = setting(
        "", "DB_SLAVE_PASSWORD", "database.slave_password", secret=True, doc="read replica password"
    )
    db_host: str = setting(
        "",
        "DB_HOST",
        "database.host",
        check=check_hosts,
        doc=(
            "legacy single database host: serves as primary and replica when no "
            "`DB_MASTER_*`/`DB_SLAVE_*` setting differs from its default"
        ),
    )
    db_port: int = setting(
        5432, "DB_PORT", "database.port", parse_port, minimum=1, doc="legacy single database port"
    )
    db_name: str = setting(
        "email_worker", "DB_NAME", "database.name", doc="legacy single database name"
    )
    db_user: str = setting(
        "postgres", "DB_USER", "database.user", doc="legacy single database user"
    )
    db_password: Secret = setting(
        "", "DB_PASSWORD", "database.password", secret=True, doc="legacy single database password"
    )
    db_ssl_mode: str = setting(
        "disable",
        "DB_SSL_MODE",
        "database.ssl_mode",
        choices=("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
        doc="PostgreSQL sslmode",
    )
    db_max_open_conns: int = setting(
        25,
        "DB_MAX_OPEN_CONNS",
        "database.max_open_conns",
        parse_int,
        minimum=1,
        doc="connection pool size limit",
    )
    db_max_idle_conns: int = setting(
        5,
        "DB_MAX_IDLE_CONNS",
        "database.max_idle_conns",
        parse_int,
        minimum=0,
        doc="connections kept open",
    )
    db_conn_max_lifetime: float = setting(
        300.0,
        "DB_CONN_MAX_LIFETIME",
        "database.conn_max_lifetime",
        parse_duration,
        doc="connections are recycled after this long",
    )
    db_replica_retry_interval: float = setting(
        30.0,
        "DB_REPLICA_RETRY_INTERVAL",
        "database.replica_retry_interval",
        parse_duration,
        doc="how long reads skip a replica that could not be reached",
    )
    database_url: Secret = setting(
        "",
        "DATABASE_URL",
        "database.url",
        check=check_database_url,
        secret=True,
        doc=(
            "a SQLAlchemy URL for the primary instead of `DB_MASTER_*` (alone: one database for "
            "both); several hosts as libpq writes them, `postgresql://user:pw@pg-a:5432,pg-b:5432/db`"
        ),
    )
    database_replica_url: Secret = setting(
        "",
        "DATABASE_REPLICA_URL",
        "database.replica_url",
        check=check_database_url,
        secret=True,
        doc="a SQLAlchemy URL for the replica",
    )

    # Database failover: which of several hosts each role connects to.
    db_primary_target_session_attrs: str = setting(
        "read-write",
        "DB_PRIMARY_TARGET_SESSION_ATTRS",
        "database.primary_target_session_attrs",
        choices=TARGET_SESSION_ATTRS,
        doc=(
            "libpq's `target_session_attrs` for a primary given several hosts: `read-write` "
            "finds the promoted standby after a failover; unused with one host"
        ),
    )
    db_replica_target_session_attrs: str = setting(
        "prefer-standby",
        "DB_REPLICA_TARGET_SESSION_ATTRS",
        "database.replica_target_session_attrs",
        choices=TARGET_SESSION_ATTRS,
        doc=(
            "libpq's `target_session_attrs` for a replica given several hosts: "
            "`prefer-standby` reads a standby while one answers, else the primary"
        ),
    )

    @property
    def queues(self) -> dict[str, str]:
        """The priority name of each queue mapped to the queue's name."""
        return {p: f"{self.queue_name}.{p}" for p in ("high", "default", "low")}

    @property
    def periodic_queue(self) -> str:
        """The queue of beat's tasks, apart from the emails so a backlog cannot stall them."""
        return f"{self.queue_name}.periodic"
