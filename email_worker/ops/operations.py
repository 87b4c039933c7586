"""Jobs and templates for operators: the functions behind ``email-worker jobs`` and
``email-worker templates``.  Reads go to the replica, changes to the primary.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment

from email_worker.db import housekeeping, job_queries, templates, transitions
from email_worker.db.models import EmailJob, EmailTemplate, naive_utc
from email_worker.db.personal_data import CLEARED
from email_worker.db.session import primary_session, session_scope
from email_worker.errors import TemplateRenderError
from email_worker.producer.validation import TEMPLATE_ID
from email_worker.rendering.renderer import HTML, SUBJECT, TEXT, check_syntax

MAX_LIST_LIMIT = 10_000
MAX_TEMPLATE_ID_CHARS = 100  # the email_templates.id column
MAX_SUBJECT_CHARS = 500  # the email_templates.subject column


@dataclass(frozen=True)
class TrackingView:
    """One tracking row of a job."""

    status: str | None
    provider: str | None
    message_id: str | None
    sent_at: dt.datetime | None
    delivered_at: dt.datetime | None
    opened_at: dt.datetime | None
    clicked_at: dt.datetime | None
    error_message: str | None
    created_at: dt.datetime | None


@dataclass(frozen=True)
class JobView:
    """A job as operators see it, detached from any session."""

    id: uuid.UUID
    job_type: str
    recipient_email: str | None  # None once retention or an erasure cleared it
    status: str
    priority: int | None
    retry_count: int | None
    max_retries: int | None
    template_id: str | None
    subject: str | None
    scheduled_at: dt.datetime | None
    created_at: dt.datetime | None
    updated_at: dt.datetime | None
    sent_at: dt.datetime | None
    provider: str | None
    provider_message_id: str | None
    last_error: str | None
    personal_data_cleared_at: dt.datetime | None  # when retention or an erasure cleared it
    tracking: list[TrackingView] = field(default_factory=list)

    def cleared(self, name: str) -> bool:
        """Whether field ``name`` is empty because the job's personal data was cleared."""
        return (
            self.personal_data_cleared_at is not None
            and name in CLEARED[EmailJob.__tablename__]
            and getattr(self, name) is None
        )

    @classmethod
    def of(cls, job: EmailJob, *, with_tracking: bool = False) -> JobView:
        """Copy what operators need out of a loaded job."""
        names = [f for f in cls.__dataclass_fields__ if f != "tracking"]
        tracking = (
            [
                TrackingView(**{f: getattr(t, f) for f in TrackingView.__dataclass_fields__})
                for t in sorted(job.tracking, key=lambda t: t.created_at or dt.datetime.min)
            ]
            if with_tracking
            else []
        )
        return cls(**{f: getattr(job, f) for f in names}, tracking=tracking)


class JobNotFound(LookupError):
    """No job has this id."""


def get_job(job_id: uuid.UUID | str) -> JobView:
    """The job with its tracking rows."""
    with session_scope() as session:
        job = job_queries.get_job(session, uuid.UUID(str(job_id)))
        if job is None:
            raise JobNotFound(f"no job {job_id}")
        return JobView.of(job, with_tracking=True)


def list_jobs(
    *,
    status: str | None = None,
    kind: str | None = None,
    recipient: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = 50,
) -> list[JobView]:
    """Jobs by status, kind, recipient and creation time, newest first.

    Aware times are converted to UTC; naive ones are taken as UTC, as stored.
    """
    check_limit(limit)
    with session_scope() as session:
        found = job_queries.list_jobs(
            session,
            status=status,
            job_type=kind,
            recipient=recipient,
            since=naive_utc(since),
            until=naive_utc(until),
            limit=limit,
        )
        return [JobView.of(job) for job in found]


