"""The Emails pages: search, a job's page with its timeline, and the message as sent.

``GET /console/emails`` searches by job or task id, exact recipient address (found by
its lookup hash, as ``email-worker jobs list --to``), kind, status and creation time;
``GET /console/emails/{id}`` shows one job; ``GET /console/emails/{id}/html`` serves the
message's HTML for the sandboxed frame of that page, under a policy of its own that
allows no script, no request anywhere (images only as ``data:``) and no framing but
the console's.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.exc import SQLAlchemyError

from email_worker.addresses import comparable_address
from email_worker.db import status as st
from email_worker.kinds import all_kinds
from email_worker.web.console.accounts import ConsoleRefusal, ConsoleUser, Viewer
from email_worker.web.console.jobs import (
    PAGE_SIZE,
    Search,
    find_by_identifier,
    job_page,
    search_jobs,
)
from email_worker.web.console.pages import SECURITY_HEADERS, render, secure

router = APIRouter()

# The message's HTML, in a frame with the sandbox attribute: no script, no form, no request
# to anywhere (a remote image would tell the sender the email was opened).
FRAME_POLICY = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
    "frame-ancestors 'self'; base-uri 'none'; form-action 'none'"
)
FRAME_HEADERS = {
    **SECURITY_HEADERS,
    "Content-Security-Policy": FRAME_POLICY,
    "X-Frame-Options": "SAMEORIGIN",
}
STATUSES = tuple(
    sorted(
        (
            st.PENDING,
            st.SCHEDULED,
            st.SENDING,
            st.RETRYING,
            st.SENT,
            st.DELIVERED,
            st.OPENED,
            st.CLICKED,
            st.BOUNCED,
            st.FAILED,
            st.CANCELLED,
            st.SUPPRESSED,
        )
    )
)
MAX_PAGE = 200
KIND_NAME = re.compile(r"^[a-z][a-z0-9_]{0,49}$")  # a kind's name, or a label a send gave


def _unavailable() -> ConsoleRefusal:
    return ConsoleRefusal(503, "The database cannot be reached; try again later.")


@router.get("/emails")
def email_search(
    request: Request,
    id: str = "",
    to: str = "",
    kind: str = "",
    status: str = "",
    since: str = "",
    until: str = "",
    page: str = "1",
    user: ConsoleUser = Viewer,
) -> HTMLResponse:
    """The search form, and the jobs it finds (the newest first when nothing is asked)."""
    form = {
        "id": id.strip(),
        "to": to.strip(),
        "kind": kind.strip(),
        "status": status.strip(),
        "since": since.strip(),
        "until": until.strip(),
    }
    search, problems = _checked(form, page)
    rows: list[Any] = []
    more = False
    if not problems:
        try:
            rows, more = search_jobs(search, user.masked)
        except SQLAlchemyError:
            raise _unavailable() from None
    context = {
        "form": form,
        "problems": problems,
        "rows": rows,
        "kinds": sorted(k.name for k in all_kinds()),
        "statuses": STATUSES,
        "page": search.page,
        "more": more,
        "page_size": PAGE_SIZE,
        "next_query": _query(form, search.page + 1),
        "previous_query": _query(form, search.page - 1),
    }
    return render(request, "emails.html", context, user, status_code=400 if problems else 200)


def _query(form: dict[str, str], page: int) -> str:
    from urllib.parse import urlencode

    return urlencode({**{k: v for k, v in form.items() if v}, "page": page})


def _checked(form: dict[str, str], page_text: str) -> tuple[Search, list[str]]:
    """The search the form asks for, and a line for each field it cannot use."""
    problems = []
    job_id = None
    if form["id"]:
        if len(form["id"]) > 255 or not form["id"].isprintable():
            problems.append("A job or task id is at most 255 characters, none of them control.")
        else:
            job_id = find_by_identifier(form["id"])
    recipient = None
    if form["to"]:
        address = comparable_address(form["to"])
        if (
            "@" not in address
            or len(address) > 254
            or not address.isprintable()
            or any(c.isspace() for c in address)
        ):
            problems.append(
                "The recipient must be one whole email address, such as ann@example.com."
            )
        else:
            recipient = form["to"]
    if form["kind"] and not KIND_NAME.match(form["kind"]):
        problems.append("A kind is a short lower-case name such as password_reset.")
    if form["status"] and form["status"] not in STATUSES:
        problems.append(f"The status must be one of {', '.join(STATUSES)}.")
    since = _time(form["since"], "From", problems)
    until = _time(form["until"], "Until", problems)
    if since is not None and until is not None and until <= since:
        problems.append("The Until time must be later than the From time.")
    try:
        page = int(page_text)
        if not 1 <= page <= MAX_PAGE:
            raise ValueError
    except ValueError:
        problems.append(f"The page is a number from 1 to {MAX_PAGE}.")
        page = 1
    search = Search(
        job_id=job_id,
        recipient=recipient,
        kind=form["kind"] or None,
        status=form["status"] or None,
        since=since,
        until=until,
        page=page,
    )
    return search, problems


def _time(text: str, label: str, problems: list[str]) -> dt.datetime | None:
    """A time from the form (``2026-12-04T09:30``, UTC unless it has an offset), or None."""
    if not text:
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        problems.append(f"The {label} time must be a date and time such as 2026-12-04T09:30 (UTC).")
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment


def _job_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise ConsoleRefusal(404, "There is no job with this id.") from None


def load_page(job_id: str, user: ConsoleUser, *, primary: bool = False) -> Any:
    """The job's page as ``user`` may see it; 404 if there is no such job."""
    try:
        page = job_page(_job_id(job_id), user.masked, primary=primary)
    except SQLAlchemyError:
        raise _unavailable() from None
    if page is None:
        raise ConsoleRefusal(404, "There is no job with this id.")
    return page


@router.get("/emails/{job_id}")
def email_page(request: Request, job_id: str, user: ConsoleUser = Viewer) -> HTMLResponse:
    """A job: its facts, timeline, message and the actions this user may take on it."""
    notice = request.query_params.get("done")
    page = load_page(job_id, user, primary=notice is not None)  # just changed: the primary
    return render(
        request,
        "email.html",
        {"job": page, "notice": _NOTICES.get(notice or "")},
        user,
    )


_NOTICES = {
    "cancelled": "The job was cancelled.",
    "resent": "The email was resent as a new job.",
}


@router.get("/emails/{job_id}/html")
def email_html(request: Request, job_id: str, user: ConsoleUser = Viewer) -> Response:
    """The message's HTML, for the sandboxed frame of the job's page."""
    page = load_page(job_id, user)
    if page.message is None or page.message.html is None:
        body = "<p>This email has no HTML part to show.</p>"
        if page.message_problem:
            body = "<p>The message is not available.</p>"
        response = HTMLResponse(body, status_code=404 if page.message is None else 200)
    else:
        response = HTMLResponse(page.message.html)
    return secure(response, FRAME_HEADERS)
