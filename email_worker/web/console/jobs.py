"""What the Emails pages show of a job: search results, its timeline and its message.

Reads go through the routing session (the replica, while it answers); a job page asked
for right after an action falls back to the primary when the replica has not replayed
the job yet. Every address is masked for a viewer (:func:`email_worker.privacy.mask_address`),
and every text that may quote one (errors, subjects, the message) has its addresses
masked too. Once retention or an erasure has cleared a job's personal data, the page
says so instead of showing it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

from email_worker.config import get_settings
from email_worker.db import audit, events, job_queries
from email_worker.db import status as st
from email_worker.db.api_keys import TEST_SEND_FIELD
from email_worker.db.models import EmailJob
from email_worker.db.session import session_scope
from email_worker.errors import EmailWorkerError
from email_worker.kinds import MARKETING_CATEGORIES, find_kind, queue_priority
from email_worker.mime.content import RenderedEmail
from email_worker.mime.email_request import EmailRequest
from email_worker.privacy import mask_address, redact_text
from email_worker.producer.stored_jobs import job_id_for
from email_worker.rendering.renderer import (
    POSTAL_ADDRESS,
    UNSUBSCRIBE_URL,
    get_renderer,
    render_inline,
)

PAGE_SIZE = 50
REQUEST_FIELDS = frozenset(f.name for f in dataclasses.fields(EmailRequest))


@dataclass(frozen=True)
class Search:
    """The search form's values, checked: each None when not given."""

    job_id: uuid.UUID | None = None
    recipient: str | None = None
    kind: str | None = None
    status: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    page: int = 1


@dataclass(frozen=True)
class Row:
    """One job in the search results."""

    id: uuid.UUID
    kind: str
    recipient: str
    subject: str
    status: str
    provider: str
    created_at: dt.datetime | None


@dataclass(frozen=True)
class Step:
    """One line of a job's timeline: when, what, and any detail (errors masked)."""

    at: dt.datetime | None
    what: str
    detail: str = ""


@dataclass
class JobPage:
    """Everything a job's page shows."""

    id: uuid.UUID
    kind: str
    status: str
    template_id: str | None
    priority: str
    created_at: dt.datetime | None
    scheduled_at: dt.datetime | None
    sent_at: dt.datetime | None
    provider: str | None
    provider_message_id: str | None
    retry_count: int
    max_retries: int
    last_error: str | None
    cleared_at: dt.datetime | None
    recipients: dict[str, list[str]] = field(default_factory=dict)
    sender: str | None = None
    subject: str | None = None
    timeline: list[Step] = field(default_factory=list)
    message: RenderedEmail | None = None
    message_problem: str | None = None
    resent_as: list[str] = field(default_factory=list)
    resend_of: str | None = None
    test_send: bool = False

    @property
    def cancellable(self) -> bool:
        """Whether the job can still be cancelled (pending or scheduled)."""
        return self.status in st.CANCELLABLE

    @property
    def resendable(self) -> bool:
        """Whether the job can be resent: it failed or bounced, and its request is still kept."""
        return self.status in (st.FAILED, st.BOUNCED) and self.cleared_at is None


def show_address(address: str | None, masked: bool) -> str:
    """An address as this user may see it."""
    if address is None:
        return "(cleared)"
    return mask_address(address) if masked else address


def show_text(text: str | None, masked: bool) -> str:
    """A text that may quote addresses, as this user may see it."""
    if text is None:
        return ""
    return redact_text(text) if masked else text


def find_by_identifier(text: str) -> uuid.UUID:
    """The job a job id or a Celery task id names (a tracked send's task id is its job's)."""
    return job_id_for(text.strip())


def search_jobs(search: Search, masked: bool) -> tuple[list[Row], bool]:
    """The jobs the search finds, newest first, one page; and whether there are more."""
    if search.job_id is not None:
        # One job by its id: one made a moment ago may not be on the replica yet.
        for primary in (False, True):
            with session_scope(primary=primary) as session:
                job = job_queries.get_job(session, search.job_id)
                if job is not None:
                    return [_row(job, masked)], False
        return [], False
    with session_scope() as session:
        found = job_queries.list_jobs(
            session,
            status=search.status,
            job_type=search.kind,
            recipient=search.recipient,
            since=search.since,
            until=search.until,
            limit=PAGE_SIZE + 1,
            offset=(search.page - 1) * PAGE_SIZE,
        )
        return [_row(job, masked) for job in found[:PAGE_SIZE]], len(found) > PAGE_SIZE


