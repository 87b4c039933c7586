"""Schema migrations (Alembic), for ``email-worker migrate`` and for tests.

The scripts live in the top-level ``alembic/`` folder. The package reaches them as
``email_worker/db/migrations`` (a link to that folder in a checkout, a copy of it in
an installed package), so a plain ``pip install`` can migrate without the source tree.

:func:`upgrade` also adopts the database of the service this one replaces: its
tables, exactly as migration 0001 creates them but without Alembic's version table,
are recognised and recorded as revision 0001 before the upgrade. A database that
has some of these tables in another shape is refused, and left untouched.
"""

from __future__ import annotations

from pathlib import Path

import alembic.command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, pool
from sqlalchemy.engine import URL

from email_worker.errors import EmailWorkerError

_PACKAGE = Path(__file__).parent
_CANDIDATES = (_PACKAGE / "migrations", _PACKAGE.resolve().parents[1] / "alembic")

ORIGINAL_REVISION = "0001"
# The columns of each table of the original service's schema (migration 0001).
ORIGINAL_COLUMNS = {
    "email_jobs": frozenset(
        {"id", "job_type", "recipient_email", "subject", "template_id", "template_data"}
        | {"status", "priority", "retry_count", "max_retries", "scheduled_at"}
        | {"created_at", "updated_at"}
    ),
    "email_templates": frozenset(
        {"id", "name", "subject", "html_template", "text_template", "variables"}
        | {"is_active", "created_at", "updated_at"}
    ),
    "email_tracking": frozenset(
        {"id", "job_id", "provider", "message_id", "status", "sent_at", "delivered_at"}
        | {"opened_at", "clicked_at", "error_message", "created_at"}
    ),
}


class UnknownSchema(EmailWorkerError):
    """The database holds tables of this service that no migration has made."""


def script_location() -> Path:
    """The folder holding ``env.py`` and ``versions/``: the package's, else the checkout's."""
    for candidate in _CANDIDATES:
        if (candidate / "env.py").is_file():
            return candidate
    searched = ", ".join(str(c) for c in _CANDIDATES)
    raise FileNotFoundError(f"the migration scripts are missing (looked in {searched})")


def alembic_config(url: str | URL | None = None) -> Config:
    """An Alembic config for ``url``, or for the primary in the settings when None."""
    config = Config()
    config.set_main_option("script_location", _escape(str(script_location())))
    if url is not None:
        rendered = url.render_as_string(hide_password=False) if isinstance(url, URL) else url
        config.set_main_option("sqlalchemy.url", _escape(rendered))
    return config


def upgrade(url: str | URL | None = None, revision: str = "head") -> None:
    """Migrate the database up to ``revision``, adopting the original service's schema."""
    config = alembic_config(url)
    if holds_original_schema(url):
        alembic.command.stamp(config, ORIGINAL_REVISION)
    alembic.command.upgrade(config, revision)


def holds_original_schema(url: str | URL | None = None) -> bool:
    """Whether the database has the original schema and no record of a migration.

    Raises :class:`UnknownSchema` when it has some of the service's tables without a
    record of a migration, but not exactly the original ones.
    """
    engine = create_engine(url if url is not None else _primary_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            inspector = inspect(connection)
            present = set(inspector.get_table_names())
            if "alembic_version" in present or present.isdisjoint(ORIGINAL_COLUMNS):
                return False
            found = {
                table: {column["name"] for column in inspector.get_columns(table)}
                for table in sorted(present & ORIGINAL_COLUMNS.keys())
            }
    finally:
        engine.dispose()
    problems = [f"table {table} is missing" for table in sorted(ORIGINAL_COLUMNS.keys() - found)]
    for table, columns in found.items():
        missing = sorted(ORIGINAL_COLUMNS[table] - columns)
        extra = sorted(columns - ORIGINAL_COLUMNS[table])
        if missing:
            problems.append(f"{table} lacks {', '.join(missing)}")
        if extra:
            problems.append(f"{table} has unknown columns {', '.join(extra)}")
    if problems:
        raise UnknownSchema(
            "the database has email-worker tables but no migration record, and they are not"
            f" the original service's schema ({'; '.join(problems)}); nothing was changed"
        )
    return True


def downgrade(url: str | URL | None, revision: str) -> None:
    """Migrate the database down to ``revision`` (``base`` removes every table)."""
    alembic.command.downgrade(alembic_config(url), revision)


def current(url: str | URL | None = None) -> str | None:
    """The revision the database is at; None before the first migration."""
    engine = create_engine(url if url is not None else _primary_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head() -> str | None:
    """The newest revision the scripts know."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _primary_url() -> URL:
    from email_worker.config import get_settings
    from email_worker.db.engines import primary_url

    return primary_url(get_settings())


def _escape(value: str) -> str:
    # Alembic's config is a ConfigParser: "%" starts an interpolation.
    return value.replace("%", "%%")
