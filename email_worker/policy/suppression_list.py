"""This process's copy of the suppression list, so a send does not query the database.

The fast path promises that nothing touches the database on the way to the provider:
each worker process keeps the whole list (address and scope) in memory and reloads it
once it is ``SUPPRESSION_REFRESH`` seconds old, so an address added (an unsubscribe, a
hard bounce) or removed is honoured within that time. With ``SUPPRESSION_REFRESH=0``
every send asks the database. A list of a million addresses costs about 100 MB per
process; past that size, set the refresh to 0 and let the primary key answer.

On PostgreSQL the list is read through psycopg alone (:mod:`email_worker.db.direct`),
so a pool process that sends only fast-path emails never imports SQLAlchemy; another
database (SQLite, in the quick start) is read through the database layer's session.
Both readings give the entries, and :mod:`email_worker.db.suppression_lookup` says
which of them stop an email.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable

from email_worker.config import get_settings
from email_worker.db import suppression_lookup
from email_worker.db.suppression_lookup import (
    SCOPE_ALL,
    SCOPE_MARKETING,
    Entry,
    blocked_addresses,
    by_scope,
    by_suppression_address,
)


class ListUnavailable(Exception):
    """The list had to be read and the primary database did not answer.

    Its message is the name of the driver's error (no address, no connection details).
    """


class SuppressionList:
    """The suppressed addresses by scope, as of the last reload."""

    def __init__(self, refresh: float | None = None) -> None:
        self._refresh = refresh  # None: SUPPRESSION_REFRESH
        self._everything: frozenset[str] = frozenset()
        self._marketing: frozenset[str] = frozenset()
        self._loaded_at = -float("inf")
        self._lock = threading.Lock()

    def blocked(self, addresses: Iterable[str], category: str) -> set[str]:
        """Which of ``addresses`` (lower-cased) no email of ``category`` may go to.

        Raises :class:`ListUnavailable` when the list has to be read and the primary is away.
        """
        refresh = get_settings().suppression_refresh if self._refresh is None else self._refresh
        wanted = by_suppression_address(addresses)
        if refresh <= 0:
            entries = read_entries(list(wanted)) if wanted else []
            return blocked_addresses(wanted, entries, category)
        with self._lock:
            if time.monotonic() - self._loaded_at >= refresh:
                self._everything, self._marketing = by_scope(read_entries(None))
                self._loaded_at = time.monotonic()
            everything, marketing = self._everything, self._marketing
        # The copy's entries for these addresses, as the database would give them.
        held: list[Entry] = [(h, SCOPE_ALL) for h in wanted.keys() & everything]
        held += [(h, SCOPE_MARKETING) for h in wanted.keys() & marketing]
        return blocked_addresses(wanted, held, category)


def read_entries(hashes: list[str] | None) -> list[Entry]:
    """The primary's entries for these lookup hashes, or all of them (``None``).

    Through psycopg alone on PostgreSQL, else through SQLAlchemy; a database that does
    not answer (or any error of its driver) is raised as :class:`ListUnavailable`.
    """
    from email_worker.db import direct

    if direct.applies():
        import psycopg

        try:
            with direct.primary(transaction=False) as connection:
                if hashes is None:
                    return suppression_lookup.all_entries(connection)
                return suppression_lookup.listed_entries(connection, hashes)
        except (direct.DatabaseUnreachable, psycopg.Error) as exc:
            raise ListUnavailable(type(exc).__name__) from exc
    from sqlalchemy.exc import SQLAlchemyError

    from email_worker.db import suppressions
    from email_worker.db.session import primary_statement

    try:
        with primary_statement() as session:
            return suppressions.entries(session, hashes)
    except SQLAlchemyError as exc:
        raise ListUnavailable(type(exc).__name__) from exc


_list = SuppressionList()


def suppressed(addresses: Iterable[str], category: str) -> set[str]:
    """The addresses of a send that are suppressed for its category (this process's copy)."""
    return _list.blocked(addresses, category)


def _forget_after_fork() -> None:
    # A pool process starts with a list of its own, read when first needed.
    global _list
    _list = SuppressionList()


os.register_at_fork(after_in_child=_forget_after_fork)
