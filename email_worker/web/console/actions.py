"""The console's actions: resend, cancel, suppressions, bulk sends; and the audit log.

Each action is confirmed (a confirmation page whose form posts it, or a required
checkbox), needs the support role or higher, checks the form's CSRF token, and writes a
line to the audit log naming the user (``console:<name>``), the action and its target:
a job id, a bulk id, or the lookup hash of an address, never the address itself.
Where the action is one database change, the audit line is written in its transaction.
A viewer is refused 403 on every one.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from kombu.exceptions import OperationalError
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from email_worker.db import audit, job_queries, transitions
from email_worker.db import bulk as bulk_db
from email_worker.db import status as st
from email_worker.db import suppressions as suppression_list
from email_worker.db.api_keys import TEST_SEND_FIELD
from email_worker.db.erasure import audit_target, checked_address
from email_worker.db.models import EmailSuppression
from email_worker.db.session import primary_session, session_scope
from email_worker.errors import InvalidEmailRequest
from email_worker.kinds import find_kind
from email_worker.ops.bulk_sends import BulkSummary
from email_worker.privacy import redact_text
from email_worker.producer.publishing import API_KEY_OPTION, TEST_SEND_OPTION
from email_worker.producer.stored_jobs import DatabaseUnavailable
from email_worker.web.console.accounts import (
    UNCONFIRMED,
    ConsoleRefusal,
    ConsoleUser,
    Support,
    Viewer,
    check_confirmed,
    check_csrf,
    confirmed,
)
from email_worker.web.console.emails import load_page
from email_worker.web.console.forms import FormFields
from email_worker.web.console.jobs import REQUEST_FIELDS, show_address
from email_worker.web.console.pages import render, secure

router = APIRouter()

SUPPRESSION_REASONS = ("manual", "complaint", "unsubscribe", "hard_bounce")
LISTED_SUPPRESSIONS = 200
AUDIT_LINES = 200


def _unavailable() -> ConsoleRefusal:
    return ConsoleRefusal(503, "The database cannot be reached; nothing was changed.")


def _done(location: str) -> Response:
    return secure(RedirectResponse(location, status_code=303))


def _uuid(text: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(text.strip())
    except ValueError:
        raise ConsoleRefusal(404, f"There is no {what} with this id.") from None


# Resend and cancel a job.


@router.get("/emails/{job_id}/resend")
def resend_page(request: Request, job_id: str, user: ConsoleUser = Support) -> HTMLResponse:
    """Confirm a resend: what will be sent again, and to whom."""
    page = load_page(job_id, user)
    if not page.resendable:
        raise ConsoleRefusal(409, _not_resendable(page.status, page.cleared_at is not None))
    return render(
        request,
        "confirm.html",
        {
            "title": "Resend this email?",
            "explanation": (
                "A new tracked job is made from the stored request and sent by a worker. "
                "The original job stays as it is; both pages link to each other."
            ),
            "facts": [
                ("Kind", page.kind),
                ("To", ", ".join(page.recipients.get("to", []))),
                ("Subject", page.subject or ""),
                ("Status now", page.status),
            ],
            "action": f"/console/emails/{page.id}/resend",
            "button": "Resend",
            "danger": False,
            "back": f"/console/emails/{page.id}",
        },
        user,
    )


def _not_resendable(status: str, cleared: bool) -> str:
    if cleared:
        return "This job's request was cleared (retention or an erasure): it cannot be resent."
    return f"Only a failed or bounced email can be resent; this one is {status}."


@router.post("/emails/{job_id}/resend")
async def resend(
    request: Request,
    job_id: str,
    form: Mapping[str, str] = FormFields,
    user: ConsoleUser = Support,
) -> Response:
    """Resend a failed or bounced job as a new tracked job."""
    check_csrf(request, user, form)
    original = _uuid(job_id, "job")
    new_id = await run_in_threadpool(_resend, original, user)
    return _done(f"/console/emails/{new_id}?done=resent")


def _resend(job_id: uuid.UUID, user: ConsoleUser) -> str:
    from email_worker.tasks import send_email, task_for

    try:
        with primary_session() as session:
            job = job_queries.get_job(session, job_id)
            if job is None:
                raise ConsoleRefusal(404, "There is no job with this id.")
            payload = job.payload if isinstance(job.payload, dict) else None
            if job.status not in (st.FAILED, st.BOUNCED) or payload is None:
                raise ConsoleRefusal(409, _not_resendable(job.status or "", payload is None))
            api_key_id = job.api_key_id
            job_type = job.job_type
    except SQLAlchemyError:
        raise _unavailable() from None
    # The request as the producer gave it, as a new tracked send: not the original's
    # idempotency key (it would find the original), nor a partial retry's recipients.
    kwargs = {
        k: v
        for k, v in payload.items()
        if k in REQUEST_FIELDS and k not in ("idempotency_key", "only_recipients")
    }
    kwargs["tracked"] = True
    options: dict[str, Any] = {}
    if payload.get(TEST_SEND_FIELD):
        options[TEST_SEND_OPTION] = True  # a test key's email stays a test send
    if api_key_id is not None:
        options[API_KEY_OPTION] = api_key_id  # the key that sent it may read the resend
    kind = find_kind(str(payload.get("kind") or job_type))
    task = task_for(kind.name) if kind is not None else send_email
    try:
        result = task.apply_async(kwargs=kwargs, **options)
    except InvalidEmailRequest as exc:
        raise ConsoleRefusal(
            422, f"The stored request is no longer valid: {redact_text(str(exc))}"
        ) from None
    except DatabaseUnavailable:
        raise _unavailable() from None
    except (OperationalError, OSError):
        raise ConsoleRefusal(503, "The broker cannot be reached; nothing was sent.") from None
    new_id = str(result.id)
    audit.record_now(user.actor, "job.resend", f"{job_id} -> {new_id}")
    return new_id


@router.get("/emails/{job_id}/cancel")
def cancel_page(request: Request, job_id: str, user: ConsoleUser = Support) -> HTMLResponse:
    """Confirm cancelling a job that has not been sent."""
    page = load_page(job_id, user)
    if not page.cancellable:
        raise ConsoleRefusal(
            409, f"Only a pending or scheduled email can be cancelled; this one is {page.status}."
        )
    return render(
        request,
        "confirm.html",
        {
            "title": "Cancel this email?",
            "explanation": "It will never be sent. This cannot be undone.",
            "facts": [
                ("Kind", page.kind),
                ("To", ", ".join(page.recipients.get("to", []))),
                ("Status now", page.status),
            ],
            "action": f"/console/emails/{page.id}/cancel",
            "button": "Cancel the email",
            "danger": True,
            "back": f"/console/emails/{page.id}",
        },
        user,
    )


@router.post("/emails/{job_id}/cancel")
async def cancel(
    request: Request,
    job_id: str,
    form: Mapping[str, str] = FormFields,
    user: ConsoleUser = Support,
) -> Response:
    """Cancel a pending or scheduled job; 409 once a worker has it or it is done."""
    check_csrf(request, user, form)
    key = _uuid(job_id, "job")
    await run_in_threadpool(_cancel, key, user)
    return _done(f"/console/emails/{key}?done=cancelled")


def _cancel(job_id: uuid.UUID, user: ConsoleUser) -> None:
    try:
        with primary_session() as session:
            if transitions.cancel_job(session, job_id):
                audit.record(session, user.actor, "job.cancel", str(job_id))
                return
            job = job_queries.get_job(session, job_id)
    except SQLAlchemyError:
        raise _unavailable() from None
    if job is None:
        raise ConsoleRefusal(404, "There is no job with this id.")
    raise ConsoleRefusal(409, _not_cancellable(job.status or ""))


def _not_cancellable(status: str) -> str:
    return f"Only a pending or scheduled email can be cancelled; this one is {status}."


# Suppressions.


@router.get("/suppressions")
def suppressions_page(request: Request, user: ConsoleUser = Viewer) -> HTMLResponse:
    """The suppression list, the newest first, and the form that adds an address."""
    return _suppressions(request, user, {}, None, 200)


def _suppressions(
    request: Request,
    user: ConsoleUser,
    form: Mapping[str, str],
    problem: str | None,
    status_code: int,
) -> HTMLResponse:
    just_changed = bool(request.query_params.get("done")) or request.method == "POST"
    try:
        with session_scope(primary=just_changed) as session:  # a change shows at once
            rows = suppression_list.newest_rows(session, LISTED_SUPPRESSIONS)
            listed = [
                {
                    "hash": row.address_hash,
                    "address": (
                        show_address(row.address, user.masked)
                        if row.address
                        else "(erased: kept as a hash)"
                    ),
                    "scope": row.scope,
                    "reason": row.reason,
                    "source": row.source or "",
                    "created_at": row.created_at,
                }
                for row in rows
            ]
    except SQLAlchemyError:
        raise ConsoleRefusal(503, "The database cannot be reached; try again later.") from None
    return render(
        request,
        "suppressions.html",
        {
            "rows": listed,
            "limit": LISTED_SUPPRESSIONS,
            "reasons": SUPPRESSION_REASONS,
            "scopes": suppression_list.SCOPES,
            "form": {
                "address": form.get("address", ""),
                "scope": form.get("scope", "all"),
                "reason": form.get("reason", "manual"),
            },
            "problem": problem,
            "notice": _SUPPRESSION_NOTICES.get(request.query_params.get("done", "")),
        },
        user,
        status_code=status_code,
    )


_SUPPRESSION_NOTICES = {
    "added": "The address is suppressed.",
    "removed": "The address is no longer suppressed.",
}


@router.post("/suppressions")
async def add_suppression(
    request: Request, form: Mapping[str, str] = FormFields, user: ConsoleUser = Support
) -> Response:
    """Suppress an address (scope all or marketing); the form's box must be ticked."""
    check_csrf(request, user, form)
    problem = None
    scope = form.get("scope", "")
    reason = form.get("reason", "")
    address = form.get("address", "")
    try:
        address = checked_address(address)
    except ValueError as exc:
        problem = f"The address cannot be suppressed: {exc}."
    if scope not in suppression_list.SCOPES:
        problem = f"The scope must be one of {', '.join(suppression_list.SCOPES)}."
    elif reason not in SUPPRESSION_REASONS:
        problem = f"The reason must be one of {', '.join(SUPPRESSION_REASONS)}."
    elif not confirmed(form):
        problem = problem or UNCONFIRMED
    if problem:
        return await run_in_threadpool(_suppressions, request, user, form, problem, 400)
    await run_in_threadpool(_add_suppression, address, reason, scope, user)
    return _done("/console/suppressions?done=added")


