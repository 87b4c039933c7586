"""Database URLs read without SQLAlchemy give what SQLAlchemy gives, to the same connection.

A producer reads ``DATABASE_URL`` and talks to PostgreSQL without loading SQLAlchemy, so
``email_worker.config.database_urls`` reads a URL itself. Each URL below is read both
ways: the parts must be equal, and the arguments psycopg is given must be those
SQLAlchemy's psycopg dialect gives (plus the engines' connection time-out), or both
must refuse the URL.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from email_worker.config import Secret, Settings
from email_worker.config.database_roles import primary_url, replica_url
from email_worker.config.database_urls import (
    CONNECT_TIMEOUT_SECONDS,
    parse_url,
    psycopg_connect_kwargs,
)
from email_worker.db import engines

URLS = [
    "postgresql+psycopg://postgres@127.0.0.1:5432/email",
    "postgresql+psycopg://app:s3cr%40t%2Fpw@db.internal:6432/email?sslmode=require",
    "postgresql+psycopg://app:pw@[::1]:5432/email",
    "postgresql+psycopg://app@/email?host=/var/run/postgresql",
    "postgresql+psycopg://app@/email?host=pg-a:5432&host=pg-b:5433&target_session_attrs=read-write",
    "postgresql+psycopg://app@/email?host=pg-a,pg-b&port=5432,5433",
    "postgresql+psycopg://app@/email?host=pg-a:5433",
    "postgresql+psycopg://app@pg-a/e%20mail?connect_timeout=10&application_name=booking",
    "postgresql+psycopg://app:@pg-a/email",
    "postgresql+psycopg://:pw@pg-a/email",
    "postgresql+psycopg://pg-a",
    "postgresql+psycopg://",
    "postgresql://app@pg-a/email?options=-c%20statement_timeout%3D5000",
    "sqlite:///var/lib/email-worker/jobs.db",
    "sqlite://",
]
REFUSED = [
    "not a url",
    "postgresql+psycopg//app@pg-a/email",
    "postgresql+psycopg://app@pg-a:port/email",
    "://app@pg-a/email",
]
CONNECT_REFUSED = [
    "postgresql+psycopg://app@/email?host=pg-a:5432&host=pg-b:5433&port=5432",
    "postgresql+psycopg://app@/email?host=pg-a,pg-b,pg-c&port=5432,5433",
    "postgresql+psycopg://app@/email?host=pg-a,pg-b&port=one,two",
    "postgresql+psycopg://app@/email?host=pg-a,pg-b&port=5432",
]


def sqlalchemy_connect_kwargs(text: str) -> dict[str, Any]:
    """What SQLAlchemy's psycopg dialect hands psycopg for ``text``, with the engines' time-out."""
    url = make_url(text).set(drivername="postgresql+psycopg")
    dialect = url.get_dialect()()
    _, kwargs = dialect.create_connect_args(url)
    kwargs.pop("context", None)  # psycopg's adapters of SQLAlchemy's own
    kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)
    return {name: tuple(v) if isinstance(v, list) else v for name, v in kwargs.items()}


@pytest.mark.parametrize("text", URLS)
def test_a_url_has_the_parts_sqlalchemy_reads(text: str) -> None:
    ours, theirs = parse_url(text), make_url(text)
    assert (ours.drivername, ours.username, ours.password, ours.host, ours.port, ours.database) == (
        theirs.drivername,
        theirs.username,
        theirs.password,
        theirs.host,
        theirs.port,
        theirs.database,
    )
    assert dict(ours.query) == dict(theirs.query)
    assert engines.to_sqlalchemy(ours) == theirs


@pytest.mark.parametrize("text", [url for url in URLS if url.startswith("postgresql")])
def test_psycopg_gets_the_arguments_sqlalchemy_would_give_it(text: str) -> None:
    assert psycopg_connect_kwargs(parse_url(text)) == sqlalchemy_connect_kwargs(text)


@pytest.mark.parametrize("text", REFUSED)
def test_what_sqlalchemy_cannot_read_is_refused_with_the_reason(text: str) -> None:
    with pytest.raises((sa.exc.ArgumentError, ValueError)):
        make_url(text)
    with pytest.raises(ValueError, match="not a database URL"):
        parse_url(text)


@pytest.mark.parametrize("text", CONNECT_REFUSED)
def test_hosts_and_ports_that_do_not_pair_are_refused_before_connecting(text: str) -> None:
    with pytest.raises(sa.exc.ArgumentError):
        sqlalchemy_connect_kwargs(text)
    with pytest.raises(ValueError, match="host|port"):
        psycopg_connect_kwargs(parse_url(text))


SETTINGS = [
    {},
    {"db_master_host": "pg-a,pg-b:5433", "db_slave_host": "pg-c", "db_ssl_mode": "require"},
    {"db_host": "legacy-db", "db_name": "mail"},
    {"db_master_password": Secret("p@ss/word"), "db_slave_port": 6432},
    {"database_url": Secret("postgresql://app:pw@pg-a:5432,pg-b:5432/email")},
    {
        "database_url": Secret("postgresql+psycopg://app@pg-a/email"),
        "database_replica_url": Secret("postgresql+psycopg://app@pg-r/email?sslmode=verify-full"),
    },
]


@pytest.mark.parametrize("values", SETTINGS)
def test_each_role_is_the_same_database_either_way(values: dict[str, Any]) -> None:
    settings = Settings(**values)
    for role in (primary_url, replica_url):
        url = role(settings)
        assert psycopg_connect_kwargs(url) == sqlalchemy_connect_kwargs(
            engines.to_sqlalchemy(url).render_as_string(hide_password=False)
        )
    assert engines.primary_url(settings) == engines.to_sqlalchemy(primary_url(settings))
    assert engines.replica_url(settings) == engines.to_sqlalchemy(replica_url(settings))
