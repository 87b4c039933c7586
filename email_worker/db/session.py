"""The routing session: writes to the primary, reads to the replica when that is safe.

A read goes to the primary instead when its transaction has already written (it
must see its own writes), when the session was opened for the send path
(``primary=True``: the send path must see what a producer has just committed), and
when the replica cannot be reached. In the last case the read falls back at once,
the fallback is logged and counted, and the replica is not tried again until
:attr:`ReplicaHealth.retry_interval` has passed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.sql.elements import ClauseElement, TextClause

from email_worker.db.engines import Engines, get_engines
from email_worker.db.pooling import ReplicaHealth, process_replica_health

__all__ = [
    "ReplicaHealth",  # with the direct connections' reads, in email_worker.db.pooling
    "RoutingSession",
    "primary_connection",
    "primary_session",
    "primary_statement",
    "session_scope",
]


class RoutingSession(Session):
    """A session whose reads use the replica unless they must see the primary."""

    def __init__(
        self,
        *,
        engines: Engines | None = None,
        primary: bool = False,
        health: ReplicaHealth | None = None,
        **options: Any,
    ) -> None:
        # Objects stay readable after commit: refreshing them would read the replica,
        # which may not have the commit yet.
        options.setdefault("expire_on_commit", False)
        super().__init__(**options)
        self.engines = engines or get_engines()
        self.primary_only = primary
        self.health = health or process_replica_health()
        self.wrote = False

    def get_bind(
        self,
        mapper: Any = None,
        *,
        clause: ClauseElement | None = None,
        bind: Engine | Connection | None = None,
        **kw: Any,
    ) -> Engine | Connection:
        """The primary for writes and for reads that must see it; else the replica."""
        if bind is not None:
            return bind
        if self._flushing or not _is_read(clause):
            self.wrote = True
            return self.engines.primary
        if self.wrote or self.primary_only or not self.engines.has_replica:
            return self.engines.primary
        return self._replica_or_primary()

    def _replica_or_primary(self) -> Engine:
        replica = self.engines.replica
        if self.health.replica_available:
            try:
                # Connect now, inside this session's transaction, so that a replica
                # that is down turns into a fallback here instead of an error later.
                self.connection(bind_arguments={"bind": replica})
            except DBAPIError as error:
                self.health.mark_down(_named(replica), error)
            else:
                self.health.mark_up(_named(replica))
                return replica
        self.health.record_fallback()
        return self.engines.primary


def _named(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


@event.listens_for(RoutingSession, "after_transaction_end")
def _forget_writes(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None and isinstance(session, RoutingSession):
        session.wrote = False


def _is_read(clause: ClauseElement | None) -> bool:
    if clause is None:
        return False
    if isinstance(clause, TextClause):
        return clause.text.lstrip()[:6].lower() == "select"
    # SELECT ... FOR UPDATE takes locks: only the primary can run it.
    return bool(getattr(clause, "is_select", False)) and (
        getattr(clause, "_for_update_arg", None) is None
    )


@contextmanager
def session_scope(*, primary: bool = False) -> Iterator[RoutingSession]:
    """A routing session that commits when the block succeeds and rolls back if it fails."""
    session = RoutingSession(primary=primary)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def primary_session() -> AbstractContextManager[RoutingSession]:
    """A session for the send path: every read and write goes to the primary."""
    return session_scope(primary=True)


@contextmanager
def primary_connection() -> Iterator[Connection]:
    """A connection to the primary whose statements each commit on their own.

    For the send path's statements (:class:`email_worker.db.job_table.Precompiled`),
    which need no session: without a transaction around it, the statement is the only
    round trip to the database.
    """
    with get_engines().primary.connect() as connection:
        yield connection.execution_options(isolation_level="AUTOCOMMIT")


@contextmanager
def primary_statement() -> Iterator[Session]:
    """A session on the primary whose statements each commit on their own.

    For work that is one statement (a claim, a record of `sent`, a new job): without a
    transaction around it, the statement is the only round trip to the database.
    """
    with primary_connection() as connection:
        session = Session(bind=connection, expire_on_commit=False)
        try:
            yield session
            session.flush()
        finally:
            session.close()