def check_limit(limit: int) -> int:
    """Return ``limit`` if a listing can use it; raise ValueError naming the bounds if not."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
        raise ValueError(f"limit: must be a whole number from 1 to {MAX_LIST_LIMIT}, got {limit!r}")
    return limit


def cancel_job(job_id: uuid.UUID | str) -> bool:
    """Cancel a pending or scheduled job; False when a worker already has it or it is done."""
    with primary_session() as session:
        return transitions.cancel_job(session, uuid.UUID(str(job_id)))


def delete_job(job_id: uuid.UUID | str) -> bool:
    """Delete a job and its tracking rows; False if there was no such job."""
    with primary_session() as session:
        return housekeeping.delete_job(session, uuid.UUID(str(job_id)))


@dataclass(frozen=True)
class TemplateFiles:
    """A template read from a folder, checked and ready to store."""

    id: str
    subject: str
    html: str | None
    text: str | None
    variables: list[str]


class TemplateFolderError(TemplateRenderError):
    """A folder of templates that cannot be stored; the message names the file."""


def read_template_folder(folder: Path) -> list[TemplateFiles]:
    """Read ``<id>/`` folders and check them; raise on the first problem, naming its file."""
    folder = Path(folder)
    if not folder.is_dir():
        problem = "is not a folder" if folder.exists() else "no such folder"
        raise TemplateFolderError(f"{folder}: {problem}")
    found = []
    env = SandboxedEnvironment()
    for directory in sorted(p for p in _entries(folder) if p.is_dir()):
        if directory.name.startswith(("_", ".")):
            continue  # shared layouts are not templates of their own
        if len(directory.name) > MAX_TEMPLATE_ID_CHARS:
            raise TemplateFolderError(
                f"{directory}: the template id (the folder name) is longer than "
                f"{MAX_TEMPLATE_ID_CHARS} characters"
            )
        if not TEMPLATE_ID.match(directory.name):
            raise TemplateFolderError(
                f"{directory}: the folder name is not a valid template id (letters, digits, "
                "'_', '.' and '-', starting with a letter or digit)"
            )
        parts = {name: _read(directory / name) for name in (SUBJECT, HTML, TEXT)}
        subject = parts[SUBJECT]
        if subject is None or (parts[HTML] is None and parts[TEXT] is None):
            raise TemplateFolderError(
                f"{directory}: a template needs subject.txt and body.html and/or body.txt"
            )
        if not subject.strip():
            raise TemplateFolderError(f"{directory / SUBJECT}: the subject is empty")
        if len(subject.strip()) > MAX_SUBJECT_CHARS:
            raise TemplateFolderError(
                f"{directory / SUBJECT}: longer than {MAX_SUBJECT_CHARS} characters"
            )
        variables: set[str] = set()
        for name, source in parts.items():
            if source is not None:
                check_syntax(source, name=f"{directory.name}/{name}")
                variables |= meta.find_undeclared_variables(env.parse(source))
        found.append(
            TemplateFiles(directory.name, subject, parts[HTML], parts[TEXT], sorted(variables))
        )
    return found


def sync_templates(folder: Path) -> list[str]:
    """Store every template of a folder, all or nothing; returns the ids written."""
    checked = read_template_folder(folder)  # a broken template stops us before any write
    with primary_session() as session:
        for item in checked:
            templates.upsert_template(
                session,
                id=item.id,
                name=item.id,
                subject=item.subject.strip(),
                html_template=item.html,
                text_template=item.text,
                variables=item.variables,
            )
    return [item.id for item in checked]


def list_templates() -> list[dict[str, Any]]:
    """Every stored template: id, name, active, variables, updated."""
    with session_scope() as session:
        return [_template_summary(t) for t in templates.list_templates(session)]


def show_template(template_id: str) -> dict[str, Any]:
    """One stored template with its sources."""
    with session_scope() as session:
        row = templates.get_template(session, template_id)
        if row is None:
            raise LookupError(f"no stored template {template_id!r}")
        return {
            **_template_summary(row),
            "subject": row.subject,
            "html_template": row.html_template,
            "text_template": row.text_template,
        }


def _template_summary(row: EmailTemplate) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "is_active": row.is_active,
        "variables": row.variables,
        "updated_at": row.updated_at,
    }


def _entries(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError as exc:
        raise TemplateFolderError(f"{folder}: cannot be read: {exc.strerror}") from None


def _read(path: Path) -> str | None:
    """The file's text, or None when there is no such file; raise naming the file if unusable."""
    if not path.is_file():
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TemplateFolderError(f"{path}: cannot be read: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise TemplateFolderError(f"{path} line {line}: not valid UTF-8") from None
    if "\0" in text:
        line = text[: text.index("\0")].count("\n") + 1
        raise TemplateFolderError(f"{path} line {line}: contains a NUL character")
    return text
