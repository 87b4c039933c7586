"""A stored template's parts read through psycopg alone, for the renderer.

The renderer (:mod:`email_worker.rendering.stored_templates`) runs in producers and
workers: on PostgreSQL it reads through :mod:`email_worker.db.direct`, without loading
SQLAlchemy's ORM. The query reads what
:func:`email_worker.db.templates.get_active_template` reads; a test holds the two equal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

# The subject and both bodies of the active template with the id, as the model names them.
PARTS = ("subject", "html_template", "text_template")
ACTIVE_TEMPLATE_SQL = (
    f"SELECT {', '.join(PARTS)} FROM email_templates WHERE id = %s AND is_active IS true"
)


def active_template_parts(
    connection: psycopg.Connection[Any], template_id: str
) -> tuple[str | None, str | None, str | None] | None:
    """The subject, HTML and text of the active template with this id; None without one."""
    row = connection.execute(ACTIVE_TEMPLATE_SQL, (template_id,)).fetchone()
    return None if row is None else (row[0], row[1], row[2])
