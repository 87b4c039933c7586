"""Timestamps as the columns store them (naive UTC), and the database's clock in SQL text.

Nothing here imports SQLAlchemy: the models use these, and so do the paths that talk to
PostgreSQL through psycopg alone (:mod:`email_worker.db.direct`).
"""

from __future__ import annotations

import datetime as dt
from typing import overload

# PostgreSQL's current UTC time as the columns store it (email_worker.db.dialect.utc_now):
# statement_timestamp(), not now(), so that a lease does not start when a long
# transaction did.
POSTGRESQL_UTC_NOW = "timezone('UTC', statement_timestamp())"


def utcnow() -> dt.datetime:
    """The current time as naive UTC, the form every timestamp column stores."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


@overload
def naive_utc(moment: dt.datetime) -> dt.datetime: ...
@overload
def naive_utc(moment: None) -> None: ...
def naive_utc(moment: dt.datetime | None) -> dt.datetime | None:
    """``moment`` as the naive UTC the columns store; a naive one is taken as UTC already."""
    if moment is None or moment.tzinfo is None:
        return moment
    try:
        return moment.astimezone(dt.UTC).replace(tzinfo=None)
    except OverflowError:
        raise ValueError(f"time out of range in UTC: {moment.isoformat()}") from None
