"""The send path's statements: claim a job, then record the provider's acceptance.

Both run once per tracked email, so each is built once on the table, compiled once,
and run as text with its values bound (:class:`~email_worker.db.job_table.Precompiled`).
Fencing: :func:`claim_job` gives each claim a fresh ``claim_token``, and a worker names
it when it records the outcome. A worker whose lease was reaped, and whose job another
worker has claimed since, therefore cannot fail it or schedule a retry of it; its record
of ``sent`` is still kept as a tracking row.

A record of ``sent`` is one statement (:func:`record_sent_statement`, built for each batch
size), whether it is one record (:func:`mark_sent`: the task itself, or a deferred
record) or a batch (:func:`mark_sent_batch`: a pool process's recorder thread), and one
guard, :func:`may_mark_sent`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    DateTime,
    Float,
    String,
    Table,
    Uuid,
    and_,
    bindparam,
    case,
    column,
    exists,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    update,
    values,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeEngine

from email_worker.db import status as st
from email_worker.db.dialect import plus_seconds, utc_now
from email_worker.db.job_table import JOBS, Precompiled, at, held_by, move
from email_worker.db.models import EmailJob, EmailTracking, naive_utc, utcnow
from email_worker.db.sealing import open_json, open_text, seal_json

# Celery's eta and this database's clock may differ a little; a message that arrives
# this early for its job still claims it.
CLAIM_SLACK = dt.timedelta(seconds=2)


class ClaimedJob(NamedTuple):
    """What a claim returns: the fields the send needs, read like a job's.

    The send needs the stored request (``payload``; rows of the original service have
    none and are rebuilt from ``recipient_email``, ``template_id`` and ``template_data``,
    which the claim returns only for them), the attempts made, and the new claim. Each
    sealed field costs an AES-GCM opening, so no other is read.
    """

    id: uuid.UUID
    status: str
    claim_token: uuid.UUID | None
    lease_expires_at: dt.datetime | None
    retry_count: int | None
    job_type: str
    template_id: str | None
    payload: dict[str, Any] | None
    recipient_email: str | None
    template_data: dict[str, Any] | None


def claim_job(
    session: Session, job_id: uuid.UUID, lease_seconds: float, *, now: dt.datetime | None = None
) -> ClaimedJob | None:
    """Move a pending or retrying job that is due to ``sending``; None if it cannot be claimed.

    None means another claim got there first, the job is finished or cancelled, or its
    ``scheduled_at`` (a retry's backoff, a short countdown) has not come yet. The
    returned job carries a new ``claim_token``: the outcome of this claim must name it.
    The lease runs out ``lease_seconds`` after ``now``, the database's time when None.
    """
    if now is None:
        connection = session.connection(bind_arguments={"clause": _CLAIM})
        return claim(connection, job_id, lease_seconds)
    now = naive_utc(now)
    statement = (
        update(JOBS)
        .where(JOBS.c.id == job_id, _claimable(at(now, CLAIM_SLACK.total_seconds())))
        .values(
            status=st.SENDING,
            claim_token=uuid.uuid4(),
            lease_expires_at=at(now, lease_seconds),
            updated_at=at(now),
        )
        .returning(*_CLAIMED)
    )
    row = session.execute(statement).one_or_none()
    return None if row is None else ClaimedJob(*row)


def claim(connection: Connection, job_id: uuid.UUID, lease_seconds: float) -> ClaimedJob | None:
    """:func:`claim_job` on the database's clock, on ``connection`` (the send path's claim).

    On PostgreSQL the claim is one statement compiled once and run as text; the sealed
    fields it returns are opened here, and only those the send needs.
    """
    values = {"job_id": job_id, "claim_token": uuid.uuid4(), "lease_seconds": lease_seconds}
    if connection.dialect.name != "postgresql":
        row = connection.execute(_CLAIM, values).one_or_none()
        return None if row is None else ClaimedJob(*row)
    row = _CLAIM_ASYNC_COMMIT.run(connection, values).one_or_none()
    if row is None:
        return None
    payload, recipient, data = row[7:10]
    return ClaimedJob._make(
        (
            *row[:7],
            None if payload is None else open_json(_PAYLOAD, payload),
            None if recipient is None else open_text(_RECIPIENT, recipient),
            None if data is None else open_json(_TEMPLATE_DATA, data),
        )
    )


def _claimable(due_by: Any) -> Any:
    return and_(
        JOBS.c.status.in_(st.CLAIMABLE),
        # A retry waits out its backoff even if an extra message for it comes early.
        or_(JOBS.c.scheduled_at.is_(None), JOBS.c.scheduled_at <= due_by),
    )


def _only_without_payload(sealed: Any) -> Any:
    """A legacy request column, returned (and opened) only for a row that has no payload."""
    return case((JOBS.c.payload.is_(None), sealed)).label(sealed.name)


# In ClaimedJob's order. The purposes are those the Sealed columns open with.
_CLAIMED = (
    JOBS.c.id,
    JOBS.c.status,
    JOBS.c.claim_token,
    JOBS.c.lease_expires_at,
    JOBS.c.retry_count,
    JOBS.c.job_type,
    JOBS.c.template_id,
    JOBS.c.payload,
    _only_without_payload(JOBS.c.recipient_email),
    _only_without_payload(JOBS.c.template_data),
)
_PAYLOAD, _RECIPIENT, _TEMPLATE_DATA = (
    "email_jobs.payload",
    "email_jobs.recipient_email",
    "email_jobs.template_data",
)


def _unbound(name: str, kind: TypeEngine[Any]) -> Any:
    """A value the caller binds at each execution (see :class:`Precompiled`)."""
    return bindparam(name, type_=kind, required=False)


# Every send claims: the table, not the mapped class, and a statement built once.
_CLAIM = (
    update(JOBS)
    .where(
        JOBS.c.id == _unbound("job_id", Uuid()),
        _claimable(utc_now(CLAIM_SLACK.total_seconds())),
    )
    .values(
        status=st.SENDING,
        claim_token=_unbound("claim_token", Uuid()),
        lease_expires_at=plus_seconds(utc_now(), _unbound("lease_seconds", Float())),
        updated_at=utc_now(),
    )
    .returning(*_CLAIMED)
)

# The same claim, committed without waiting for its WAL to reach the disk (PostgreSQL's
# asynchronous commit, for this one transaction). Waiting for the flush was a third of
# the claim's time. A claim lost to a server crash costs no second email: the row is
# back to pending or retrying, the record of `sent` moves such a row as well, and that
# record commits synchronously, which flushes the claim's WAL with its own. Every other
# statement keeps the server's setting.
_ASYNC_COMMIT = select(func.set_config("synchronous_commit", "off", True)).scalar_subquery()
_CLAIM_ASYNC_COMMIT = Precompiled(_CLAIM.where(_ASYNC_COMMIT == "off"))


def may_mark_sent(claim_token: Any) -> Any:
    """Whether a record of ``sent`` for the claim ``claim_token`` moves a job: the one guard.

    A ``sending`` job moves only for the claim named by ``claim_token``. A pending or
    retrying one (the lease was reaped and nobody has claimed it since) moves whatever
    the token, so the email is not sent a second time. A NULL token names no claim.
    """
    return or_(JOBS.c.status.in_(st.CLAIMABLE), held_by(claim_token))


@dataclasses.dataclass(frozen=True)
class SentRecord:
    """One provider acceptance to record: what :func:`mark_sent` takes, as a value."""

    job_id: uuid.UUID
    claim_token: uuid.UUID | None
    provider: str
    message_id: str | None
    recipient_results: dict[str, Any] | None
    at: dt.datetime


def mark_sent(
    session: Session,
    job_id: uuid.UUID,
    *,
    claim_token: uuid.UUID | None,
    provider: str,
    provider_message_id: str | None,
    at: dt.datetime | None = None,
    recipient_results: dict[str, Any] | None = None,
) -> bool:
    """Record the provider's acceptance; returns whether the job moved to ``sent``.

    ``recipient_results`` keeps who took it and who refused it for good (masked). The
    job moves as :func:`may_mark_sent` allows. The tracking row is written even when
    the job stays where it is (another worker holds it, or a webhook came first): the
    message did leave, and webhooks find it by its id.
    """
    record = SentRecord(
        job_id, claim_token, provider, provider_message_id, recipient_results, at or utcnow()
    )
    if session.get_bind(clause=select(EmailJob)).dialect.name == "postgresql":
        return mark_sent_batch(session, [record]) == 1
    sent: dict[str, Any] = {
        "status": st.SENT,
        "sent_at": record.at,
        "provider": provider,
        "provider_message_id": provider_message_id,
        "lease_expires_at": None,
        "claim_token": None,
    }
    if recipient_results is not None:
        sent["recipient_results"] = recipient_results
    token = bindparam("claim_token_held", claim_token, type_=Uuid)
    moved = move(session, job_id, st.SENDABLE, may_mark_sent(token), **sent)
    if moved or session.get(EmailJob, job_id) is not None:
        session.add(
            EmailTracking(
                job_id=job_id,
                provider=provider,
                message_id=provider_message_id,
                status=st.SENT,
                sent_at=record.at,
            )
        )
        session.flush()
    return moved


def mark_sent_batch(session: Session, sent: Sequence[SentRecord]) -> int:
    """Record providers' acceptances in one statement (PostgreSQL); returns how many moved.

    Each record moves its job as :func:`mark_sent` would and adds its tracking row; the
    batch is one round trip and, in autocommit, one commit.
    """
    clause = record_sent_statement(1).statement
    return record_sent(session.connection(bind_arguments={"clause": clause}), sent)


def record_sent(connection: Connection, sent: Sequence[SentRecord]) -> int:
    """:func:`mark_sent_batch` on ``connection`` (a pool process's recorder thread)."""
    if not sent:
        return 0
    size = _batch_size(len(sent))
    columns: dict[str, Any] = {"tracking_created_at": utcnow()}
    for n in range(size):
        # Rows past the batch's own are NULL: they match no job and add no tracking row.
        record = sent[n] if n < len(sent) else None
        results = None if record is None else record.recipient_results
        columns.update(
            {
                f"job_id_{n}": record and record.job_id,
                f"claim_token_{n}": record and record.claim_token,
                f"provider_{n}": record and record.provider,
                f"message_id_{n}": record and record.message_id,
                f"sent_at_{n}": record and record.at,
                f"tracking_id_{n}": record and uuid.uuid4(),
                # Sealed here: the statement takes it as text.
                f"results_{n}": None
                if results is None
                else seal_json("email_jobs.recipient_results", results),
            }
        )
    return int(record_sent_statement(size).run(connection, columns).scalar_one())


_BATCH_FIELDS: dict[str, TypeEngine[Any]] = {
    "job_id": Uuid(),
    "claim_token": Uuid(),
    "provider": String(),
    "message_id": String(),
    "sent_at": DateTime(),
    "tracking_id": Uuid(),
    "results": String(),
}


def _record_sent_statement(size: int) -> Any:
    """The record of ``sent`` for ``size`` records: the status change and the tracking rows.

    One statement and one round trip whatever the batch's size (PostgreSQL runs an UPDATE
    and an INSERT inside a WITH). The batch is a VALUES list of ``size`` rows, so each
    size is a statement of its own: PostgreSQL then sees how many rows it has without
    their values, and runs each from its cached plan. (Given as arrays to unnest, the
    batch was planned again at every execution: for a plan made without the values
    PostgreSQL counts 100 rows in an array, and the plan kept losing to a fresh one.)
    """
    rows_in = [
        tuple(_unbound(f"{name}_{n}", kind) for name, kind in _BATCH_FIELDS.items())
        for n in range(size)
    ]
    listed = values(*(column(name, kind) for name, kind in _BATCH_FIELDS.items()), name="rows")
    batch = select(listed.data(rows_in)).cte("batch")
    moved = (
        update(JOBS)
        .where(JOBS.c.id == batch.c.job_id, may_mark_sent(batch.c.claim_token))
        .values(
            status=st.SENT,
            sent_at=batch.c.sent_at,
            provider=batch.c.provider,
            provider_message_id=batch.c.message_id,
            lease_expires_at=null(),
            claim_token=null(),
            recipient_results=func.coalesce(batch.c.results, JOBS.c.recipient_results),
            updated_at=utc_now(),
        )
        .returning(JOBS.c.id)
        .cte("moved")
    )
    tracking = cast(Table, EmailTracking.__table__)
    known = exists().where(JOBS.c.id == batch.c.job_id)
    rows = select(
        batch.c.tracking_id,
        batch.c.job_id,
        batch.c.provider,
        batch.c.message_id,
        literal(st.SENT, String),
        batch.c.sent_at,
        _unbound("tracking_created_at", DateTime()),
    ).where(known)
    tracked = (
        insert(tracking)
        .from_select(
            ["id", "job_id", "provider", "message_id", "status", "sent_at", "created_at"], rows
        )
        .cte("tracked")
    )
    return select(func.count()).select_from(moved).add_cte(tracked)


_RECORD_SENT: dict[int, Precompiled] = {}


def _batch_size(records: int) -> int:
    """The statement size a batch of ``records`` is written with: a power of two.

    A few statements cover every batch (seven up to the recorder's 64), so each process
    compiles and keeps few, and PostgreSQL caches a plan for each.
    """
    return 1 << max(records - 1, 0).bit_length()


def record_sent_statement(size: int) -> Precompiled:
    """The record of ``sent`` for a batch of ``size``, built on first use."""
    statement = _RECORD_SENT.get(size)
    if statement is None:
        statement = _RECORD_SENT[size] = Precompiled(_record_sent_statement(size))
    return statement
