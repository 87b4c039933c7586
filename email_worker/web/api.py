"""The producer HTTP API: ``POST /v1/emails`` sends an email, ``GET /v1/emails/{id}`` shows it.

A request is the keyword arguments of ``send_email`` (or of a kind's task, chosen by
``kind``) as a JSON object, plus ``countdown`` or ``eta``. It goes through the task's
``apply_async``, so it is validated exactly as in a producer's process and refused with
the same field names. The pydantic models below only document the shape in OpenAPI.

An API key is a tenant: the jobs it sends carry its id, it reads only those (another
key's job answers 404, as one that does not exist) unless it has the ``read_all``
scope, and the ``idempotency_key`` of its bodies is its own. A key narrowed to some
kinds or senders is refused (403) any other. A request may name only a provider
configured here, and ``console`` or ``outbox`` only when DELIVERY_MODE is not live.

A test key's sends are validated and stored as any other, always as tracked jobs whose
stored request says they are test sends (:data:`~email_worker.db.api_keys.TEST_SEND_FIELD`,
set here, never taken from the body); the worker delivers those to the outbox only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials
from kombu.exceptions import OperationalError
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from email_worker.addresses import comparable_address
from email_worker.config import get_settings
from email_worker.db import api_keys, job_queries
from email_worker.db import events as stored_events
from email_worker.db.api_keys import TEST_SEND_FIELD, ApiKeyView
from email_worker.db.session import primary_session, session_scope
from email_worker.errors import InvalidEmailRequest
from email_worker.kinds import find_kind
from email_worker.privacy import redact_text
from email_worker.producer.publishing import API_KEY_OPTION, TEST_SEND_OPTION, send_at
from email_worker.producer.stored_jobs import DatabaseUnavailable
from email_worker.providers import check_provider_choice
from email_worker.web.auth import Refused, bearer, caller
from email_worker.web.bodies import read_body

router = APIRouter(prefix="/v1/emails", tags=["emails"])

# Base64 makes attachments a third larger; the rest is JSON and the message's text.
BODY_SIZE_FACTOR = 1.4
_SEND_OPTIONS = ("countdown", "eta")
_IDEMPOTENCY_KEY = re.compile(r"^[\x20-\x7e]{1,255}$")
# A body's idempotency_key is stored after "<API key id>:", within the column's 255.
MAX_BODY_IDEMPOTENCY_KEY = 255 - 33


class Attachment(BaseModel):
    """A file sent with the email."""

    filename: str
    content: str = Field(description="The file's bytes, base64.")
    content_type: str | None = None


class EmailSend(BaseModel):
    """The payload of ``send_email`` (documentation only: the producer validates it)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"to": "ann.lee@example.com", "subject": "Your receipt", "text": "Thank you."},
                {"kind": "welcome_email", "to": "ann.lee@example.com", "data": {"name": "Ann"}},
                {
                    "to": ["ann.lee@example.com"],
                    "template_id": "generic_notice",
                    "data": {"title": "Hello", "message": "A notice."},
                    "tracked": True,
                    "priority": "high",
                    "countdown": 60,
                },
            ]
        }
    )

    to: str | list[str]
    kind: str | None = Field(None, description="A kind such as password_reset, or a label.")
    template_id: str | None = None
    data: dict[str, Any] | None = Field(None, description="Template variables.")
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    cc: str | list[str] | None = None
    bcc: str | list[str] | None = None
    reply_to: str | list[str] | None = None
    from_email: str | None = None
    from_name: str | None = None
    headers: dict[str, str] | None = None
    metadata: dict[str, Any] | None = None
    priority: Literal["high", "normal", "low"] | int | None = Field(None, description="Or 0-9.")
    tracked: bool | None = None
    idempotency_key: str | None = None
    provider: str | None = None
    attachments: list[Attachment] | None = None
    countdown: float | None = Field(None, description="Send after this many seconds.")
    eta: dt.datetime | None = Field(None, description="Send at this time (ISO 8601).")


class Accepted(BaseModel):
    """A send taken: ``id`` is the job id (tracked, scheduled) or the task id (fast path)."""

    id: str
    status: str = Field(description="queued, pending or scheduled; a repeat: the job's status.")


class Problem(BaseModel):
    """What was wrong, and with which field when one is to blame."""

    field: str | None = None
    problem: str


class ErrorBody(BaseModel):
    """An error answer."""

    error: Problem


class Event(BaseModel):
    """A provider event about the email."""

    type: str
    provider: str
    occurred_at: str
    bounce_type: str | None = None


class EmailStatus(BaseModel):
    """A tracked job and its events."""

    id: str
    kind: str
    status: str
    created_at: str | None
    updated_at: str | None
    scheduled_at: str | None
    sent_at: str | None
    provider: str | None
    provider_message_id: str | None
    retry_count: int | None
    error: str | None
    test: bool = Field(description="Sent with a test key: delivered only to the outbox.")
    events: list[Event]


