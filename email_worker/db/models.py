"""The tables: ``email_jobs``, ``email_templates``, ``email_tracking`` and the bulk sends.

Column for column the original service's schema, plus what migrations 0002 and 0003
add to ``email_jobs`` for the job lifecycle. Timestamps are naive UTC (``TIMESTAMP`` without
time zone, as in the original). Ids and timestamps are generated here as well as by
the PostgreSQL server defaults the migrations declare, so the same models work on
SQLite. Columns the original left nullable stay nullable in the database even where
this service always writes a value.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from email_worker.db import status
from email_worker.db.sealed_columns import Sealed
from email_worker.db.timestamps import naive_utc as naive_utc  # the models' own, for callers
from email_worker.db.timestamps import utcnow

JsonDocument = sa.JSON().with_variant(JSONB(), "postgresql")

# PostgreSQL's own names for unnamed constraints, so the original schema and the
# migrations agree, and SQLite's batch migrations can find every constraint by name.
NAMING_CONVENTION = {
    "pk": "%(table_name)s_pkey",
    "fk": "%(table_name)s_%(column_0_name)s_fkey",
}


class Base(DeclarativeBase):
    """The declarative base of the service's tables."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


def _status_in(*statuses: str) -> sa.TextClause:
    """An index predicate on the job's status, as text the migrations repeat word for word."""
    return sa.text(f"status IN ({', '.join(repr(name) for name in statuses)})")


_WAITING = _status_in(status.PENDING, status.SCHEDULED, status.RETRYING)  # status.NOT_SENT_YET
_SENDING = sa.text(f"status = '{status.SENDING}'")


class EmailJob(Base):
    """One email to send, tracked from the producer's commit to its last event."""

    __tablename__ = "email_jobs"
    __table_args__ = (
        sa.Index("idx_email_jobs_created_at", "created_at"),
        sa.Index("idx_email_jobs_recipient_hash", "recipient_hash"),
        sa.Index("idx_email_jobs_idempotency_key", "idempotency_key", unique=True),
        # Partial (migration 0005): a status change rewrites every index entry of a row.
        sa.Index(
            "idx_email_jobs_waiting",
            "status",
            "scheduled_at",
            postgresql_where=_WAITING,
            sqlite_where=_WAITING,
        ),
        sa.Index(
            "idx_email_jobs_sending_lease",
            "lease_expires_at",
            postgresql_where=_SENDING,
            sqlite_where=_SENDING,
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    job_type: Mapped[str] = mapped_column(sa.String(50))
    # Sealed (migration 0009): see email_worker.db.sealing. None once cleared or erased.
    recipient_email: Mapped[str | None] = mapped_column(
        Sealed("email_jobs.recipient_email", json=False)
    )
    subject: Mapped[str | None] = mapped_column(Sealed("email_jobs.subject", json=False))
    template_id: Mapped[str | None] = mapped_column(sa.String(100))
    template_data: Mapped[dict[str, Any] | None] = mapped_column(Sealed("email_jobs.template_data"))
    status: Mapped[str] = mapped_column(
        sa.String(20), nullable=True, default=status.PENDING, server_default=status.PENDING
    )
    priority: Mapped[int] = mapped_column(nullable=True, default=0, server_default=sa.text("0"))
    retry_count: Mapped[int] = mapped_column(nullable=True, default=0, server_default=sa.text("0"))
    max_retries: Mapped[int] = mapped_column(nullable=True, default=3, server_default=sa.text("3"))
    scheduled_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime)
    created_at: Mapped[dt.datetime] = mapped_column(sa.DateTime, nullable=True, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(
        sa.DateTime, nullable=True, default=utcnow, onupdate=utcnow
    )
    # Added by migration 0002.
    payload: Mapped[dict[str, Any] | None] = mapped_column(Sealed("email_jobs.payload"))
    idempotency_key: Mapped[str | None] = mapped_column(sa.String(255))
    # Error texts are stored with every address masked (privacy.redact_text), not sealed.
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    provider: Mapped[str | None] = mapped_column(sa.String(50))
    provider_message_id: Mapped[str | None] = mapped_column(sa.String(255))
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime)
    sent_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime)
    # Added by migration 0003: names the claim the job is in ``sending`` for.
    claim_token: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    # Added by migration 0004: ``{"accepted": n, "refused": {masked address: reason}}``.
    recipient_results: Mapped[dict[str, Any] | None] = mapped_column(
        Sealed("email_jobs.recipient_results")
    )
    # Added by migration 0007: the API key that sent it over HTTP, the only one that may read it.
    api_key_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("api_keys.id"))
    # Added by migration 0009: the lookup hash of the first recipient, and of every
    # recipient (to, cc, bcc) space-separated; when the personal fields were cleared.
    recipient_hash: Mapped[str | None] = mapped_column(sa.String(64))
    recipient_hashes: Mapped[str | None] = mapped_column(sa.Text)
    personal_data_cleared_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime)

    tracking: Mapped[list[EmailTracking]] = relationship(
        back_populates="job", order_by="EmailTracking.created_at"
    )

    def __repr__(self) -> str:
        return f"<EmailJob {self.id} {self.job_type} {self.status}>"


