"""Database URLs read without SQLAlchemy: the syntax, each role's URL, psycopg's arguments.

A producer checks ``DATABASE_URL`` when it reads its settings, and its tracked calls talk
to PostgreSQL through psycopg directly; neither needs SQLAlchemy, which costs a producer
a tenth of a second and a dozen MB to import. So the rules live here, once:

- :func:`parse_url` reads a URL exactly as SQLAlchemy's ``make_url`` does
  (``dialect+driver://user:password@host:port/database?key=value&key=value``);
- :mod:`email_worker.config.database_roles` names the database each role uses, from the
  settings, as such URLs (:mod:`email_worker.db.engines` builds its engines from them);
- :func:`psycopg_connect_kwargs` gives the keyword arguments of ``psycopg.connect``, the
  same as SQLAlchemy's psycopg dialect passes for the URL, plus the connection time-out
  the engines use.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote

from email_worker.config.database_hosts import (
    check_target_session_attrs,
    from_libpq_uri,
    url_hosts,
)

DRIVER = "postgresql+psycopg"
# Short, so that a replica that is down is noticed before a request times out.
CONNECT_TIMEOUT_SECONDS = 3
# A pooled connection idle longer than this is checked before use.
PING_AFTER_IDLE_SECONDS = 5.0
# SQLSTATE of "cannot execute ... in a read-only transaction": the server is no longer
# the primary (demoted, or fenced as read-only by a failover manager).
READ_ONLY_SQL_TRANSACTION = "25006"

# SQLAlchemy's own pattern (sqlalchemy.engine.url._parse_url), so both read a URL alike.
_URL = re.compile(
    r"""
        (?P<name>[\w\+]+)://
        (?:
            (?P<username>[^:/]*)
            (?::(?P<password>[^@]*))?
        @)?
        (?:
            (?:
                \[(?P<ipv6host>[^/\?]+)\] |
                (?P<ipv4host>[^/:\?]+)
            )?
            (?::(?P<port>[^/\?]*))?
        )?
        (?:/(?P<database>[^\?]*))?
        (?:\?(?P<query>.*))?
    """,
    re.X,
)
# What SQLAlchemy's psycopg dialect accepts as the single ``host=name:port`` of a query.
_HOST_AND_PORT = re.compile(r"^([a-zA-Z0-9\-\.]*)(?:\:(\d*))?$")

QueryValue = str | tuple[str, ...]


@dataclass(frozen=True)
class DatabaseUrl:
    """One database URL, its parts as SQLAlchemy's ``URL`` holds them."""

    drivername: str
    username: str | None = None
    password: str | None = None
    host: str | None = None
    port: int | None = None
    database: str | None = None
    query: Mapping[str, QueryValue] = dataclasses.field(default_factory=dict)

    @property
    def backend(self) -> str:
        """The database's name without the driver: ``postgresql`` for ``postgresql+psycopg``."""
        return self.drivername.partition("+")[0]

    def with_query(self, **values: str) -> DatabaseUrl:
        """This URL with ``values`` added to (or replacing those of) its query."""
        return dataclasses.replace(self, query={**self.query, **values})

    def hosts(self) -> list[tuple[str, int | None]]:
        """The ``(host, port)`` pairs the URL names (its ``?host=`` list, else its host)."""
        return url_hosts(self.query, self.host, self.port)


def parse_url(text: str) -> DatabaseUrl:
    """``text`` read as SQLAlchemy reads a URL; ValueError when it is not one."""
    match = _URL.match(text)
    if match is None:
        raise ValueError("not a database URL")
    parts = match.groupdict()
    query: dict[str, QueryValue] = {}
    if parts["query"] is not None:
        for key, value in parse_qsl(parts["query"]):
            if key in query:
                earlier = query[key]
                query[key] = (*((earlier,) if isinstance(earlier, str) else earlier), value)
            else:
                query[key] = value
    port_text = parts["port"]
    try:
        port = int(port_text) if port_text else None
    except ValueError:
        raise ValueError("not a database URL: the port is not a number") from None
    return DatabaseUrl(
        drivername=parts["name"],
        username=unquote(parts["username"]) if parts["username"] is not None else None,
        password=unquote(parts["password"]) if parts["password"] is not None else None,
        host=parts["ipv4host"] or parts["ipv6host"],
        port=port,
        database=unquote(parts["database"]) if parts["database"] is not None else None,
        query=query,
    )


