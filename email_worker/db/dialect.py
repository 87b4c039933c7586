"""INSERT statements that can say what to do on a conflict, on PostgreSQL and SQLite."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def insert(session: Session, entity: Any) -> postgresql.Insert | sqlite.Insert:
    """An INSERT for ``entity`` in the dialect of the database that takes the writes."""
    name = session.get_bind(clause=postgresql.insert(entity)).dialect.name
    if name == "postgresql":
        return postgresql.insert(entity)
    if name == "sqlite":
        return sqlite.insert(entity)
    raise NotImplementedError(f"no upsert support for the {name} dialect")
