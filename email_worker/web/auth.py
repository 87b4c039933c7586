"""Who is calling the producer API: ``Authorization: Bearer <API key>``."""

from __future__ import annotations

from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import SQLAlchemyError

from email_worker.db.api_keys import ApiKeyView, authenticate

# auto_error off: a missing header is answered 401 with WWW-Authenticate, not 403.
bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key from `email-worker api-keys create NAME`.",
)

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="email-worker"'}


class Refused(Exception):
    """The request cannot be served for this caller; ``status`` says why."""

    def __init__(self, status: int, problem: str) -> None:
        super().__init__(status, problem)
        self.status = status
        self.problem = problem

    @property
    def headers(self) -> dict[str, str]:
        """The headers of the answer: a challenge for 401."""
        return dict(CHALLENGE) if self.status == 401 else {}


def caller(credentials: HTTPAuthorizationCredentials | None, scope: str) -> ApiKeyView:
    """The API key of the request, which must have ``scope``.

    Refused 401 without a valid key, 403 naming the scope it lacks, 503 if keys cannot
    be read.
    """
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Refused(401, "an API key is required: Authorization: Bearer <key>")
    try:
        key = authenticate(credentials.credentials)
    except SQLAlchemyError:
        raise Refused(503, "the database cannot be reached; try again later") from None
    if key is None:
        raise Refused(401, "the API key is not valid or has been revoked")
    if scope not in key.scopes:
        raise Refused(403, f"this API key lacks the {scope} scope")
    return key