class EmailTemplate(Base):
    """A template stored in the database; it wins over the built-in one of the same id."""

    __tablename__ = "email_templates"

    id: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(255))
    subject: Mapped[str | None] = mapped_column(sa.String(500))
    html_template: Mapped[str | None] = mapped_column(sa.Text)
    text_template: Mapped[str | None] = mapped_column(sa.Text)
    variables: Mapped[list[Any] | dict[str, Any] | None] = mapped_column(JsonDocument)
    is_active: Mapped[bool] = mapped_column(nullable=True, default=True, server_default=sa.true())
    created_at: Mapped[dt.datetime] = mapped_column(sa.DateTime, nullable=True, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(
        sa.DateTime, nullable=True, default=utcnow, onupdate=utcnow
    )

    def __repr__(self) -> str:
        return f"<EmailTemplate {self.id}>"


class EmailTracking(Base):
    """What happened to one sent message: provider, message id, delivery events, errors."""

    __tablename__ = "email_tracking"
    __table_args__ = (
        sa.Index("idx_email_tracking_job_id", "job_id"),
        sa.Index("idx_email_tracking_status", "status"),
        sa.Index("idx_email_tracking_message_id", "message_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    job_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("email_jobs.id"))
    provider: Mapped[str | None] = mapped_column(sa.String(50))
    message_id: Mapped[str | None] = mapped_column(sa.String(255))
    status: Mapped[str | None] = mapped_column(sa.String(50))
    sent_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime)
    opened_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime)
    clicked_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime)
    error_message: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[dt.datetime] = mapped_column(sa.DateTime, nullable=True, default=utcnow)

    job: Mapped[EmailJob | None] = relationship(back_populates="tracking")

    def __repr__(self) -> str:
        return f"<EmailTracking {self.id} {self.status}>"


class EmailBulk(Base):
    """One template sent to many recipients, each with data of its own (migration 0004)."""

    __tablename__ = "email_bulks"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True)
    template_id: Mapped[str] = mapped_column(sa.String(100))
    kind: Mapped[str] = mapped_column(sa.String(50))
    # The fields all share, sealed; None once cleared or erased.
    payload: Mapped[dict[str, Any] | None] = mapped_column(Sealed("email_bulks.payload"))
    status: Mapped[str] = mapped_column(sa.String(20))
    provider: Mapped[str | None] = mapped_column(sa.String(50))
    total: Mapped[int]
    created_at: Mapped[dt.datetime] = mapped_column(sa.DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(sa.DateTime, default=utcnow, onupdate=utcnow)
    cancelled_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime)

    def __repr__(self) -> str:
        return f"<EmailBulk {self.id} {self.template_id} {self.status}>"


