"""The admin HTTP API: ``POST /v1/admin/erasures`` erases one person's data on request.

Only an API key with the ``admin`` scope may call it (``email-worker api-keys create NAME
--scope admin``): an erasure reaches every tenant's jobs, not only the caller's. The
answer is the counts per table (:class:`email_worker.db.erasure.Erasure`), never the
address; the audit log names the key that asked, for the record an auditor wants.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from email_worker.db import audit
from email_worker.db.api_keys import ApiKeyView
from email_worker.db.erasure import audit_target, checked_address, erase_person
from email_worker.db.session import primary_session
from email_worker.errors import InvalidEmailRequest
from email_worker.web.api import (
    ERROR_RESPONSES,
    Credentials,
    ErrorBody,
    error_response,
    inline_schema,
    parse_json_body,
)
from email_worker.web.auth import Refused, caller
from email_worker.web.bodies import read_body

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/admin", tags=["admin"])

BODY_LIMIT = 4096  # an address and a flag


class ErasureRequest(BaseModel):
    """Whose data to erase (documentation only: the handler checks the body)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"email": "ann.lee@example.com", "suppress": True}]}
    )

    email: str = Field(description="The person's address, in any case or form.")
    suppress: bool = Field(
        False, description="Keep a hash-only suppression entry so they are never mailed again."
    )


class ErasureCounts(BaseModel):
    """How many rows of each table were cleared, cancelled or deleted."""

    jobs: int
    jobs_cancelled: int = Field(description="Jobs not sent yet, now cancelled.")
    jobs_in_flight: int = Field(description="Jobs being sent right now: erase again later.")
    api_requests: int
    events: int
    bulk_recipients: int
    bulk_recipients_cancelled: int
    suppressions_kept: int
    suppressions_deleted: int


_ERASURE_BODY = {
    "required": True,
    "content": {"application/json": {"schema": inline_schema(ErasureRequest.model_json_schema())}},
}


@router.post(
    "/erasures",
    response_model=ErasureCounts,
    openapi_extra={"requestBody": _ERASURE_BODY},
    responses={
        413: {"model": ErrorBody, "description": "The body is larger than the limit."},
        422: {"model": ErrorBody, "description": "The body is not valid; names the field."},
        **ERROR_RESPONSES,
    },
)
async def erase(request: Request, credentials: Credentials) -> JSONResponse:
    """Erase one person's data from every table, in one transaction on the primary."""
    try:
        key = await run_in_threadpool(caller, credentials, "admin")
        body = await read_body(request, BODY_LIMIT)
        if body is None:
            raise Refused(413, f"the body is larger than {BODY_LIMIT} bytes")
        address, suppress = _erasure_request(parse_json_body(body))
        counts = await run_in_threadpool(_erase, key, address, suppress)
    except Refused as exc:
        return error_response(exc.status, exc.problem, headers=exc.headers)
    except InvalidEmailRequest as exc:
        return error_response(422, exc.problem, field=exc.field)
    log.info("personal data erased at the request of API key %s: %s", key.prefix, counts)
    return JSONResponse(counts)


def _erasure_request(payload: dict[str, Any]) -> tuple[str, bool]:
    """The address and the suppress flag of the body; InvalidEmailRequest naming the field."""
    unknown = sorted(set(payload) - {"email", "suppress"})
    if unknown:
        raise InvalidEmailRequest(unknown[0][:100], "not a field of an erasure")
    address = payload.get("email")
    if not isinstance(address, str):
        raise InvalidEmailRequest("email", "required, as a string")
    suppress = payload.get("suppress", False)
    if not isinstance(suppress, bool):
        raise InvalidEmailRequest("suppress", "expected true or false")
    try:
        return checked_address(address), suppress
    except ValueError as exc:
        raise InvalidEmailRequest("email", str(exc)) from None


def _erase(key: ApiKeyView, address: str, suppress: bool) -> dict[str, int]:
    """Erase, and write who asked to the audit log in the same transaction (never the address)."""
    try:
        with primary_session() as session:
            counts = erase_person(session, address, suppress=suppress).counts()
            audit.record(session, key.actor, "erasure", audit_target(address), key_id=key.id)
            return counts
    except SQLAlchemyError:
        raise Refused(503, "the database cannot be reached; nothing was erased") from None
