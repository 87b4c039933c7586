"""What differs between PostgreSQL and SQLite: upserts and the database's clock.

Leases and due times are compared against the database's clock, never a worker's:
workers, beat and producers run on machines whose clocks may disagree, but they all
share the one database. Timestamps are stored as naive UTC (``TIMESTAMP WITHOUT TIME
ZONE``, as in the original schema), so the clock is read in UTC whatever the server's
or the session's ``TimeZone`` setting.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from email_worker.db.timestamps import POSTGRESQL_UTC_NOW

# SQLite keeps timestamps as text and compares them as text, so the database's clock
# must write them exactly as SQLAlchemy does: six digits of fractional seconds (the
# date functions give three).
_SQLITE_FORMAT = "%Y-%m-%d %H:%M:%f"
_SQLITE_MICROSECONDS = "'000'"


def insert(session: Session, entity: Any) -> postgresql.Insert | sqlite.Insert:
    """An INSERT for ``entity`` in the dialect of the database that takes the writes."""
    name = session.get_bind(clause=postgresql.insert(entity)).dialect.name
    if name == "postgresql":
        return postgresql.insert(entity)
    if name == "sqlite":
        return sqlite.insert(entity)
    raise NotImplementedError(f"no upsert support for the {name} dialect")


class UtcNow(FunctionElement[dt.datetime]):
    """The database's current time as naive UTC."""

    type = sa.DateTime()
    inherit_cache = True


class PlusSeconds(FunctionElement[dt.datetime]):
    """A timestamp expression moved by a number of seconds (which may be an expression)."""

    type = sa.DateTime()
    inherit_cache = True


def utc_now(offset_seconds: float = 0) -> sa.ColumnElement[dt.datetime]:
    """The database's current UTC time, ``offset_seconds`` later, as an SQL expression."""
    if not offset_seconds:
        return UtcNow()
    return plus_seconds(UtcNow(), offset_seconds)


def plus_seconds(
    moment: sa.ColumnElement[dt.datetime], seconds: float | sa.ColumnElement[Any]
) -> sa.ColumnElement[dt.datetime]:
    """``moment`` plus ``seconds``, computed by the database."""
    if not isinstance(seconds, sa.ColumnElement):
        seconds = sa.literal(float(seconds), sa.Float())
    return PlusSeconds(moment, seconds)


@compiles(UtcNow, "postgresql")
def _utc_now_postgresql(element: UtcNow, compiler: SQLCompiler, **kw: Any) -> str:
    return POSTGRESQL_UTC_NOW


@compiles(UtcNow, "sqlite")
def _utc_now_sqlite(element: UtcNow, compiler: SQLCompiler, **kw: Any) -> str:
    return f"(strftime('{_SQLITE_FORMAT}', 'now') || {_SQLITE_MICROSECONDS})"


@compiles(UtcNow)
def _utc_now_default(element: UtcNow, compiler: SQLCompiler, **kw: Any) -> str:
    return "CURRENT_TIMESTAMP"


@compiles(PlusSeconds, "postgresql")
def _plus_seconds_postgresql(element: PlusSeconds, compiler: SQLCompiler, **kw: Any) -> str:
    moment, seconds = (compiler.process(c, **kw) for c in element.clauses)
    return f"({moment} + CAST({seconds} AS DOUBLE PRECISION) * INTERVAL '1 second')"


@compiles(PlusSeconds, "sqlite")
def _plus_seconds_sqlite(element: PlusSeconds, compiler: SQLCompiler, **kw: Any) -> str:
    moment, seconds = (compiler.process(c, **kw) for c in element.clauses)
    shifted = f"strftime('{_SQLITE_FORMAT}', {moment}, ({seconds}) || ' seconds')"
    return f"({shifted} || {_SQLITE_MICROSECONDS})"
