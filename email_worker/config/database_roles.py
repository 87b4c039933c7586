"""Which database each role uses, from the settings: the primary writes, the replica reads.

The rules, in order:

1. ``DATABASE_URL`` and ``DATABASE_REPLICA_URL``, when set, name them directly.
2. Otherwise ``DB_MASTER_*`` names the primary and ``DB_SLAVE_*`` the replica.
3. The legacy single database: when ``DB_HOST`` is set and no ``DB_MASTER_*`` or
   ``DB_SLAVE_*`` setting differs from its default, ``DB_*`` names one database that
   is both the primary and the replica.

A ``DATABASE_URL`` without ``DATABASE_REPLICA_URL`` and without any ``DB_SLAVE_*``
setting also means a single database. "Set" is judged against the defaults, so the
rule reads the same whether a value came from the environment or ``config.yaml``.

The URLs are :class:`email_worker.config.database_urls.DatabaseUrl`, read without
SQLAlchemy: the engines (:mod:`email_worker.db.engines`) and the direct connections
(:mod:`email_worker.db.direct`) are both made from them.
"""

from __future__ import annotations

import dataclasses

from email_worker.config.database_hosts import from_libpq_uri, hosts_query, parse_hosts
from email_worker.config.database_urls import DRIVER, DatabaseUrl, QueryValue, parse_url
from email_worker.config.model import Settings
from email_worker.config.values import Secret


def primary_url(settings: Settings) -> DatabaseUrl:
    """The URL of the database that takes the writes."""
    attrs = settings.db_primary_target_session_attrs
    if settings.database_url:
        return _from_url(settings.database_url, settings, attrs)
    if _legacy(settings):
        return _postgres(
            settings,
            attrs,
            settings.db_host,
            settings.db_port,
            settings.db_name,
            settings.db_user,
            settings.db_password,
        )
    return _postgres(
        settings,
        attrs,
        settings.db_master_host,
        settings.db_master_port,
        settings.db_master_name,
        settings.db_master_user,
        settings.db_master_password,
    )


def replica_url(settings: Settings) -> DatabaseUrl:
    """The URL of the database that serves reads (the primary's when there is no replica)."""
    attrs = settings.db_replica_target_session_attrs
    if settings.database_replica_url:
        return _from_url(settings.database_replica_url, settings, attrs)
    if _legacy(settings) or (settings.database_url and not _changed(settings, "db_slave_")):
        return primary_url(settings)
    return _postgres(
        settings,
        attrs,
        settings.db_slave_host,
        settings.db_slave_port,
        settings.db_slave_name,
        settings.db_slave_user,
        settings.db_slave_password,
    )


def _changed(settings: Settings, prefix: str) -> bool:
    return any(
        getattr(settings, field.name) != field.default
        for field in dataclasses.fields(settings)
        if field.name.startswith(prefix)
    )


def _legacy(settings: Settings) -> bool:
    return bool(settings.db_host) and not (
        _changed(settings, "db_master_") or _changed(settings, "db_slave_")
    )


def _postgres(
    settings: Settings,
    attrs: str,
    host: str,
    port: int,
    database: str,
    user: str,
    password: Secret,
) -> DatabaseUrl:
    pairs: list[tuple[str, int | None]] = parse_hosts(host, port) if host else [(host, port)]
    query: dict[str, QueryValue] = {"sslmode": settings.db_ssl_mode}
    host_part: str | None
    port_part: int | None
    if len(pairs) > 1:
        # Several hosts travel in the query, where SQLAlchemy's psycopg dialect reads them.
        query = {**hosts_query(pairs), **query, "target_session_attrs": attrs}
        host_part, port_part = None, None
    else:
        host_part, port_part = pairs[0]
    return DatabaseUrl(
        DRIVER,
        username=user or None,
        password=password.reveal() or None,
        host=host_part or None,
        port=port_part,
        database=database or None,
        query=query,
    )


def _from_url(value: Secret, settings: Settings, attrs: str) -> DatabaseUrl:
    url = parse_url(from_libpq_uri(value.reveal()))
    if url.drivername in ("postgres", "postgresql"):
        url = dataclasses.replace(url, drivername=DRIVER)
    if url.backend == "postgresql" and "sslmode" not in url.query:
        url = url.with_query(sslmode=settings.db_ssl_mode)
    if (
        url.backend == "postgresql"
        and "target_session_attrs" not in url.query
        and len(url.hosts()) > 1
    ):
        url = url.with_query(target_session_attrs=attrs)
    return url