def check_database_url(value: Any) -> None:
    """Refuse a database URL SQLAlchemy would not read, or whose hosts do not pair with ports."""
    if not value:
        return
    text = value.reveal() if hasattr(value, "reveal") else str(value)
    url = parse_url(from_libpq_uri(text))
    url_hosts(url.query, url.host, url.port)
    if "target_session_attrs" in url.query:
        check_target_session_attrs(url.query["target_session_attrs"])


def psycopg_connect_kwargs(url: DatabaseUrl) -> dict[str, Any]:
    """``psycopg.connect``'s keyword arguments for a PostgreSQL ``url``.

    The same as SQLAlchemy's psycopg dialect passes (``create_connect_args``): the URL's
    parts, every query parameter, several hosts and ports joined with commas; and
    ``connect_timeout`` when the URL has none, as the engines add it.
    """
    kwargs: dict[str, Any] = {}
    for name, value in (
        ("host", url.host),
        ("dbname", url.database),
        ("user", url.username),
        ("password", url.password),
        ("port", url.port),
    ):
        if value:
            kwargs[name] = value
    kwargs.update(url.query)
    hosts, ports = _split_hosts(url.query)
    if hosts is not None and ports is not None:
        kwargs["host"] = ",".join(host or "" for host in hosts)
        joined_ports = ",".join(str(port) if port else "" for port in ports)
        if joined_ports:
            kwargs["port"] = joined_ports
    kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)
    return kwargs


def _split_hosts(
    query: Mapping[str, QueryValue],
) -> tuple[tuple[str, ...], tuple[int | None, ...]] | tuple[None, None]:
    # SQLAlchemy's PGDialect._split_multihost_from_url, for the same URLs and errors.
    hosts: tuple[str, ...] | None = None
    port_texts: tuple[str | None, ...] | None = None
    together = False
    host_value = query.get("host")
    if isinstance(host_value, tuple):
        together = True
        pairs = [entry.split(":", 1) if ":" in entry else [entry, None] for entry in host_value]
        hosts = tuple(str(pair[0]) for pair in pairs)
        port_texts = tuple(pair[1] for pair in pairs)
    elif isinstance(host_value, str):
        hosts = tuple(host_value.split(","))
        if "port" not in query and len(hosts) == 1 and ":" in hosts[0]:
            match = _HOST_AND_PORT.match(hosts[0])
            if match:
                together = True
                hosts = (match.group(1),)
                port_texts = (match.group(2) or None,)
    port_value = query.get("port")
    if port_value is not None:
        if together:
            raise ValueError(
                "give several hosts either as host=h1,h2&port=p1,p2 or as "
                "host=h1:p1&host=h2:p2, not both"
            )
        port_texts = port_value if isinstance(port_value, tuple) else tuple(port_value.split(","))
    ports: tuple[int | None, ...] | None = None
    if port_texts:
        try:
            ports = tuple(int(text) if text else None for text in port_texts)
        except ValueError:
            raise ValueError(f"a port is not a number: {port_texts}") from None
    if ports and (
        (not hosts and len(ports) > 1)
        or (hosts and len(hosts) != len(ports) and (len(hosts) > 1 or len(ports) > 1))
    ):
        raise ValueError("the numbers of hosts and ports do not match")
    if hosts is None:
        return None, None
    return hosts, ports if ports is not None else tuple(None for _ in hosts)
