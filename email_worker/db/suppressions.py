"""The suppression list: addresses no email of some categories may be sent to.

A hard bounce suppresses an address for every kind (scope ``all``); an unsubscribe or a
complaint only for marketing and bulk kinds (scope ``marketing``). An entry is keyed by
the lookup hash of :func:`~email_worker.addresses.comparable_address` of its address
(:func:`~email_worker.db.sealing.lookup_hash`), so it matches whatever form a send or an
operator gives (``BOB@MÜLLER.COM``, ``bob@xn--mller-kva.com``) and the address itself is
stored only sealed; one primary-key lookup answers for every recipient of a send.
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
from email_worker.kinds import MARKETING_CATEGORIES

SCOPE_ALL = "all"
SCOPE_MARKETING = "marketing"
SCOPES = (SCOPE_ALL, SCOPE_MARKETING)
REASONS = ("hard_bounce", "complaint", "unsubscribe", "manual", "erasure")
# The categories of kinds that an unsubscribe or a complaint stops.


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
    statement = select(EmailSuppression.address_hash).where(
        EmailSuppression.address_hash.in_(wanted)
    )
    if category not in MARKETING_CATEGORIES:
        statement = statement.where(EmailSuppression.scope == SCOPE_ALL)
    return {given for found in session.scalars(statement) for given in wanted[found]}


def addresses_by_scope(session: Session) -> tuple[frozenset[str], frozenset[str]]:
    """Every suppressed address's lookup hash: those of scope ``all``, then marketing only."""
    rows = session.execute(select(EmailSuppression.address_hash, EmailSuppression.scope)).all()
    everything = frozenset(address for address, scope in rows if scope == SCOPE_ALL)
    return everything, frozenset(address for address, scope in rows if scope != SCOPE_ALL)


def by_suppression_address(addresses: Iterable[str]) -> dict[str, set[str]]:
    """The lower-cased ``addresses`` grouped by the lookup hash the list keeps them by."""
    grouped: dict[str, set[str]] = {}
    for address in addresses:
        grouped.setdefault(lookup_hash(address), set()).add(address.strip().lower())
    return grouped


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