def inline_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The model's JSON schema with its ``$defs`` inlined, for use inside the OpenAPI document."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items()}
        return [walk(v) for v in node] if isinstance(node, list) else node

    return dict(walk(schema))


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in (
        (401, "No API key, or one that is not valid, revoked or expired."),
        (403, "The API key lacks the scope (or kind, or sender) needed; the problem names it."),
        (429, "The API key's request rate is reached; Retry-After says when to try again."),
        (503, "The broker or the database cannot be reached."),
    )
}
_SEND_BODY = {
    "required": True,
    "content": {"application/json": {"schema": inline_schema(EmailSend.model_json_schema())}},
}

Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


@router.post(
    "",
    status_code=202,
    response_model=Accepted,
    openapi_extra={"requestBody": _SEND_BODY},
    responses={
        200: {"model": Accepted, "description": "A repeat of an idempotent request."},
        409: {"model": ErrorBody, "description": "The same idempotent request is in progress."},
        413: {"model": ErrorBody, "description": "The body is larger than the limit."},
        422: {"model": ErrorBody, "description": "The request cannot be sent; names the field."},
        **ERROR_RESPONSES,
    },
)
async def send(
    request: Request,
    credentials: Credentials,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="The same key and body again returns the same job and sends once.",
        ),
    ] = None,
) -> JSONResponse:
    """Send an email: the payload of ``send_email``, validated as the producer does."""
    try:
        key = await run_in_threadpool(caller, credentials, "send")
        payload = parse_json_body(await _read_body(request))
        status, answer = await run_in_threadpool(_submit, key, payload, idempotency_key)
    except Refused as exc:
        return error_response(exc.status, exc.problem, headers=exc.headers)
    except InvalidEmailRequest as exc:
        return error_response(422, exc.problem, field=exc.field)
    return JSONResponse(answer, status_code=status)


@router.get(
    "/{job_id}",
    response_model=EmailStatus,
    responses={404: {"model": ErrorBody}, **ERROR_RESPONSES},
)
def show(job_id: str, credentials: Credentials) -> JSONResponse:
    """A tracked or scheduled email this key sent (any, with read_all): status and events.

    Fast-path task ids are not stored; they, and another key's jobs, answer 404.
    """
    try:
        key = caller(credentials, "read")
        found = _job_status(job_id, key)
    except Refused as exc:
        return error_response(exc.status, exc.problem, headers=exc.headers)
    if found is None:
        return error_response(404, "no tracked email has this id")
    return JSONResponse(found)


def error_response(
    status: int, problem: str, *, field: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"field": field, "problem": problem}}, status_code=status, headers=headers
    )


async def _read_body(request: Request) -> bytes:
    """The body, refused with 413 as soon as it is larger than the limit."""
    limit = int(get_settings().max_message_bytes * BODY_SIZE_FACTOR)
    body = await read_body(request, limit)
    if body is None:
        raise Refused(413, f"the body is larger than {limit} bytes")
    return body


