"""API keys of the producer HTTP API, and the idempotent requests made with them.

A key is ``ew_<prefix>_<secret>``: the prefix names the key in listings, the secret is 32
random bytes. Only the SHA-256 of the whole key is stored; the key is shown once.
Keys are looked up on the primary, so a revoked key stops working at once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from email_worker.db.models import ApiKey, ApiRequest, utcnow
from email_worker.db.session import primary_session, session_scope

KEY_PREFIX = "ew"
# What a key may do: send emails, read the jobs it sent, administer (erase personal data).
SCOPES = ("send", "read", "admin")
DEFAULT_SCOPES = ("send", "read")
# last_used_at is written at most this often per key, not on every request.
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


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
        )


def key_hash(key: str) -> str:
    """The stored form of a key: SHA-256, hex."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def create_api_key(name: str, scopes: tuple[str, ...] = DEFAULT_SCOPES) -> tuple[ApiKeyView, str]:
    """Store a new key named ``name``; returns it and the key itself, which is not kept."""
    name = name.strip()
    if not name or len(name) > 100:
        raise ValueError("an API key's name is 1 to 100 characters")
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise ValueError(f"an API key's scopes are some of {', '.join(SCOPES)}")
    prefix = secrets.token_hex(4)
    key = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    ordered = " ".join(scope for scope in SCOPES if scope in scopes)
    row = ApiKey(id=uuid.uuid4(), name=name, prefix=prefix, key_hash=key_hash(key), scopes=ordered)
    with primary_session() as session:
        session.add(row)
        session.flush()
        return ApiKeyView.of(row), key


def list_api_keys() -> list[ApiKeyView]:
    """Every key, oldest first, revoked ones included."""
    with session_scope() as session:
        rows = session.scalars(sa.select(ApiKey).order_by(ApiKey.created_at, ApiKey.prefix))
        return [ApiKeyView.of(row) for row in rows]


def revoke_api_key(id_or_prefix: str) -> ApiKeyView:
    """Revoke the key with this id or prefix; LookupError if none (or several) match."""
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
        session.flush()
        return ApiKeyView.of(row)


def authenticate(key: str) -> ApiKeyView | None:
    """The active key ``key`` is, or None; notes when it was last used (once a minute)."""
    if not key.startswith(f"{KEY_PREFIX}_") or len(key) > 200:
        return None
    with primary_session() as session:
        row = session.scalars(sa.select(ApiKey).where(ApiKey.key_hash == key_hash(key))).first()
        if row is None or row.revoked_at is not None:
            return None
        now = utcnow()
        if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
            row.last_used_at = now
        return ApiKeyView.of(row)


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
