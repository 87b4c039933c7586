"""Email templates stored in the database (they win over the built-in ones)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from email_worker.db.dialect import insert
from email_worker.db.models import EmailTemplate, utcnow


def get_active_template(session: Session, template_id: str) -> EmailTemplate | None:
    """The active template with this id; None if there is none or it is switched off."""
    statement = select(EmailTemplate).where(
        EmailTemplate.id == template_id, EmailTemplate.is_active.is_(True)
    )
    return session.scalars(statement).one_or_none()


def get_template(session: Session, template_id: str) -> EmailTemplate | None:
    """The template with this id, active or not."""
    statement = select(EmailTemplate).where(EmailTemplate.id == template_id)
    return session.scalars(statement).one_or_none()


def list_templates(session: Session) -> list[EmailTemplate]:
    """Every stored template, by id."""
    return list(session.scalars(select(EmailTemplate).order_by(EmailTemplate.id)))


def upsert_template(
    session: Session,
    *,
    id: str,
    name: str,
    subject: str | None,
    html_template: str | None,
    text_template: str | None,
    variables: list[Any] | dict[str, Any] | None = None,
    is_active: bool = True,
) -> EmailTemplate:
    """Create the template, or replace every field of the one with this id."""
    now = utcnow()
    fields = {
        "name": name,
        "subject": subject,
        "html_template": html_template,
        "text_template": text_template,
        "variables": variables,
        "is_active": is_active,
        "updated_at": now,
    }
    statement = (
        insert(session, EmailTemplate)
        .values(id=id, created_at=now, **fields)
        .on_conflict_do_update(index_elements=[EmailTemplate.id], set_=fields)
        .returning(EmailTemplate)
        .execution_options(populate_existing=True)
    )
    return session.scalars(statement).one()
