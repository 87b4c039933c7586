"""This process's copy of the suppression list, so a send does not query the database.

The fast path promises that nothing touches the database on the way to the provider:
each worker process keeps the whole list (address and scope) in memory and reloads it
once it is ``SUPPRESSION_REFRESH`` seconds old, so an address added (an unsubscribe, a
hard bounce) or removed is honoured within that time. With ``SUPPRESSION_REFRESH=0``
every send asks the database. A list of a million addresses costs about 100 MB per
process; past that size, set the refresh to 0 and let the primary key answer.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable

from email_worker.config import get_settings
from email_worker.db import suppressions
from email_worker.db.session import primary_statement


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

        Raises SQLAlchemyError when the list has to be read and the primary is away.
        """
        refresh = get_settings().suppression_refresh if self._refresh is None else self._refresh
        if refresh <= 0:
            with primary_statement() as session:
                return suppressions.is_suppressed(session, addresses, category)
        with self._lock:
            if time.monotonic() - self._loaded_at >= refresh:
                self._reload()
            everything, marketing = self._everything, self._marketing
        wanted = suppressions.by_suppression_address(addresses)
        blocked = wanted.keys() & everything
        if category in suppressions.MARKETING_CATEGORIES:
            blocked |= wanted.keys() & marketing
        return {given for found in blocked for given in wanted[found]}

    def _reload(self) -> None:
        with primary_statement() as session:
            self._everything, self._marketing = suppressions.addresses_by_scope(session)
        self._loaded_at = time.monotonic()


_list = SuppressionList()


def suppressed(addresses: Iterable[str], category: str) -> set[str]:
    """The addresses of a send that are suppressed for its category (this process's copy)."""
    return _list.blocked(addresses, category)


def _forget_after_fork() -> None:
    # A pool process starts with a list of its own, read when first needed.
    global _list
    _list = SuppressionList()


os.register_at_fork(after_in_child=_forget_after_fork)
