"""API keys of the producer HTTP API, and the idempotent requests made with them.

A key is ``ew_<prefix>_<secret>``: the prefix names the key in listings, the secret is 32
random bytes. Only the SHA-256 of the whole key is stored; the key is shown once.
Keys are looked up on the primary, so a revoked key stops working at once.

A key may be narrowed to some kinds and some senders, expire, carry a request rate, and
be a test key: its emails are stored and validated as any other, then delivered only to
the outbox. Creating and revoking a key, and using one, are written to the audit log.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from email_worker.addresses import comparable_address
from email_worker.db import audit
from email_worker.db.job_rows import TEST_SEND_FIELD as TEST_SEND_FIELD  # the field of a test send
from email_worker.db.models import ApiKey, ApiRequest, naive_utc, utcnow
from email_worker.db.session import primary_session, session_scope

KEY_PREFIX = "ew"
# What a key may do: send emails, read the jobs it sent, read every key's jobs,
# administer (erase personal data).
SCOPES = ("send", "read", "read_all", "admin")
DEFAULT_SCOPES = ("send", "read")
# last_used_at, and the audit log's record of use, are written at most this often per key.
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)
# Rates a key may have: "10/s", "600/min" (and the long forms of the units).
RATE_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60}
MAX_RATE_COUNT = 100_000
_RATE = re.compile(r"^\s*(\d{1,6})\s*/\s*([a-z]+)\s*$")
_DURATION = re.compile(r"^\s*(\d{1,5})\s*([dh])\s*$")
_KIND_NAME = re.compile(r"^[a-z][a-z0-9_]{0,49}$")


@dataclass(frozen=True)
class Rate:
    """A key's request limit: ``count`` requests every ``seconds``."""

    count: int
    seconds: int

    def __str__(self) -> str:
        return f"{self.count}/{'s' if self.seconds == 1 else 'min'}"

    @property
    def per_second(self) -> float:
        """The rate as a token bucket counts it."""
        return self.count / self.seconds


def parse_rate(text: str) -> Rate:
    """``10/s`` or ``600/min`` as a Rate; ValueError naming the expected form."""
    found = _RATE.match(text.lower())
    unit = RATE_UNITS.get(found.group(2)) if found else None
    if found is None or unit is None or not 1 <= int(found.group(1)) <= MAX_RATE_COUNT:
        raise ValueError(
            f"a rate is a count of 1 to {MAX_RATE_COUNT} per second or minute, "
            f"such as 10/s or 600/min, not {text!r}"
        )
    return Rate(int(found.group(1)), unit)