def _add_suppression(address: str, reason: str, scope: str, user: ConsoleUser) -> None:
    try:
        with primary_session() as session:
            suppression_list.add_suppression(session, address, reason, scope, "console")
            audit.record(
                session, user.actor, "suppression.add", f"{audit_target(address)} ({scope})"
            )
    except SQLAlchemyError:
        raise _unavailable() from None


def _suppression(address_hash: str) -> EmailSuppression:
    if len(address_hash) != 64 or any(c not in "0123456789abcdef" for c in address_hash):
        raise ConsoleRefusal(404, "There is no such suppression.")
    try:
        with session_scope(primary=True) as session:
            row = suppression_list.row_by_hash(session, address_hash)
            if row is None:
                raise ConsoleRefusal(404, "There is no such suppression.")
            session.expunge(row)
            return row
    except SQLAlchemyError:
        raise ConsoleRefusal(503, "The database cannot be reached; try again later.") from None


@router.get("/suppressions/{address_hash}/remove")
def remove_suppression_page(
    request: Request, address_hash: str, user: ConsoleUser = Support
) -> HTMLResponse:
    """Confirm taking an address off the suppression list (the URL holds its hash only)."""
    row = _suppression(address_hash)
    shown = show_address(row.address, user.masked) if row.address else "(erased: kept as a hash)"
    return render(
        request,
        "confirm.html",
        {
            "title": "Send to this address again?",
            "explanation": (
                "The address comes off the suppression list: every kind of email may go to it "
                "again. Remove it only when its owner asked, or the bounce was a mistake."
            ),
            "facts": [("Address", shown), ("Scope", row.scope), ("Reason", row.reason)],
            "action": f"/console/suppressions/{address_hash}/remove",
            "button": "Remove the suppression",
            "danger": True,
            "back": "/console/suppressions",
        },
        user,
    )


