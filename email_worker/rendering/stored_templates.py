"""Templates stored in the ``email_templates`` table, as a Jinja2 template source.

Active rows win over ``TEMPLATES_DIR`` and the built-in templates.  Lookups read
the replica and are cached for ``TEMPLATE_CACHE_TTL``; a database that cannot be
reached is logged and treated as holding no templates until the next lookup.

On PostgreSQL a lookup reads through psycopg alone (:mod:`email_worker.db.direct`, the
replica, the primary while the replica cannot be reached), so rendering loads no
SQLAlchemy; on any other database, through a routing session.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from jinja2 import BaseLoader, TemplateNotFound

from email_worker.db import direct
from email_worker.mime.content import HTML, SUBJECT, TEXT

log = logging.getLogger(__name__)

_Parts = dict[str, str | None]


class DatabaseTemplateLoader(BaseLoader):
    """Serves ``<id>/subject.txt``, ``body.html`` and ``body.txt`` from active rows."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._cache: dict[str, tuple[float, _Parts | None]] = {}
        self._lock = threading.Lock()

    def get_source(
        self, environment: Any, template: str
    ) -> tuple[str, str | None, Callable[[], bool]]:
        """The source of one part of a stored template."""
        template_id, _, part = template.partition("/")
        if part not in (SUBJECT, HTML, TEXT):
            raise TemplateNotFound(template)
        loaded_at, parts = self._parts(template_id)
        source = parts.get(part) if parts else None
        if not source:
            raise TemplateNotFound(template)
        return source, None, lambda: time.monotonic() - loaded_at < self.ttl

    def _parts(self, template_id: str) -> tuple[float, _Parts | None]:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(template_id)
        if cached is not None and now - cached[0] < self.ttl:
            return cached
        try:
            parts = _read_direct(template_id) if direct.applies() else _read(template_id)
        except _Unavailable as exc:
            log.warning(
                "stored templates unavailable; using files", extra={"error": exc.error_name}
            )
            parts = None
        with self._lock:
            self._cache[template_id] = (now, parts)
        return now, parts


class _Unavailable(Exception):
    """The database did not answer a lookup."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(type(error).__name__)
        self.error_name = type(error).__name__


def _read_direct(template_id: str) -> _Parts | None:
    import psycopg

    from email_worker.db.template_rows import active_template_parts

    try:
        with direct.replica(transaction=False) as connection:
            row = active_template_parts(connection, template_id)
    except direct.DatabaseUnreachable as exc:
        raise _Unavailable(exc.__cause__ or exc) from None
    except psycopg.Error as exc:
        raise _Unavailable(exc) from None
    return None if row is None else dict(zip((SUBJECT, HTML, TEXT), row, strict=True))


def _read(template_id: str) -> _Parts | None:
    from sqlalchemy.exc import SQLAlchemyError

    from email_worker.db import templates
    from email_worker.db.session import session_scope

    try:
        with session_scope() as session:
            row = templates.get_active_template(session, template_id)
            if row is None:
                return None
            return {SUBJECT: row.subject, HTML: row.html_template, TEXT: row.text_template}
    except SQLAlchemyError as exc:
        raise _Unavailable(exc) from None