def parse_expiry(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """When a key given ``--expires`` stops working, as naive UTC; ValueError if not later.

    ``30d`` and ``12h`` count from now; a date (``2027-01-31``) means its start, UTC; a
    date and time without a zone is UTC.
    """
    now = utcnow() if now is None else naive_utc(now)
    found = _DURATION.match(text.lower())
    if found is not None:
        unit = dt.timedelta(days=1) if found.group(2) == "d" else dt.timedelta(hours=1)
        moment = now + int(found.group(1)) * unit
    else:
        try:
            moment = naive_utc(dt.datetime.fromisoformat(text.strip()))
        except ValueError:
            raise ValueError(
                f"an expiry is a number of days or hours (30d, 12h) or a date, not {text!r}"
            ) from None
    if moment <= now:
        raise ValueError(f"the expiry {moment.isoformat(sep=' ')} UTC has already passed")
    return moment


@dataclass(frozen=True)
class ApiKeyView:
    """An API key as operators and the API see it: never its secret."""

    id: uuid.UUID
    name: str
    prefix: str
    created_at: dt.datetime | None
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    kinds: tuple[str, ...] | None = None  # None: any kind
    senders: tuple[str, ...] | None = None  # None: any allowed sender
    expires_at: dt.datetime | None = None
    rate: Rate | None = None
    test: bool = False

    @classmethod
    def of(cls, row: ApiKey) -> ApiKeyView:
        """Copy a loaded row."""
        return cls(
            row.id,
            row.name,
            row.prefix,
            row.created_at,
            row.last_used_at,
            row.revoked_at,
            tuple((row.scopes or "").split()),
            None if row.kinds is None else tuple(row.kinds.split()),
            None if row.senders is None else tuple(row.senders.split()),
            row.expires_at,
            None if row.rate_limit is None else parse_rate(row.rate_limit),
            bool(row.test),
        )

    @property
    def actor(self) -> str:
        """How the audit log names this key."""
        return f"key:{self.prefix}"

    def expired(self, now: dt.datetime | None = None) -> bool:
        """Whether the key's expiry has passed."""
        return self.expires_at is not None and (now or utcnow()) >= self.expires_at

    def may_read_all(self) -> bool:
        """Whether the key reads every key's jobs, not only those it sent."""
        return "read_all" in self.scopes

    def has_scope(self, scope: str) -> bool:
        """Whether the key may do ``scope``; reading every job includes reading its own."""
        return scope in self.scopes or (scope == "read" and self.may_read_all())


def key_hash(key: str) -> str:
    """The stored form of a key: SHA-256, hex."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def create_api_key(
    name: str,
    scopes: tuple[str, ...] = DEFAULT_SCOPES,
    *,
    kinds: tuple[str, ...] | None = None,
    senders: tuple[str, ...] | None = None,
    expires_at: dt.datetime | None = None,
    rate: Rate | None = None,
    test: bool = False,
    actor: str = "cli",
) -> tuple[ApiKeyView, str]:
    """Store a new key named ``name``; returns it and the key itself, which is not kept.

    ``kinds`` and ``senders`` narrow what it may send (None: anything); the creation is
    written to the audit log as done by ``actor``.
    """
    name = name.strip()
    if not name or len(name) > 100:
        raise ValueError("an API key's name is 1 to 100 characters")
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise ValueError(f"an API key's scopes are some of {', '.join(SCOPES)}")
    prefix = secrets.token_hex(4)
    key = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    ordered = " ".join(scope for scope in SCOPES if scope in scopes)
    row = ApiKey(
        id=uuid.uuid4(),
        name=name,
        prefix=prefix,
        key_hash=key_hash(key),
        scopes=ordered,
        kinds=_joined(checked_kinds(kinds)),
        senders=_joined(checked_senders(senders)),
        expires_at=None if expires_at is None else naive_utc(expires_at),
        rate_limit=None if rate is None else str(rate),
        test=test,
    )
    with primary_session() as session:
        session.add(row)
        session.flush()
        created = ApiKeyView.of(row)
        audit.record(session, actor, "api_key.create", f"{prefix} ({name})")
        return created, key


def checked_kinds(kinds: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The kinds a key is narrowed to, each a short lower-case name; ValueError if not."""
    if kinds is None:
        return None
    names = tuple(dict.fromkeys(kind.strip() for kind in kinds if kind.strip()))
    bad = [kind for kind in names if not _KIND_NAME.match(kind)]
    if bad or not names:
        raise ValueError(
            f"a kind is a lower-case name such as password_reset, not {(bad or [''])[0]!r}"
        )
    return names


def checked_senders(senders: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The sender addresses a key is narrowed to, in their comparable form; ValueError if not."""
    if senders is None:
        return None
    found = tuple(dict.fromkeys(comparable_address(a) for a in senders if a.strip()))
    bad = [a for a in found if "@" not in a or any(c.isspace() for c in a) or len(a) > 254]
    if bad or not found:
        raise ValueError(f"a sender is an email address, not {(bad or [''])[0]!r}")
    return found


def _joined(names: tuple[str, ...] | None) -> str | None:
    return None if names is None else " ".join(names)


def list_api_keys() -> list[ApiKeyView]:
    """Every key, oldest first, revoked ones included."""
    with session_scope() as session:
        rows = session.scalars(sa.select(ApiKey).order_by(ApiKey.created_at, ApiKey.prefix))
        return [ApiKeyView.of(row) for row in rows]


def revoke_api_key(id_or_prefix: str, *, actor: str = "cli") -> ApiKeyView:
    """Revoke the key with this id or prefix; LookupError if none (or several) match.

    The revocation is written to the audit log as done by ``actor``.
    """
    try:
        where = ApiKey.id == uuid.UUID(id_or_prefix)
    except ValueError:
        where = ApiKey.prefix == id_or_prefix
    with primary_session() as session:
        rows = list(session.scalars(sa.select(ApiKey).where(where)))
        if len(rows) != 1:
            raise LookupError(
                f"no API key {id_or_prefix!r}" if not rows else f"{id_or_prefix!r} is ambiguous"
            )
        row = rows[0]
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            audit.record(session, actor, "api_key.revoke", f"{row.prefix} ({row.name})")
        session.flush()
        return ApiKeyView.of(row)


def authenticate(key: str) -> ApiKeyView | None:
    """The key ``key`` is unless unknown or revoked (an expired one too: the caller says so).

    A key in use is noted at most once a minute: its last_used_at, and a line in the audit
    log. Every job a key sends carries its id, so a line per request would add a write to
    each request and tell an auditor nothing more.
    """
    if not key.startswith(f"{KEY_PREFIX}_") or len(key) > 200:
        return None
    with primary_session() as session:
        row = session.scalars(sa.select(ApiKey).where(ApiKey.key_hash == key_hash(key))).first()
        if row is None or row.revoked_at is not None:
            return None
        found = ApiKeyView.of(row)
        now = utcnow()
        if found.expired(now):
            return found
        if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
            row.last_used_at = now
            audit.record(session, found.actor, "api_key.use", row.prefix, key_id=row.id)
        return found


@dataclass(frozen=True)
class StoredRequest:
    """An idempotent request seen before: the hash of its body and the job it made."""

    body_hash: str
    job_id: uuid.UUID


def claim_request(
    api_key_id: uuid.UUID, idempotency_key: str, body_hash: str, job_id: uuid.UUID
) -> StoredRequest | None:
    """Record a request under its key before its job exists; the earlier one if already seen."""
    try:
        with primary_session() as session:
            session.add(
                ApiRequest(
                    api_key_id=api_key_id,
                    idempotency_key=idempotency_key,
                    body_hash=body_hash,
                    job_id=job_id,
                )
            )
        return None
    except IntegrityError:
        pass
    with primary_session() as session:
        row = session.get(ApiRequest, (api_key_id, idempotency_key))
        if row is None:  # released between the two statements: this one may claim it
            return claim_request(api_key_id, idempotency_key, body_hash, job_id)
        return StoredRequest(row.body_hash, row.job_id)


def settle_request(api_key_id: uuid.UUID, idempotency_key: str, job_id: uuid.UUID) -> None:
    """Point a claimed request at the job that answers it (an older job, by the body's key)."""
    with primary_session() as session:
        session.execute(
            sa.update(ApiRequest)
            .where(
                ApiRequest.api_key_id == api_key_id,
                ApiRequest.idempotency_key == idempotency_key,
            )
            .values(job_id=job_id)
        )


def release_request(api_key_id: uuid.UUID, idempotency_key: str) -> None:
    """Forget a claimed request that made no job, so the key can be used again."""
    with primary_session() as session:
        session.execute(
            sa.delete(ApiRequest).where(
                ApiRequest.api_key_id == api_key_id,
                ApiRequest.idempotency_key == idempotency_key,
            )
        )