@router.post("/suppressions/{address_hash}/remove")
async def remove_suppression(
    request: Request,
    address_hash: str,
    form: Mapping[str, str] = FormFields,
    user: ConsoleUser = Support,
) -> Response:
    """Take an address off the suppression list."""
    check_csrf(request, user, form)
    await run_in_threadpool(_remove_suppression, address_hash, user)
    return _done("/console/suppressions?done=removed")


def _remove_suppression(address_hash: str, user: ConsoleUser) -> None:
    _suppression(address_hash)  # 404 unless it is there
    try:
        with primary_session() as session:
            suppression_list.remove_by_hash(session, address_hash)
            target = f"address hash {address_hash[:16]}"
            audit.record(session, user.actor, "suppression.remove", target)
    except SQLAlchemyError:
        raise _unavailable() from None


# Bulk sends.


@router.get("/bulk")
def find_bulk(request: Request, id: str = "", user: ConsoleUser = Viewer) -> Response:
    """The bulk send with the id typed in the Emails page's form."""
    return _done(f"/console/bulk/{_uuid(id, 'bulk send')}")


@router.get("/bulk/{bulk_id}")
def bulk_page(request: Request, bulk_id: str, user: ConsoleUser = Viewer) -> HTMLResponse:
    """A bulk send: template, status, counts per status; the form that cancels it."""
    key = _uuid(bulk_id, "bulk send")
    summary = _bulk_summary(key, primary=bool(request.query_params.get("done")))
    return render(
        request,
        "bulk.html",
        {
            "bulk": summary,
            "notice": "The bulk send was cancelled." if request.query_params.get("done") else None,
        },
        user,
    )