def _row(job: EmailJob, masked: bool) -> Row:
    cleared = job.personal_data_cleared_at is not None
    return Row(
        id=job.id,
        kind=job.job_type,
        recipient=show_address(job.recipient_email, masked),
        subject="(cleared)" if cleared and job.subject is None else show_text(job.subject, masked),
        status=job.status or "",
        provider=job.provider or "",
        created_at=job.created_at,
    )


def job_page(job_id: uuid.UUID, masked: bool, *, primary: bool = False) -> JobPage | None:
    """The job's page, or None if there is no such job.

    Read from the replica, then from the primary if the replica has no such job yet;
    with ``primary``, from the primary only (right after an action changed it).
    """
    for on_primary in (True,) if primary else (False, True):
        with session_scope(primary=on_primary) as session:
            job = job_queries.get_job(session, job_id)
            if job is None:
                continue
            return _page(session, job, masked)
    return None


def _page(session: Any, job: EmailJob, masked: bool) -> JobPage:
    payload = job.payload if isinstance(job.payload, dict) else None
    page = JobPage(
        id=job.id,
        kind=job.job_type,
        status=job.status or "",
        template_id=job.template_id,
        priority=_priority(job.priority),
        created_at=job.created_at,
        scheduled_at=job.scheduled_at,
        sent_at=job.sent_at,
        provider=job.provider,
        provider_message_id=job.provider_message_id,
        retry_count=job.retry_count or 0,
        max_retries=job.max_retries or 0,
        last_error=show_text(job.last_error, masked) or None,
        cleared_at=job.personal_data_cleared_at,
    )
    if payload is not None:
        for name in ("to", "cc", "bcc"):
            addresses = [a for a in payload.get(name) or [] if isinstance(a, str)]
            if addresses:
                page.recipients[name] = [show_address(a, masked) for a in addresses]
        sender = payload.get("from_email")
        page.sender = show_address(sender, masked) if isinstance(sender, str) else None
        page.test_send = bool(payload.get(TEST_SEND_FIELD))
    elif job.recipient_email is not None:
        page.recipients["to"] = [show_address(job.recipient_email, masked)]
    page.subject = show_text(job.subject, masked) or None
    page.timeline = _timeline(session, job, masked)
    page.resent_as, page.resend_of = _resends(session, job.id)
    if payload is None:
        page.message_problem = (
            "The message is no longer kept: its personal data was cleared "
            f"{_when(job.personal_data_cleared_at)} (retention or an erasure)."
            if job.personal_data_cleared_at is not None
            else "No request is stored for this job, so its message cannot be shown."
        )
    else:
        page.message, page.message_problem = _message(payload, masked)
    return page


def _priority(number: int | None) -> str:
    """The queue a stored job's priority number sends it to (0 is high: not a missing value)."""
    if number is None:
        return "default"
    try:
        return queue_priority(number)
    except ValueError:
        return str(number)


def _when(moment: dt.datetime | None) -> str:
    return "" if moment is None else f"on {moment:%Y-%m-%d %H:%M} UTC"


