"""Several PostgreSQL hosts for one database role, so a promoted standby is found.

libpq tries the hosts in turn and keeps the first whose session has the wanted
``target_session_attrs``: ``read-write`` finds the primary whichever host it is now,
``prefer-standby`` a standby when one answers (the primary otherwise). A role is given
several hosts in one of three ways:

- ``DB_MASTER_HOST=pg-a,pg-b`` (each entry may carry its port, ``pg-a:5432``; the others
  use ``DB_MASTER_PORT``); likewise ``DB_SLAVE_HOST`` and ``DB_HOST``;
- a libpq URI in ``DATABASE_URL``: ``postgresql://user:pw@pg-a:5432,pg-b:5432/db``;
- SQLAlchemy's own form: ``postgresql+psycopg://user:pw@/db?host=pg-a:5432&host=pg-b:5432``
  (or ``?host=pg-a,pg-b&port=5432,5433``).

A role with one host is connected exactly as before: no ``target_session_attrs`` is
added.
"""

from __future__ import annotations

import re
from typing import Any

TARGET_SESSION_ATTRS = ("any", "read-write", "read-only", "primary", "standby", "prefer-standby")
"""The values libpq accepts for ``target_session_attrs``."""

_ENTRY = re.compile(r"^(?:\[(?P<ipv6>[^\]]+)\]|(?P<host>[^:\[\]]+))(?::(?P<port>[^:]*))?$")
_URI = re.compile(r"^(?P<scheme>[A-Za-z0-9+_.-]+)://(?P<netloc>[^/?#]*)(?P<rest>.*)$", re.DOTALL)


def parse_hosts(value: str, default_port: int | None) -> list[tuple[str, int | None]]:
    """The ``(host, port)`` pairs of ``host[:port],host[:port],...``.

    An entry without a port gets ``default_port``. Raises ValueError naming the entry
    that is not a host.
    """
    pairs: list[tuple[str, int | None]] = []
    for raw in value.split(","):
        entry = raw.strip()
        if not entry:
            raise ValueError(f"empty host in {value!r}: give hosts as host1,host2 or host1:5432")
        if entry.startswith("/"):
            pairs.append((entry, default_port))  # a Unix-socket directory
            continue
        match = _ENTRY.match(entry)
        if match is None:
            raise ValueError(f"{entry!r} is not a host or host:port")
        host = match.group("ipv6") or match.group("host")
        port_text = match.group("port")
        if port_text is None or port_text == "":
            pairs.append((host, default_port))
            continue
        pairs.append((host, _port(port_text, entry)))
    return pairs


def check_hosts(value: str) -> None:
    """Refuse a host setting that is not ``host`` or a list of ``host[:port]``."""
    if value:
        parse_hosts(value, None)


def is_multi_host(value: str) -> bool:
    """Whether a host setting names several hosts."""
    return "," in value


def hosts_query(pairs: list[tuple[str, int | None]]) -> dict[str, str]:
    """The ``host``/``port`` query of a SQLAlchemy URL naming every pair (``port`` when known)."""
    query = {"host": ",".join(host for host, _ in pairs)}
    if any(port is not None for _, port in pairs):
        query["port"] = ",".join("" if port is None else str(port) for _, port in pairs)
    return query


def from_libpq_uri(text: str) -> str:
    """``text`` with a libpq multi-host authority (``@h1:5432,h2:5433/``) moved to the query.

    SQLAlchemy reads only one host in the authority of a URL; libpq's form names several.
    A URL with one host, or that is not a URL, is returned unchanged.
    """
    match = _URI.match(text)
    if match is None:
        return text
    netloc = match.group("netloc")
    userinfo, at, hostlist = netloc.rpartition("@")
    if "," not in hostlist:
        return text
    pairs = parse_hosts(hostlist, None)
    rest = match.group("rest")
    path, question, query = rest.partition("?")
    extra = "&".join(f"{key}={value}" for key, value in hosts_query(pairs).items())
    query = f"{query}&{extra}" if query else extra
    return f"{match.group('scheme')}://{userinfo}{at}{path or '/'}?{query}"


def url_hosts(query: Any, host: str | None, port: int | None) -> list[tuple[str, int | None]]:
    """The hosts a SQLAlchemy URL names: its ``?host=`` list, else its one host.

    Raises ValueError when the hosts and ports of the query do not pair up.
    """
    hosts = query.get("host") if query else None
    ports = query.get("port") if query else None
    if not hosts:
        return [(host or "", port)]
    if isinstance(hosts, str):
        hosts = hosts.split(",")
    if ports is None:
        return [pair for entry in hosts for pair in parse_hosts(entry, None)]
    if any(":" in entry and not entry.startswith("[") for entry in hosts):
        raise ValueError("give ports either as host=h1:p1&host=h2:p2 or as port=p1,p2, not both")
    if isinstance(ports, str):
        ports = ports.split(",")
    if len(ports) == 1:
        ports = list(ports) * len(hosts)
    if len(ports) != len(hosts):
        raise ValueError(
            f"{len(hosts)} hosts but {len(ports)} ports: give one port, or one port per host"
        )
    return [
        (entry.strip("[]"), _port(text, text) if text else None)
        for entry, text in zip(hosts, ports, strict=True)
    ]


def check_target_session_attrs(value: Any) -> None:
    """Refuse a ``target_session_attrs`` libpq does not know."""
    values = [value] if isinstance(value, str) else list(value)
    for one in values:
        if one not in TARGET_SESSION_ATTRS:
            raise ValueError(
                f"unknown target_session_attrs {one!r}; known: {', '.join(TARGET_SESSION_ATTRS)}"
            )


def _port(text: str, entry: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise ValueError(f"{entry!r}: the port is not a number") from None
    if not 0 < port < 65536:
        raise ValueError(f"{entry!r}: the port must be between 1 and 65535")
    return port