def _bulk_summary(key: uuid.UUID, *, primary: bool = False) -> BulkSummary:
    """The bulk's summary from the replica (the primary right after an action)."""
    try:
        with session_scope(primary=primary) as session:
            found = bulk_db.get_bulk(session, key)
            if found is None:
                raise ConsoleRefusal(404, "There is no bulk send with this id.")
            return BulkSummary(
                id=found.id,
                template_id=found.template_id,
                kind=found.kind,
                status=found.status,
                provider=found.provider,
                total=found.total,
                created_at=found.created_at,
                cancelled_at=found.cancelled_at,
                counts=bulk_db.status_counts(session, key),
            )
    except SQLAlchemyError:
        raise ConsoleRefusal(503, "The database cannot be reached; try again later.") from None


@router.post("/bulk/{bulk_id}/cancel")
async def cancel_bulk(
    request: Request,
    bulk_id: str,
    form: Mapping[str, str] = FormFields,
    user: ConsoleUser = Support,
) -> Response:
    """Cancel a bulk send: none of its recipients not sent yet ever is."""
    check_csrf(request, user, form)
    check_confirmed(form)
    key = _uuid(bulk_id, "bulk send")
    await run_in_threadpool(_cancel_bulk, key, user)
    return _done(f"/console/bulk/{key}?done=cancelled")


def _cancel_bulk(key: uuid.UUID, user: ConsoleUser) -> None:
    try:
        with primary_session() as session:
            cancelled = bulk_db.cancel_bulk(session, key)
            if cancelled is None:
                raise ConsoleRefusal(404, "There is no bulk send with this id.")
            audit.record(session, user.actor, "bulk.cancel", f"{key} ({cancelled} recipients)")
    except SQLAlchemyError:
        raise _unavailable() from None


# The audit log.


@router.get("/audit")
def audit_page(request: Request, user: ConsoleUser = Support) -> HTMLResponse:
    """The latest lines of the audit log (support and admin)."""
    try:
        lines = audit.recent(AUDIT_LINES)
    except SQLAlchemyError:
        raise ConsoleRefusal(503, "The database cannot be reached; try again later.") from None
    return render(request, "audit.html", {"lines": lines, "limit": AUDIT_LINES}, user)
