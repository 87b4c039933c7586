"""Templates stored in the database."""

from __future__ import annotations

from collections.abc import Callable

from email_worker.db import templates
from email_worker.db.session import RoutingSession

NewSession = Callable[..., RoutingSession]


def store(session: RoutingSession, template_id: str, **overrides: object) -> None:
    fields: dict[str, object] = {
        "id": template_id,
        "name": template_id.title(),
        "subject": "Hello {{ name }}",
        "html_template": "<p>Hello {{ name }}</p>",
        "text_template": "Hello {{ name }}",
        "variables": ["name"],
    }
    fields.update(overrides)
    templates.upsert_template(session, **fields)  # type: ignore[arg-type]
    session.commit()


def test_an_upsert_creates_then_replaces(new_session: NewSession) -> None:
    with new_session(primary=True) as session:
        store(session, "welcome")
        first = templates.get_template(session, "welcome")
        assert first is not None and first.variables == ["name"] and first.is_active
        created_at = first.created_at

        store(session, "welcome", subject="Welcome, {{ name }}", variables={"name": "str"})
        second = templates.get_template(session, "welcome")
        assert second is not None
        assert second.subject == "Welcome, {{ name }}" and second.variables == {"name": "str"}
        assert second.created_at == created_at and second.updated_at > created_at
        assert [t.id for t in templates.list_templates(session)] == ["welcome"]


def test_an_inactive_template_is_not_used(new_session: NewSession) -> None:
    with new_session(primary=True) as session:
        store(session, "promo", is_active=False)
        store(session, "welcome")
        assert templates.get_active_template(session, "promo") is None
        assert templates.get_template(session, "promo") is not None
        active = templates.get_active_template(session, "welcome")
        assert active is not None and active.html_template == "<p>Hello {{ name }}</p>"
        assert templates.get_active_template(session, "missing") is None
        assert [t.id for t in templates.list_templates(session)] == ["promo", "welcome"]
