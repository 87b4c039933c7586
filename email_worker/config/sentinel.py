"""Redis Sentinel addresses: ``sentinel://`` URLs (kombu's and Celery's syntax) and lists.

A Sentinel URL names one or more Sentinels, separated by ``;``, each
``sentinel://[[user]:password@]host[:port][/db]``; the credentials and the database are
those of the Redis master, not of the Sentinels (whose password is
``REDIS_SENTINEL_PASSWORD``). kombu reads them from the first Sentinel of the URL and
Celery's result backend too, so :meth:`SentinelURL.url` repeats them on every one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from email_worker.config.values import Secret

SENTINEL_SCHEME = "sentinel"
SENTINEL_PORT = 26379


@dataclass(frozen=True, repr=False)
class SentinelURL:
    """The Sentinels of a ``sentinel://`` URL and the master's credentials and database."""

    sentinels: tuple[tuple[str, int], ...]
    db: int = 0
    username: str = ""
    password: str = ""

    def url(self) -> str:
        """The URL, with the master's credentials and database on every Sentinel."""
        user = quote(self.username, safe="")
        auth = f"{user}:{quote(self.password, safe='')}@" if self.password else ""
        if self.username and not self.password:
            auth = f"{user}@"
        return ";".join(f"sentinel://{auth}{_host(h)}:{p}/{self.db}" for h, p in self.sentinels)

    def shown(self) -> str:
        """The Sentinels and the database, without credentials: for logs and reports."""
        return ";".join(f"sentinel://{_host(h)}:{p}/{self.db}" for h, p in self.sentinels)

    def __repr__(self) -> str:
        return f"SentinelURL({self.shown()!r})"


def is_sentinel_url(url: str) -> bool:
    """Whether ``url`` names Redis through Sentinel."""
    return url.startswith(f"{SENTINEL_SCHEME}://")


def parse_sentinel_url(url: str) -> SentinelURL:
    """Read a ``sentinel://`` URL, or raise ValueError naming what is wrong (never the
    password)."""
    chunks = [chunk.strip() for chunk in url.split(";")]
    sentinels: list[tuple[str, int]] = []
    dbs: set[int] = set()
    credentials: set[tuple[str, str]] = set()
    for number, chunk in enumerate(chunks, start=1):
        if not chunk:
            raise ValueError(f"Sentinel {number} of the URL is empty (a stray ';'?)")
        parts = urlsplit(chunk)
        if parts.scheme != SENTINEL_SCHEME:
            raise ValueError(
                f"Sentinel {number} of the URL must start with sentinel://, "
                f"not {parts.scheme or '(no scheme)'}://"
            )
        host, port = _address(parts.netloc.rpartition("@")[2], f"Sentinel {number}")
        sentinels.append((host, port))
        path = parts.path.strip("/")
        if path:
            if not path.isdigit():
                raise ValueError(f"Sentinel {number}: the database must be a number, not {path!r}")
            dbs.add(int(path))
        if "@" in parts.netloc:
            credentials.add((unquote(parts.username or ""), unquote(parts.password or "")))
    if len(dbs) > 1:
        raise ValueError(f"the Sentinels name different databases: {sorted(dbs)}")
    if len(credentials) > 1:
        raise ValueError("the Sentinels carry different credentials for the master")
    username, password = credentials.pop() if credentials else ("", "")
    return SentinelURL(tuple(sentinels), dbs.pop() if dbs else 0, username, password)


def parse_sentinel_addresses(entries: Iterable[str]) -> tuple[tuple[str, int], ...]:
    """``host[:port]`` entries (``REDIS_SENTINELS``) as (host, port) pairs."""
    return tuple(_address(entry, f"Sentinel {entry!r}") for entry in entries)


def check_sentinel_addresses(entries: tuple[str, ...]) -> None:
    """Refuse an entry that is not ``host[:port]``."""
    parse_sentinel_addresses(entries)


def check_broker_url(value: Secret) -> None:
    """Refuse a ``sentinel://`` broker URL that cannot be read; other schemes are kombu's."""
    if is_sentinel_url(value.reveal()):
        parse_sentinel_url(value.reveal())


def _address(text: str, what: str) -> tuple[str, int]:
    host, port = text, ""
    if text.startswith("["):  # an IPv6 address: [::1]:26379
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host:
        raise ValueError(f"{what}: no host")
    if not port:
        return host, SENTINEL_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{what}: the port must be a number from 1 to 65535, not {port!r}")
    return host, int(port)


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
