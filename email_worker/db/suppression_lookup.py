"""Who the suppression list stops: the rule every reading of the list applies.

:mod:`email_worker.db.suppressions` keeps the list (adds, removes, what an operator
sees) through SQLAlchemy. A send only asks who of its recipients is on it, and on
PostgreSQL asks through psycopg alone (:func:`listed_entries`, :func:`all_entries`, on
a connection of :mod:`email_worker.db.direct`), so a fast-path send loads no
SQLAlchemy. Every reading, through either driver or from a worker's copy of the list,
looks the recipients up by their lookup hashes (:func:`by_suppression_address`) and
keeps those an entry :func:`stops` (:func:`blocked_addresses`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from email_worker.db.sealing import lookup_hash
from email_worker.kinds import MARKETING_CATEGORIES

if TYPE_CHECKING:
    import psycopg

SCOPE_ALL = "all"
SCOPE_MARKETING = "marketing"
SCOPES = (SCOPE_ALL, SCOPE_MARKETING)

# An entry: an address's lookup hash and the entry's scope.
Entry = tuple[str, str]

_LISTED = "SELECT address_hash, scope FROM email_suppressions WHERE address_hash = ANY(%s)"
_ALL = "SELECT address_hash, scope FROM email_suppressions"


def stops(scope: str, category: str) -> bool:
    """Whether an entry of ``scope`` stops an email of ``category``.

    A hard bounce (scope ``all``) stops every kind; an unsubscribe or a complaint only
    the marketing and bulk kinds.
    """
    return scope == SCOPE_ALL or category in MARKETING_CATEGORIES


def by_suppression_address(addresses: Iterable[str]) -> dict[str, set[str]]:
    """The lower-cased ``addresses`` grouped by the lookup hash the list keeps them by."""
    grouped: dict[str, set[str]] = {}
    for address in addresses:
        grouped.setdefault(lookup_hash(address), set()).add(address.strip().lower())
    return grouped


def blocked_addresses(
    wanted: dict[str, set[str]], entries: Iterable[Entry], category: str
) -> set[str]:
    """The addresses of ``wanted`` (:func:`by_suppression_address`) that ``entries`` stop."""
    return {
        given
        for address_hash, scope in entries
        if address_hash in wanted and stops(scope, category)
        for given in wanted[address_hash]
    }


def by_scope(entries: Iterable[Entry]) -> tuple[frozenset[str], frozenset[str]]:
    """The lookup hashes of ``entries``: those of scope ``all``, then marketing only."""
    everything: set[str] = set()
    marketing: set[str] = set()
    for address_hash, scope in entries:
        (everything if scope == SCOPE_ALL else marketing).add(address_hash)
    return frozenset(everything), frozenset(marketing)


def listed_entries(connection: psycopg.Connection[Any], hashes: list[str]) -> list[Entry]:
    """The entries of the list whose lookup hash is one of ``hashes`` (one index lookup each)."""
    return list(connection.execute(_LISTED, (hashes,)))


def all_entries(connection: psycopg.Connection[Any]) -> list[Entry]:
    """Every entry of the list."""
    return list(connection.execute(_ALL))