def parse_json_body(body: bytes) -> dict[str, Any]:
    """The JSON object of the body; InvalidEmailRequest naming ``body`` if it is not one."""
    try:
        payload = json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        problem = "nested too deeply" if isinstance(exc, RecursionError) else "not valid JSON"
        raise InvalidEmailRequest("body", problem) from None
    if not isinstance(payload, dict):
        raise InvalidEmailRequest("body", "expected a JSON object")
    return payload


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def body_hash(payload: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a request: same content, same hash."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return api_keys.key_hash(canonical)


def _submit(
    key: ApiKeyView, payload: dict[str, Any], idempotency_key: str | None
) -> tuple[int, dict[str, Any]]:
    """Send the request, or answer with the job an earlier identical request made."""
    check_key_rules(key, payload)
    check_provider_choice(payload.get("provider"), get_settings())
    if idempotency_key is None:
        sent_id, state = _enqueue(key, payload, None)
        return 202, {"id": sent_id, "status": state}
    if not _IDEMPOTENCY_KEY.match(idempotency_key):
        raise InvalidEmailRequest("Idempotency-Key", "expected 1 to 255 printable ASCII characters")
    digest = body_hash(payload)
    job_id = uuid.uuid4()
    try:
        earlier = api_keys.claim_request(key.id, idempotency_key, digest, job_id)
    except SQLAlchemyError:
        raise Refused(503, "the database cannot be reached; try again later") from None
    if earlier is not None:
        if earlier.body_hash != digest:
            raise InvalidEmailRequest(
                "Idempotency-Key", "already used with a different body; use a new key"
            )
        found = _job_status(str(earlier.job_id), key)
        if found is None:
            raise Refused(409, "the first request with this Idempotency-Key is still in progress")
        return 200, {"id": found["id"], "status": found["status"]}
    try:
        # A job row makes the answer's id one that GET can show, and the repeat findable.
        sent_id, state = _enqueue(key, {**payload, "tracked": True}, job_id)
    except BaseException:
        # If the database is down the claim stays; a repeat answers 409 until it is back.
        with contextlib.suppress(SQLAlchemyError):
            api_keys.release_request(key.id, idempotency_key)
        raise
    if sent_id != str(job_id):  # the body's own idempotency_key named an older job
        api_keys.settle_request(key.id, idempotency_key, uuid.UUID(sent_id))
    return 202, {"id": sent_id, "status": state}


def check_key_rules(key: ApiKeyView, payload: dict[str, Any]) -> None:
    """Refuse (403) a kind or a sender the key is not allowed; the rest is validation's.

    A request without ``kind`` sends the generic ``email``; without ``from_email``, it is
    sent from EMAIL_FROM, which a key narrowed to some senders must name too. Values of
    the wrong type are left to validation, which names the field (422).
    """
    label = payload.get("kind")
    if key.kinds is not None and (label is None or isinstance(label, str)):
        kind = label or "email"
        if kind not in key.kinds:
            raise Refused(403, f"this API key may not send kind {kind[:100]}")
    sender = payload.get("from_email")
    if key.senders is not None and (sender is None or isinstance(sender, str)):
        address = comparable_address(sender or get_settings().email_from)
        if address not in key.senders:
            raise Refused(403, f"this API key may not send from {address[:254]}")


def _enqueue(key: ApiKeyView, payload: dict[str, Any], job_id: uuid.UUID | None) -> tuple[str, str]:
    """Hand the request to its task's ``apply_async``; returns the id and the state it is in."""
    from email_worker.tasks import send_email, task_for

    kwargs = {k: v for k, v in payload.items() if k not in _SEND_OPTIONS}
    if isinstance(kwargs.get("idempotency_key"), str):
        kwargs["idempotency_key"] = _own_idempotency_key(key, kwargs["idempotency_key"])
    options = {k: payload[k] for k in _SEND_OPTIONS if k in payload}
    label = payload.get("kind")
    kind = find_kind(label) if isinstance(label, str) else None
    task = task_for(kind.name) if kind is not None else send_email
    now = dt.datetime.now(dt.UTC)
    try:
        delay = (send_at(options, now) - now).total_seconds()
    except OverflowError:
        raise InvalidEmailRequest(next(iter(options), "eta"), "too far in the future") from None
    if job_id is not None:
        options["task_id"] = str(job_id)
    if key.test:
        # A stored job, whose request says it is a test send: the worker reads it there.
        kwargs["tracked"] = True
        options[TEST_SEND_OPTION] = True
    try:
        result = task.apply_async(kwargs=kwargs, **options, **{API_KEY_OPTION: key.id})
    except DatabaseUnavailable:
        raise Refused(503, "the database cannot be reached; nothing was sent") from None
    except (OperationalError, OSError):
        raise Refused(503, "the broker cannot be reached; nothing was sent") from None
    except OverflowError:
        raise InvalidEmailRequest(next(iter(options), "eta"), "too far in the future") from None
    tracked = kwargs.get("tracked", task.kind.tracked)
    state = "scheduled" if delay > get_settings().schedule_threshold else None
    return str(result.id), state or ("pending" if tracked else "queued")


def _own_idempotency_key(key: ApiKeyView, value: str) -> str:
    """A body's ``idempotency_key`` in this API key's own space: other keys' are other keys."""
    if len(value) > MAX_BODY_IDEMPOTENCY_KEY:
        raise InvalidEmailRequest(
            "idempotency_key", f"at most {MAX_BODY_IDEMPOTENCY_KEY} characters over HTTP"
        )
    return f"{key.id.hex}:{value}"


def _job_status(job_id: str, key: ApiKeyView) -> dict[str, Any] | None:
    """The key's job and its events as GET shows them, or None; replica first, then primary."""
    try:
        wanted = uuid.UUID(job_id)
    except ValueError:
        return None
    try:
        # A job made a moment ago may not have reached the replica yet.
        return _read_status(wanted, key, primary=False) or _read_status(wanted, key, primary=True)
    except SQLAlchemyError:
        raise Refused(503, "the database cannot be reached; try again later") from None


def _read_status(job_id: uuid.UUID, key: ApiKeyView, *, primary: bool) -> dict[str, Any] | None:
    scope = primary_session() if primary else session_scope()
    with scope as session:
        if key.may_read_all():
            job = job_queries.get_job(session, job_id)
        else:
            job = job_queries.get_api_job(session, job_id, key.id)
        if job is None:
            return None
        events = stored_events.events_of_job(session, job_id)
        return {
            "id": str(job.id),
            "kind": job.job_type,
            "status": job.status,
            "created_at": _time(job.created_at),
            "updated_at": _time(job.updated_at),
            "scheduled_at": _time(job.scheduled_at),
            "sent_at": _time(job.sent_at),
            "provider": job.provider,
            "provider_message_id": job.provider_message_id,
            "retry_count": job.retry_count,
            "error": redact_text(job.last_error) if job.last_error else None,
            # The stored request says so; once retention has cleared it, the sending key.
            "test": bool((job.payload or {}).get(TEST_SEND_FIELD))
            or (key.test and job.api_key_id == key.id),
            "events": [
                {
                    "type": event.event_type,
                    "provider": event.provider,
                    "occurred_at": _time(event.occurred_at),
                    "bounce_type": event.bounce_type,
                }
                for event in events
            ],
        }


def _time(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.replace(tzinfo=dt.UTC).isoformat()