class EmailBulkRecipient(Base):
    """One recipient of a bulk send, at its position in the list the producer gave."""

    __tablename__ = "email_bulk_recipients"
    __table_args__ = (
        sa.Index("idx_email_bulk_recipients_bulk_id_status", "bulk_id", "status"),
        sa.Index("idx_email_bulk_recipients_address_hash", "address_hash"),
    )

    bulk_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("email_bulks.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    # Sealed, with the address's lookup hash (migration 0009); None once cleared or erased.
    address: Mapped[str | None] = mapped_column(Sealed("email_bulk_recipients.address", json=False))
    address_hash: Mapped[str | None] = mapped_column(sa.String(64))
    data: Mapped[dict[str, Any] | None] = mapped_column(Sealed("email_bulk_recipients.data"))
    status: Mapped[str] = mapped_column(sa.String(20))
    attempts: Mapped[int] = mapped_column(default=0, server_default=sa.text("0"))
    provider: Mapped[str | None] = mapped_column(sa.String(50))
    provider_message_id: Mapped[str | None] = mapped_column(sa.String(255))
    error: Mapped[str | None] = mapped_column(sa.Text)
    # While ``sending``: when the claim runs out; while ``retrying``: when it is due again.
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(sa.DateTime, default=utcnow, onupdate=utcnow)

    def __repr__(self) -> str:
        return f"<EmailBulkRecipient {self.bulk_id}/{self.position} {self.status}>"


_UNAPPLIED = sa.text("applied_at IS NULL")


class EmailEvent(Base):
    """One delivery event from a provider or our own tracking, as received (migration 0006).

    Append-only. ``job_id`` is None until the event is matched to a job (a webhook can
    beat the commit of the job it is about); ``applied_at`` is set once the job's status
    and ``email_tracking``'s summary columns have taken it into account.
    """

    __tablename__ = "email_events"
    __table_args__ = (
        sa.UniqueConstraint("provider", "provider_event_id", name="uq_email_events_provider_id"),
        sa.Index("idx_email_events_job_id", "job_id"),
        sa.Index("idx_email_events_message_id", "provider_message_id"),
        sa.Index("idx_email_events_recipient_hash", "recipient_hash"),
        sa.Index(
            "idx_email_events_unapplied",
            "received_at",
            postgresql_where=_UNAPPLIED,
            sqlite_where=_UNAPPLIED,
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    job_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    provider: Mapped[str] = mapped_column(sa.String(20))
    provider_event_id: Mapped[str] = mapped_column(sa.String(255))
    provider_message_id: Mapped[str | None] = mapped_column(sa.String(255))
    event_type: Mapped[str] = mapped_column(sa.String(20))
    bounce_type: Mapped[str | None] = mapped_column(sa.String(10))
    # Sealed, with the address's lookup hash (migration 0009); None once cleared or erased.
    recipient: Mapped[str | None] = mapped_column(Sealed("email_events.recipient", json=False))
    recipient_hash: Mapped[str | None] = mapped_column(sa.String(64))
    occurred_at: Mapped[dt.datetime] = mapped_column(sa.DateTime)
    received_at: Mapped[dt.datetime] = mapped_column(sa.DateTime, default=utcnow)
    applied_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime)
    machine_open: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())
    payload: Mapped[Any] = mapped_column(Sealed("email_events.payload"), nullable=True)


class EmailSuppression(Base):
    """An address no email of some kinds may go to (migration 0006).

    ``scope`` is ``all`` (a hard bounce: every kind) or ``marketing`` (an unsubscribe or a
    complaint: marketing and bulk kinds only). An entry is found by ``address_hash``, the
    lookup hash of the address's one comparable form (lower case, an international domain
    in ASCII); ``address`` is that form sealed, or None for an erased person's entry, kept
    so they are not mailed again (migration 0009).
    """

    __tablename__ = "email_suppressions"

    address_hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    address: Mapped[str | None] = mapped_column(Sealed("email_suppressions.address", json=False))
    reason: Mapped[str] = mapped_column(sa.String(20))
    scope: Mapped[str] = mapped_column(sa.String(20))
    source: Mapped[str | None] = mapped_column(sa.String(50))
    job_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    created_at: Mapped[dt.datetime] = mapped_column(sa.DateTime, default=utcnow)


class ApiKey(Base):
    """A key of the HTTP API, stored as a hash; ``prefix`` identifies it (migration 0006)."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(sa.String(100))
    prefix: Mapped[str] = mapped_column(sa.String(16))
    key_hash: Mapped[str] = mapped_column(sa.String(128), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(sa.DateTime, default=utcnow)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime)
    # Added by migration 0009: what the key may do, space-separated (send, read, admin).
    scopes: Mapped[str] = mapped_column(
        sa.String(100), default="send read", server_default="send read"
    )
    # Added by migration 0010: the kinds and senders (space-separated; None: any) the key
    # may use, when it stops working, its request rate ("10/s", "600/min"; None: no limit),
    # and whether it is a test key (its emails go only to the outbox).
    kinds: Mapped[str | None] = mapped_column(sa.Text)
    senders: Mapped[str | None] = mapped_column(sa.Text)
    expires_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime)
    rate_limit: Mapped[str | None] = mapped_column(sa.String(20))
    test: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())


class ApiRequest(Base):
    """An Idempotency-Key seen from an API key: the body it came with and its job."""

    __tablename__ = "api_requests"

    api_key_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("api_keys.id"), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    body_hash: Mapped[str] = mapped_column(sa.String(64))
    job_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    created_at: Mapped[dt.datetime] = mapped_column(sa.DateTime, default=utcnow)


class AuditEntry(Base):
    """Who did what to what, and when: API key use and every admin action (migration 0010).

    ``actor`` is ``key:<prefix>`` or ``cli``; ``actor_key_id`` is no foreign key, so the
    record outlives the key. ``target`` never holds an address, only ids and hashes.
    """

    __tablename__ = "audit_log"
    __table_args__ = (sa.Index("idx_audit_log_occurred_at", "occurred_at"),)

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    occurred_at: Mapped[dt.datetime] = mapped_column(sa.DateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(sa.String(50))
    actor_key_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    action: Mapped[str] = mapped_column(sa.String(50))
    target: Mapped[str | None] = mapped_column(sa.String(255))


class ConsoleUserRow(Base):
    """A console account: its name, role and Argon2 password hash (migration 0011).

    ``password_hash`` is None for a user who signs in only through the trusted proxy;
    ``disabled_at`` set: the user cannot sign in, and their sessions stop working.
    """

    __tablename__ = "console_users"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(sa.String(100), unique=True)
    role: Mapped[str] = mapped_column(sa.String(20))
    password_hash: Mapped[str | None] = mapped_column(sa.String(255))
    created_at: Mapped[dt.datetime] = mapped_column(sa.DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(sa.DateTime, default=utcnow, onupdate=utcnow)
    last_sign_in_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime)
    disabled_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime)
