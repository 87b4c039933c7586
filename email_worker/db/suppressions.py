"""The suppression list: addresses no email of some categories may be sent to.

A hard bounce suppresses an address for every kind (scope ``all``); an unsubscribe or a
complaint only for marketing and bulk kinds (scope ``marketing``). An entry is keyed by
the lookup hash of :func:`~email_worker.addresses.comparable_address` of its address
(:func:`~email_worker.db.sealing.lookup_hash`), so it matches whatever form a send or an
operator gives (``BOB@MÜLLER.COM``, ``bob@xn--mller-kva.com``) and the address itself is
stored only sealed; one primary-key lookup answers for every recipient of a send.
Which entries stop which email, and the lookup a send makes, are in
:mod:`~email_worker.db.suppression_lookup`, which a worker reads without SQLAlchemy.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import case, delete, select
from sqlalchemy.orm import Session

from email_worker.addresses import comparable_address
from email_worker.db import status as st
from email_worker.db.dialect import insert
from email_worker.db.job_table import held_by, move
from email_worker.db.models import EmailSuppression, EmailTracking
from email_worker.db.sealing import lookup_hash
from email_worker.db.suppression_lookup import SCOPE_ALL as SCOPE_ALL
from email_worker.db.suppression_lookup import SCOPE_MARKETING as SCOPE_MARKETING
from email_worker.db.suppression_lookup import SCOPES as SCOPES
from email_worker.db.suppression_lookup import Entry, blocked_addresses
from email_worker.db.suppression_lookup import by_suppression_address as by_suppression_address

REASONS = ("hard_bounce", "complaint", "unsubscribe", "manual", "erasure")


@dataclass(frozen=True)
class Suppression:
    """One suppressed address as listed to an operator."""

    address: str | None  # None: an erased person's entry, kept as a hash only
    reason: str
    scope: str
    source: str | None
    job_id: uuid.UUID | None
    created_at: dt.datetime


def add_suppression(
    session: Session,
    address: str,
    reason: str,
    scope: str,
    source: str | None,
    job_id: uuid.UUID | None = None,
) -> None:
    """Suppress ``address``; a later suppression of scope ``all`` widens an existing one."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
    if reason not in REASONS:
        raise ValueError(f"reason must be one of {', '.join(REASONS)}")
    statement = insert(session, EmailSuppression).values(
        address_hash=lookup_hash(address),
        address=comparable_address(address),
        reason=reason,
        scope=scope,
        source=source,
        job_id=job_id,
    )
    widens = statement.excluded.scope == SCOPE_ALL
    statement = statement.on_conflict_do_update(
        index_elements=[EmailSuppression.address_hash],
        set_={
            "scope": case((widens, SCOPE_ALL), else_=EmailSuppression.scope),
            "reason": case((widens, statement.excluded.reason), else_=EmailSuppression.reason),
            "source": case((widens, statement.excluded.source), else_=EmailSuppression.source),
            "job_id": case((widens, statement.excluded.job_id), else_=EmailSuppression.job_id),
        },
    )
    session.execute(statement)


def remove_suppression(session: Session, address: str) -> bool:
    """Take ``address`` off the list; False if it was not on it."""
    result = session.execute(
        delete(EmailSuppression).where(EmailSuppression.address_hash == lookup_hash(address))
    )
    return bool(getattr(result, "rowcount", 0))


def remove_by_hash(session: Session, address_hash: str) -> bool:
    """Take the entry with this lookup hash off the list; False if there was none."""
    result = session.execute(
        delete(EmailSuppression).where(EmailSuppression.address_hash == address_hash)
    )
    return bool(getattr(result, "rowcount", 0))


def newest_rows(session: Session, limit: int) -> list[EmailSuppression]:
    """The list's rows, newest first (erased people's included: their address is gone)."""
    return list(
        session.scalars(
            select(EmailSuppression).order_by(EmailSuppression.created_at.desc()).limit(limit)
        )
    )


def row_by_hash(session: Session, address_hash: str) -> EmailSuppression | None:
    """The entry with this lookup hash, or None."""
    return session.get(EmailSuppression, address_hash)


def list_suppressions(session: Session, *, limit: int = 1000) -> list[Suppression]:
    """The suppressed addresses, newest first."""
    rows = session.scalars(
        select(EmailSuppression).order_by(EmailSuppression.created_at.desc()).limit(limit)
    )
    return [
        Suppression(r.address, r.reason, r.scope, r.source, r.job_id, r.created_at) for r in rows
    ]


def is_suppressed(session: Session, addresses: Iterable[str], category: str) -> set[str]:
    """Which of ``addresses`` (lower-cased) no email of ``category`` may be sent to."""
    wanted = by_suppression_address(addresses)
    if not wanted:
        return set()
    return blocked_addresses(wanted, entries(session, list(wanted)), category)


def entries(session: Session, hashes: list[str] | None) -> list[Entry]:
    """The entries (lookup hash, scope) for these lookup hashes, or all of them (``None``).

    What :func:`email_worker.db.suppression_lookup.listed_entries` and ``all_entries``
    read through psycopg.
    """
    statement = select(EmailSuppression.address_hash, EmailSuppression.scope)
    if hashes is not None:
        statement = statement.where(EmailSuppression.address_hash.in_(hashes))
    return [(address_hash, scope) for address_hash, scope in session.execute(statement)]


def mark_suppressed(session: Session, job_id: uuid.UUID, *, claim_token: uuid.UUID) -> bool:
    """End a claimed job unsent because every recipient is suppressed."""
    moved = move(
        session,
        job_id,
        {st.SENDING},
        held_by(claim_token),
        status=st.SUPPRESSED,
        last_error="every recipient is on the suppression list",
        lease_expires_at=None,
        claim_token=None,
    )
    if moved:
        session.add(EmailTracking(job_id=job_id, status=st.SUPPRESSED))
        session.flush()
    return moved
