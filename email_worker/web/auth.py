"""Who is calling the producer API: ``Authorization: Bearer <API key>``.

A key must be known, not revoked and not expired (401), have the scope of the operation
(403), and be within its request rate (429 with ``Retry-After``). The rate is a token
bucket per key in Redis, kept by the same limiter that paces the providers, so every
web process counts against one limit.
"""

from __future__ import annotations

import math
import threading
import uuid

from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import SQLAlchemyError

from email_worker.config import get_settings
from email_worker.db.api_keys import ApiKeyView, Rate, authenticate
from email_worker.policy.rate_limit import RateLimiter, shared_redis_client

# auto_error off: a missing header is answered 401 with WWW-Authenticate, not 403.
bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key from `email-worker api-keys create NAME`.",
)

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="email-worker"'}


class Refused(Exception):
    """The request cannot be served for this caller; ``status`` says why."""

    def __init__(self, status: int, problem: str, *, retry_after: int | None = None) -> None:
        super().__init__(status, problem)
        self.status = status
        self.problem = problem
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        """The headers of the answer: a challenge for 401, when to come back for 429."""
        if self.status == 401:
            return dict(CHALLENGE)
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}


def caller(credentials: HTTPAuthorizationCredentials | None, scope: str) -> ApiKeyView:
    """The API key of the request, which must have ``scope``.

    Refused 401 without a valid key or with an expired one, 403 naming the scope it
    lacks, 429 past its rate, 503 if keys cannot be read.
    """
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Refused(401, "an API key is required: Authorization: Bearer <key>")
    try:
        key = authenticate(credentials.credentials)
    except SQLAlchemyError:
        raise Refused(503, "the database cannot be reached; try again later") from None
    if key is None:
        raise Refused(401, "the API key is not valid or has been revoked")
    if key.expired():
        raise Refused(401, "the API key has expired")
    if not key.has_scope(scope):
        raise Refused(403, f"this API key lacks the {scope} scope")
    if key.rate is not None:
        _take_request(key.id, key.rate)
    return key


_limiters: dict[tuple[uuid.UUID, Rate], RateLimiter] = {}
_lock = threading.Lock()


def _take_request(key_id: uuid.UUID, rate: Rate) -> None:
    """Count one request against the key's rate; Refused 429 when none is left.

    The bucket holds the whole count (10/min: ten at once, then one every six seconds).
    Requests take from all of it, as a high-priority send does: an API request has no
    priority to keep a reserve for. Redis unreachable: the limiter lets it through.
    """
    wait = _limiter(key_id, rate).acquire("high")
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        raise Refused(
            429,
            f"this API key's limit of {rate} requests is reached; try again in {seconds} s",
            retry_after=seconds,
        )


def _limiter(key_id: uuid.UUID, rate: Rate) -> RateLimiter:
    """This process's limiter for a key (named after QUEUE_NAME, as the providers' are)."""
    with _lock:
        limiter = _limiters.get((key_id, rate))
    if limiter is None:
        settings = get_settings()
        name = f"{settings.queue_name}:api-key:{key_id.hex}"
        limiter = RateLimiter(
            shared_redis_client(settings), name, rate.per_second, burst=rate.count
        )
        with _lock:
            limiter = _limiters.setdefault((key_id, rate), limiter)
    return limiter