def _timeline(session: Any, job: EmailJob, masked: bool) -> list[Step]:
    """What happened to the job, in order: the job's own times, each attempt, each event."""
    steps = [Step(job.created_at, "Queued", "to be sent later" if job.scheduled_at else "")]
    if job.scheduled_at is not None:
        steps.append(Step(job.scheduled_at, "Due", "scheduled to be sent at this time"))
    if job.status == st.SENDING:
        lease = f"lease until {job.lease_expires_at:%H:%M:%S} UTC" if job.lease_expires_at else ""
        steps.append(Step(job.updated_at, "Claimed by a worker", lease))
    attempt = 0
    for row in job.tracking:
        # A sent row's status follows its delivery events (delivered, opened, ...).
        if row.sent_at is not None or row.status == st.SENT:
            attempt += 1
            detail = f"attempt {attempt} accepted by {row.provider or 'the provider'}"
            if row.message_id:
                detail += f" as {row.message_id}"
            if row.error_message:  # a bounce's or a rejection's reason, reported later
                detail += f"; not delivered: {show_text(row.error_message, masked)}"
            steps.append(Step(row.sent_at or row.created_at, "Sent", detail))
            for when, what in (
                (row.delivered_at, "Delivered"),
                (row.opened_at, "Opened"),
                (row.clicked_at, "Clicked"),
            ):
                if when is not None:
                    steps.append(Step(when, what, "tracking summary"))
        elif row.status == st.FAILED:
            attempt += 1
            detail = show_text(row.error_message, masked) or "no error given"
            steps.append(Step(row.created_at, f"Attempt {attempt} failed", detail))
        elif row.status == st.SUPPRESSED:
            steps.append(Step(row.created_at, "Suppressed", "every recipient is suppressed"))
        elif row.error_message:
            steps.append(
                Step(
                    row.created_at,
                    (row.status or "Event").capitalize(),
                    redact_text(row.error_message),
                )
            )
    if job.retry_count and job.status in (st.RETRYING, st.PENDING):
        detail = f"{job.retry_count} of {job.max_retries} retries used"
        if job.last_error:
            detail += f"; last error: {show_text(job.last_error, masked)}"
        steps.append(Step(job.updated_at, "Retrying", detail))
    for event in events.events_of_job(session, job.id):
        detail = f"{event.provider}"
        if event.bounce_type:
            detail += f", {event.bounce_type} bounce"
        if event.machine_open:
            detail += ", opened by a machine (a mail privacy proxy)"
        steps.append(Step(event.occurred_at, event.event_type.capitalize(), detail))
    if job.status == st.CANCELLED:
        steps.append(Step(job.updated_at, "Cancelled", ""))
    for entry in _audit_of(session, job.id):
        steps.append(Step(entry.occurred_at, _AUDITED.get(entry.action, entry.action), entry.actor))
    if job.personal_data_cleared_at is not None:
        steps.append(Step(job.personal_data_cleared_at, "Personal data cleared", ""))
    ordered = sorted(steps, key=lambda s: s.at or dt.datetime.min)
    return _without_repeats(ordered)


def _without_repeats(steps: list[Step]) -> list[Step]:
    """The tracking summary repeats what events say: keep one line for each."""
    seen: set[tuple[str, dt.datetime | None]] = set()
    kept = []
    for step in steps:
        key = (step.what, step.at.replace(microsecond=0) if step.at else None)
        if step.detail == "tracking summary" and key in seen:
            continue
        seen.add(key)
        kept.append(step)
    return [s for s in kept if not (s.detail == "tracking summary" and _has_event(kept, s))]


def _has_event(steps: list[Step], summary: Step) -> bool:
    return any(s.what == summary.what and s.detail != "tracking summary" for s in steps)


_AUDITED = {
    "job.resend": "Resent from the console",
    "job.cancel": "Cancelled from the console",
}


def _audit_of(session: Any, job_id: uuid.UUID) -> list[audit.AuditView]:
    return audit.about_job(session, job_id, list(_AUDITED))


def _resends(session: Any, job_id: uuid.UUID) -> tuple[list[str], str | None]:
    """The jobs this one was resent as, and the job it is a resend of (from the audit log)."""
    resent_as, resend_of = [], None
    for target in audit.resend_targets(session, job_id):
        original, _, new = target.partition(" -> ")
        if original == str(job_id) and new:
            resent_as.append(new)
        elif new == str(job_id):
            resend_of = original
    return resent_as, resend_of


def request_of(payload: dict[str, Any]) -> EmailRequest:
    """The stored request of a job as an EmailRequest (the fields it knows)."""
    return EmailRequest(**{k: v for k, v in payload.items() if k in REQUEST_FIELDS})


def _message(payload: dict[str, Any], masked: bool) -> tuple[RenderedEmail | None, str | None]:
    """The message rendered again from the stored request, or why it cannot be."""
    try:
        request = request_of(payload)
        if request.template_id:
            data: dict[str, Any] = dict(request.data)
            kind = find_kind(request.kind)
            if kind is not None and kind.category in MARKETING_CATEGORIES:
                settings = get_settings()
                # Not the real link: following it from here must not unsubscribe anyone.
                data = {UNSUBSCRIBE_URL: "#unsubscribe-link-not-shown", **data}
                if settings.sender_postal_address:
                    data = {POSTAL_ADDRESS: settings.sender_postal_address, **data}
            content = get_renderer().render(request.template_id, data)
        else:
            content = render_inline(request.subject or "", request.html, request.text)
    except (EmailWorkerError, TypeError, ValueError) as exc:
        return None, f"The message cannot be rendered again: {redact_text(str(exc))}"
    if masked:
        content = RenderedEmail(
            subject=redact_text(content.subject),
            text=redact_text(content.text),
            html=None if content.html is None else redact_text(content.html),
        )
    return content, None
